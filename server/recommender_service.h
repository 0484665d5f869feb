// recserve.v1.Recommender on gRPC's callback API.
//
// A Recommend call is checked on the gRPC thread (body parsed -> INVALID_ARGUMENT naming
// the fault, in-flight cap -> RESOURCE_EXHAUSTED, request limits -> INVALID_ARGUMENT
// naming the field), then handed to the WorkerPool, where it pins the serving set, takes
// the member its user_id routes to (ServingSet::ForUser: a canary's share of users, else
// the serving version), runs the engine pipeline with the worker's own scratch, records
// the call into that member's RolloutStats, offers an answer of the serving version to
// the shadow version if one runs (ShadowScorer: never waits), and finishes the reactor. No
// thread per request, no engine allocation per request. The gRPC method is a thin
// adapter over Submit(), which has no gRPC in it (the ThreadSanitizer build tests it
// directly: Debian's gRPC is not TSAN-instrumented).
//
// The method is registered raw (bytes in, bytes out): gRPC's generated handler answers a
// body protobuf cannot parse with UNIMPLEMENTED and no message before any code of ours
// runs, so such calls were neither explained nor counted. The adapter parses the body
// itself (ParseRequestBody, the same protobuf parse over the same zero-copy reader) and
// serializes the response as the generated code would.
#ifndef RECSERVE_SERVER_RECOMMENDER_SERVICE_H_
#define RECSERVE_SERVER_RECOMMENDER_SERVICE_H_

#include <grpc/support/time.h>

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/pipeline.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "server/impression_log.h"
#include "server/log_rate_limiter.h"
#include "server/model_manager.h"
#include "server/shadow_scorer.h"
#include "server/worker_pool.h"

namespace recserve {

struct RequestLimits {
  int max_events = 1000;          // events per request
  // Entries in each of options.exclude_item_ids and options.exclude_items.
  int max_exclude_items = 1000;
  int max_n = 500;                // largest n
  int max_user_id_bytes = 256;
  int max_inflight = 256;         // queued + running Recommend calls
  // Timestamps may be at most this far ahead of the server's clock.
  absl::Duration max_clock_skew = absl::Hours(1);
  // false: requests that list no options.exclude_event_types drop no consumed items
  // (true: the model's default, manifest recall.exclude_event_types).
  bool exclude_purchased = true;
};

// What one finished request reports (for metrics); called on the worker thread (or the
// gRPC thread for a call refused there).
struct RequestOutcome {
  absl::StatusCode code = absl::StatusCode::kOk;
  double seconds = 0;                      // from arrival to finish
  const RecommendResult* result = nullptr; // null when the pipeline did not run
  // The version the call was handed to and the role it answered in; 0 and kNone when no
  // version was chosen (refused: malformed, invalid, shed, cancelled or late in the
  // queue, no version serving). A call that failed after (the engine's error) keeps them.
  int64_t version = 0;
  ServingRole role = ServingRole::kNone;
};

// Checks `request` against `limits`; the error names the field and the bad value. Item
// keys (events[i].item, options.exclude_items[i]) must pass CheckItemKey, and an event
// with both item and item_id must agree (ItemIdFromKey).
absl::Status ValidateRequest(const v1::RecommendRequest& request, const RequestLimits& limits,
                             absl::Time now);

// A call's deadline as gRPC holds it (ServerContext::raw_deadline(), any clock), as an
// absl::Time: infinite (no deadline) is absl::InfiniteFuture(), and a deadline past the
// year 2262 stays that far in the future. ServerContext::deadline() goes through
// std::chrono::system_clock, whose nanosecond count overflows there into the past (a
// `grpc-timeout: 2100000H` call was answered DEADLINE_EXCEEDED).
absl::Time DeadlineFromGrpc(gpr_timespec deadline);

// One Recommend call as Submit() takes it. `request` and `response` must stay valid
// until `done` has been called.
struct RecommendCall {
  const v1::RecommendRequest* request = nullptr;
  v1::RecommendResponse* response = nullptr;
  absl::Time deadline = absl::InfiniteFuture();  // InfiniteFuture: none
  std::string request_id;                          // empty: one is made up
  grpc::CallbackServerContext* context = nullptr;  // if set, a cancelled call is not run
};

class NoMessageReactor;

class RecommenderService final
    : public v1::Recommender::WithRawCallbackMethod_Recommend<v1::Recommender::Service> {
 public:
  // `shadow`, when set, is offered the serving version's answers; `impressions`, when set,
  // gets every answered call (it samples). Both must outlive the service's calls.
  RecommenderService(ModelManager* manager, WorkerPool* pool, RequestLimits limits,
                     std::function<void(const RequestOutcome&)> observer = nullptr,
                     ShadowScorer* shadow = nullptr, ImpressionLog* impressions = nullptr);

  // `request` is a RecommendRequest's bytes; `response` gets a RecommendResponse's. A
  // call that carried no message is INVALID_ARGUMENT when the client ended it so, and
  // counted CANCELLED, not logged, when the client reset it before the message came.
  grpc::ServerUnaryReactor* Recommend(grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;

  // Validates, admits (or refuses at the in-flight cap) and runs `call` on a worker;
  // `done` is called exactly once, on the worker or (refused) on this thread.
  void Submit(RecommendCall call, std::function<void(const absl::Status&)> done);
  // Answers a call whose body is not a RecommendRequest (`fault`, from ParseRequestBody)
  // the way Submit answers an invalid request: counted by the observer, never run; then
  // calls `done`. Writes one line naming `peer` and the fault to stderr at most once a
  // second, with the number not written since.
  void RefuseMalformed(const absl::Status& fault, absl::string_view peer,
                       const std::function<void(const absl::Status&)>& done);

  int inflight() const { return inflight_.load(std::memory_order_relaxed); }
  // Recommend calls that have arrived so far (draining watches it go still).
  uint64_t arrivals() const { return arrivals_.load(std::memory_order_relaxed); }
  // Runs one request for `model` on every worker so each has its buffers for the new
  // version before the version serves (no first-request allocation spike after a swap).
  void WarmWorkers(const Model& model);

 private:
  friend class NoMessageReactor;  // ends its call with EndCallWithoutMessage

  // The end of a call that carried no message (OnDone, when IsCancelled is known):
  // counted CANCELLED if the client reset it, else refused as malformed.
  void EndCallWithoutMessage(bool cancelled, absl::string_view peer);
  // Sets `answered`'s version and role once it has chosen the version that answers.
  absl::Status Handle(const RecommendCall& call, RecommendResult* result, RequestOutcome* answered);
  // Answers the call and takes it out of inflight_; the observer gets `answered`'s version
  // and role (none for a call refused before Handle chose one).
  void Finish(const std::function<void(const absl::Status&)>& done, const absl::Status& status,
              absl::Time start, const RecommendResult* result, const RequestOutcome& answered = {});

  ModelManager* const manager_;
  WorkerPool* const pool_;
  const RequestLimits limits_;
  const std::function<void(const RequestOutcome&)> observer_;
  ShadowScorer* const shadow_;  // null: no shadow scoring
  ImpressionLog* const impressions_;
  std::atomic<uint64_t> arrivals_{0};
  std::atomic<int> inflight_{0};
  std::atomic<uint64_t> request_counter_{0};
  LogRateLimiter malformed_log_{absl::Seconds(1)};
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_RECOMMENDER_SERVICE_H_
