#include "server/recommender_service.h"

#include <grpcpp/grpcpp.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "engine/item_key.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http2_test_client.h"
#include "server/metrics.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

v1::RecommendRequest OneEvent(uint64_t item_id, const std::string& item) {
  v1::RecommendRequest r;
  r.set_n(5);
  v1::Event* e = r.add_events();
  e->set_item_id(item_id);
  e->set_item(item);
  e->set_type(v1::CLICK);
  e->set_timestamp_ms(1700000000000);
  return r;
}

absl::Status Validate(const v1::RecommendRequest& r, RequestLimits limits = RequestLimits()) {
  return ValidateRequest(r, limits, absl::FromUnixMillis(1700000001000));
}

TEST(ValidateRequestTest, EventKeyMustBeShortAndPrintable) {
  EXPECT_TRUE(Validate(OneEvent(0, "85123A")).ok());
  absl::Status s = Validate(OneEvent(0, std::string(300, 'k')));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("events[0].item: the key has 300 bytes, more than the limit of 256"));
  s = Validate(OneEvent(0, "851\n23A"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("events[0].item: the key has control byte 0x0a at offset 3"));
}

TEST(ValidateRequestTest, EventKeyAndIdMustAgreeWhenBothAreSet) {
  EXPECT_TRUE(Validate(OneEvent(ItemIdFromKey("85123A"), "85123A")).ok());
  EXPECT_TRUE(Validate(OneEvent(71053, "71053")).ok());  // a numeric key is its own id
  const absl::Status s = Validate(OneEvent(71053, "85123A"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("events[0].item: key '85123A' has id"));
  EXPECT_THAT(s.message(), HasSubstr("events[0].item_id is 71053"));
  EXPECT_FALSE(Validate(OneEvent(71054, "71053")).ok());
}

TEST(ValidateRequestTest, ExcludeListsAreLimitedAndChecked) {
  RequestLimits limits;
  limits.max_exclude_items = 3;
  v1::RecommendRequest r = OneEvent(5, "");
  for (int i = 0; i < 3; ++i) r.mutable_options()->add_exclude_item_ids(i);
  for (int i = 0; i < 3; ++i) r.mutable_options()->add_exclude_items(absl::StrCat("SKU", i));
  EXPECT_TRUE(Validate(r, limits).ok());
  r.mutable_options()->add_exclude_item_ids(9);
  EXPECT_THAT(Validate(r, limits).message(),
              HasSubstr("options.exclude_item_ids: 4 ids, more than the limit of 3"));
  r.mutable_options()->mutable_exclude_item_ids()->RemoveLast();
  r.mutable_options()->add_exclude_items("SKU9");
  EXPECT_THAT(Validate(r, limits).message(),
              HasSubstr("options.exclude_items: 4 keys, more than the limit of 3"));
  r.mutable_options()->mutable_exclude_items()->RemoveLast();
  r.mutable_options()->set_exclude_items(1, "");
  EXPECT_THAT(Validate(r, limits).message(), HasSubstr("options.exclude_items[1]: the key is empty"));
}

TEST(ValidateRequestTest, ExcludeEventTypesMustBeEventTypes) {
  v1::RecommendRequest r = OneEvent(5, "");
  r.mutable_options()->add_exclude_event_types(v1::VIEW);
  r.mutable_options()->add_exclude_event_types(v1::PURCHASE);
  EXPECT_TRUE(Validate(r).ok());
  r.mutable_options()->add_exclude_event_types(v1::EVENT_TYPE_UNSPECIFIED);
  const absl::Status s = Validate(r);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("options.exclude_event_types[2]: 0 is not an event type"));
}

TEST(ValidateRequestTest, GoodRequestPasses) {
  v1::RecommendRequest r;
  r.set_n(10);
  v1::Event* e = r.add_events();
  e->set_item_id(5);
  e->set_type(v1::CART);
  e->set_timestamp_ms(1700000000000);
  EXPECT_TRUE(ValidateRequest(r, RequestLimits(), absl::FromUnixMillis(1700000001000)).ok());
}

