#include "engine/ranker.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/onednn_util.h"
#include "engine/quantized_mlp.h"
#include "engine/status_macros.h"

namespace recserve {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

absl::Status ValidateBuckets(const std::vector<int>& buckets) {
  if (buckets.empty()) return absl::InvalidArgumentError("ranker: no batch buckets");
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] < 1 || buckets[i] > 65536 || (i > 0 && buckets[i] <= buckets[i - 1])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "ranker: batch buckets must ascend within [1, 65536]; bucket %d is %d", i, buckets[i]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ScoreAll(const Ranker& ranker, absl::Span<const float> rows, int n) {
  const int width = ranker.input_dim();
  if (rows.size() != static_cast<size_t>(n) * width) {
    return absl::InvalidArgumentError(absl::StrFormat("score: %d values are not %d rows of %d", rows.size(), n, width));
  }
  const int chunk = ranker.buckets().back();
  std::vector<float> buffer(static_cast<size_t>(chunk) * width);
  std::vector<float> scores(n);
  auto scratch = ranker.NewScratch();
  for (int start = 0; start < n; start += chunk) {
    const int len = std::min(chunk, n - start);
    std::copy(rows.begin() + static_cast<size_t>(start) * width,
              rows.begin() + static_cast<size_t>(start + len) * width, buffer.begin());
    RETURN_IF_ERROR(ranker.Score(buffer.data(), len, &scores[start], scratch.get()));
  }
  return scores;
}

int Ranker::BucketFor(int n) const {
  for (int b : buckets_) {
    if (b >= n) return b;
  }
  return buckets_.back();
}

int Ranker::PaddedRows(int n) const {
  const int largest = buckets_.back();
  const int full = n / largest, rest = n % largest;
  return full * largest + (rest ? BucketFor(rest) : 0);
}

namespace {

// One layer as oneDNN will run it; weights [out x in] row-major in the user's memory
// until reordered at creation.
struct LayerPlan {
  int in = 0, out = 0;
  bool relu = false;
  dt src = dt::f32, dst = dt::f32, wei = dt::f32;
  std::vector<float> output_scales;  // per column (mask 2); empty = none
  const void* weights = nullptr;
  const float* bias = nullptr;
};

class OneDnnScratch : public RankerScratch {
 public:
  dnnl::stream stream;
  std::vector<uint8_t> input;   // int8: the quantized rows; fp32: unused (caller's rows)
  std::vector<uint8_t> act[2];  // hidden activations (f32 or u8)
  std::vector<float> logits;    // last layer's output
  std::vector<float> bias0;     // int8: layer 0's bias for the current run of rows
  std::vector<uint8_t> requant;  // mixed: an fp32 layer's outputs quantized for the next
  std::vector<uint8_t> scratchpad;
  // [bucket][layer]: argument maps bound to the buffers above (layer 0's source is
  // rebound per call for fp32).
  std::vector<std::vector<std::unordered_map<int, memory>>> args;
};

// What both rankers share: matmul primitives per batch bucket and layer (bias and ReLU
// fused, scales fixed at creation), weights reordered once, and per-thread scratch.
// The last layer writes fp32 logits; the sigmoid is ours.
class OneDnnRanker : public Ranker {
 public:
  std::unique_ptr<RankerScratch> NewScratch() const override;
  int64_t weight_bytes() const override { return weight_bytes_; }
  double weight_sparsity() const override { return sparsity_; }
  int64_t macs_per_row() const override { return macs_; }

 protected:
  absl::Status Build(const std::vector<LayerPlan>& layers, const std::vector<int>& buckets,
                     int64_t zero_weights, const char* what);
  // Scores `n` rows already in place for layer 0 (`src` for fp32; the scratch's input
  // for int8) with the primitives of bucket `bi`.
  void Run(size_t bi, void* src, int n, float* probabilities, OneDnnScratch* s) const;
  // Run for mixed precision: before each layer with requantize_inv_scale_ set, the
  // previous layer's fp32 outputs are quantized into the scratch's requant buffer.
  void RunMixed(size_t bi, void* src, int n, float* probabilities, OneDnnScratch* s) const;

  size_t input_bytes_per_row_ = 0;  // int8 only: bytes of one quantized input row
  bool bias0_per_call_ = false;     // int8 only: layer 0's bias is the scratch's bias0
  int64_t weight_bytes_ = 0;
  // Mixed only, [layer]: 1/scale per input channel of an int8 layer that reads an fp32
  // layer's outputs (its source is then the scratch's requant buffer); empty otherwise.
  std::vector<std::vector<float>> requantize_inv_scale_;

