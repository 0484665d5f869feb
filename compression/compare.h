// Rankers side by side: several MLPs that take the same feature rows (a distilled
// student, its teacher, the same-size student trained without a teacher), each measured
// on the same held-out rows in fp32 and in the form a compression policy serves it at
// load (BuildGatedRanker: pruning, int8, the accuracy gate and its fallback chain, as the
// server loads a bundle), and timed in interleaved rounds, so that a machine busy with
// other work slows every ranker alike and the ratios stay meaningful.
//
// Thread-compatible: pure functions of their arguments. CompareRankers times on the
// calling thread (oneDNN kernels may use the OpenMP threads).
#ifndef RECSERVE_COMPRESSION_COMPARE_H_
#define RECSERVE_COMPRESSION_COMPARE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "compression/compress.h"
#include "engine/bundle.h"
#include "engine/mlp.h"
#include "recserve/v1/model.pb.h"

namespace recserve {

struct NamedMlp {
  std::string name;  // RankerFigures::name
  const Mlp* mlp = nullptr;
};

struct CompareOptions {
  // Rows per Score call when timing: one request's candidates. Must be >= 1.
  int batch = 256;
  // Timing rounds; each scores `batches_per_round` batches with every ranker in turn,
  // fp32 and served form alternating: many short rounds, so that load from other
  // processes falls on every ranker alike. Must be >= 1.
  int rounds = 60;
  int batches_per_round = 4;  // >= 1
};

// One RankerFigures per entry of `mlps`, in order: shape, parameters, MACs; fp32 AUC,
// logloss and mean NDCG@10 (per held_out.groups) on `held_out`; the served form built
// from `calibration` under `policy` and its AUC on `held_out`; fp32 and served ranking
// time per candidate, the median over the rounds (each timed batch holds `batch` consecutive held-out rows with the
// policy's request-constant columns made equal, one request's candidates as the server
// scores them). InvalidArgument naming the ranker when its input width is not the
// rows' width; errors of building a ranker are returned as they are.
absl::StatusOr<std::vector<v1::RankerFigures>> CompareRankers(absl::Span<const NamedMlp> mlps,
                                                              const CalibrationSet& calibration,
                                                              const CompressionPolicy& policy,
                                                              const CalibrationSet& held_out,
                                                              const CompareOptions& options);

// A table of `rankers`, one line each, with the time and parameter ratios to the row
// named `reference` (the first row when none is).
std::string FormatRankerTable(const std::vector<v1::RankerFigures>& rankers, const std::string& reference);

// The distillation report as printed by recserve-train and recserve-compress: teacher,
// settings, held-out rows, the table (ratios to the student).
std::string FormatDistillationReport(const v1::DistillationReport& report);

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_COMPARE_H_
