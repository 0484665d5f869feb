#include "train/item2vec.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace recserve {
namespace {

constexpr int kMaxDim = 4096;
constexpr int kMaxThreads = 256;
// Upper bound on num_items * dim per matrix (two matrices, 4 bytes each): 8 GiB each.
constexpr int64_t kMaxMatrixFloats = int64_t{1} << 31;
// Tokens a thread processes between updates of the shared progress counter (and so of
// its learning rate); word2vec's figure.
constexpr int64_t kProgressStride = 10000;
// Runs smaller than this (tokens x epochs) finish in about a second: no progress lines.
constexpr int64_t kVerboseMinWork = 1000000;

// Sigmoid by table over [-kMaxExp, kMaxExp] as in word2vec: the exact sigmoid costs
// more than the dot product it follows at dim 32, and beyond +-6 the gradient
// saturates anyway.
constexpr float kMaxExp = 6.0f;
constexpr int kSigmoidTableSize = 1024;

class SigmoidTable {
 public:
  SigmoidTable() {
    for (int i = 0; i <= kSigmoidTableSize; ++i) {
      const double x = (2.0 * i / kSigmoidTableSize - 1.0) * kMaxExp;
      table_[i] = static_cast<float>(1.0 / (1.0 + std::exp(-x)));
    }
  }
  // Only for |x| <= kMaxExp.
  float operator()(float x) const {
    return table_[static_cast<int>((x + kMaxExp) * (kSigmoidTableSize / (2 * kMaxExp)))];
  }

 private:
  float table_[kSigmoidTableSize + 1];
};

// SplitMix64: a few cycles per draw and a fixed, documented output sequence, so the
// seed pins results across library versions (absl's generators promise neither).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) from the high 32 bits (multiply-shift; n < 2^32).
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(((Next() >> 32) * n) >> 32); }

 private:
  uint64_t state_;
};

