#include "compression/quantize.h"

#include <algorithm>
#include <cmath>

#include <oneapi/dnnl/dnnl.hpp>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

// Count, sum and sum of squares of a set of values: enough for the squared distance of
// all of them to any one point.
struct Moments {
  double count = 0, sum = 0, sum_sq = 0;
  void Add(double x, double times = 1) {
    count += times;
    sum += times * x;
    sum_sq += times * x * x;
  }
  void Add(const Moments& m) {
    count += m.count;
    sum += m.sum;
    sum_sq += m.sum_sq;
  }
  // sum over the values of (x - b)^2.
  double SquaredDistanceTo(double b) const { return std::max(0.0, sum_sq - 2 * b * sum + b * b * count); }
};

// kMse for one column (see CalibrationMethod): the [lo, hi] with the least rounding
// ((hi - lo) / 255)^2 / 12 per value inside plus clipping (x - bound)^2 per value outside.
// `zero_floor`: ReLU outputs (>= 0), range [0, hi], only hi is searched; exact zeros are
// exact in u8 and cost nothing. Candidates are the edges of a 1024-bin histogram over a
// window, first [min, max], each bin's values taken at its centre (at most half a bin
// off); when the best range is under a quarter of the window (a far outlier squeezed the
// bulk into a few bins), the window zooms in around it and the search runs again (at
// most 3 passes), the values outside the window kept exactly. One counting pass over the
// column per pass and O(bins) candidates: this runs for every input column and hidden
// channel at every model load.
class MseRangeSearch {
 public:
  std::pair<float, float> Run(const float* v, size_t n, bool zero_floor) {
    auto [min_it, max_it] = std::minmax_element(v, v + n);
    double a = zero_floor ? 0.0 : *min_it, b = *max_it;
    if (!(b > a)) return {static_cast<float>(a), static_cast<float>(b)};
    double lo = a, hi = b;
    for (int pass = 0; pass < 3; ++pass) {
      const double w = (b - a) / kBins;
      const float fa = static_cast<float>(a), fb = static_cast<float>(b), inv_w = static_cast<float>(kBins / (b - a));
      // A window float cannot bin (a subnormal width: kBins / width overflows; an
      // infinite one) would turn bin indices into NaN: keep the range found so far (the
      // column's own [min, max] on the first pass).
      if (!std::isfinite(inv_w) || !(inv_w > 0)) break;
      // counts_[kBins]: the exact zeros of ReLU outputs.
      counts_.assign(kBins + 1, 0);
      Moments under, over;
      if (pass == 0) {
        // Every value is inside [min, max]. No branch on the value: ReLU outputs are zero
        // at random, which a branch would mispredict half the time.
        // Indices first (a loop the compiler vectorizes), then the increments.
        index_.resize(n);
        for (size_t i = 0; i < n; ++i) {
          const float x = v[i];
          const int k = std::min(kBins - 1, static_cast<int>((x - fa) * inv_w));
          index_[i] = zero_floor && x <= 0.f ? kBins : k;
        }
        for (size_t i = 0; i < n; ++i) ++counts_[index_[i]];
      } else {
        for (size_t i = 0; i < n; ++i) {
          const float x = v[i];
          if (zero_floor && x <= 0.f) {
            ++counts_[kBins];
          } else if (x < fa) {
            under.Add(x);
          } else if (x > fb) {
            over.Add(x);
          } else {
            ++counts_[std::min(kBins - 1, static_cast<int>((x - fa) * inv_w))];
          }
        }
      }
      const double zeros = counts_[kBins];
      // below_[i]: the values under edge i (a + i w); above_[j]: the values over edge j.
      below_.assign(kBins + 1, Moments());
      above_.assign(kBins + 1, Moments());
      below_[0] = under;
      for (int i = 0; i < kBins; ++i) (below_[i + 1] = below_[i]).Add(a + (i + 0.5) * w, counts_[i]);
      above_[kBins] = over;
      for (int j = kBins - 1; j >= 0; --j) (above_[j] = above_[j + 1]).Add(a + (j + 0.5) * w, counts_[j]);
      const double total = static_cast<double>(n) - zeros;
      constexpr double kRounding = 1.0 / (255.0 * 255.0 * 12.0);  // per value, per squared span
      auto cost = [&](int i, int j) {
        // ReLU outputs: everything under the window is inside [0, hi].
        const double lo_v = zero_floor ? 0.0 : a + i * w, hi_v = a + j * w;
        const Moments& head = zero_floor ? none_ : below_[i];
        const double inside = total - head.count - above_[j].count;
        return (hi_v - lo_v) * (hi_v - lo_v) * kRounding * inside + head.SquaredDistanceTo(lo_v) +
               above_[j].SquaredDistanceTo(hi_v);
      };
      auto best_hi = [&](int i) {
        int best = kBins;
        double best_cost = cost(i, kBins);
        for (int j = kBins - 1; j > i; --j) {
          const double c = cost(i, j);
          if (c < best_cost) best = j, best_cost = c;
        }
        return best;
      };
      auto best_lo = [&](int j) {
        int best = 0;
        double best_cost = cost(0, j);
        for (int i = 1; i < j; ++i) {
          const double c = cost(i, j);
          if (c < best_cost) best = i, best_cost = c;
        }
        return best;
      };
      int i = 0, j = best_hi(0);
      if (!zero_floor) {
        i = best_lo(j);
        j = best_hi(i);
      }
      // The window's own edges are exact (min, max, or where the last pass put them).
      lo = zero_floor ? 0.0 : i == 0 ? a : a + i * w;
      hi = j == kBins ? b : a + j * w;
      // Zoom in only when it pays: the best range is a small part of the window.
      const double next_a = zero_floor ? a : std::max(a, lo - 2 * w), next_b = std::min(b, hi + 2 * w);
      if (next_b - next_a > 0.25 * (b - a)) break;
      a = next_a;
      b = next_b;
    }
    return {static_cast<float>(lo), static_cast<float>(hi)};
  }