TEST(ValidateRequestTest, FutureSkewIsMeasuredFromServerTime) {
  v1::RecommendRequest r;
  r.set_n(1);
  v1::Event* e = r.add_events();
  e->set_type(v1::VIEW);
  const absl::Time now = absl::FromUnixMillis(1700000000000);
  e->set_timestamp_ms(1700000000000 + 59 * 60 * 1000);
  EXPECT_TRUE(ValidateRequest(r, RequestLimits(), now).ok());
  e->set_timestamp_ms(1700000000000 + 61 * 60 * 1000);
  absl::Status s = ValidateRequest(r, RequestLimits(), now);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("events[0].timestamp_ms"));
  EXPECT_THAT(s.message(), HasSubstr("in the future"));
}

TEST(ValidateRequestTest, UserIdAndDeviceLimits) {
  v1::RecommendRequest r;
  r.set_n(1);
  r.set_user_id(std::string(300, 'u'));
  EXPECT_THAT(ValidateRequest(r, RequestLimits(), absl::Now()).message(), HasSubstr("user_id: 300 bytes"));
  r.clear_user_id();
  r.mutable_context()->set_device(static_cast<v1::Device>(7));
  EXPECT_THAT(ValidateRequest(r, RequestLimits(), absl::Now()).message(), HasSubstr("context.device: 7"));
}

// A tiny bundle's version 1 serving from a fresh directory named `name` (null, with the
// failure reported, if it does not serve within 30 s).
std::unique_ptr<ModelManager> ServeTinyBundle(const std::string& name) {
  const std::string dir = testing::TempDir(name);
  EXPECT_TRUE(WriteBundle(testing::TinyBundle(), dir + "/1").ok());
  ModelManagerOptions mo;
  mo.base_path = dir;
  mo.warmup_requests = 1;
  auto manager = ModelManager::Create(mo);
  EXPECT_TRUE(manager.ok()) << manager.status();
  if (!manager.ok() || !(*manager)->WaitUntilServing(absl::Seconds(30))) return nullptr;
  return std::move(*manager);
}

// `service` on an in-process gRPC server at a loopback port, and a stub calling it.
struct InProcessServer {
  explicit InProcessServer(grpc::Service* service) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service);
    server = builder.BuildAndStart();
    stub = v1::Recommender::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  ~InProcessServer() { server->Shutdown(); }
  int port = 0;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<v1::Recommender::Stub> stub;
};

