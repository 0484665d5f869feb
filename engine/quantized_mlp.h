// The ranking MLP in int8 form, ready for oneDNN's u8 x s8 matmuls: what compression/
// produces (quantize.h) and the int8 ranker consumes.
//
// Input rows stay fp32 until the ranker quantizes them per column:
//   q[j] = round_half_up(clamp((x[c_j] - input_offset[j]) * input_inv_scale[j], 0, 255))
// for the quantized columns c_j. Request-constant columns (the user's and the context's
// feature blocks: the same in every row of one request) are not quantized at all: layer
// 0 takes them in fp32, once per run of rows that share them, as an addition to its bias:
//   bias_run[n] = bias[n] + sum_i constant_weight[i, n] * x[constant_columns[i]].
// That removes their quantization error and their share of layer 0's multiply-adds.
// The per-column scales and offsets are folded into layer 0's weights and bias, and the
// per-channel scales of every hidden activation into the next layer's weights, so every
// matmul sees plain u8 inputs with zero point 0. Layer l computes, per output channel n,
//   y[n] = output_scale[n] * (sum_k weight[n, k] * q[k] + bias[n])
// then ReLU and u8 saturation for hidden layers (y is the next layer's q), or fp32 for the
// last layer (the logit; sigmoid follows in fp32). This is exactly oneDNN's matmul with
// per-column output scales (mask 2), an f32 bias added before the scale, and a ReLU
// post-op. A value type.
//
// Mixed precision (MixedPrecisionMlp, below): the same network with some layers run in
// fp32 from the original Mlp and the rest int8 from the QuantizedMlp. Where an int8 layer
// feeds an fp32 one it writes fp32 (its output scale times activation_scale); where an fp32
// layer feeds an int8 one its fp32 outputs are quantized per channel to u8 with that same
// activation_scale, so the int8 layer sees exactly the inputs it was quantized for.
#ifndef RECSERVE_ENGINE_QUANTIZED_MLP_H_
#define RECSERVE_ENGINE_QUANTIZED_MLP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/mlp.h"

namespace recserve {

struct QuantizedLayer {
  int in = 0;
  int out = 0;
  std::vector<int8_t> weight;       // [out x in] row-major
  std::vector<float> bias;          // [out], in accumulator units
  std::vector<float> output_scale;  // [out]
  bool relu = false;
  // Hidden layers: the real value of one unit of each u8 output channel (its calibrated
  // range / 255), which output_scale already divides by. Mixed precision needs it to
  // write this layer's outputs in fp32 or to quantize an fp32 layer's outputs for the
  // next layer. Empty on the last layer, and allowed empty on hidden layers (int8 only).
  std::vector<float> activation_scale;
};

// A run of input columns quantized together: x[src, src+len) -> q[dst, dst+len).
struct ColumnSegment {
  int src = 0, dst = 0, len = 0;
};

struct QuantizedMlp {
  int row_width = 0;                   // fp32 input row width (every column)
  std::vector<int> quantized_columns;  // ascending; layer 0's u8 inputs, in this order
  std::vector<int> constant_columns;   // ascending; the rest, taken in fp32
  std::vector<float> input_offset;     // [quantized columns]
  std::vector<float> input_inv_scale;  // [quantized columns]
  std::vector<float> constant_weight;  // [constant columns x layer 0 out], accumulator units
  std::vector<QuantizedLayer> layers;

  int input_dim() const { return row_width; }
  int64_t WeightBytes() const;
  // quantized_columns as contiguous runs (the quantizer's inner loop runs per segment).
  std::vector<ColumnSegment> Segments() const;
  // constant_columns as contiguous runs (src = first column, len; dst unused).
  std::vector<ColumnSegment> ConstantSegments() const;
};

// Shapes chain, sizes match, the two column lists split the row, scales finite and
// positive, last layer [1 x in] without ReLU.
absl::Status ValidateQuantizedMlp(const QuantizedMlp& q);

// Quantizes the quantized columns of `rows` fp32 rows [rows x row_width] into u8
// [rows x layers[0].in] (the ranker's first step; shared with the reference).
void QuantizeInputRows(const QuantizedMlp& q, absl::Span<const ColumnSegment> segments, const float* x,
                       int rows, uint8_t* out);

// Layer 0's bias for rows whose constant columns are those of `row`.
void ConstantBias(const QuantizedMlp& q, const float* row, float* bias);

// True when rows `a` and `b` agree bit for bit on every constant column (`segments` =
// ConstantSegments()).
bool SameConstantColumns(absl::Span<const ColumnSegment> segments, const float* a, const float* b);

// Plain-loop emulation of the integer path (int32 accumulation, the same rounding), the
// reference the oneDNN int8 ranker is tested against.
void ReferenceScoreQuantized(const QuantizedMlp& q, absl::Span<const float> rows, int n,
                             absl::Span<float> probabilities);

// fp32 activations [rows x n] (ReLU outputs, >= 0) to u8 with per-channel 1/scale, zero
// point 0: round_half_up(clamp(x[k] * inv_scale[k], 0, 255)). The mixed-precision
// ranker's step from an fp32 layer to an int8 one.
void QuantizeActivationRows(const float* x, int rows, int n, const float* inv_scale, uint8_t* out);

// A ranking MLP with the layers marked in fp32_layer run in fp32 (from `fp32`) and the
// others int8 (from `int8`, the quantization of the same network). Layer 0 in int8 keeps
// the QuantizedMlp's input quantization and fp32 request-constant columns; layer 0 in fp32
// reads the raw rows. Every int8 layer that follows an fp32 one, and every hidden int8
// layer followed by an fp32 one, needs activation_scale (QuantizeMlp fills it).
struct MixedPrecisionMlp {
  QuantizedMlp int8;
  Mlp fp32;
  std::vector<bool> fp32_layer;  // [layers]

  int input_dim() const { return fp32.input_dim(); }
  // "mixed(int8, layer 0 fp32)", "mixed(int8, layers 0, 2 fp32)": the form's name in
  // status and in Ranker::kind().
  std::string Describe() const;
};

// Both forms valid and of the same shapes (layer 0's int8 input width is its quantized
// columns), one flag per layer, and the activation scales each precision change needs.
absl::Status ValidateMixedPrecisionMlp(const MixedPrecisionMlp& m);

// Plain-loop emulation of the mixed ranker: fp32 layers with float accumulation, int8
// layers as ReferenceScoreQuantized, the same conversions between them.
void ReferenceScoreMixed(const MixedPrecisionMlp& m, absl::Span<const float> rows, int n,
                         absl::Span<float> probabilities);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_QUANTIZED_MLP_H_
