#include "compression/quantize.h"

#include <algorithm>
#include <cmath>

#include <oneapi/dnnl/dnnl.hpp>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

// The [lo, hi] range of each column in `cols` of a [rows x width] matrix by the chosen
// method. The columns are first copied out in blocks of rows (one pass over the matrix
// instead of a strided walk per column, which cost most of a load's CPU).
std::vector<std::pair<float, float>> ColumnRanges(const std::vector<float>& m, int rows, int width,
                                                  const std::vector<int>& cols, const QuantizeOptions& o) {
  const size_t n = static_cast<size_t>(rows);
  std::vector<float> columns(cols.size() * n);
  constexpr int kBlock = 64;
  for (int r0 = 0; r0 < rows; r0 += kBlock) {
    const int r1 = std::min(rows, r0 + kBlock);
    for (size_t j = 0; j < cols.size(); ++j) {
      float* out = &columns[j * n];
      for (int r = r0; r < r1; ++r) out[r] = m[static_cast<size_t>(r) * width + cols[j]];
    }
  }
  std::vector<std::pair<float, float>> ranges(cols.size());
  const double tail = (100.0 - o.percentile) / 100.0;
  const size_t lo_i = static_cast<size_t>(std::floor(tail * (rows - 1)));
  const size_t hi_i = static_cast<size_t>(std::ceil((1.0 - tail) * (rows - 1)));
  for (size_t j = 0; j < cols.size(); ++j) {
    float* begin = &columns[j * n];
    float* end = begin + n;
    if (o.method == CalibrationMethod::kMax || rows < 2) {
      auto [lo, hi] = std::minmax_element(begin, end);
      ranges[j] = {*lo, *hi};
      continue;
    }
    std::nth_element(begin, begin + lo_i, end);
    const float lo = begin[lo_i];
    // Everything past lo_i is >= lo, and hi_i >= lo_i: the second pass needs only that part.
    std::nth_element(begin + lo_i, begin + hi_i, end);
    ranges[j] = {lo, begin[hi_i]};
  }
  return ranges;
}

// fp32 forward of one layer over all rows: out = act(in W^T + b), on oneDNN's sgemm
// (calibration runs at every model load; plain loops took most of a second).
std::vector<float> Forward(const DenseLayer& l, const std::vector<float>& in, int rows) {
  std::vector<float> out(static_cast<size_t>(rows) * l.out);
  for (int r = 0; r < rows; ++r) std::copy(l.bias.begin(), l.bias.end(), &out[static_cast<size_t>(r) * l.out]);
  dnnl::sgemm('N', 'T', rows, l.out, l.in, 1.f, in.data(), l.in, l.weight.data(), l.in, 1.f, out.data(), l.out);
  if (l.relu) {
    for (float& v : out) v = std::max(v, 0.f);
  }
  return out;
}

}  // namespace

