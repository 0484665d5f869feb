// The synthetic world's click model as the judge of answers: what recserve-loop scores
// the served lists by, and what recserve-eval --impressions --world scores each bundle's
// own answer to a logged request by.
//
// A user examines position k (0 = top) with probability 1 / (1 + k)^position_decay and
// clicks an examined item with the world's probability (ClickModel::Probability), so an
// answer's expected clicks are sum over k of examination[k] x p(user, item_k).
//
// Stateless functions; thread-safe (AnswerItems writes only the caller's scratch).
#ifndef RECSERVE_TRAIN_CLICK_TRUTH_H_
#define RECSERVE_TRAIN_CLICK_TRUTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/pipeline.h"
#include "train/datagen.h"
#include "train/world.h"

namespace recserve {

// A world directory and the click model it was generated with.
struct WorldWithTruth {
  World world;
  ClickModel truth;
};

// Reads the world at `dir` and regenerates its click model from world.txt.
// FailedPrecondition when the regenerated world's events differ from the directory's
// (world.txt does not describe these events, so the truth would be another world's).
absl::StatusOr<WorldWithTruth> ReadWorldWithTruth(const std::string& dir);

// examination[k] = 1 / (1 + k)^position_decay for positions k = 0..n-1.
std::vector<double> ExaminationCurve(int n, double position_decay);

// One answer's figures under the world's truth.
struct ListScore {
  double expected_clicks = 0;  // sum over positions of examination x click probability
  double mean_p = 0;           // click probability of the shown items over examination.size()
};

// `items` best first; items past examination.size() are not examined. The caller checks
// the ids: user in 1..truth.num_users(), items in 1..truth.num_items().
ListScore ScoreList(const ClickModel& truth, absl::Span<const double> examination, uint64_t user,
                    absl::Span<const uint64_t> items, const RequestContext& context);

// `model`'s answer to a request (its first n item ids, best first), computed in-process
// as the server computes it.
absl::StatusOr<std::vector<uint64_t>> AnswerItems(const Model& model, absl::Span<const QueryEvent> events,
                                                  const RequestContext& context, int n,
                                                  PipelineScratch* scratch);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_CLICK_TRUTH_H_