// The in-flight cap, made deterministic: the only worker is held busy, so accepted calls
// stay queued; the call past the cap is shed at once with RESOURCE_EXHAUSTED, and the
// queued ones finish normally once the worker is free.
TEST(RecommenderServiceTest, CallsPastTheInflightCapAreShedWithResourceExhausted) {
  std::unique_ptr<ModelManager> manager = ServeTinyBundle("inflight_cap");
  ASSERT_NE(manager, nullptr);

  WorkerPool pool(1);
  Notification release, busy;
  pool.Submit([&] {
    busy.Notify();
    release.WaitForNotification();
  });
  busy.WaitForNotification();
  RequestLimits limits;
  limits.max_inflight = 2;
  RecommenderService service(manager.get(), &pool, limits);
  auto server = std::make_unique<InProcessServer>(&service);
  ASSERT_NE(server->port, 0);
  v1::Recommender::Stub* stub = server->stub.get();

  v1::RecommendRequest request;
  request.set_n(3);
  struct Call {
    grpc::ClientContext ctx;
    v1::RecommendResponse response;
    grpc::Status status;
    Notification done;
  } calls[3];
  for (int i = 0; i < 2; ++i) {
    stub->async()->Recommend(&calls[i].ctx, &request, &calls[i].response, [&calls, i](grpc::Status s) {
      calls[i].status = s;
      calls[i].done.Notify();
    });
  }
  while (service.inflight() < 2) absl::SleepFor(absl::Milliseconds(1));  // both accepted
  stub->async()->Recommend(&calls[2].ctx, &request, &calls[2].response, [&calls](grpc::Status s) {
    calls[2].status = s;
    calls[2].done.Notify();
  });
  calls[2].done.WaitForNotification();
  EXPECT_EQ(calls[2].status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(calls[2].status.error_message(), HasSubstr("limit of 2 in-flight requests"));
  EXPECT_FALSE(calls[0].done.HasBeenNotified());

  release.Notify();
  for (int i = 0; i < 2; ++i) {
    calls[i].done.WaitForNotification();
    EXPECT_TRUE(calls[i].status.ok()) << calls[i].status.error_message();
    EXPECT_EQ(calls[i].response.items_size(), 3);
  }
  server.reset();
  pool.Stop();
}

// A Recommend call over a raw HTTP/2 connection, for headers gRPC's own client never
// sends: its encoder caps grpc-timeout at 27000H (3 years), while the server accepts up
// to 1e9 hours. Returns the response message, or an error when none came (the status is
// in HPACK-coded trailers, not decoded here).
absl::StatusOr<v1::RecommendResponse> RecommendOverRawHttp2(int port, const v1::RecommendRequest& request,
                                                            const std::string& grpc_timeout) {
  using Http2 = testing::Http2TestConnection;
  absl::StatusOr<std::unique_ptr<Http2>> connection = Http2::Connect(port);
  if (!connection.ok()) return connection.status();
  if (!(*connection)->Send(
          Http2::CallHeaders(1, "/recserve.v1.Recommender/Recommend", {{"grpc-timeout", grpc_timeout}}) +
          Http2::Frame(Http2::kData, Http2::kEndStream, 1, Http2::GrpcMessage(request.SerializeAsString())))) {
    return absl::InternalError("send");
  }
  std::string data;  // stream 1's DATA payloads
  while (true) {
    absl::StatusOr<testing::Http2Frame> frame = (*connection)->Read();
    if (!frame.ok()) break;
    if (frame->type == Http2::kData && frame->stream == 1) data += frame->payload;
    if ((frame->type == Http2::kHeaders && frame->stream == 1 && (frame->flags & Http2::kEndStream)) ||
        (frame->type == Http2::kRstStream && frame->stream == 1) || frame->type == Http2::kGoaway) {
      break;  // trailers: the call is over
    }
  }
  if (data.size() < 5) return absl::UnknownError("no response message: the call failed");
  v1::RecommendResponse response;
  if (!response.ParseFromArray(data.data() + 5, static_cast<int>(data.size() - 5))) {
    return absl::DataLossError("response message does not parse");
  }
  return response;
}

// A deadline past what std::chrono::system_clock holds in nanoseconds (year 2262) or an
// infinite one means "no deadline", never "already passed".
TEST(RecommenderServiceTest, FarAndInfiniteDeadlinesAreNoDeadlineNotAlreadyPassed) {
  std::unique_ptr<ModelManager> manager = ServeTinyBundle("far_deadline");
  ASSERT_NE(manager, nullptr);
  WorkerPool pool(1);
  RecommenderService service(manager.get(), &pool, RequestLimits());
  auto server = std::make_unique<InProcessServer>(&service);
  const int port = server->port;
  ASSERT_NE(port, 0);
  v1::RecommendRequest request;
  request.set_n(3);

  // Timeouts gRPC's client sends (30 s; 27000 hours, its largest), then the case,
  // `grpc-timeout: 2100000H` (about the year 2265), and the largest the server takes.
  for (const char* timeout : {"30S", "27000H", "2100000H", "1000000000H"}) {
    absl::StatusOr<v1::RecommendResponse> response = RecommendOverRawHttp2(port, request, timeout);
    EXPECT_TRUE(response.ok()) << "grpc-timeout " << timeout << ": " << response.status();
    if (response.ok()) {
      EXPECT_EQ(response->items_size(), 3) << timeout;
    }
  }
  // No deadline at all, through gRPC's own client.
  v1::Recommender::Stub* stub = server->stub.get();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::time_point::max());
  v1::RecommendResponse response;
  const grpc::Status status = stub->Recommend(&ctx, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(response.items_size(), 3);
  server.reset();
  pool.Stop();
}

// The call's gRPC deadline, a minute away, is far shorter than what the serving version
// is told its stages cost (hours): the answer degrades by stage and comes back OK,
// naming the stage in the response and in recserve_degraded_total; a deadline that
// cannot fit even popularity is refused with DEADLINE_EXCEEDED.
TEST(RecommenderServiceTest, AShortDeadlineGetsADegradedAnswerNotDeadlineExceeded) {
  std::unique_ptr<ModelManager> manager = ServeTinyBundle("degraded");
  ASSERT_NE(manager, nullptr);
  auto metrics = Metrics::Create("127.0.0.1:0", MetricsHttpOptions(), [] { return 0; });
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->ObserveRole(manager->serving_version(), ServingRole::kServing);  // the server's before_publish
  WorkerPool pool(1);
  RecommenderService service(manager.get(), &pool, RequestLimits(),
                             [&](const RequestOutcome& o) { (*metrics)->ObserveRequest(o); });
  auto server = std::make_unique<InProcessServer>(&service);
  ASSERT_NE(server->port, 0);
  v1::RecommendRequest request;
  request.set_n(3);
  v1::Event* e = request.add_events();
  e->set_item_id(1010);
  e->set_type(v1::CLICK);
  e->set_timestamp_ms(1700000000000);
  auto call = [&](absl::Duration timeout, v1::RecommendResponse* response) {
    grpc::ClientContext ctx;
    if (timeout != absl::InfiniteDuration()) ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return server->stub->Recommend(&ctx, request, response);
  };
  // Measured by the warm-up: the whole pipeline fits a minute.
  v1::RecommendResponse response;
  grpc::Status status = call(absl::Minutes(1), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.degraded(), v1::DEGRADED_NONE);

  // The version's ranking is measured at hours a candidate: recall's order.
  std::shared_ptr<const Model> model = manager->Pin();
  model->stage_costs().Record(StageCosts::kRankPerCandidate, absl::Hours(10), absl::Now());
  response.Clear();
  status = call(absl::Minutes(1), &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(response.degraded(), v1::DEGRADED_RECALL_ORDER);
  EXPECT_EQ(response.items_size(), 3);
  EXPECT_GT(response.candidates(), 3);
  // Without a deadline, the whole pipeline runs whatever it costs.
  response.Clear();
  status = call(absl::InfiniteDuration(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.degraded(), v1::DEGRADED_NONE);

  // Recall too: the most popular items.
  model->stage_costs().Record(StageCosts::kRecall, absl::Hours(10), absl::Now());
  response.Clear();
  status = call(absl::Minutes(1), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.degraded(), v1::DEGRADED_POPULARITY);
  ASSERT_EQ(response.items_size(), 3);
  EXPECT_EQ(response.items(0).item_id(), model->catalog().id(model->catalog().by_popularity()[0]));
  EXPECT_EQ(response.items(0).sources(), static_cast<uint32_t>(v1::POPULARITY));

  // Even reading the request: refused.
  model->stage_costs().Record(StageCosts::kPrepare, absl::Hours(10), absl::Now());
  response.Clear();
  status = call(absl::Minutes(1), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), HasSubstr("even the popularity answer takes"));

  const std::string text = prometheus::TextSerializer().Serialize((*metrics)->registry().Collect());
  const std::string v = absl::StrCat(",version=\"", model->version(), "\"");
  EXPECT_THAT(text, HasSubstr("recserve_degraded_total{role=\"serving\",stage=\"recall_order\"" + v + "} 1"));
  EXPECT_THAT(text, HasSubstr("recserve_degraded_total{role=\"serving\",stage=\"popularity\"" + v + "} 1"));
  EXPECT_THAT(text, HasSubstr("recserve_degraded_total{role=\"serving\",stage=\"fewer_candidates\"" + v + "} 0"));
  // Refused while reading the request, after the version was chosen: counted on it.
  EXPECT_THAT(text, HasSubstr("recserve_requests_total{code=\"DEADLINE_EXCEEDED\",method=\"Recommend\","
                              "role=\"serving\"" + v + "} 1"));
  server.reset();
  pool.Stop();
}

TEST(DeadlineFromGrpcTest, InfiniteAndPastYear2262DeadlinesStayInTheFuture) {
  EXPECT_EQ(DeadlineFromGrpc(gpr_inf_future(GPR_CLOCK_REALTIME)), absl::InfiniteFuture());
  EXPECT_EQ(DeadlineFromGrpc(gpr_inf_future(GPR_CLOCK_MONOTONIC)), absl::InfiniteFuture());
  EXPECT_EQ(DeadlineFromGrpc(gpr_inf_past(GPR_CLOCK_MONOTONIC)), absl::InfinitePast());
  // Year 2265: past std::chrono::system_clock's nanosecond range, well inside absl::Time's.
  const int64_t year_2265 = 9300000000;
  EXPECT_EQ(DeadlineFromGrpc(gpr_timespec{year_2265, 5, GPR_CLOCK_REALTIME}),
            absl::FromUnixSeconds(year_2265) + absl::Nanoseconds(5));
  EXPECT_EQ(DeadlineFromGrpc(gpr_timespec{1700000000, 250000000, GPR_CLOCK_REALTIME}),
            absl::FromUnixMillis(1700000000250));
  // A monotonic deadline (what the server core hands over) lands near the same wall time.
  const gpr_timespec in_a_minute =
      gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(60, GPR_TIMESPAN));
  EXPECT_LT(absl::AbsDuration(DeadlineFromGrpc(in_a_minute) - (absl::Now() + absl::Seconds(60))),
            absl::Seconds(5));
}

// A served model (keyed or numeric tiny bundle) and the service over it, called through
// Submit (no gRPC).
class ServedModel {
 public:
  explicit ServedModel(const std::string& name, bool keys) : pool_(1) {
    BundleContents b = testing::TinyBundle();
    if (keys) {
      // SKU-like keys for even items, canonical decimals (their own ids) for odd ones.
      for (size_t i = 0; i < b.items.ids.size(); ++i) {
        b.items.keys.push_back(i % 2 == 0 ? absl::StrCat("SKU-", 85000 + i, "A")
                                          : absl::StrCat(1000 + i));
        b.items.ids[i] = ItemIdFromKey(b.items.keys[i]);
      }
    }
    const std::string dir = testing::TempDir(name);
    EXPECT_TRUE(WriteBundle(b, dir + "/1").ok());
    ModelManagerOptions mo;
    mo.base_path = dir;
    mo.warmup_requests = 1;
    auto manager = ModelManager::Create(mo);
    EXPECT_TRUE(manager.ok()) << manager.status();
    manager_ = std::move(*manager);
    EXPECT_TRUE(manager_->WaitUntilServing(absl::Seconds(30)));
    service_ = std::make_unique<RecommenderService>(manager_.get(), &pool_, RequestLimits());
  }
  ~ServedModel() { pool_.Stop(); }

  const Catalog& catalog() const { return manager_->Pin()->catalog(); }

  absl::StatusOr<v1::RecommendResponse> Run(const v1::RecommendRequest& request) {
    v1::RecommendResponse response;
    absl::Status status;
    Notification done;
    RecommendCall call;
    call.request = &request;
    call.response = &response;
    service_->Submit(std::move(call), [&](const absl::Status& s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    if (!status.ok()) return status;
    return response;
  }

 private:
  WorkerPool pool_;
  std::unique_ptr<ModelManager> manager_;
  std::unique_ptr<RecommenderService> service_;
};

// Events on catalog items 4 (key "SKU-85004A"), 7 ("1007") and 10 ("SKU-85010A"), given
// by key or by id; every candidate is returned (n = max_candidates).
v1::RecommendRequest ThreeEvents(const Catalog& catalog, bool by_key, v1::EventType type) {
  v1::RecommendRequest r;
  r.set_n(20);
  int64_t t = 1700000000000;
  for (int32_t item : {4, 7, 10}) {
    v1::Event* e = r.add_events();
    if (by_key) {
      e->set_item(std::string(catalog.key(item)));
    } else {
      e->set_item_id(catalog.id(item));
    }
    e->set_type(type);
    e->set_timestamp_ms(t += 1000);
  }
  return r;
}

std::set<uint64_t> Ids(const v1::RecommendResponse& r) {
  std::set<uint64_t> ids;
  for (const v1::RecommendedItem& item : r.items()) ids.insert(item.item_id());
  return ids;
}

TEST(ItemKeysServiceTest, KeyedCatalogAnswersWithTheItemsKeys) {
  ServedModel served("keys_answer", /*keys=*/true);
  auto r = served.Run(ThreeEvents(served.catalog(), /*by_key=*/true, v1::CLICK));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_GT(r->items_size(), 0);
  bool saw_sku = false;
  for (const v1::RecommendedItem& item : r->items()) {
    const int32_t index = served.catalog().Find(item.item_id());
    ASSERT_GE(index, 0);
    EXPECT_EQ(item.item(), served.catalog().key(index));
    EXPECT_EQ(ItemIdFromKey(item.item()), item.item_id());
    saw_sku |= item.item().rfind("SKU-", 0) == 0;
  }
  EXPECT_TRUE(saw_sku);
  EXPECT_EQ(r->unknown_items(), 0);
}

TEST(ItemKeysServiceTest, EventByKeyAndEventByIdGiveTheSameAnswer) {
  ServedModel served("keys_same", /*keys=*/true);
  auto by_key = served.Run(ThreeEvents(served.catalog(), /*by_key=*/true, v1::CART));
  auto by_id = served.Run(ThreeEvents(served.catalog(), /*by_key=*/false, v1::CART));
  ASSERT_TRUE(by_key.ok()) << by_key.status();
  ASSERT_TRUE(by_id.ok()) << by_id.status();
  ASSERT_EQ(by_key->items_size(), by_id->items_size());
  for (int i = 0; i < by_key->items_size(); ++i) {
    EXPECT_EQ(by_key->items(i).item_id(), by_id->items(i).item_id()) << i;
    EXPECT_EQ(by_key->items(i).item(), by_id->items(i).item()) << i;
    EXPECT_EQ(by_key->items(i).score(), by_id->items(i).score()) << i;
  }
  // Both set and agreeing: the same again.
  v1::RecommendRequest both = ThreeEvents(served.catalog(), /*by_key=*/true, v1::CART);
  for (v1::Event& e : *both.mutable_events()) e.set_item_id(ItemIdFromKey(e.item()));
  auto r = served.Run(both);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Ids(*r), Ids(*by_id));
}

TEST(ItemKeysServiceTest, UnknownKeysAreCountedAsUnknownItems) {
  ServedModel served("keys_unknown", /*keys=*/true);
  v1::RecommendRequest r = ThreeEvents(served.catalog(), /*by_key=*/true, v1::CLICK);
  for (const char* key : {"NOT-IN-CATALOG", "99999", "01007"}) {  // "01007" is not "1007"
    v1::Event* e = r.add_events();
    e->set_item(key);
    e->set_type(v1::VIEW);
    e->set_timestamp_ms(1700000009000);
  }
  r.add_events()->CopyFrom(r.events(0));
  r.mutable_events()->rbegin()->set_item("");
  r.mutable_events()->rbegin()->set_item_id(424242);  // unknown id
  auto answer = served.Run(r);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->unknown_items(), 4);
}

TEST(ItemKeysServiceTest, BadKeyIsInvalidArgumentNamingTheField) {
  ServedModel served("keys_bad", /*keys=*/true);
  v1::RecommendRequest r = ThreeEvents(served.catalog(), /*by_key=*/true, v1::CLICK);
  r.mutable_events(2)->set_item("SKU\x01");
  auto answer = served.Run(r);
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(answer.status().message(), HasSubstr("events[2].item"));
  r.mutable_events(2)->set_item("SKU-85010A");
  r.mutable_events(2)->set_item_id(1010);
  answer = served.Run(r);
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(answer.status().message(), HasSubstr("events[2].item"));
}

TEST(ItemKeysServiceTest, ExcludeEventTypesDropsItemsWithThoseEvents) {
  ServedModel served("exclude_types", /*keys=*/true);
  const Catalog& catalog = served.catalog();
  const std::set<uint64_t> viewed = {catalog.id(4), catalog.id(7), catalog.id(10)};
  auto in_answer = [&](const v1::RecommendResponse& r) {
    int n = 0;
    for (uint64_t id : Ids(r)) n += viewed.count(id);
    return n;
  };
  // The default (purchases) keeps viewed items: the user's own items are recalled.
  v1::RecommendRequest r = ThreeEvents(catalog, /*by_key=*/true, v1::VIEW);
  auto kept = served.Run(r);
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_GT(in_answer(*kept), 0) << "the test needs viewed items among the candidates";
  r.mutable_options()->add_exclude_event_types(v1::VIEW);
  auto dropped = served.Run(r);
  ASSERT_TRUE(dropped.ok()) << dropped.status();
  EXPECT_EQ(in_answer(*dropped), 0);
  EXPECT_GT(dropped->items_size(), 0);
  // Another type leaves views alone.
  r.mutable_options()->set_exclude_event_types(0, v1::CART);
  auto other = served.Run(r);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(Ids(*other), Ids(*kept));
  // keep_purchased keeps everything, whatever the types say.
  r.mutable_options()->set_exclude_event_types(0, v1::VIEW);
  r.mutable_options()->set_keep_purchased(true);
  auto keep = served.Run(r);
  ASSERT_TRUE(keep.ok()) << keep.status();
  EXPECT_EQ(Ids(*keep), Ids(*kept));
  // Purchases are dropped by default and kept with keep_purchased.
  v1::RecommendRequest bought = ThreeEvents(catalog, /*by_key=*/true, v1::PURCHASE);
  auto default_answer = served.Run(bought);
  ASSERT_TRUE(default_answer.ok()) << default_answer.status();
  EXPECT_EQ(in_answer(*default_answer), 0);
  bought.mutable_options()->set_keep_purchased(true);
  auto kept_purchases = served.Run(bought);
  ASSERT_TRUE(kept_purchases.ok()) << kept_purchases.status();
  EXPECT_GT(in_answer(*kept_purchases), 0);
}

TEST(ItemKeysServiceTest, ExcludedItemsAreNeverReturned) {
  ServedModel served("exclude_items", /*keys=*/true);
  v1::RecommendRequest r = ThreeEvents(served.catalog(), /*by_key=*/true, v1::CLICK);
  r.set_n(6);
  auto first = served.Run(r);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->items_size(), 6);
  std::set<uint64_t> excluded;
  for (int i = 0; i < 3; ++i) {  // the top three by key, the next two by id
    r.mutable_options()->add_exclude_items(first->items(i).item());
    excluded.insert(first->items(i).item_id());
  }
  for (int i = 3; i < 5; ++i) {
    r.mutable_options()->add_exclude_item_ids(first->items(i).item_id());
    excluded.insert(first->items(i).item_id());
  }
  r.mutable_options()->add_exclude_items("NOT-IN-CATALOG");  // ignored
  r.mutable_options()->add_exclude_item_ids(424242);         // ignored
  auto second = served.Run(r);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->items_size(), 6);
  for (const v1::RecommendedItem& item : second->items()) {
    EXPECT_EQ(excluded.count(item.item_id()), 0u) << item.item();
  }
  // Recall fills the freed places; items in both answers keep their scores.
  for (const v1::RecommendedItem& a : second->items()) {
    for (const v1::RecommendedItem& b : first->items()) {
      if (a.item_id() == b.item_id()) {
        EXPECT_EQ(a.score(), b.score()) << a.item();
      }
    }
  }
}

