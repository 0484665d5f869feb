// The ranking MLP in int8 form, ready for oneDNN's u8 x s8 matmuls: what compression/
// produces (quantize.h) and the int8 ranker consumes.
//
// Input rows stay fp32 until the ranker quantizes them per column:
//   q[k] = round_half_up(clamp((x[k] - input_offset[k]) * input_inv_scale[k], 0, 255)).
// The per-column scales and offsets are folded into layer 0's weights and bias, and the
// per-channel scales of every hidden activation into the next layer's weights, so every
// matmul sees plain u8 inputs with zero point 0. Layer l computes, per output channel n,
//   y[n] = output_scale[n] * (sum_k weight[n, k] * q[k] + bias[n])
// then ReLU and u8 saturation for hidden layers (y is the next layer's q), or fp32 for the
// last layer (the logit; sigmoid follows in fp32). This is exactly oneDNN's matmul with
// per-column output scales (mask 2), an f32 bias added before the scale, and a ReLU
// post-op. A value type.
#ifndef RECSERVE_ENGINE_QUANTIZED_MLP_H_
#define RECSERVE_ENGINE_QUANTIZED_MLP_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace recserve {

struct QuantizedLayer {
  int in = 0;
  int out = 0;
  std::vector<int8_t> weight;       // [out x in] row-major
  std::vector<float> bias;          // [out], in accumulator units
  std::vector<float> output_scale;  // [out]
  bool relu = false;
};

struct QuantizedMlp {
  std::vector<float> input_offset;     // [in of layer 0]
  std::vector<float> input_inv_scale;  // [in of layer 0]
  std::vector<QuantizedLayer> layers;

  int input_dim() const { return layers.empty() ? 0 : layers.front().in; }
  int64_t WeightBytes() const;
};

// Shapes chain, sizes match, scales finite and positive, last layer [1 x in] without ReLU.
absl::Status ValidateQuantizedMlp(const QuantizedMlp& q);

// Quantizes `rows` fp32 rows into u8 (the ranker's first step; shared with the reference).
void QuantizeInputRows(const QuantizedMlp& q, const float* x, int rows, uint8_t* out);

// Plain-loop emulation of the integer path (int32 accumulation, the same rounding), the
// reference the oneDNN int8 ranker is tested against.
void ReferenceScoreQuantized(const QuantizedMlp& q, absl::Span<const float> rows, int n,
                             absl::Span<float> probabilities);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_QUANTIZED_MLP_H_
