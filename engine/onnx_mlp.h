// Reads and writes the ranking MLP as an ONNX model (ranker.onnx), with the ONNX
// library's protobuf types.
//
// Accepted graphs: one float input [batch, K] (batch symbolic or fixed), then a chain of
//   Gemm (alpha = 1, beta = 1, transA = 0, transB 0 or 1, C a bias of [N] or [1, N])
//   or MatMul followed by Add with a [N] / [1, N] initializer,
// with Relu after every hidden layer, ending in Sigmoid whose output is the graph output
// ([batch, 1]). Weights come from initializers (raw_data or float_data) or Constant nodes.
// Identity, and Flatten/Reshape that keep [batch, K], are accepted as no-ops because
// torch.onnx.export emits them. Anything else is refused: an InvalidArgument that names
// the node (its name, op_type and index) and what was wrong. Non-finite weights, shapes
// that do not chain, and non-float initializers are refused the same way.
//
// The writer emits what torch.onnx.export emits for nn.Sequential(Linear, ReLU, ...,
// Linear, Sigmoid): opset 13, Gemm with transB = 1 and weights [out x in], input
// "features" [batch, K], output "score" [batch, 1].
#ifndef RECSERVE_ENGINE_ONNX_MLP_H_
#define RECSERVE_ENGINE_ONNX_MLP_H_

#include <string>

#include "absl/status/statusor.h"
#include "engine/mlp.h"

namespace recserve {

// Parses serialized ModelProto bytes; `name` (a file name) starts every error message.
absl::StatusOr<Mlp> ParseOnnxMlp(const std::string& bytes, const std::string& name);
// Reads `path` (NotFound if missing) and parses it.
absl::StatusOr<Mlp> ReadOnnxMlp(const std::string& path);

// Serializes `mlp` (must pass ValidateMlp) as an ONNX ModelProto.
absl::StatusOr<std::string> SerializeOnnxMlp(const Mlp& mlp);
absl::Status WriteOnnxMlp(const Mlp& mlp, const std::string& path);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_ONNX_MLP_H_
