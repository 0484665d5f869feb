// Offline evaluation of recommendations the way users meet them: held-out users of a
// real log replayed through the served pipeline, side by side with classical baselines
// computed in the same run on the same split.
//
// Split protocols (SplitLog), both leakage-free for the evaluated users:
//   leave_last_out  users with at least min_user_events events; the target is the last
//                   item that was new to the user (the latest first occurrence; one item,
//                   the last in file order within its basket); the request is every event
//                   strictly before the target's timestamp (earlier baskets only, so the
//                   target's own basket is never part of its request); the target's
//                   timestamp onward is removed from the training events.
//   time            one global time T (split_time_ms, or time_test_fraction of the range
//                   from the end): training events are those before T; a test user has
//                   events before T (the request) and at least one item new to them in
//                   [T, T + horizon) (the targets, a set).
// Targets are always items the request never names: the task is the next *new* item,
// and every method here drops items of the history from its answer (the served model
// by its own consumed-types rule, which the eval reports as consumed@10).
//
// Evaluate() replays the cases through recserve::Recommend on a loaded Model (the
// caller loads it as the server does, compression included) and scores the baselines on
// the split's training events. It is deterministic for a given split and model: results
// are aggregated in case order whatever the thread count.
#ifndef RECSERVE_TRAIN_EVAL_H_
#define RECSERVE_TRAIN_EVAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "train/world.h"

namespace recserve {

struct SplitOptions {
  std::string protocol = "leave_last_out";  // or "time"
  int min_user_events = 5;                  // leave_last_out: users with fewer are not tested
  double time_test_fraction = 0.1;          // time: T at this share of the time range from the end
  int64_t split_time_ms = 0;                // time: explicit T (0: from time_test_fraction)
  double horizon_days = 0;                  // time: targets within this many days of T (0: to the end)
  int max_users = 0;                        // 0: every test user; else a sample by seed
  uint64_t seed = 1;
};

struct TestCase {
  uint64_t user_id = 0;
  std::vector<LoggedEvent> request;  // the user's events before the cut, oldest first
  std::vector<uint64_t> targets;     // items new to the user after the cut
  int64_t cut_ms = 0;                // the request's time
};

struct LogSplit {
  std::vector<LoggedEvent> train_events;  // sorted by time; what a model may learn from
  std::vector<TestCase> cases;
  std::string description;                // e.g. "leave_last_out(min_user_events=5)"
};

// `events` sorted by time (as ReadEventLog returns them).
absl::StatusOr<LogSplit> SplitLog(const std::vector<LoggedEvent>& events, const SplitOptions& options);

struct EvalOptions {
  int n = 100;                  // list length asked of every method (hit@n is the widest metric)
  int max_request_events = 1000; // newest events a request carries (the server's default --max_events)
  double recent_days = 30;      // "recent popularity": counts over the cut's day and the days before, this many in all
  int covisit_window = 5;       // co-visitation baseline: pairs within +-window positions
  int covisit_last_items = 20;  // ... scored from the user's newest distinct items
  int knn_neighbors = 200;      // item-kNN: neighbours kept per item
  int knn_last_items = 50;      // ... scored from the user's newest distinct items
  double knn_decay = 0.9;       // ... weight decay^position (newest first) for "item-kNN (recency)"
  bool baselines = true;
  // Called with (done, total) now and then from the calling thread.
  std::function<void(int64_t, int64_t)> progress;
};

// Metrics of one method over the evaluated cases.
struct MethodMetrics {
  std::string name;
  double hit10 = 0, hit50 = 0, hit100 = 0, ndcg10 = 0;
  double mrr = 0;          // mean reciprocal rank of the first target within the n answered (MRR@n)
  double coverage10 = 0;   // distinct items in the top 10s / catalog size
  double consumed10 = 0;   // share of top-10 slots holding an item of the request
  int64_t cases = 0;
};

struct EvalReport {
  std::vector<MethodMetrics> methods;  // recserve first, then the baselines
  // Where the served model's candidates came from for the cases' targets: share of
  // targets proposed by each source (overlaps count in each), and not recalled at all.
  double target_from_embedding = 0, target_from_covisit = 0, target_from_popularity = 0;
  double target_not_recalled = 0;
  double mean_candidates = 0;
  int64_t cases = 0;
  int64_t catalog_items = 0;
  int64_t unknown_target_cases = 0;  // cases whose every target is unknown to the model
  double seconds = 0;                 // the whole call
  double baseline_build_seconds = 0;  // of which building the baselines' tables
  double recserve_seconds = 0;        // of which in recserve::Recommend, summed over threads
  // Per case (split.cases order) and method (methods order): the rank (1-based) of the
  // first target in the method's answer, 0 when none is within n. [cases x methods].
  std::vector<int32_t> first_hit;
};

absl::StatusOr<EvalReport> Evaluate(const Model& model, const LogSplit& split,
                                    const EvalOptions& options);

// The best baseline on a metric (by name) and recserve's ratio to it.
const MethodMetrics* BestBaseline(const EvalReport& report, double MethodMetrics::*metric);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_EVAL_H_