 private:
  struct Step {
    dnnl::matmul primitive;
    memory::desc src_md, dst_md;
    memory weights, bias;
  };
  int max_width_ = 0;
  size_t scratchpad_bytes_ = 0;
  double sparsity_ = 0;
  int64_t macs_ = 0;
  std::vector<std::vector<Step>> steps_;  // [bucket][layer]
};

absl::Status OneDnnRanker::Build(const std::vector<LayerPlan>& layers, const std::vector<int>& buckets,
                                 int64_t zero_weights, const char* what) {
  RETURN_IF_ERROR(ValidateBuckets(buckets));
  buckets_ = buckets;
  for (const LayerPlan& l : layers) {
    max_width_ = std::max({max_width_, l.in, l.out});
    macs_ += int64_t{l.in} * l.out;
  }
  sparsity_ = static_cast<double>(zero_weights) / static_cast<double>(macs_);
  const dnnl::engine& eng = CpuEngine();
  try {
    dnnl::stream stream(eng);
    for (int b : buckets) {
      std::vector<Step>& steps = steps_.emplace_back();
      for (const LayerPlan& l : layers) {
        Step step;
        step.src_md = memory::desc({b, l.in}, l.src, tag::ab);
        step.dst_md = memory::desc({b, l.out}, l.dst, tag::ab);
        memory::desc any_w({l.in, l.out}, l.wei, tag::any);
        memory::desc bias_md({1, l.out}, dt::f32, tag::ab);
        dnnl::primitive_attr attr;
        if (!l.output_scales.empty()) attr.set_output_scales(2, l.output_scales);
        if (l.relu) {
          dnnl::post_ops ops;
          ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
          attr.set_post_ops(ops);
        }
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(step.src_md, any_w, bias_md, step.dst_md), attr, eng);
        // Our weights are [out x in] row-major, i.e. the [in x out] matrix in "ba" order.
        memory user_w({{l.in, l.out}, l.wei, tag::ba}, eng, const_cast<void*>(l.weights));
        step.weights = memory(pd.weights_desc(), eng);
        dnnl::reorder(user_w, step.weights).execute(stream, user_w, step.weights);
        step.bias = memory(bias_md, eng);
        std::memcpy(step.bias.get_data_handle(), l.bias, static_cast<size_t>(l.out) * sizeof(float));
        scratchpad_bytes_ = std::max(scratchpad_bytes_, pd.scratchpad_desc().get_size());
        step.primitive = dnnl::matmul(pd);
        steps.push_back(std::move(step));
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return DnnlError(absl::StrCat(what, ": building primitives"), e);
  }
  for (const Step& st : steps_.back()) weight_bytes_ += st.weights.get_desc().get_size() + st.bias.get_desc().get_size();
  return absl::OkStatus();
}

std::unique_ptr<RankerScratch> OneDnnRanker::NewScratch() const {
  auto s = std::make_unique<OneDnnScratch>();
  const dnnl::engine& eng = CpuEngine();
  s->stream = dnnl::stream(eng);
  const size_t largest = static_cast<size_t>(buckets_.back());
  s->input.assign(largest * input_bytes_per_row_, 0);
  s->act[0].assign(largest * max_width_ * sizeof(float), 0);
  s->act[1].assign(largest * max_width_ * sizeof(float), 0);
  s->logits.assign(largest, 0.f);
  if (bias0_per_call_) s->bias0.assign(steps_.front().front().bias.get_desc().get_size() / sizeof(float), 0.f);
  auto requantized = [this](size_t l) {
    return l < requantize_inv_scale_.size() && !requantize_inv_scale_[l].empty();
  };
  if (std::any_of(requantize_inv_scale_.begin(), requantize_inv_scale_.end(),
                  [](const std::vector<float>& inv) { return !inv.empty(); })) {
    s->requant.assign(largest * max_width_, 0);
  }
  s->scratchpad.assign(std::max<size_t>(scratchpad_bytes_, 64), 0);
  memory::desc pad_md({static_cast<memory::dim>(s->scratchpad.size())}, dt::u8, tag::a);
  for (const std::vector<Step>& steps : steps_) {
    auto& bucket_args = s->args.emplace_back();
    const size_t layers = steps.size();
    for (size_t l = 0; l < layers; ++l) {
      const Step& st = steps[l];
      // Layer 0 reads the input (rebound per call when it is the caller's rows), layer
      // l > 0 reads act[(l+1)%2] (or, mixed, the requantized copy of it); hidden layers
      // write act[l%2], the last the logits.
      void* src = l == 0 ? (s->input.empty() ? nullptr : s->input.data())
                         : requantized(l) ? s->requant.data() : s->act[(l + 1) % 2].data();
      void* dst = l + 1 == layers ? static_cast<void*>(s->logits.data()) : s->act[l % 2].data();
      std::unordered_map<int, memory> a;
      a[DNNL_ARG_SRC] = memory(st.src_md, eng, src);
      a[DNNL_ARG_WEIGHTS] = st.weights;
      a[DNNL_ARG_BIAS] = l == 0 && bias0_per_call_ ? memory(st.bias.get_desc(), eng, s->bias0.data()) : st.bias;
      a[DNNL_ARG_DST] = memory(st.dst_md, eng, dst);
      a[DNNL_ARG_SCRATCHPAD] = memory(pad_md, eng, s->scratchpad.data());
      bucket_args.push_back(std::move(a));
    }
  }
  return s;
}

void OneDnnRanker::Run(size_t bi, void* src, int n, float* probabilities, OneDnnScratch* s) const {
  if (src != nullptr) s->args[bi][0][DNNL_ARG_SRC].set_data_handle(src);
  for (size_t l = 0; l < steps_[bi].size(); ++l) steps_[bi][l].primitive.execute(s->stream, s->args[bi][l]);
  s->stream.wait();
  for (int r = 0; r < n; ++r) probabilities[r] = Sigmoid(s->logits[r]);
}

void OneDnnRanker::RunMixed(size_t bi, void* src, int n, float* probabilities, OneDnnScratch* s) const {
  if (src != nullptr) s->args[bi][0][DNNL_ARG_SRC].set_data_handle(src);
  for (size_t l = 0; l < steps_[bi].size(); ++l) {
    const std::vector<float>& inv = requantize_inv_scale_[l];
    if (!inv.empty()) {
      s->stream.wait();  // the fp32 layer's outputs are complete
      QuantizeActivationRows(reinterpret_cast<const float*>(s->act[(l + 1) % 2].data()), n,
                             static_cast<int>(inv.size()), inv.data(), s->requant.data());
    }
    steps_[bi][l].primitive.execute(s->stream, s->args[bi][l]);
  }
  s->stream.wait();
  for (int r = 0; r < n; ++r) probabilities[r] = Sigmoid(s->logits[r]);
}

// Which bucket serves `rows` rows (at most the largest).
size_t BucketIndex(const std::vector<int>& buckets, int rows) {
  return std::lower_bound(buckets.begin(), buckets.end(), rows) - buckets.begin();
}

// The fp32 input loop: chunks of at most the largest bucket, each padded with zero rows
// to its bucket in the caller's buffer, scored by run(bucket index, rows, n, out).
template <typename RunFn>
void ScoreFp32Rows(const std::vector<int>& buckets, size_t width, float* rows, int n, float* probabilities,
                   RunFn run) {
  const int largest = buckets.back();
  for (int start = 0; start < n; start += largest) {
    const int rows_here = std::min(largest, n - start);
    const size_t bi = BucketIndex(buckets, rows_here);
    float* src = rows + static_cast<size_t>(start) * width;
    // The padding rows of the bucket: zeros, so they cost nothing but time.
    std::fill(src + static_cast<size_t>(rows_here) * width, src + static_cast<size_t>(buckets[bi]) * width, 0.f);
    run(bi, src, rows_here, probabilities + start);
  }
}

// The int8 input loop: runs of rows sharing their request-constant columns (one run per
// request on the serving path) get layer 0's bias for those columns computed once, in
// fp32; then chunks of at most the largest bucket are quantized into the scratch's input,
// padded with zeros, and scored by run(bucket index, n, out).
template <typename RunFn>
void ScoreInt8Rows(const QuantizedMlp& q, const std::vector<ColumnSegment>& segments,
                   const std::vector<ColumnSegment>& constant_segments, const std::vector<int>& buckets,
                   size_t in, const float* rows, int n, float* probabilities, OneDnnScratch* s, RunFn run) {
  const int largest = buckets.back();
  const size_t width = static_cast<size_t>(q.input_dim());
  for (int run_start = 0; run_start < n;) {
    const float* first = rows + run_start * width;
    int end = run_start + 1;
    while (end < n && SameConstantColumns(constant_segments, first, rows + end * width)) ++end;
    ConstantBias(q, first, s->bias0.data());
    for (int start = run_start; start < end; start += largest) {
      const int rows_here = std::min(largest, end - start);
      const size_t bi = BucketIndex(buckets, rows_here);
      QuantizeInputRows(q, segments, rows + start * width, rows_here, s->input.data());
      std::fill(s->input.begin() + rows_here * in, s->input.begin() + buckets[bi] * in, 0);
      run(bi, rows_here, probabilities + start);
    }
    run_start = end;
  }
}

class Fp32Ranker : public OneDnnRanker {
 public:
  static absl::StatusOr<std::unique_ptr<Ranker>> Create(const Mlp& mlp, const Fp32RankerOptions& options) {
    RETURN_IF_ERROR(ValidateMlp(mlp));
    auto ranker = std::make_unique<Fp32Ranker>();
    ranker->input_dim_ = mlp.input_dim();
    std::vector<LayerPlan> plan;
    int64_t zeros = 0;
    for (const DenseLayer& l : mlp.layers) {
      LayerPlan p;
      p.in = l.in;
      p.out = l.out;
      p.relu = l.relu;
      p.weights = l.weight.data();
      p.bias = l.bias.data();
      plan.push_back(p);
      zeros += std::count(l.weight.begin(), l.weight.end(), 0.f);
    }
    RETURN_IF_ERROR(ranker->Build(plan, options.buckets, zeros, "fp32 ranker"));
    return std::unique_ptr<Ranker>(std::move(ranker));
  }
  int input_dim() const override { return input_dim_; }
  std::string kind() const override { return "fp32"; }

  absl::Status Score(float* rows, int n, float* probabilities, RankerScratch* scratch) const override {
    auto* s = static_cast<OneDnnScratch*>(scratch);
    try {
      ScoreFp32Rows(buckets_, input_dim_, rows, n, probabilities,
                    [&](size_t bi, float* src, int rows_here, float* out) { Run(bi, src, rows_here, out, s); });
    } catch (const dnnl::error& e) {
      return DnnlError("fp32 ranker: scoring", e);
    }
    return absl::OkStatus();
  }

 private:
  int input_dim_ = 0;
};

class Int8Ranker : public OneDnnRanker {
 public:
  static absl::StatusOr<std::unique_ptr<Ranker>> Create(const QuantizedMlp& q, const Fp32RankerOptions& options) {
    RETURN_IF_ERROR(ValidateQuantizedMlp(q));
    auto ranker = std::make_unique<Int8Ranker>();
    ranker->q_ = q;
    ranker->segments_ = q.Segments();
    ranker->constant_segments_ = q.ConstantSegments();
    ranker->input_bytes_per_row_ = static_cast<size_t>(q.layers.front().in);
    ranker->bias0_per_call_ = true;
    std::vector<LayerPlan> plan;
    int64_t zeros = 0;
    for (const QuantizedLayer& l : ranker->q_.layers) {
      LayerPlan p;
      p.in = l.in;
      p.out = l.out;
      p.relu = l.relu;
      p.src = dt::u8;
      p.dst = l.relu ? dt::u8 : dt::f32;
      p.wei = dt::s8;
      // Scales fixed at creation: the fast brgemm kernel needs them so.
      p.output_scales = l.output_scale;
      p.weights = l.weight.data();
      p.bias = l.bias.data();
      plan.push_back(std::move(p));
      zeros += std::count(l.weight.begin(), l.weight.end(), int8_t{0});
    }
    RETURN_IF_ERROR(ranker->Build(plan, options.buckets, zeros, "int8 ranker"));
    ranker->weight_bytes_ +=
        static_cast<int64_t>(q.input_offset.size() + q.input_inv_scale.size() + q.constant_weight.size()) * 4;
    return std::unique_ptr<Ranker>(std::move(ranker));
  }
  int input_dim() const override { return q_.input_dim(); }
  std::string kind() const override { return "int8"; }

  absl::Status Score(float* rows, int n, float* probabilities, RankerScratch* scratch) const override {
    auto* s = static_cast<OneDnnScratch*>(scratch);
    try {
      ScoreInt8Rows(q_, segments_, constant_segments_, buckets_, input_bytes_per_row_, rows, n, probabilities, s,
                    [&](size_t bi, int rows_here, float* out) { Run(bi, nullptr, rows_here, out, s); });
    } catch (const dnnl::error& e) {
      return DnnlError("int8 ranker: scoring", e);
    }
    return absl::OkStatus();
  }

 private:
  QuantizedMlp q_;
  std::vector<ColumnSegment> segments_;
  std::vector<ColumnSegment> constant_segments_;
};

class MixedRanker : public OneDnnRanker {
 public:
  static absl::StatusOr<std::unique_ptr<Ranker>> Create(const MixedPrecisionMlp& m, const Fp32RankerOptions& options) {
    RETURN_IF_ERROR(ValidateMixedPrecisionMlp(m));
    auto ranker = std::make_unique<MixedRanker>();
    ranker->m_ = m;
    ranker->kind_ = m.Describe();
    const MixedPrecisionMlp& mm = ranker->m_;
    const size_t layers = mm.fp32.layers.size();
    ranker->int8_input_ = !mm.fp32_layer[0];
    if (ranker->int8_input_) {
      ranker->segments_ = mm.int8.Segments();
      ranker->constant_segments_ = mm.int8.ConstantSegments();
      ranker->input_bytes_per_row_ = static_cast<size_t>(mm.int8.layers.front().in);
      ranker->bias0_per_call_ = true;
    }
    ranker->requantize_inv_scale_.resize(layers);
    std::vector<LayerPlan> plan;
    int64_t zeros = 0;
    for (size_t i = 0; i < layers; ++i) {
      const bool last = i + 1 == layers;
      LayerPlan p;
      if (mm.fp32_layer[i]) {
        const DenseLayer& l = mm.fp32.layers[i];
        p.in = l.in;
        p.out = l.out;
        p.relu = l.relu;
        p.weights = l.weight.data();
        p.bias = l.bias.data();
        zeros += std::count(l.weight.begin(), l.weight.end(), 0.f);
      } else {
        const QuantizedLayer& l = mm.int8.layers[i];
        p.in = l.in;
        p.out = l.out;
        p.relu = l.relu;
        p.src = dt::u8;
        p.wei = dt::s8;
        const bool real_out = !last && mm.fp32_layer[i + 1];
        p.dst = l.relu && !real_out ? dt::u8 : dt::f32;
        p.output_scales = l.output_scale;
        if (real_out) {
          for (int o = 0; o < l.out; ++o) p.output_scales[o] *= l.activation_scale[o];
        }
        p.weights = l.weight.data();
        p.bias = l.bias.data();
        zeros += std::count(l.weight.begin(), l.weight.end(), int8_t{0});
        if (i > 0 && mm.fp32_layer[i - 1]) {
          const std::vector<float>& scale = mm.int8.layers[i - 1].activation_scale;
          std::vector<float>& inv = ranker->requantize_inv_scale_[i];
          for (float v : scale) inv.push_back(1.f / v);
        }
      }
      plan.push_back(std::move(p));
    }
    RETURN_IF_ERROR(ranker->Build(plan, options.buckets, zeros, "mixed-precision ranker"));
    if (ranker->int8_input_) {
      const QuantizedMlp& q = mm.int8;
      ranker->weight_bytes_ +=
          static_cast<int64_t>(q.input_offset.size() + q.input_inv_scale.size() + q.constant_weight.size()) * 4;
    }
    return std::unique_ptr<Ranker>(std::move(ranker));
  }
  int input_dim() const override { return m_.input_dim(); }
  std::string kind() const override { return kind_; }

  absl::Status Score(float* rows, int n, float* probabilities, RankerScratch* scratch) const override {
    auto* s = static_cast<OneDnnScratch*>(scratch);
    try {
      if (int8_input_) {
        ScoreInt8Rows(m_.int8, segments_, constant_segments_, buckets_, input_bytes_per_row_, rows, n, probabilities,
                      s, [&](size_t bi, int rows_here, float* out) { RunMixed(bi, nullptr, rows_here, out, s); });
      } else {
        ScoreFp32Rows(buckets_, static_cast<size_t>(m_.input_dim()), rows, n, probabilities,
                      [&](size_t bi, float* src, int rows_here, float* out) { RunMixed(bi, src, rows_here, out, s); });
      }
    } catch (const dnnl::error& e) {
      return DnnlError("mixed-precision ranker: scoring", e);
    }
    return absl::OkStatus();
  }

 private:
  MixedPrecisionMlp m_;
  std::string kind_;
  bool int8_input_ = false;  // layer 0 is int8: rows are quantized as by the int8 ranker
  std::vector<ColumnSegment> segments_;
  std::vector<ColumnSegment> constant_segments_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Ranker>> CreateFp32Ranker(const Mlp& mlp,
                                                        const Fp32RankerOptions& options) {
  return Fp32Ranker::Create(mlp, options);
}

absl::StatusOr<std::unique_ptr<Ranker>> CreateInt8Ranker(const QuantizedMlp& mlp,
                                                        const Fp32RankerOptions& options) {
  return Int8Ranker::Create(mlp, options);
}

absl::StatusOr<std::unique_ptr<Ranker>> CreateMixedPrecisionRanker(const MixedPrecisionMlp& mlp,
                                                                  const Fp32RankerOptions& options) {
  return MixedRanker::Create(mlp, options);
}

}  // namespace recserve
