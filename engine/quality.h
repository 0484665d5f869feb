// Model-quality figures shared by the trainer, the accuracy gate and the tools.
#ifndef RECSERVE_ENGINE_QUALITY_H_
#define RECSERVE_ENGINE_QUALITY_H_

#include <cstdint>

#include "absl/types/span.h"

namespace recserve {

// Area under the ROC curve of `scores` against 0/1 `labels`; tied scores get half
// credit. Returns 0.5 when either class is absent.
double Auc(absl::Span<const float> scores, absl::Span<const float> labels);

// Mean binary cross-entropy of probabilities clamped to [1e-7, 1 - 1e-7].
double LogLoss(absl::Span<const float> probabilities, absl::Span<const float> labels);

// Mean NDCG@k over groups (runs of equal `groups` values, e.g. one impression slate or
// one request each) that hold at least one positive label: each group's rows ranked by
// score (ties broken by row order), gain 1 per positive, log2 discount; 0 when no group
// has a positive.
double MeanGroupNdcg(absl::Span<const float> scores, absl::Span<const float> labels,
                     absl::Span<const int64_t> groups, int k);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_QUALITY_H_
