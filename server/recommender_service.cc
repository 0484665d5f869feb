#include "server/recommender_service.h"

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <cstdio>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/item_key.h"
#include "server/grpc_status.h"
#include "server/request_body.h"

namespace recserve {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// Per worker thread, for the thread's whole life. Two pipeline scratches, so a worker
// warmed for a new version keeps its buffers for the old one while both are in use.
struct WorkerState {
  PipelineScratch scratch[2];
  uint64_t last_used[2] = {0, 0};
  uint64_t uses = 0;
  std::vector<QueryEvent> events;
  std::vector<uint64_t> exclude_ids;  // options.exclude_item_ids + the ids of exclude_items
  RecommendResult result;

  PipelineScratch* ScratchFor(const Model& model) {
    int slot = scratch[0].model_id == model.id() ? 0 : scratch[1].model_id == model.id() ? 1 : -1;
    if (slot < 0) slot = last_used[0] <= last_used[1] ? 0 : 1;  // least recently used
    last_used[slot] = ++uses;
    return &scratch[slot];
  }
};

WorkerState& ThisWorker() {
  thread_local WorkerState state;
  return state;
}

// One Recommend call's messages, from the parse on the gRPC thread to the serialized
// response on the worker (gRPC's generated handler kept them in the call's arena).
struct CallMessages {
  v1::RecommendRequest request;
  v1::RecommendResponse response;
  grpc::ServerUnaryReactor* reactor = nullptr;
  grpc::ByteBuffer* response_body = nullptr;
};

static_assert(static_cast<int>(Degraded::kFewerCandidates) == v1::DEGRADED_FEWER_CANDIDATES &&
                  static_cast<int>(Degraded::kRecallOrder) == v1::DEGRADED_RECALL_ORDER &&
                  static_cast<int>(Degraded::kPopularity) == v1::DEGRADED_POPULARITY,
              "engine and proto name the same degraded stages by the same numbers");

constexpr char kNoMessage[] = "the call carried no request message";

// The body as one string, for describing a fault (the failure path only).
std::string WholeBody(const grpc::ByteBuffer& body) {
  grpc::Slice slice;
  if (!body.DumpToSingleSlice(&slice).ok()) return "";
  return std::string(reinterpret_cast<const char*>(slice.begin()), slice.size());
}

}  // namespace

