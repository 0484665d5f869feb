#include "engine/quantized_mlp.h"

#include "engine/cpu_dispatch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/mlp.h"

namespace recserve {

int64_t QuantizedMlp::WeightBytes() const {
  int64_t bytes = static_cast<int64_t>(input_offset.size() + input_inv_scale.size() + constant_weight.size()) * 4;
  for (const QuantizedLayer& l : layers) {
    bytes += static_cast<int64_t>(l.weight.size()) + 4 * static_cast<int64_t>(l.bias.size() + l.output_scale.size());
  }
  return bytes;
}

namespace {

std::vector<ColumnSegment> ToSegments(const std::vector<int>& columns) {
  std::vector<ColumnSegment> segments;
  for (int j = 0; j < static_cast<int>(columns.size()); ++j) {
    const int c = columns[j];
    if (!segments.empty() && segments.back().src + segments.back().len == c) {
      ++segments.back().len;
    } else {
      segments.push_back({c, j, 1});
    }
  }
  return segments;
}

}  // namespace

std::vector<ColumnSegment> QuantizedMlp::Segments() const { return ToSegments(quantized_columns); }
std::vector<ColumnSegment> QuantizedMlp::ConstantSegments() const { return ToSegments(constant_columns); }

absl::Status ValidateQuantizedMlp(const QuantizedMlp& q) {
  if (q.layers.empty()) return absl::InvalidArgumentError("int8 mlp: no layers");
  const size_t in0 = static_cast<size_t>(q.layers.front().in);
  if (q.quantized_columns.size() != in0 ||
      q.quantized_columns.size() + q.constant_columns.size() != static_cast<size_t>(q.row_width) ||
      q.constant_weight.size() != q.constant_columns.size() * static_cast<size_t>(q.layers.front().out)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "int8 mlp: %d quantized + %d constant columns for rows of %d, layer 0 takes %d",
        q.quantized_columns.size(), q.constant_columns.size(), q.row_width, in0));
  }
  std::vector<int> seen(q.row_width, 0);
  for (const std::vector<int>* cols : {&q.quantized_columns, &q.constant_columns}) {
    for (size_t i = 0; i < cols->size(); ++i) {
      const int c = (*cols)[i];
      if (c < 0 || c >= q.row_width || seen[c]++ || (i > 0 && c <= (*cols)[i - 1])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "int8 mlp: column %d is out of range, repeated or out of order", c));
      }
    }
  }
  for (float w : q.constant_weight) {
    if (!std::isfinite(w)) return absl::InvalidArgumentError("int8 mlp: a constant-column weight is not finite");
  }
  if (q.input_offset.size() != in0 || q.input_inv_scale.size() != in0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "int8 mlp: input quantization has %d offsets and %d scales for %d inputs",
        q.input_offset.size(), q.input_inv_scale.size(), in0));
  }
  for (size_t k = 0; k < in0; ++k) {
    if (!std::isfinite(q.input_offset[k]) || !(q.input_inv_scale[k] > 0) ||
        !std::isfinite(q.input_inv_scale[k])) {
      return absl::InvalidArgumentError(absl::StrFormat("int8 mlp: bad input quantization at column %d", k));
    }
  }
  for (size_t i = 0; i < q.layers.size(); ++i) {
    const QuantizedLayer& l = q.layers[i];
    const bool last = i + 1 == q.layers.size();
    if (l.in <= 0 || l.out <= 0 || l.weight.size() != static_cast<size_t>(l.in) * l.out ||
        l.bias.size() != static_cast<size_t>(l.out) || l.output_scale.size() != static_cast<size_t>(l.out)) {
      return absl::InvalidArgumentError(absl::StrFormat("int8 mlp layer %d: sizes do not match [%d x %d]", i, l.out, l.in));
    }
    if (i > 0 && q.layers[i - 1].out != l.in) {
      return absl::InvalidArgumentError(absl::StrFormat("int8 mlp layer %d: shapes do not chain", i));
    }
    if (last != !l.relu || (last && l.out != 1)) {
      return absl::InvalidArgumentError(absl::StrFormat("int8 mlp layer %d: ReLU on hidden layers only, last is [1 x in]", i));
    }
    for (int n = 0; n < l.out; ++n) {
      if (!std::isfinite(l.bias[n]) || !std::isfinite(l.output_scale[n]) || !(l.output_scale[n] > 0)) {
        return absl::InvalidArgumentError(absl::StrFormat("int8 mlp layer %d: bad scale or bias at channel %d", i, n));
      }
    }
    if (!l.activation_scale.empty()) {
      if (last || l.activation_scale.size() != static_cast<size_t>(l.out)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "int8 mlp layer %d: %d activation scales for %d outputs (hidden layers only)", i,
            l.activation_scale.size(), l.out));
      }
      for (int n = 0; n < l.out; ++n) {
        if (!std::isfinite(l.activation_scale[n]) || !(l.activation_scale[n] > 0)) {
          return absl::InvalidArgumentError(
              absl::StrFormat("int8 mlp layer %d: bad activation scale at channel %d", i, n));
        }
      }
    }
  }
  return absl::OkStatus();
}

