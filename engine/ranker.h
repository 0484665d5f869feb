// The ranking stage: an MLP scoring [n x input_dim] feature rows into click
// probabilities, on oneDNN kernels.
//
// A Ranker is built once per model version (primitives created and weights reordered
// at Create, one set per batch bucket) and is then immutable: Score may run on many
// threads at once, each with its own RankerScratch (activation buffers, a oneDNN stream,
// the user-mode scratchpad, prebuilt argument maps). Nothing is allocated per call.
//
// Batches are padded up to a fixed bucket size, because oneDNN's fast kernels want
// shapes fixed at creation; batches above the largest bucket run in chunks.
//
// Three forms: fp32, int8 (every layer u8 x s8) and mixed precision (chosen layers fp32,
// the rest int8: what the compression fallback serves when int8 alone fails the accuracy
// gate). A ranker may carry a RankerChoice: how its form was chosen at load.
#ifndef RECSERVE_ENGINE_RANKER_H_
#define RECSERVE_ENGINE_RANKER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/mlp.h"

namespace recserve {

// How a ranker's form was chosen at load and how close it came to its fp32 original on
// the calibration rows. compression/compress.h attaches one to the rankers it builds,
// before they are shared, so the version's status reports the gate's own measurement
// instead of scoring the calibration rows again. Never read on the request path.
struct RankerChoice {
  std::string form;             // what serves: "none", "int8", "prune+int8", "mixed(int8, layer 0 fp32)"
  std::string requested;        // the form the compression policy asked for
  std::string calibration;      // how the int8 layers' ranges were calibrated ("max", ...); "" for fp32
  std::string fallback_reason;  // why `requested` did not serve ("int8: AUC drop 0.0061 > 0.002"); "" if it did
  absl::Status gate;            // the accuracy gate's verdict on `form` (not OK only with fallback off)
  double fp32_auc = 0, served_auc = 0;
  double auc_delta = 0, logloss_delta = 0;  // served - fp32
};

class RankerScratch {
 public:
  virtual ~RankerScratch() = default;
};

class Ranker {
 public:
  virtual ~Ranker() = default;
  virtual int input_dim() const = 0;
  // Smallest bucket >= n (or the largest bucket when n exceeds it).
  int BucketFor(int n) const;
  // Rows a caller's buffer must hold to score n rows in place: n rounded up to the
  // bucket (chunks of the largest bucket above it).
  int PaddedRows(int n) const;
  const std::vector<int>& buckets() const { return buckets_; }

  // Scores rows [n x input_dim()] into probabilities[n]. `rows` must have room for
  // PaddedRows(n) rows; the rows past n are overwritten (zeroed) as padding.
  // `scratch` must come from this ranker's NewScratch and be used by one thread.
  virtual absl::Status Score(float* rows, int n, float* probabilities,
                             RankerScratch* scratch) const = 0;
  virtual std::unique_ptr<RankerScratch> NewScratch() const = 0;

  // "fp32", "int8", ...
  virtual std::string kind() const = 0;
  // Bytes of weights as served (after reorders, quantization).
  virtual int64_t weight_bytes() const = 0;
  // Fraction of weights that are exactly zero.
  virtual double weight_sparsity() const = 0;
  // Multiply-accumulates per scored row.
  virtual int64_t macs_per_row() const = 0;

  // The builder's RankerChoice, or null. Set only before the ranker is shared.
  const RankerChoice* choice() const { return choice_ ? &*choice_ : nullptr; }
  void set_choice(RankerChoice choice) { choice_ = std::move(choice); }

 protected:
  std::vector<int> buckets_;

 private:
  std::optional<RankerChoice> choice_;
};

struct Fp32RankerOptions {
  // Batch sizes primitives are built for, ascending. Default: 1, 8, 32, 64, 128, 256,
  // 512 (larger batches run in chunks of 512: on AMX and on VNNI machines a 1024-row
  // shape ran 10-15% slower per row than 512, and 513-1023 rows padded to 1024 wasted
  // up to half the work; docs/benchmarks.md).
  std::vector<int> buckets = {1, 8, 32, 64, 128, 256, 512};
};

// fp32 matmuls (bias and ReLU fused) with a final fp32 sigmoid.
absl::StatusOr<std::unique_ptr<Ranker>> CreateFp32Ranker(const Mlp& mlp,
                                                        const Fp32RankerOptions& options = {});

struct QuantizedMlp;
struct MixedPrecisionMlp;

// u8 x s8 matmuls on the VNNI brgemm kernels: per-column output scales and the ReLU
// fused, u8 activations between layers, fp32 logit and sigmoid. The input rows are
// quantized per column (QuantizeInputRows) into the scratch first.
absl::StatusOr<std::unique_ptr<Ranker>> CreateInt8Ranker(const QuantizedMlp& mlp,
                                                        const Fp32RankerOptions& options = {});

// Mixed precision (engine/quantized_mlp.h): the fp32 layers as CreateFp32Ranker builds
// them, the int8 ones as CreateInt8Ranker, on the same buckets. An int8 layer followed by
// an fp32 one writes fp32 (its scales times the activation scales); the output of an fp32
// layer followed by an int8 one is quantized per channel into the scratch between the
// two matmuls. kind() is MixedPrecisionMlp::Describe(). The pure int8 and fp32 rankers do
// not take this path.
absl::StatusOr<std::unique_ptr<Ranker>> CreateMixedPrecisionRanker(const MixedPrecisionMlp& mlp,
                                                                  const Fp32RankerOptions& options = {});

// Scores `n` rows of any length with a fresh scratch, copying through a bucket-sized
// buffer (tools and load-time checks, not the request path).
absl::StatusOr<std::vector<float>> ScoreAll(const Ranker& ranker, absl::Span<const float> rows, int n);

// Validates a bucket list: non-empty, ascending, each in [1, 65536].
absl::Status ValidateBuckets(const std::vector<int>& buckets);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_RANKER_H_
