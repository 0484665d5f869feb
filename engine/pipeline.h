// The request path inside the engine: events -> user state -> recall -> features ->
// rank -> top-n. No gRPC here; server/ maps its protos onto these plain types.
//
// Recommend() runs on the caller's thread with that thread's PipelineScratch, which
// holds every buffer the path needs and is re-sized only when the model version
// changes; steady-state requests allocate nothing in the engine. No NaN or infinity
// reaches an answer or a comparator: features are finite by the bundle's value limits
// (value_limits.h) and a score that is not becomes the lowest (non_finite_scores).
//
// Answers on time: a request with a deadline gets the largest answer that its remaining
// time affords by the version's measured stage costs (engine/stage_costs.h), and the
// result says which (Degraded). A request whose time cannot afford even the popularity
// answer is refused with DEADLINE_EXCEEDED before any work.
#ifndef RECSERVE_ENGINE_PIPELINE_H_
#define RECSERVE_ENGINE_PIPELINE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "engine/stage_costs.h"

namespace recserve {

struct QueryEvent {
  uint64_t item_id;  // external id
  EventType type;
  int64_t timestamp_ms;
};

struct RecommendQuery {
  absl::Span<const QueryEvent> events;
  RequestContext context;
  int n = 10;
  // Consumed items to drop: those with an event in `events` of a type in this
  // EventTypeBit mask; -1 takes the model's default (manifest recall.exclude_event_types).
  int64_t exclude_types = -1;
  // External ids never to return (e.g. already shown); unknown ids are ignored.
  absl::Span<const uint64_t> exclude_items;
  int per_category_cap = 0;  // 0 = none
  // Decides how much of the pipeline runs (Degraded); InfiniteFuture: all of it.
  absl::Time deadline = absl::InfiniteFuture();
  // The stage costs the plan is chosen by; null: the model's measured ones
  // (model.stage_costs()). Tests fix them here to choose a plan without timing.
  const StageEstimates* estimates = nullptr;
  // false: this run's stage times are not folded into the model's costs (the shadow's
  // runs, at idle priority, time the machine's load, and would inflate the estimates the
  // version answers by once it serves).
  bool record_stage_costs = true;
};

// How much of the pipeline an answer had time for, largest first.
// The values are recserve.v1.Degraded's.
enum class Degraded {
  kNone = 0,             // every candidate ranked
  kFewerCandidates = 1,  // the first `ranked` of recall's order ranked, the rest dropped
  kRecallOrder = 2,      // not ranked: recall's order (co-visitation, embedding, popularity), score 0
  kPopularity = 3,       // no recall: the catalog's most popular items not consumed or excluded, score 0
};
// "none", "fewer_candidates", "recall_order", "popularity": the metric's stage label.
const char* DegradedName(Degraded degraded);

struct RecommendedItem {
  uint64_t item_id;
  float score;
  uint32_t sources;
  int32_t category;
};

struct StageSeconds {
  double recall = 0, features = 0, rank = 0, total = 0;
};

struct RecommendResult {
  // Best first; with the manifest's answer.recent_share the last share of them by recent popularity.
  std::vector<RecommendedItem> items;
  int candidates = 0;  // proposed by recall
  int ranked = 0;      // of them, scored by the ranker (all unless degraded)
  Degraded degraded = Degraded::kNone;
  int candidates_by_source[3] = {0, 0, 0};  // embedding, covisit, popularity (overlaps count in each)
  int unknown_items = 0;
  // Candidates the ranker scored NaN or infinite (its arithmetic overflowed): each is
  // answered with 0, the lowest probability, and ordered like any other score.
  int non_finite_scores = 0;
  StageSeconds seconds;
};

// Per-thread working memory for Recommend.
class PipelineScratch {
 public:
  UserState user;
  RecallScratch recall;
  std::vector<UserEvent> events;
  std::vector<Candidate> candidates;
  std::vector<int32_t> items;
  std::vector<float> rows;
  std::vector<float> scores;
  std::vector<int32_t> order;
  std::vector<int32_t> excluded;      // catalog indices of query.exclude_items
  std::vector<int32_t> per_category;  // [categories] items taken, for per_category_cap; zero between calls
  std::unique_ptr<RankerScratch> ranker;
  uint64_t model_id = 0;
};

absl::Status Recommend(const Model& model, const RecommendQuery& query, PipelineScratch* scratch,
                       RecommendResult* result);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_PIPELINE_H_