// A call that came without a message, answered INVALID_ARGUMENT at once. The client
// either half-closed without one (malformed) or reset the call before it came (rapid
// reset does, thousands of times a second); only in OnDone does IsCancelled() tell
// which (until the call's close has been received it says false, and such a call reaches
// Recommend before that), so the call is counted and logged there. Deletes itself.
class NoMessageReactor final : public grpc::ServerUnaryReactor {
 public:
  NoMessageReactor(RecommenderService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {}

  void OnDone() override {
    service_->EndCallWithoutMessage(context_->IsCancelled(), context_->peer());
    delete this;
  }
  // OnDone only counts (and at most once a second writes a line): gRPC may run it on the
  // thread that ends the call, as it does DefaultReactor's. Scheduled on its callback
  // executor instead (the default), three bursts of 20,000 reset calls on one connection
  // cost about 100 MiB more (docs/benchmarks.md).
  bool InternalInlineable() override { return true; }

 private:
  RecommenderService* const service_;
  grpc::CallbackServerContext* const context_;
};

absl::Status ValidateRequest(const v1::RecommendRequest& r, const RequestLimits& limits,
                             absl::Time now) {
  if (r.n() < 1 || r.n() > limits.max_n) {
    return Invalid(absl::StrFormat("n: %d is outside [1, %d]", r.n(), limits.max_n));
  }
  if (static_cast<int>(r.user_id().size()) > limits.max_user_id_bytes) {
    return Invalid(absl::StrFormat("user_id: %d bytes, more than the limit of %d",
                                   r.user_id().size(), limits.max_user_id_bytes));
  }
  if (r.events_size() > limits.max_events) {
    return Invalid(absl::StrFormat("events: %d events, more than the limit of %d", r.events_size(),
                                   limits.max_events));
  }
  const int64_t latest_ms = absl::ToUnixMillis(now + limits.max_clock_skew);
  for (int i = 0; i < r.events_size(); ++i) {
    const v1::Event& e = r.events(i);
    if (e.type() < v1::VIEW || e.type() > v1::PURCHASE) {
      return Invalid(absl::StrFormat("events[%d].type: %d is not an event type (VIEW=1 .. PURCHASE=4)",
                                     i, static_cast<int>(e.type())));
    }
    if (e.timestamp_ms() <= 0) {
      return Invalid(absl::StrFormat(
          "events[%d].timestamp_ms: %d is not a positive unix time in milliseconds", i,
          e.timestamp_ms()));
    }
    if (e.timestamp_ms() > latest_ms) {
      return Invalid(absl::StrFormat(
          "events[%d].timestamp_ms: %d is in the future (server time %d ms, allowed skew %s)", i,
          e.timestamp_ms(), absl::ToUnixMillis(now), absl::FormatDuration(limits.max_clock_skew)));
    }
    if (!e.item().empty()) {
      if (absl::Status key = CheckItemKey(e.item()); !key.ok()) {
        return Invalid(absl::StrFormat("events[%d].item: the key %s", i, key.message()));
      }
      if (e.item_id() != 0 && ItemIdFromKey(e.item()) != e.item_id()) {
        return Invalid(absl::StrFormat(
            "events[%d].item: key '%s' has id %d, but events[%d].item_id is %d (set one, or both "
            "agreeing)", i, absl::CHexEscape(e.item()), ItemIdFromKey(e.item()), i, e.item_id()));
      }
    }
  }
  const v1::Context& c = r.context();
  if (c.device() < v1::DEVICE_UNSPECIFIED || c.device() > v1::TABLET) {
    return Invalid(absl::StrFormat("context.device: %d is not a device", static_cast<int>(c.device())));
  }
  if (c.hour() < -1 || c.hour() > 23) {
    return Invalid(absl::StrFormat("context.hour: %d is outside [0, 23] (or -1 for unknown)", c.hour()));
  }
  const v1::RecommendOptions& o = r.options();
  if (o.per_category_cap() < 0) {
    return Invalid(absl::StrFormat("options.per_category_cap: %d is negative",
                                   o.per_category_cap()));
  }
  for (int i = 0; i < o.exclude_event_types_size(); ++i) {
    if (o.exclude_event_types(i) < v1::VIEW || o.exclude_event_types(i) > v1::PURCHASE) {
      return Invalid(absl::StrFormat(
          "options.exclude_event_types[%d]: %d is not an event type (VIEW=1 .. PURCHASE=4)", i,
          static_cast<int>(o.exclude_event_types(i))));
    }
  }
  if (o.exclude_item_ids_size() > limits.max_exclude_items) {
    return Invalid(absl::StrFormat("options.exclude_item_ids: %d ids, more than the limit of %d",
                                   o.exclude_item_ids_size(), limits.max_exclude_items));
  }
  if (o.exclude_items_size() > limits.max_exclude_items) {
    return Invalid(absl::StrFormat("options.exclude_items: %d keys, more than the limit of %d",
                                   o.exclude_items_size(), limits.max_exclude_items));
  }
  for (int i = 0; i < o.exclude_items_size(); ++i) {
    if (absl::Status key = CheckItemKey(o.exclude_items(i)); !key.ok()) {
      return Invalid(absl::StrFormat("options.exclude_items[%d]: the key %s", i, key.message()));
    }
  }
  return absl::OkStatus();
}

absl::Time DeadlineFromGrpc(gpr_timespec deadline) {
  if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0) return absl::InfiniteFuture();
  if (gpr_time_cmp(deadline, gpr_inf_past(deadline.clock_type)) == 0) return absl::InfinitePast();
  // The server core's deadlines are on the monotonic clock; converting saturates to
  // infinite instead of overflowing.
  const gpr_timespec wall = gpr_convert_clock_type(deadline, GPR_CLOCK_REALTIME);
  if (gpr_time_cmp(wall, gpr_inf_future(GPR_CLOCK_REALTIME)) == 0) return absl::InfiniteFuture();
  if (gpr_time_cmp(wall, gpr_inf_past(GPR_CLOCK_REALTIME)) == 0) return absl::InfinitePast();
  // absl::Time holds +-2^63 seconds: no overflow for any finite timespec.
  return absl::FromUnixSeconds(wall.tv_sec) + absl::Nanoseconds(wall.tv_nsec);
}

