#include "engine/ranker.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

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

class Fp32Scratch : public RankerScratch {
 public:
  dnnl::stream stream;
  std::vector<float> act[2];
  std::vector<uint8_t> scratchpad;
  // [bucket][layer]: argument maps bound to the buffers above (input rebound per call).
  std::vector<std::vector<std::unordered_map<int, memory>>> args;
};

class Fp32Ranker : public Ranker {
 public:
  static absl::StatusOr<std::unique_ptr<Ranker>> Create(const Mlp& mlp,
                                                       const Fp32RankerOptions& options);
  int input_dim() const override { return input_dim_; }
  absl::Status Score(float* rows, int n, float* probabilities,
                     RankerScratch* scratch) const override;
  std::unique_ptr<RankerScratch> NewScratch() const override;
  std::string kind() const override { return "fp32"; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  double weight_sparsity() const override { return sparsity_; }
  int64_t macs_per_row() const override { return macs_; }

 private:
  struct Step {
    dnnl::matmul primitive;
    memory::desc src_md, dst_md;
    memory weights, bias;
  };
  int input_dim_ = 0;
  int max_width_ = 0;
  double sparsity_ = 0;
  int64_t macs_ = 0;
  size_t scratchpad_bytes_ = 0;
  int64_t weight_bytes_ = 0;
  std::vector<std::vector<Step>> steps_;  // [bucket][layer]
};

absl::StatusOr<std::unique_ptr<Ranker>> Fp32Ranker::Create(const Mlp& mlp,
                                                          const Fp32RankerOptions& options) {
  RETURN_IF_ERROR(ValidateMlp(mlp));
  RETURN_IF_ERROR(ValidateBuckets(options.buckets));
  auto ranker = std::make_unique<Fp32Ranker>();
  ranker->buckets_ = options.buckets;
  ranker->input_dim_ = mlp.input_dim();
  int64_t zeros = 0;
  for (const DenseLayer& l : mlp.layers) {
    ranker->max_width_ = std::max({ranker->max_width_, l.in, l.out});
    ranker->macs_ += int64_t{l.in} * l.out;
    zeros += std::count(l.weight.begin(), l.weight.end(), 0.f);
  }
  ranker->sparsity_ = static_cast<double>(zeros) / static_cast<double>(ranker->macs_);
  const dnnl::engine& eng = CpuEngine();
  try {
    dnnl::stream stream(eng);
    for (int b : options.buckets) {
      std::vector<Step>& steps = ranker->steps_.emplace_back();
      for (const DenseLayer& l : mlp.layers) {
        Step step;
        step.src_md = memory::desc({b, l.in}, dt::f32, tag::ab);
        step.dst_md = memory::desc({b, l.out}, dt::f32, tag::ab);
        memory::desc any_w({l.in, l.out}, dt::f32, tag::any);
        memory::desc bias_md({1, l.out}, dt::f32, tag::ab);
        dnnl::post_ops ops;
        if (l.relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        dnnl::primitive_attr attr;
        attr.set_post_ops(ops);
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(step.src_md, any_w, bias_md, step.dst_md),
                                        attr, eng);
        // Our weights are [out x in] row-major, i.e. the [in x out] matrix in "ba" order.
        memory user_w({{l.in, l.out}, dt::f32, tag::ba}, eng, const_cast<float*>(l.weight.data()));
        step.weights = memory(pd.weights_desc(), eng);
        dnnl::reorder(user_w, step.weights).execute(stream, user_w, step.weights);
        step.bias = memory(bias_md, eng);
        std::memcpy(step.bias.get_data_handle(), l.bias.data(), l.bias.size() * sizeof(float));
        ranker->scratchpad_bytes_ = std::max(ranker->scratchpad_bytes_, pd.scratchpad_desc().get_size());
        step.primitive = dnnl::matmul(pd);
        steps.push_back(std::move(step));
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return DnnlError("fp32 ranker: building primitives", e);
  }
  for (const Step& s : ranker->steps_.back()) {
    ranker->weight_bytes_ += s.weights.get_desc().get_size() + s.bias.get_desc().get_size();
  }
  return std::unique_ptr<Ranker>(std::move(ranker));
}

std::unique_ptr<RankerScratch> Fp32Ranker::NewScratch() const {
  auto s = std::make_unique<Fp32Scratch>();
  const dnnl::engine& eng = CpuEngine();
  s->stream = dnnl::stream(eng);
  const size_t act = static_cast<size_t>(buckets_.back()) * max_width_;
  s->act[0].assign(act, 0.f);
  s->act[1].assign(act, 0.f);
  s->scratchpad.assign(std::max<size_t>(scratchpad_bytes_, 64), 0);
  memory::desc pad_md({static_cast<memory::dim>(s->scratchpad.size())}, dt::u8, tag::a);
  for (const std::vector<Step>& steps : steps_) {
    auto& bucket_args = s->args.emplace_back();
    for (size_t l = 0; l < steps.size(); ++l) {
      const Step& st = steps[l];
      // Layer l reads act[(l+1)%2] (layer 0 reads the caller's rows) and writes act[l%2].
      float* src = l == 0 ? nullptr : s->act[(l + 1) % 2].data();
      std::unordered_map<int, memory> a;
      a[DNNL_ARG_SRC] = memory(st.src_md, eng, src);
      a[DNNL_ARG_WEIGHTS] = st.weights;
      a[DNNL_ARG_BIAS] = st.bias;
      a[DNNL_ARG_DST] = memory(st.dst_md, eng, s->act[l % 2].data());
      a[DNNL_ARG_SCRATCHPAD] = memory(pad_md, eng, s->scratchpad.data());
      bucket_args.push_back(std::move(a));
    }
  }
  return s;
}

absl::Status Fp32Ranker::Score(float* rows, int n, float* probabilities,
                               RankerScratch* scratch) const {
  auto* s = static_cast<Fp32Scratch*>(scratch);
  const int largest = buckets_.back();
  try {
    for (int start = 0; start < n; start += largest) {
      const int rows_here = std::min(largest, n - start);
      const size_t bi = std::lower_bound(buckets_.begin(), buckets_.end(), rows_here) - buckets_.begin();
      const int bucket = buckets_[bi];
      float* src = rows + static_cast<size_t>(start) * input_dim_;
      std::fill(src + static_cast<size_t>(rows_here) * input_dim_,
                src + static_cast<size_t>(bucket) * input_dim_, 0.f);
      auto& bucket_args = s->args[bi];
      bucket_args[0][DNNL_ARG_SRC].set_data_handle(src);
      for (size_t l = 0; l < steps_[bi].size(); ++l) {
        steps_[bi][l].primitive.execute(s->stream, bucket_args[l]);
      }
      s->stream.wait();
      const float* logits = s->act[(steps_[bi].size() - 1) % 2].data();
      for (int r = 0; r < rows_here; ++r) probabilities[start + r] = Sigmoid(logits[r]);
    }
  } catch (const dnnl::error& e) {
    return DnnlError("fp32 ranker: scoring", e);
  }
  return absl::OkStatus();
}

class Int8Scratch : public RankerScratch {
 public:
  dnnl::stream stream;
  std::vector<uint8_t> input;    // [largest bucket x in]: quantized rows
  std::vector<uint8_t> act[2];   // hidden activations
  std::vector<float> logits;     // [largest bucket]
  std::vector<uint8_t> scratchpad;
  std::vector<std::vector<std::unordered_map<int, memory>>> args;  // [bucket][layer]
};

class Int8Ranker : public Ranker {
 public:
  static absl::StatusOr<std::unique_ptr<Ranker>> Create(const QuantizedMlp& q,
                                                       const Fp32RankerOptions& options);
  int input_dim() const override { return q_.input_dim(); }
  absl::Status Score(float* rows, int n, float* probabilities,
                     RankerScratch* scratch) const override;
  std::unique_ptr<RankerScratch> NewScratch() const override;
  std::string kind() const override { return "int8"; }
  int64_t weight_bytes() const override { return weight_bytes_; }
  double weight_sparsity() const override { return sparsity_; }
  int64_t macs_per_row() const override { return macs_; }

 private:
  struct Step {
    dnnl::matmul primitive;
    memory::desc src_md, dst_md;
    memory weights, bias;
  };
  QuantizedMlp q_;
  int max_width_ = 0;
  double sparsity_ = 0;
  int64_t macs_ = 0;
  size_t scratchpad_bytes_ = 0;
  int64_t weight_bytes_ = 0;
  std::vector<std::vector<Step>> steps_;  // [bucket][layer]
};

absl::StatusOr<std::unique_ptr<Ranker>> Int8Ranker::Create(const QuantizedMlp& q,
                                                          const Fp32RankerOptions& options) {
  RETURN_IF_ERROR(ValidateQuantizedMlp(q));
  RETURN_IF_ERROR(ValidateBuckets(options.buckets));
  auto ranker = std::make_unique<Int8Ranker>();
  ranker->buckets_ = options.buckets;
  ranker->q_ = q;
  int64_t zeros = 0;
  for (const QuantizedLayer& l : q.layers) {
    ranker->max_width_ = std::max({ranker->max_width_, l.in, l.out});
    ranker->macs_ += int64_t{l.in} * l.out;
    zeros += std::count(l.weight.begin(), l.weight.end(), int8_t{0});
  }
  ranker->sparsity_ = static_cast<double>(zeros) / static_cast<double>(ranker->macs_);
  const dnnl::engine& eng = CpuEngine();
  try {
    dnnl::stream stream(eng);
    for (int b : options.buckets) {
      std::vector<Step>& steps = ranker->steps_.emplace_back();
      for (const QuantizedLayer& l : q.layers) {
        Step step;
        step.src_md = memory::desc({b, l.in}, dt::u8, tag::ab);
        step.dst_md = memory::desc({b, l.out}, l.relu ? dt::u8 : dt::f32, tag::ab);
        memory::desc any_w({l.in, l.out}, dt::s8, tag::any);
        memory::desc bias_md({1, l.out}, dt::f32, tag::ab);
        dnnl::primitive_attr attr;
        // Scales fixed at creation: the fast brgemm kernel needs them so.
        attr.set_output_scales(2, l.output_scale);
        if (l.relu) {
          dnnl::post_ops ops;
          ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
          attr.set_post_ops(ops);
        }
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(step.src_md, any_w, bias_md, step.dst_md),
                                        attr, eng);
        memory user_w({{l.in, l.out}, dt::s8, tag::ba}, eng, const_cast<int8_t*>(l.weight.data()));
        step.weights = memory(pd.weights_desc(), eng);
        dnnl::reorder(user_w, step.weights).execute(stream, user_w, step.weights);
        step.bias = memory(bias_md, eng);
        std::memcpy(step.bias.get_data_handle(), l.bias.data(), l.bias.size() * sizeof(float));
        ranker->scratchpad_bytes_ = std::max(ranker->scratchpad_bytes_, pd.scratchpad_desc().get_size());
        step.primitive = dnnl::matmul(pd);
        steps.push_back(std::move(step));
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return DnnlError("int8 ranker: building primitives", e);
  }
  for (const Step& st : ranker->steps_.back()) {
    ranker->weight_bytes_ += st.weights.get_desc().get_size() + st.bias.get_desc().get_size();
  }
  ranker->weight_bytes_ += static_cast<int64_t>(q.input_offset.size() + q.input_inv_scale.size()) * 4;
  return std::unique_ptr<Ranker>(std::move(ranker));
}

std::unique_ptr<RankerScratch> Int8Ranker::NewScratch() const {
  auto s = std::make_unique<Int8Scratch>();
  const dnnl::engine& eng = CpuEngine();
  s->stream = dnnl::stream(eng);
  const size_t largest = static_cast<size_t>(buckets_.back());
  s->input.assign(largest * q_.input_dim(), 0);
  s->act[0].assign(largest * max_width_, 0);
  s->act[1].assign(largest * max_width_, 0);
  s->logits.assign(largest, 0.f);
  s->scratchpad.assign(std::max<size_t>(scratchpad_bytes_, 64), 0);
  memory::desc pad_md({static_cast<memory::dim>(s->scratchpad.size())}, dt::u8, tag::a);
  const size_t layers = q_.layers.size();
  for (const std::vector<Step>& steps : steps_) {
    auto& bucket_args = s->args.emplace_back();
    for (size_t l = 0; l < layers; ++l) {
      const Step& st = steps[l];
      // Layer 0 reads the quantized input; layer l > 0 reads act[(l+1)%2]; hidden layers
      // write act[l%2], the last writes the logits.
      void* src = l == 0 ? static_cast<void*>(s->input.data()) : s->act[(l + 1) % 2].data();
      void* dst = l + 1 == layers ? static_cast<void*>(s->logits.data()) : s->act[l % 2].data();
      std::unordered_map<int, memory> a;
      a[DNNL_ARG_SRC] = memory(st.src_md, eng, src);
      a[DNNL_ARG_WEIGHTS] = st.weights;
      a[DNNL_ARG_BIAS] = st.bias;
      a[DNNL_ARG_DST] = memory(st.dst_md, eng, dst);
      a[DNNL_ARG_SCRATCHPAD] = memory(pad_md, eng, s->scratchpad.data());
      bucket_args.push_back(std::move(a));
    }
  }
  return s;
}

absl::Status Int8Ranker::Score(float* rows, int n, float* probabilities,
                               RankerScratch* scratch) const {
  auto* s = static_cast<Int8Scratch*>(scratch);
  const int largest = buckets_.back();
  const int in = q_.input_dim();
  try {
    for (int start = 0; start < n; start += largest) {
      const int rows_here = std::min(largest, n - start);
      const size_t bi = std::lower_bound(buckets_.begin(), buckets_.end(), rows_here) - buckets_.begin();
      const int bucket = buckets_[bi];
      QuantizeInputRows(q_, rows + static_cast<size_t>(start) * in, rows_here, s->input.data());
      std::fill(s->input.begin() + static_cast<size_t>(rows_here) * in,
                s->input.begin() + static_cast<size_t>(bucket) * in, 0);
      for (size_t l = 0; l < steps_[bi].size(); ++l) steps_[bi][l].primitive.execute(s->stream, s->args[bi][l]);
      s->stream.wait();
      for (int r = 0; r < rows_here; ++r) probabilities[start + r] = Sigmoid(s->logits[r]);
    }
  } catch (const dnnl::error& e) {
    return DnnlError("int8 ranker: scoring", e);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Ranker>> CreateFp32Ranker(const Mlp& mlp,
                                                        const Fp32RankerOptions& options) {
  return Fp32Ranker::Create(mlp, options);
}

absl::StatusOr<std::unique_ptr<Ranker>> CreateInt8Ranker(const QuantizedMlp& mlp,
                                                        const Fp32RankerOptions& options) {
  return Int8Ranker::Create(mlp, options);
}

}  // namespace recserve