 private:
  static constexpr int kBins = 1024;
  const Moments none_{};  // {}: clang refuses a const member of a type without a user-provided constructor uninitialized
  std::vector<uint32_t> counts_;
  std::vector<int32_t> index_;
  std::vector<Moments> below_, above_;
};

// The [lo, hi] range of each column in `cols` of a [rows x width] matrix by the chosen
// method. The columns are first copied out in blocks of rows (one pass over the matrix
// instead of a strided walk per column, which cost most of a load's CPU).
// `zero_floor`: the columns are ReLU outputs, quantized on [0, hi] (only hi is used).
std::vector<std::pair<float, float>> ColumnRanges(const std::vector<float>& m, int rows, int width,
                                                  const std::vector<int>& cols, const QuantizeOptions& o,
                                                  bool zero_floor) {
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
  MseRangeSearch mse;
  for (size_t j = 0; j < cols.size(); ++j) {
    float* begin = &columns[j * n];
    float* end = begin + n;
    if (o.method == CalibrationMethod::kMse && rows >= 2) {
      ranges[j] = mse.Run(begin, n, zero_floor);
      continue;
    }
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

// The real value of one quantization step of a range `span` wide over `steps` steps; 1
// for an empty span or one so narrow (subnormal) that 1 / step would overflow a float.
float StepOf(float span, float steps) {
  const float step = span / steps;
  return step > 0 && std::isfinite(1.f / step) ? step : 1.f;
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
      ColumnRanges(cal.features, rows, in0, q.quantized_columns, input_options, /*zero_floor=*/false);
  for (int j = 0; j < nq; ++j) {
    auto [lo, hi] = input_ranges[j];
    const float margin = static_cast<float>(options.input_margin) * (hi - lo);
    lo -= margin;
    hi += margin;
    in_scale[j] = StepOf(hi - lo, 255.f);
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
      // Ranges of NaN or infinite outputs would be nonsense (and NaN breaks their sorts).
      if (auto bad = std::find_if(next.begin(), next.end(), [](float v) { return !std::isfinite(v); });
          bad != next.end()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "quantize: layer %d's output %d on calibration row %d is %g; the fp32 ranker's arithmetic overflows on "
            "these rows",
            li, (bad - next.begin()) % l.out, (bad - next.begin()) / l.out, *bad));
      }
      std::vector<int> all(l.out);
      for (int o = 0; o < l.out; ++o) all[o] = o;
      const std::vector<std::pair<float, float>> out_ranges = ColumnRanges(next, rows, l.out, all, options, /*zero_floor=*/true);
      for (int o = 0; o < l.out; ++o) {
        out_scale[o] = StepOf(out_ranges[o].second, 255.f);
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
      const float w_scale = StepOf(max_abs, 127.f);
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
    if (l.relu) ql.activation_scale = out_scale;
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