namespace {

// The loop GCC vectorizes (float -> int32 -> u8 packs): clamp, then round half up by
// truncating v + 0.5 (v >= 0 here). Cloned for the vector widths the CPU has.
RECSERVE_VECTOR_CLONES
void QuantizeRowsKernel(const float* __restrict x, int rows, int n, size_t x_stride, const float* __restrict offset,
                        const float* __restrict inv, uint8_t* __restrict out, size_t out_stride) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    uint8_t* o = out + r * out_stride;
    for (int k = 0; k < n; ++k) {
      float v = (xr[k] - offset[k]) * inv[k];
      v = v < 0.f ? 0.f : v;
      v = v > 255.f ? 255.f : v;
      o[k] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
    }
  }
}

// The same for activations: zero point 0, no offset.
RECSERVE_VECTOR_CLONES
void QuantizeActivationsKernel(const float* __restrict x, int rows, int n, const float* __restrict inv,
                               uint8_t* __restrict out) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * n;
    uint8_t* o = out + static_cast<size_t>(r) * n;
    for (int k = 0; k < n; ++k) {
      float v = xr[k] * inv[k];
      v = v < 0.f ? 0.f : v;
      v = v > 255.f ? 255.f : v;
      o[k] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
    }
  }
}

// out[n] += w[n] * x, vectorized.
RECSERVE_VECTOR_CLONES
void AddScaled(const float* __restrict w, float x, int n, float* __restrict out) {
  for (int k = 0; k < n; ++k) out[k] += w[k] * x;
}

}  // namespace

void QuantizeInputRows(const QuantizedMlp& q, absl::Span<const ColumnSegment> segments, const float* x,
                       int rows, uint8_t* out) {
  const size_t in = q.quantized_columns.size();
  for (const ColumnSegment& s : segments) {
    QuantizeRowsKernel(x + s.src, rows, s.len, q.row_width, q.input_offset.data() + s.dst,
                       q.input_inv_scale.data() + s.dst, out + s.dst, in);
  }
}

void ConstantBias(const QuantizedMlp& q, const float* row, float* bias) {
  const QuantizedLayer& l0 = q.layers.front();
  std::copy(l0.bias.begin(), l0.bias.end(), bias);
  for (size_t i = 0; i < q.constant_columns.size(); ++i) {
    AddScaled(&q.constant_weight[i * l0.out], row[q.constant_columns[i]], l0.out, bias);
  }
}

void QuantizeActivationRows(const float* x, int rows, int n, const float* inv_scale, uint8_t* out) {
  QuantizeActivationsKernel(x, rows, n, inv_scale, out);
}

bool SameConstantColumns(absl::Span<const ColumnSegment> segments, const float* a, const float* b) {
  for (const ColumnSegment& s : segments) {
    if (std::memcmp(a + s.src, b + s.src, s.len * sizeof(float)) != 0) return false;
  }
  return true;
}

void ReferenceScoreQuantized(const QuantizedMlp& q, absl::Span<const float> rows, int n,
                             absl::Span<float> probabilities) {
  const std::vector<ColumnSegment> segments = q.Segments();
  std::vector<uint8_t> cur, next;
  std::vector<float> bias0(q.layers.front().out);
  for (int r = 0; r < n; ++r) {
    const float* row = &rows[static_cast<size_t>(r) * q.row_width];
    cur.resize(q.layers.front().in);
    QuantizeInputRows(q, segments, row, 1, cur.data());
    ConstantBias(q, row, bias0.data());
    float logit = 0;
    for (size_t li = 0; li < q.layers.size(); ++li) {
      const QuantizedLayer& l = q.layers[li];
      const float* bias = li == 0 ? bias0.data() : l.bias.data();
      next.assign(l.out, 0);
      for (int o = 0; o < l.out; ++o) {
        int32_t acc = 0;
        const int8_t* w = &l.weight[static_cast<size_t>(o) * l.in];
        for (int k = 0; k < l.in; ++k) acc += int32_t{w[k]} * int32_t{cur[k]};
        const float y = l.output_scale[o] * (static_cast<float>(acc) + bias[o]);
        if (l.relu) {
          next[o] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, std::nearbyint(y))));
        } else {
          logit = y;
        }
      }
      cur.swap(next);
    }
    probabilities[r] = Sigmoid(logit);
  }
}

std::string MixedPrecisionMlp::Describe() const {
  std::vector<int> layers;
  for (size_t i = 0; i < fp32_layer.size(); ++i) {
    if (fp32_layer[i]) layers.push_back(static_cast<int>(i));
  }
  return absl::StrCat("mixed(int8, layer", layers.size() == 1 ? " " : "s ", absl::StrJoin(layers, ", "), " fp32)");
}