absl::StatusOr<QuantizedMlp> QuantizeMlp(const Mlp& mlp, const CalibrationSet& cal,
                                         const QuantizeOptions& options) {
  RETURN_IF_ERROR(ValidateMlp(mlp));
  if (cal.rows < 1 || cal.width != mlp.input_dim() ||
      cal.features.size() != static_cast<size_t>(cal.rows) * cal.width) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "quantize: calibration has %d rows of width %d; the ranker takes %d inputs", cal.rows,
        cal.width, mlp.input_dim()));
  }
  if (!(options.percentile > 50 && options.percentile <= 100)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("quantize: percentile %g is outside (50, 100]", options.percentile));
  }
  QuantizedMlp q;
  const int rows = cal.rows;

  // Which input columns are quantized and which stay fp32 (request-constant).
  const int in0 = mlp.input_dim();
  q.row_width = in0;
  q.constant_columns = options.constant_columns;
  std::vector<bool> constant(in0, false);
  for (size_t i = 0; i < q.constant_columns.size(); ++i) {
    const int c = q.constant_columns[i];
    if (c < 0 || c >= in0 || (i > 0 && c <= q.constant_columns[i - 1])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "quantize: constant column %d is out of [0, %d) or out of order", c, in0));
    }
    constant[c] = true;
  }
  for (int c = 0; c < in0; ++c) {
    if (!constant[c]) q.quantized_columns.push_back(c);
  }
  if (q.quantized_columns.empty()) {
    return absl::InvalidArgumentError("quantize: every input column is constant; nothing to quantize");
  }

  // Per-column input ranges of the quantized columns; x = scale * u8 + offset.
  const int nq = static_cast<int>(q.quantized_columns.size());
  std::vector<float> in_scale(nq);
  q.input_offset.resize(nq);
  q.input_inv_scale.resize(nq);
  QuantizeOptions input_options = options;
  input_options.method = options.input_method;
  const std::vector<std::pair<float, float>> input_ranges =
      ColumnRanges(cal.features, rows, in0, q.quantized_columns, input_options);
  for (int j = 0; j < nq; ++j) {
    auto [lo, hi] = input_ranges[j];
    const float margin = static_cast<float>(options.input_margin) * (hi - lo);
    lo -= margin;
    hi += margin;
    const float span = hi - lo;
    in_scale[j] = span > 0 ? span / 255.f : 1.f;
    q.input_offset[j] = lo;
    q.input_inv_scale[j] = 1.f / in_scale[j];
  }

  // The current layer's fp32 inputs [rows x width] and, for each of its u8 inputs j, the
  // column it reads (layer 0: the quantized columns; later layers: all, in order), the
  // real value per u8 unit and the real value at u8 zero.
  std::vector<float> activations = cal.features;
  int width = in0;
  std::vector<int> cols = q.quantized_columns;
  std::vector<float> col_scale = in_scale;
  std::vector<float> col_offset = q.input_offset;
  // Mean u8 value of each input over the calibration rows: weight rounding errors times
  // this mean are a constant per channel, which the bias absorbs ("bias correction"),
  // leaving only the error around the mean.
  auto column_means = [&] {
    // u8 values are whole numbers: summed in int64 they are exact, and the loop has no
    // floor() call or double dependency chain (it was a third of a small model's load).
    std::vector<int64_t> sum(cols.size(), 0);
    std::vector<float> inv_scale(cols.size());
    for (size_t j = 0; j < cols.size(); ++j) inv_scale[j] = 1.f / col_scale[j];
    for (int r = 0; r < rows; ++r) {
      const float* row = &activations[static_cast<size_t>(r) * width];
      for (size_t j = 0; j < cols.size(); ++j) {
        float u = (row[cols[j]] - col_offset[j]) * inv_scale[j];
        u = u > 0.f ? u : 0.f;  // written so the compiler emits maxss/minss, not branches:
        u = u < 255.f ? u : 255.f;  // ReLU outputs are zero half the time at random
        sum[j] += static_cast<int32_t>(u + 0.5f);  // u >= 0: truncation rounds
      }
    }
    std::vector<double> mean(cols.size());
    for (size_t j = 0; j < cols.size(); ++j) mean[j] = static_cast<double>(sum[j]) / rows;
    return mean;
  };
  for (size_t li = 0; li < mlp.layers.size(); ++li) {
    const DenseLayer& l = mlp.layers[li];
    const int nin = static_cast<int>(cols.size());
    QuantizedLayer ql;
    ql.in = nin;
    ql.out = l.out;
    ql.relu = l.relu;
    ql.weight.resize(static_cast<size_t>(nin) * l.out);
    ql.bias.resize(l.out);
    ql.output_scale.resize(l.out);

    const std::vector<double> in_mean = column_means();
    // Output ranges (fp32, after ReLU) for hidden layers.
    std::vector<float> out_scale(l.out, 1.f);
    std::vector<float> next;
    if (l.relu) {
      next = Forward(l, activations, rows);
      std::vector<int> all(l.out);
      for (int o = 0; o < l.out; ++o) all[o] = o;
      const std::vector<std::pair<float, float>> out_ranges = ColumnRanges(next, rows, l.out, all, options);
      for (int o = 0; o < l.out; ++o) {
        const float hi = out_ranges[o].second;
        out_scale[o] = hi > 0 ? hi / 255.f : 1.f;
      }
    }
    for (int o = 0; o < l.out; ++o) {
      // Fold the input's per-column scale and offset into this channel's row.
      const float* w = &l.weight[static_cast<size_t>(o) * l.in];
      double bias = l.bias[o];
      float max_abs = 0;
      for (int j = 0; j < nin; ++j) {
        bias += static_cast<double>(w[cols[j]]) * col_offset[j];
        max_abs = std::max(max_abs, std::abs(w[cols[j]] * col_scale[j]));
      }
      const float w_scale = max_abs > 0 ? max_abs / 127.f : 1.f;
      int8_t* qw = &ql.weight[static_cast<size_t>(o) * nin];
      double correction = 0;
      for (int j = 0; j < nin; ++j) {
        const float exact = w[cols[j]] * col_scale[j] / w_scale;
        const float v = std::nearbyint(exact);
        qw[j] = static_cast<int8_t>(std::min(127.f, std::max(-127.f, v)));
        correction += (static_cast<double>(exact) - qw[j]) * in_mean[j];
      }
      ql.bias[o] = static_cast<float>(bias / w_scale + correction);
      ql.output_scale[o] = l.relu ? w_scale / out_scale[o] : w_scale;
      if (li == 0) {
        // The constant columns' weights, in accumulator units (fp32, not rounded),
        // column-major so the per-request bias is a run of vector multiply-adds.
        q.constant_weight.resize(q.constant_columns.size() * l.out);
        for (size_t i = 0; i < q.constant_columns.size(); ++i) {
          q.constant_weight[i * l.out + o] = w[q.constant_columns[i]] / w_scale;
        }
      }
    }
    q.layers.push_back(std::move(ql));
    if (l.relu) {
      activations = std::move(next);
      width = l.out;
      cols.resize(l.out);
      for (int k = 0; k < l.out; ++k) cols[k] = k;
      col_scale = out_scale;
      col_offset.assign(l.out, 0.f);
    }
  }
  RETURN_IF_ERROR(ValidateQuantizedMlp(q));
  return q;
}

}  // namespace recserve