TEST(ItemKeysServiceTest, NumericCatalogAnswersWithDecimalKeysAndTakesThem) {
  ServedModel served("keys_numeric", /*keys=*/false);
  auto by_id = served.Run(ThreeEvents(served.catalog(), /*by_key=*/false, v1::CLICK));
  ASSERT_TRUE(by_id.ok()) << by_id.status();
  ASSERT_GT(by_id->items_size(), 0);
  for (const v1::RecommendedItem& item : by_id->items()) {
    EXPECT_EQ(item.item(), absl::StrCat(item.item_id()));
  }
  v1::RecommendRequest r = ThreeEvents(served.catalog(), /*by_key=*/false, v1::CLICK);
  for (v1::Event& e : *r.mutable_events()) {
    e.set_item(absl::StrCat(e.item_id()));
    e.set_item_id(0);
  }
  auto by_key = served.Run(r);
  ASSERT_TRUE(by_key.ok()) << by_key.status();
  EXPECT_EQ(by_key->unknown_items(), 0);
  ASSERT_EQ(by_key->items_size(), by_id->items_size());
  for (int i = 0; i < by_key->items_size(); ++i) {
    EXPECT_EQ(by_key->items(i).item_id(), by_id->items(i).item_id());
  }
}

}  // namespace
}  // namespace recserve