// Walker/Vose alias table: O(1) draws from a discrete distribution.
class AliasTable {
 public:
  // weights >= 0 with a positive sum.
  explicit AliasTable(const std::vector<double>& weights) : buckets_(weights.size()) {
    const size_t n = weights.size();
    double total = 0;
    for (double w : weights) total += w;
    std::vector<double> scaled(n);
    std::vector<uint32_t> small, large;
    for (size_t i = 0; i < n; ++i) {
      scaled[i] = weights[i] * static_cast<double>(n) / total;
      (scaled[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
    }
    while (!small.empty() && !large.empty()) {
      const uint32_t s = small.back(), l = large.back();
      small.pop_back();
      SetBucket(s, scaled[s], l);
      scaled[l] -= 1.0 - scaled[s];
      if (scaled[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    // Leftovers are 1 up to rounding: keep themselves.
    for (uint32_t i : small) SetBucket(i, 1.0, i);
    for (uint32_t i : large) SetBucket(i, 1.0, i);
  }

  // One 64-bit draw: high half picks the bucket, low half the coin.
  int32_t Sample(uint64_t r) const {
    const uint32_t i =
        static_cast<uint32_t>(((r >> 32) * static_cast<uint64_t>(buckets_.size())) >> 32);
    const Bucket& b = buckets_[i];
    return static_cast<uint32_t>(r) < b.threshold ? static_cast<int32_t>(i) : b.alias;
  }

 private:
  void SetBucket(uint32_t i, double p, uint32_t alias) {
    // Stay strictly below 2^32 so a coin of exactly 0xFFFFFFFF is the only miss; with
    // alias == i that miss lands on the bucket itself anyway.
    buckets_[i].threshold = p >= 1.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(p * 4294967296.0);
    buckets_[i].alias = static_cast<int32_t>(alias);
  }

  // Threshold and alias side by side: one cache line per draw.
  struct Bucket {
    uint32_t threshold = 0;
    int32_t alias = 0;
  };
  std::vector<Bucket> buckets_;
};

// Dot product with eight independent partial sums: without -ffast-math the compiler
// may not reassociate a single float sum, so this shape is what lets it vectorise.
inline float Dot(const float* __restrict a, const float* __restrict b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void Axpy(float alpha, const float* __restrict x, float* __restrict y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Asks for a row's cache lines ahead of use (for writing: every row gets updated).
inline void PrefetchRow(const float* row, int dim) {
  const char* p = reinterpret_cast<const char*>(row);
  const int bytes = dim * static_cast<int>(sizeof(float));
  for (int offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset, 1, 3);
}

// Everything the workers share. The two matrices are written without locks (Hogwild!).
struct Job {
  const std::vector<std::vector<int32_t>>* sequences = nullptr;
  Item2VecOptions options;
  int dim = 0;
  float* input = nullptr;   // center vectors, the result
  float* output = nullptr;  // context ("syn1neg") vectors
  const AliasTable* negatives = nullptr;
  // Per item: keep the token when the high 32 bits of a draw are below this (2^32 and
  // above = always keep).
  const std::vector<uint64_t>* keep_below = nullptr;
  SigmoidTable sigmoid;
  int64_t total_work = 0;  // tokens x epochs, the learning-rate schedule's horizon
  std::atomic<int64_t> processed{0};
  std::atomic<int> next_report_percent{10};
  std::atomic<bool> stop{false};
  std::chrono::steady_clock::time_point start;
};

float LearningRate(const Job& job, int64_t processed) {
  const double left = 1.0 - static_cast<double>(processed) / (job.total_work + 1);
  return static_cast<float>(job.options.learning_rate * std::max(left, 1e-4));
}

void MaybeReport(Job& job, int64_t processed) {
  if (!job.options.verbose || job.total_work < kVerboseMinWork) return;
  const int percent = static_cast<int>(100 * processed / job.total_work);
  int next = job.next_report_percent.load(std::memory_order_relaxed);
  // One thread wins each 10% step.
  while (percent >= next && next < 100) {
    if (job.next_report_percent.compare_exchange_weak(next, next + 10)) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - job.start).count();
      absl::FPrintF(stderr, "item2vec: %3d%%  lr %.5f  %.2fM tokens/s  %.1fs\n", next,
                    LearningRate(job, processed), processed / std::max(seconds, 1e-9) / 1e6,
                    seconds);
      break;
    }
  }
}

// One worker: all epochs over sequences [begin, end).
void TrainShard(Job& job, size_t begin, size_t end, uint64_t seed) {
  const Item2VecOptions& o = job.options;
  const int dim = job.dim;
  const std::vector<std::vector<int32_t>>& sequences = *job.sequences;
  const std::vector<uint64_t>& keep_below = *job.keep_below;
  const bool subsample = o.subsample > 0;
  Rng rng(seed);
  std::vector<int32_t> kept;
  std::vector<float> context_grad(dim);
  std::vector<int32_t> negatives;
  negatives.reserve(o.negatives);
  int64_t pending = 0;  // tokens not yet added to job.processed
  float alpha = LearningRate(job, job.processed.load(std::memory_order_relaxed));

  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    for (size_t s = begin; s < end; ++s) {
      const std::vector<int32_t>& seq = sequences[s];
      // Subsampling happens before windowing, so dropping a frequent item brings
      // further neighbours into the window (word2vec's behaviour).
      kept.clear();
      for (int32_t item : seq) {
        if (subsample && (rng.Next() >> 32) >= keep_below[item]) continue;
        kept.push_back(item);
      }
      pending += static_cast<int64_t>(seq.size());
      if (pending >= kProgressStride) {
        const int64_t processed =
            job.processed.fetch_add(pending, std::memory_order_relaxed) + pending;
        pending = 0;
        alpha = LearningRate(job, processed);
        MaybeReport(job, processed);
        if (job.stop.load(std::memory_order_relaxed)) return;
      }
      const int n = static_cast<int>(kept.size());
      for (int pos = 0; pos < n; ++pos) {
        const int32_t center = kept[pos];
        float* center_out = job.output + static_cast<size_t>(center) * dim;
        const int reach = o.window - static_cast<int>(rng.Below(o.window));
        const int lo = std::max(0, pos - reach), hi = std::min(n - 1, pos + reach);
        // One set of negatives for all of this center's context pairs (see
        // Item2VecOptions::negatives), its rows prefetched while the window is set up.
        negatives.clear();
        for (int k = 0; k < o.negatives; ++k) {
          const int32_t target = job.negatives->Sample(rng.Next());
          if (target == center) continue;
          negatives.push_back(target);
          PrefetchRow(job.output + static_cast<size_t>(target) * dim, dim);
        }
        for (int c = lo; c <= hi; ++c) {
          if (c != pos) PrefetchRow(job.input + static_cast<size_t>(kept[c]) * dim, dim);
        }
        const int num_negatives = static_cast<int>(negatives.size());
        for (int c = lo; c <= hi; ++c) {
          if (c == pos) continue;
          // As in word2vec, the context item's input vector predicts the center item
          // (and the negatives) through the output vectors.
          float* in = job.input + static_cast<size_t>(kept[c]) * dim;
          std::fill(context_grad.begin(), context_grad.end(), 0.0f);
          for (int k = 0; k <= num_negatives; ++k) {
            float* out =
                k == 0 ? center_out : job.output + static_cast<size_t>(negatives[k - 1]) * dim;
            const float label = k == 0 ? 1.0f : 0.0f;
            const float f = Dot(in, out, dim);
            float g;
            if (f > kMaxExp) {
              g = (label - 1.0f) * alpha;
            } else if (f < -kMaxExp) {
              g = label * alpha;
            } else {
              g = (label - job.sigmoid(f)) * alpha;
            }
            Axpy(g, out, context_grad.data(), dim);
            Axpy(g, in, out, dim);
          }
          Axpy(1.0f, context_grad.data(), in, dim);
        }
      }
    }
  }
  const int64_t processed = job.processed.fetch_add(pending, std::memory_order_relaxed) + pending;
  MaybeReport(job, processed);
}

absl::Status CheckOptions(const Item2VecOptions& o) {
  if (o.dim < 1 || o.dim > kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.dim is %d; must be in [1, %d]", o.dim, kMaxDim));
  }
  if (o.window < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.window is %d; must be >= 1", o.window));
  }
  if (o.negatives < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.negatives is %d; must be >= 1", o.negatives));
  }
  if (o.epochs < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.epochs is %d; must be >= 1", o.epochs));
  }
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.learning_rate is %f; must be finite and > 0", o.learning_rate));
  }
  if (!(o.subsample >= 0) || !std::isfinite(o.subsample)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.subsample is %f; must be finite and >= 0", o.subsample));
  }
  if (!(o.unigram_power >= 0 && o.unigram_power <= 4)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.unigram_power is %f; must be in [0, 4]", o.unigram_power));
  }
  if (o.threads < 1 || o.threads > kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.threads is %d; must be in [1, %d]", o.threads, kMaxThreads));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> TrainItem2VecImpl(
    const std::vector<std::vector<int32_t>>& sequences, int num_items,
    const Item2VecOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (num_items < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("num_items is %d; must be >= 1", num_items));
  }
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  const int dim = options.dim;
  if (static_cast<int64_t>(num_items) * dim > kMaxMatrixFloats) {
    return absl::InvalidArgumentError(
        absl::StrFormat("num_items (%d) x dim (%d) exceeds the limit of %d floats per matrix",
                        num_items, dim, kMaxMatrixFloats));
  }

  std::vector<int64_t> counts(num_items, 0);
  int64_t total_tokens = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const std::vector<int32_t>& seq = sequences[s];
    for (size_t p = 0; p < seq.size(); ++p) {
      if (seq[p] < 0 || seq[p] >= num_items) {
        return absl::InvalidArgumentError(
            absl::StrFormat("sequences[%d][%d] is %d; item indices must be in [0, num_items = %d)",
                            s, p, seq[p], num_items));
      }
      ++counts[seq[p]];
    }
    total_tokens += static_cast<int64_t>(seq.size());
  }

  Job job;
  job.sequences = &sequences;
  job.options = options;
  job.dim = dim;
  job.start = start;
  std::vector<float> input(static_cast<size_t>(num_items) * dim);
  Rng init_rng(options.seed);
  // word2vec's initialisation: small input vectors break the symmetry; zero output
  // vectors make every first prediction 0.5.
  for (float& v : input) {
    v = (static_cast<float>(init_rng.Next() >> 40) / 16777216.0f - 0.5f) / dim;
  }
  if (total_tokens == 0) return input;
  std::vector<float> output(static_cast<size_t>(num_items) * dim, 0.0f);
  job.input = input.data();
  job.output = output.data();

  std::vector<double> weights(num_items);
  std::vector<uint64_t> keep_below(num_items, uint64_t{1} << 32);
  const double threshold = options.subsample * static_cast<double>(total_tokens);
  for (int i = 0; i < num_items; ++i) {
    weights[i] =
        counts[i] > 0 ? std::pow(static_cast<double>(counts[i]), options.unigram_power) : 0.0;
    if (options.subsample > 0 && counts[i] > 0) {
      const double c = static_cast<double>(counts[i]);
      const double keep = (std::sqrt(c / threshold) + 1.0) * threshold / c;
      if (keep < 1.0) keep_below[i] = static_cast<uint64_t>(keep * 4294967296.0);
    }
  }
  const AliasTable alias(weights);
  job.negatives = &alias;
  job.keep_below = &keep_below;
  job.total_work = total_tokens * options.epochs;

  // Shards of about equal token counts, contiguous so each worker streams its own part.
  const int threads = options.threads;
  std::vector<size_t> shard_begin(threads + 1, sequences.size());
  shard_begin[0] = 0;
  {
    int64_t seen = 0;
    int t = 1;
    for (size_t s = 0; s < sequences.size() && t < threads; ++s) {
      seen += static_cast<int64_t>(sequences[s].size());
      while (t < threads && seen >= total_tokens * t / threads) shard_begin[t++] = s + 1;
    }
  }

  // One random stream per worker, all derived from options.seed.
  std::vector<uint64_t> seeds(threads);
  for (uint64_t& s : seeds) s = init_rng.Next();

  std::vector<std::thread> workers;
  absl::Status spawn_status;
  for (int t = 1; t < threads; ++t) {
    try {
      workers.emplace_back(TrainShard, std::ref(job), shard_begin[t], shard_begin[t + 1], seeds[t]);
    } catch (const std::system_error& e) {
      spawn_status = absl::ResourceExhaustedError(
          absl::StrFormat("item2vec: could not start worker thread %d: %s", t, e.what()));
      job.stop.store(true);
      break;
    }
  }
  if (spawn_status.ok()) TrainShard(job, shard_begin[0], shard_begin[1], seeds[0]);
  for (std::thread& w : workers) w.join();
  if (!spawn_status.ok()) return spawn_status;

  if (options.verbose) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    absl::FPrintF(stderr,
                  "item2vec: %d items, %d tokens x %d epochs, %d threads, %.2fs, "
                  "%.2fM tokens/s\n",
                  num_items, total_tokens, options.epochs, threads, seconds,
                  job.total_work / std::max(seconds, 1e-9) / 1e6);
  }
  return input;
}

}  // namespace

absl::StatusOr<std::vector<float>> TrainItem2Vec(const std::vector<std::vector<int32_t>>& sequences,
                                                 int num_items, const Item2VecOptions& options) {
  // Allocation can throw; nothing may cross the module boundary as an exception.
  try {
    return TrainItem2VecImpl(sequences, num_items, options);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("item2vec: out of memory for %d items x dim %d", num_items, options.dim));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrFormat("item2vec: %s", e.what()));
  }
}

}  // namespace recserve