absl::Status ValidateMixedPrecisionMlp(const MixedPrecisionMlp& m) {
  if (absl::Status s = ValidateMlp(m.fp32); !s.ok()) return s;
  if (absl::Status s = ValidateQuantizedMlp(m.int8); !s.ok()) return s;
  const size_t layers = m.fp32.layers.size();
  if (m.int8.layers.size() != layers || m.fp32_layer.size() != layers || m.int8.row_width != m.fp32.input_dim()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "mixed mlp: %d fp32 layers, %d int8 layers and %d precision flags; rows of %d and %d", layers,
        m.int8.layers.size(), m.fp32_layer.size(), m.fp32.input_dim(), m.int8.row_width));
  }
  for (size_t i = 0; i < layers; ++i) {
    const DenseLayer& f = m.fp32.layers[i];
    const QuantizedLayer& q = m.int8.layers[i];
    if (f.out != q.out || (i > 0 && f.in != q.in) || f.relu != q.relu) {
      return absl::InvalidArgumentError(absl::StrFormat("mixed mlp layer %d: the fp32 and int8 forms differ in shape", i));
    }
    const bool last = i + 1 == layers;
    // An int8 layer after an fp32 one reads the fp32 layer's outputs quantized with that
    // layer's activation scales; a hidden int8 layer before an fp32 one writes real values.
    const bool needs_scale = !last && (m.fp32_layer[i] ? !m.fp32_layer[i + 1] : m.fp32_layer[i + 1]);
    if (needs_scale && q.activation_scale.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "mixed mlp layer %d: changes precision to layer %d but has no activation scales", i, i + 1));
    }
  }
  return absl::OkStatus();
}

void ReferenceScoreMixed(const MixedPrecisionMlp& m, absl::Span<const float> rows, int n,
                         absl::Span<float> probabilities) {
  const QuantizedMlp& q = m.int8;
  const std::vector<ColumnSegment> segments = q.Segments();
  const size_t layers = m.fp32.layers.size();
  std::vector<uint8_t> u8_in, u8_out;
  std::vector<float> f32_in, f32_out, bias0(q.layers.front().out), inv;
  for (int r = 0; r < n; ++r) {
    const float* row = &rows[static_cast<size_t>(r) * q.row_width];
    float logit = 0;
    f32_in.assign(row, row + q.row_width);
    for (size_t li = 0; li < layers; ++li) {
      const bool last = li + 1 == layers;
      if (m.fp32_layer[li]) {
        const DenseLayer& l = m.fp32.layers[li];
        f32_out.assign(l.out, 0.f);
        for (int o = 0; o < l.out; ++o) {
          double acc = l.bias[o];
          for (int k = 0; k < l.in; ++k) acc += static_cast<double>(l.weight[static_cast<size_t>(o) * l.in + k]) * f32_in[k];
          f32_out[o] = l.relu ? std::max(0.f, static_cast<float>(acc)) : static_cast<float>(acc);
        }
        if (last) logit = f32_out[0];
        f32_in.swap(f32_out);
        continue;
      }
      const QuantizedLayer& l = q.layers[li];
      if (li == 0) {
        u8_in.resize(l.in);
        QuantizeInputRows(q, segments, row, 1, u8_in.data());
        ConstantBias(q, row, bias0.data());
      } else if (m.fp32_layer[li - 1]) {
        const std::vector<float>& scale = q.layers[li - 1].activation_scale;
        inv.resize(scale.size());
        for (size_t k = 0; k < scale.size(); ++k) inv[k] = 1.f / scale[k];
        u8_in.resize(l.in);
        QuantizeActivationRows(f32_in.data(), 1, l.in, inv.data(), u8_in.data());
      }
      const float* bias = li == 0 ? bias0.data() : l.bias.data();
      const bool real_out = !last && m.fp32_layer[li + 1];
      u8_out.assign(l.out, 0);
      f32_out.assign(l.out, 0.f);
      for (int o = 0; o < l.out; ++o) {
        int32_t acc = 0;
        const int8_t* w = &l.weight[static_cast<size_t>(o) * l.in];
        for (int k = 0; k < l.in; ++k) acc += int32_t{w[k]} * int32_t{u8_in[k]};
        if (last) {
          logit = l.output_scale[o] * (static_cast<float>(acc) + bias[o]);
        } else if (real_out) {
          const float scale = l.output_scale[o] * l.activation_scale[o];
          f32_out[o] = std::max(0.f, scale * (static_cast<float>(acc) + bias[o]));
        } else {
          const float y = l.output_scale[o] * (static_cast<float>(acc) + bias[o]);
          u8_out[o] = static_cast<uint8_t>(std::min(255.f, std::max(0.f, std::nearbyint(y))));
        }
      }
      if (real_out) {
        f32_in.swap(f32_out);
      } else {
        u8_in.swap(u8_out);
      }
    }
    probabilities[r] = Sigmoid(logit);
  }
}

}  // namespace recserve
