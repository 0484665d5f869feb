#!/usr/bin/python3
"""PyTorch peers for the ranker benchmark: the same MLP shape and batch sizes in fp32
and with dynamic int8 quantization (onednn engine), one thread. Prints rows/s per batch.

  torch_peer.py --sizes=156,256,128,64,1 --seconds=1
"""
import argparse
import time

import torch


def rows_per_second(model, batch, width, seconds):
    x = torch.randn(batch, width)
    with torch.no_grad():
        model(x)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(x)
            done += batch
        return done / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="156,256,128,64,1")
    p.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        layers.append(torch.nn.ReLU() if i + 2 < len(sizes) else torch.nn.Sigmoid())
    fp32 = torch.nn.Sequential(*layers).eval()
    engine = "onednn" if "onednn" in torch.backends.quantized.supported_engines else "fbgemm"
    torch.backends.quantized.engine = engine
    int8 = torch.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    macs = sum(sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1))
    print(f"torch {torch.__version__}, quantized engine {engine}, MLP {args.sizes} ({macs} MACs/row), 1 thread")
    print(f"{'batch':>6} {'torch fp32 rows/s':>18} {'torch int8 rows/s':>18} {'int8 GMAC/s':>12}")
    for batch in (1, 64, 256, 1000):
        f = rows_per_second(fp32, batch, sizes[0], args.seconds)
        q = rows_per_second(int8, batch, sizes[0], args.seconds)
        print(f"{batch:>6} {f:>18.0f} {q:>18.0f} {q * macs / 1e9:>12.1f}")


if __name__ == "__main__":
    main()
