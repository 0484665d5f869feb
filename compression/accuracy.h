// Accuracy of a compressed ranker against its fp32 original on the calibration rows,
// and the gate that refuses a version which lost too much.
#ifndef RECSERVE_COMPRESSION_ACCURACY_H_
#define RECSERVE_COMPRESSION_ACCURACY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "recserve/v1/model.pb.h"

namespace recserve {

struct AccuracyReport {
  int rows = 0;
  int groups = 0;
  double fp32_auc = 0, served_auc = 0;
  double fp32_logloss = 0, served_logloss = 0;
  double auc_delta = 0;      // served - fp32 (negative: lost accuracy)
  double logloss_delta = 0;  // served - fp32 (positive: lost accuracy)
  // Share of groups (impression slates) whose top-`top_n` items differ as a set.
  double topn_changed = 0;
  int top_n = 0;
  double max_abs_diff = 0;   // largest |p_served - p_fp32| over the rows
  double mean_abs_diff = 0;  // mean |p_served - p_fp32|
  // Rows either scoring scored NaN or infinite: the figures above take such a score as
  // 0, and the gate refuses any.
  int non_finite = 0;

  std::string ToString() const;
};

// Compares two scorings of the same rows; `groups` ties rows into slates. A score that
// is not finite is counted in non_finite and taken as 0 (the lowest probability) for the
// figures, so no NaN reaches a sort.
AccuracyReport CompareScores(absl::Span<const float> fp32, absl::Span<const float> served,
                             absl::Span<const float> labels, absl::Span<const int64_t> groups,
                             int top_n = 3);

// OK when no score was non-finite and the AUC drop and logloss rise are within `gate`;
// otherwise FailedPrecondition with the measured figures and the thresholds.
absl::Status CheckGate(const AccuracyReport& report, const v1::AccuracyGate& gate);

// What CheckGate refuses, in short: "" when `report` passes `gate`, else e.g.
// "AUC drop 0.0061 > 0.002" or "AUC drop 0.0061 > 0.002, logloss rise 0.0123 > 0.01".
std::string GateFailure(const AccuracyReport& report, const v1::AccuracyGate& gate);

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_ACCURACY_H_
