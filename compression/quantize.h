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

#include "absl/status/statusor.h"
#include "engine/bundle.h"
#include "engine/mlp.h"
#include "engine/quantized_mlp.h"

namespace recserve {

enum class CalibrationMethod { kMax, kPercentile };

struct QuantizeOptions {
  // kMax: ranges are the calibration min/max. kPercentile: the `percentile` and
  // 100 - `percentile` percentiles, which ignores rare outliers (values beyond saturate).
  CalibrationMethod method = CalibrationMethod::kPercentile;
  double percentile = 99.99;
};

// Quantizes `mlp` with activation ranges measured on `calibration` (rows must match the
// MLP's input width; at least one row).
absl::StatusOr<QuantizedMlp> QuantizeMlp(const Mlp& mlp, const CalibrationSet& calibration,
                                         const QuantizeOptions& options = {});

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_QUANTIZE_H_
