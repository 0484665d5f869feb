#!/usr/bin/python3
"""Trains a small ranker in PyTorch on a bundle's calibration rows and exports it with
torch.onnx.export, as a modeller would hand one over. Also writes PyTorch's own fp32
probabilities for the first rows, so the C++ side can check it scores the same.

  export_torch_ranker.py --calibration=DIR/calibration.safetensors --onnx=OUT.onnx \
      --scores=OUT.bin --rows=1000
"""
import argparse
import json
import struct

import numpy as np
import torch


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    base = 8 + header_len
    dtypes = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "U64": np.uint64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        out[name] = np.frombuffer(data[base + begin:base + end], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--calibration", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--scores", required=True)
    p.add_argument("--rows", type=int, default=1000)
    args = p.parse_args()

    torch.manual_seed(0)
    cal = read_safetensors(args.calibration)
    x = torch.from_numpy(np.array(cal["features"], dtype=np.float32))
    y = torch.from_numpy(np.array(cal["labels"], dtype=np.float32)).reshape(-1, 1)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)
    width = x.shape[1]
    model = torch.nn.Sequential(
        torch.nn.Linear(width, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 32), torch.nn.ReLU(),
        torch.nn.Linear(32, 1), torch.nn.Sigmoid())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCELoss()
    xs = (x - mean) / std
    for step in range(300):
        idx = torch.randint(0, xs.shape[0], (512,))
        opt.zero_grad()
        loss = loss_fn(model(xs[idx]), y[idx])
        loss.backward()
        opt.step()
    # Fold the standardisation into the first layer so the model takes raw rows.
    with torch.no_grad():
        first = model[0]
        first.bias -= (first.weight * (mean / std)).sum(1)
        first.weight /= std
    model.eval()
    example = x[:4]
    torch.onnx.export(model, example, args.onnx, input_names=["features"], output_names=["score"],
                      dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}}, opset_version=13)
    with torch.no_grad():
        scores = model(x[:args.rows]).reshape(-1).numpy().astype(np.float32)
    scores.tofile(args.scores)
    print(f"trained on {x.shape[0]} rows of width {width}; last batch loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
