#include "engine/quantized_mlp.h"

#include "engine/cpu_dispatch.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/mlp.h"

namespace recserve {

int64_t QuantizedMlp::WeightBytes() const {
  int64_t bytes = static_cast<int64_t>(input_offset.size() + input_inv_scale.size()) * 4;
  for (const QuantizedLayer& l : layers) {
    bytes += static_cast<int64_t>(l.weight.size()) + 4 * static_cast<int64_t>(l.bias.size() + l.output_scale.size());
  }
  return bytes;
}

absl::Status ValidateQuantizedMlp(const QuantizedMlp& q) {
  if (q.layers.empty()) return absl::InvalidArgumentError("int8 mlp: no layers");
  const size_t in0 = static_cast<size_t>(q.layers.front().in);
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
  }
  return absl::OkStatus();
}

namespace {

// The loop GCC vectorizes (float -> int32 -> u8 packs): clamp, then round half up by
// truncating v + 0.5 (v >= 0 here). Cloned for the vector widths the CPU has.
RECSERVE_VECTOR_CLONES
void QuantizeRowsKernel(const float* __restrict x, int rows, int n, const float* __restrict offset,
                        const float* __restrict inv,
                        uint8_t* __restrict out) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + static_cast<size_t>(r) * n;
    uint8_t* o = out + static_cast<size_t>(r) * n;
    for (int k = 0; k < n; ++k) {
      float v = (xr[k] - offset[k]) * inv[k];
      v = v < 0.f ? 0.f : v;
      v = v > 255.f ? 255.f : v;
      o[k] = static_cast<uint8_t>(static_cast<int32_t>(v + 0.5f));
    }
  }
}

}  // namespace

void QuantizeInputRows(const QuantizedMlp& q, const float* x, int rows, uint8_t* out) {
  QuantizeRowsKernel(x, rows, q.input_dim(), q.input_offset.data(), q.input_inv_scale.data(), out);
}

void ReferenceScoreQuantized(const QuantizedMlp& q, absl::Span<const float> rows, int n,
                             absl::Span<float> probabilities) {
  std::vector<uint8_t> cur, next;
  for (int r = 0; r < n; ++r) {
    cur.resize(q.input_dim());
    QuantizeInputRows(q, &rows[static_cast<size_t>(r) * q.input_dim()], 1, cur.data());
    float logit = 0;
    for (const QuantizedLayer& l : q.layers) {
      next.assign(l.out, 0);
      for (int o = 0; o < l.out; ++o) {
        int32_t acc = 0;
        const int8_t* w = &l.weight[static_cast<size_t>(o) * l.in];
        for (int k = 0; k < l.in; ++k) acc += int32_t{w[k]} * int32_t{cur[k]};
        const float y = l.output_scale[o] * (static_cast<float>(acc) + l.bias[o]);
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

}  // namespace recserve
