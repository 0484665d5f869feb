// Plain, framework-free description of the ranking MLP: the fp32 weights as trained.
//
// This is the exchange type between the ONNX reader/writer, the trainer, compression
// (pruning, quantization) and the oneDNN rankers, which build their own kernels from it.
// A value type: copyable, no hidden state, not thread-safe to mutate while shared.
#ifndef RECSERVE_ENGINE_MLP_H_
#define RECSERVE_ENGINE_MLP_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace recserve {

// y = act(W x + b) with W stored [out x in] row-major (the PyTorch nn.Linear layout).
struct DenseLayer {
  int in = 0;
  int out = 0;
  std::vector<float> weight;  // out * in
  std::vector<float> bias;    // out
  bool relu = false;          // ReLU after this layer (hidden layers)
};

// Layers in order; the last layer has out == 1 and no ReLU; a sigmoid of its output is
// the click probability.
struct Mlp {
  std::vector<DenseLayer> layers;

  int input_dim() const { return layers.empty() ? 0 : layers.front().in; }
  // Widths from input to output, e.g. {118, 256, 128, 64, 1}.
  std::vector<int> LayerSizes() const;
  int64_t ParameterCount() const;
  // Multiply-accumulates per scored row.
  int64_t MacsPerRow() const;
};

// Checks shapes chain (layer i's out == layer i+1's in), vector sizes match, every
// hidden layer has ReLU, the last has out == 1 and no ReLU, every value is finite and
// within +-kMaxBundleValue (engine/value_limits.h).
absl::Status ValidateMlp(const Mlp& mlp);

// Plain loops, double accumulation: the reference the oneDNN rankers are tested
// against. `rows` is [n x input_dim] row-major; writes n probabilities (after sigmoid).
void ReferenceScore(const Mlp& mlp, absl::Span<const float> rows, int n,
                    absl::Span<float> probabilities);

// Numerically safe logistic function.
inline float Sigmoid(float x) {
  if (x >= 0) {
    const float z = __builtin_expf(-x);
    return 1.0f / (1.0f + z);
  }
  const float z = __builtin_expf(x);
  return z / (1.0f + z);
}

}  // namespace recserve

#endif  // RECSERVE_ENGINE_MLP_H_