void RecommenderService::WarmWorkers(const Model& model) {
  pool_->RunOnEveryWorker([this, &model] {
    WorkerState& worker = ThisWorker();
    worker.exclude_ids.reserve(2 * static_cast<size_t>(limits_.max_exclude_items));
    RecommendQuery query;
    std::vector<QueryEvent> events;
    const std::vector<int32_t>& popular = model.catalog().by_popularity();
    for (size_t i = 0; i < std::min<size_t>(8, popular.size()); ++i) {
      events.push_back({model.catalog().id(popular[i]), EventType::kClick, 1700000000000 + int64_t(i)});
    }
    query.events = events;
    query.n = 10;
    recserve::Recommend(model, query, worker.ScratchFor(model), &worker.result).IgnoreError();
  });
}

RecommenderService::RecommenderService(ModelManager* manager, WorkerPool* pool,
                                       RequestLimits limits,
                                       std::function<void(const RequestOutcome&)> observer,
                                       ShadowScorer* shadow, ImpressionLog* impressions)
    : manager_(manager),
      pool_(pool),
      limits_(limits),
      observer_(std::move(observer)),
      shadow_(shadow),
      impressions_(impressions) {
  InstallProtobufLogCapture();  // now, before gRPC's threads parse anything
}

grpc::ServerUnaryReactor* RecommenderService::Recommend(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request,
                                                        grpc::ByteBuffer* response) {
  // gRPC holds the body (not const there) until the call ends and does not read it
  // again: it is released right after the parse, as the generated handler does.
  grpc::ByteBuffer* body = const_cast<grpc::ByteBuffer*>(request);
  if (!body->Valid()) {  // gRPC's handler: UNIMPLEMENTED
    auto* reactor = new NoMessageReactor(this, context);
    reactor->Finish(ToGrpcStatus(absl::InvalidArgumentError(kNoMessage)));
    return reactor;
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto messages = std::make_unique<CallMessages>();
  grpc::ProtoBufferReader reader(body);
  const absl::Status parsed =
      reader.status().ok() ? ParseRequestBody(&reader, [body] { return WholeBody(*body); }, &messages->request)
                           : FromGrpcStatus(reader.status());
  body->Clear();
  if (!parsed.ok()) {
    RefuseMalformed(parsed, context->peer(),
                    [reactor](const absl::Status& status) { reactor->Finish(ToGrpcStatus(status)); });
    return reactor;
  }
  RecommendCall call;
  call.request = &messages->request;
  call.response = &messages->response;
  call.deadline = DeadlineFromGrpc(context->raw_deadline());
  call.context = context;
  const auto& metadata = context->client_metadata();
  auto rid = metadata.find("x-request-id");
  if (rid != metadata.end() && rid->second.size() <= 128) call.request_id.assign(rid->second.data(), rid->second.size());
  messages->reactor = reactor;
  messages->response_body = response;
  // One pointer captured: `done` stays in std::function's inline storage.
  Submit(std::move(call), [messages = messages.release()](const absl::Status& status) {
    std::unique_ptr<CallMessages> owned(messages);
    grpc::Status answer = ToGrpcStatus(status);
    if (status.ok()) {
      bool own_buffer;
      answer = grpc::SerializationTraits<v1::RecommendResponse>::Serialize(owned->response, owned->response_body,
                                                                         &own_buffer);
    }
    grpc::ServerUnaryReactor* const finish = owned->reactor;
    owned.reset();
    finish->Finish(answer);
  });
  return reactor;
}

void RecommenderService::EndCallWithoutMessage(bool cancelled, absl::string_view peer) {
  const auto answered = [](const absl::Status&) {};  // Recommend did, when the call came
  if (!cancelled) {
    RefuseMalformed(absl::InvalidArgumentError(kNoMessage), peer, answered);
    return;
  }
  const absl::Time start = absl::Now();
  arrivals_.fetch_add(1, std::memory_order_relaxed);
  inflight_.fetch_add(1, std::memory_order_acq_rel);  // Finish takes it out again
  Finish(answered, absl::CancelledError("the client reset the call before its message came"), start, nullptr);
}

void RecommenderService::RefuseMalformed(const absl::Status& fault, absl::string_view peer,
                                         const std::function<void(const absl::Status&)>& done) {
  const absl::Time start = absl::Now();
  arrivals_.fetch_add(1, std::memory_order_relaxed);
  inflight_.fetch_add(1, std::memory_order_acq_rel);  // Finish takes it out again
  int64_t held_back = 0;
  if (malformed_log_.Allow(start, &held_back)) {
    const std::string more =
        held_back > 0 ? absl::StrFormat(" (and %d more since the last such line)", held_back) : "";
    std::fprintf(stderr, "recserve: malformed Recommend request from %.*s: %.*s%s\n", static_cast<int>(peer.size()),
                 peer.data(), static_cast<int>(fault.message().size()), fault.message().data(), more.c_str());
  }
  Finish(done, fault, start, nullptr);
}

void RecommenderService::Submit(RecommendCall call, std::function<void(const absl::Status&)> done) {
  const absl::Time start = absl::Now();
  arrivals_.fetch_add(1, std::memory_order_relaxed);
  if (inflight_.fetch_add(1, std::memory_order_acq_rel) >= limits_.max_inflight) {
    Finish(done,
           absl::ResourceExhaustedError(absl::StrFormat(
               "server is at its limit of %d in-flight requests; retry with backoff",
               limits_.max_inflight)),
           start, nullptr);
    return;
  }
  absl::Status valid = ValidateRequest(*call.request, limits_, start);
  if (!valid.ok()) {
    Finish(done, valid, start, nullptr);
    return;
  }
  // The task gets a copy of `done` (the gRPC adapter's fits std::function's inline
  // storage); the original answers the call if the pool is stopping.
  const bool queued = pool_->Submit([this, call = std::move(call), done, start] {
    WorkerState& worker = ThisWorker();
    RequestOutcome answered;
    absl::Status status = Handle(call, &worker.result, &answered);
    if (status.ok() && impressions_ != nullptr) impressions_->Offer(*call.request, *call.response);
    Finish(done, status, start, status.ok() ? &worker.result : nullptr, answered);
  });
  if (!queued) Finish(done, absl::UnavailableError("server is shutting down"), start, nullptr);
}

void RecommenderService::Finish(const std::function<void(const absl::Status&)>& done,
                                const absl::Status& status, absl::Time start, const RecommendResult* result,
                                const RequestOutcome& answered) {
  if (observer_) {
    observer_({status.code(), absl::ToDoubleSeconds(absl::Now() - start), result, answered.version, answered.role});
  }
  inflight_.fetch_sub(1, std::memory_order_acq_rel);
  done(status);
}

absl::Status RecommenderService::Handle(const RecommendCall& call, RecommendResult* result,
                                       RequestOutcome* answered) {
  if (call.context && call.context->IsCancelled()) return absl::CancelledError("the client cancelled the call");
  if (absl::Now() > call.deadline) {
    return absl::DeadlineExceededError("deadline passed while the request was queued");
  }
  const v1::RecommendRequest& request = *call.request;
  v1::RecommendResponse* response = call.response;
  // The set stays pinned to the end of the call: its member's model and stats live on.
  const std::shared_ptr<const ServingSet> set = manager_->PinSet();
  const ServingSet::Member* member = set ? set->ForUser(request.user_id()) : nullptr;
  if (!member) return absl::UnavailableError("no model version is serving yet");
  const Model* model = member->model.get();
  const absl::Time pinned_at = absl::Now();
  answered->version = member->version;
  answered->role = member->role;

  WorkerState& worker = ThisWorker();
  const Catalog& catalog = model->catalog();
  // Keys are looked up exactly (FindKey), so a key that only hashes to a catalog id
  // counts as unknown; the engine counts unknown ids.
  int unknown_keys = 0;
  worker.events.clear();
  for (const v1::Event& e : request.events()) {
    uint64_t id = e.item_id();
    if (!e.item().empty()) {
      const int32_t item = catalog.FindKey(e.item());
      if (item < 0) {
        ++unknown_keys;
        continue;
      }
      id = catalog.id(item);
    }
    worker.events.push_back({id, static_cast<EventType>(e.type()), e.timestamp_ms()});
  }
  const v1::RecommendOptions& options = request.options();
  worker.exclude_ids.assign(options.exclude_item_ids().begin(), options.exclude_item_ids().end());
  for (const std::string& key : options.exclude_items()) {
    const int32_t item = catalog.FindKey(key);
    if (item >= 0) worker.exclude_ids.push_back(catalog.id(item));
  }
  RecommendQuery query;
  query.events = worker.events;
  query.context = {static_cast<int32_t>(request.context().device()), request.context().hour()};
  query.n = request.n();
  if (options.keep_purchased()) {
    query.exclude_types = 0;  // keep everything, as before exclude_event_types existed
  } else if (options.exclude_event_types_size() > 0) {
    query.exclude_types = 0;
    for (int type : options.exclude_event_types()) {
      query.exclude_types |= EventTypeBit(static_cast<EventType>(type));
    }
  } else if (!limits_.exclude_purchased) {
    query.exclude_types = 0;
  }  // else -1: the model's default
  query.exclude_items = worker.exclude_ids;
  query.per_category_cap = options.per_category_cap();
  query.deadline = call.deadline;
  absl::Status status = recserve::Recommend(*model, query, worker.ScratchFor(*model), result);
  member->stats->RecordCall(status.code(), absl::Now() - pinned_at, status.ok() ? result : nullptr);
  if (!status.ok()) return status;
  result->unknown_items += unknown_keys;

  for (const RecommendedItem& item : result->items) {
    v1::RecommendedItem* out = response->add_items();
    out->set_item_id(item.item_id);
    out->set_score(item.score);
    out->set_sources(item.sources);
    out->set_category(item.category);
    if (catalog.has_keys()) {
      const absl::string_view key = catalog.key(catalog.Find(item.item_id));
      out->mutable_item()->assign(key.data(), key.size());
    } else {
      absl::StrAppend(out->mutable_item(), item.item_id);
    }
  }
  response->set_model_name(model->name());
  response->set_model_version(model->version());
  response->set_model_role(ToProto(member->role));
  response->set_candidates(result->candidates);
  response->set_unknown_items(result->unknown_items);
  response->set_degraded(static_cast<v1::Degraded>(result->degraded));
  if (!call.request_id.empty()) {
    response->set_request_id(call.request_id);
  } else {
    response->set_request_id(absl::StrFormat(
        "%x-%x", absl::ToUnixMicros(absl::Now()),
        request_counter_.fetch_add(1, std::memory_order_relaxed)));
  }
  if (request.options().include_timings()) {
    v1::StageTimings* t = response->mutable_timings();
    t->set_recall_ms(result->seconds.recall * 1e3);
    t->set_features_ms(result->seconds.features * 1e3);
    t->set_rank_ms(result->seconds.rank * 1e3);
    t->set_total_ms(result->seconds.total * 1e3);
  }
  // The answer is complete; the shadow only reads it (server/shadow_scorer.h).
  if (shadow_ && member->role == ServingRole::kServing) {
    shadow_->Offer(*set, response->request_id(), query, model->version(), *result);
  }
  return absl::OkStatus();
}

}  // namespace recserve
