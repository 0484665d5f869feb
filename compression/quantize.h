// int8 quantization of the ranking MLP, calibrated on the bundle's calibration rows.
//
// Weights: per output channel, symmetric s8 (scale = max |w| / 127). Activations: u8,
// per channel, scale = (calibrated max) / 255 after ReLU; the first layer's fp32 inputs
// per column with a scale and an offset (zero point) from their calibrated range. All
// activation scales fold into the weights of the layer that reads them, so oneDNN sees
// plain u8 x s8 products with per-column output scales (see engine/quantized_mlp.h).
// The final logit and the sigmoid stay fp32.
#ifndef RECSERVE_COMPRESSION_QUANTIZE_H_
#define RECSERVE_COMPRESSION_QUANTIZE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "engine/bundle.h"
#include "engine/mlp.h"
#include "engine/quantized_mlp.h"

namespace recserve {

enum class CalibrationMethod { kMax, kPercentile };

struct QuantizeOptions {
  // Hidden activations. kMax: ranges are the calibration maxima. kPercentile: the
  // `percentile` percentile, which ignores rare outliers (values beyond saturate).
  CalibrationMethod method = CalibrationMethod::kMax;
  double percentile = 99.9;
  // The first layer's input columns. Their calibrated range is widened by
  // `input_margin` of its span on each side, because serving traffic drifts past the
  // calibration rows (newer users have longer histories, popularity moves).
  CalibrationMethod input_method = CalibrationMethod::kMax;
  double input_margin = 0.0;
  // Input columns that are the same in every row of a request (RequestConstantColumns of
  // the feature spec): kept in fp32 and added to layer 0's bias once per request.
  std::vector<int> constant_columns;
};

// Quantizes `mlp` with activation ranges measured on `calibration` (rows must match the
// MLP's input width; at least one row).
absl::StatusOr<QuantizedMlp> QuantizeMlp(const Mlp& mlp, const CalibrationSet& calibration,
                                         const QuantizeOptions& options = {});

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_QUANTIZE_H_
