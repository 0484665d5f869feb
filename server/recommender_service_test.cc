#include "server/recommender_service.h"

#include <grpcpp/grpcpp.h>

#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

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

// The in-flight cap, made deterministic: the only worker is held busy, so accepted calls
// stay queued; the call past the cap is shed at once with RESOURCE_EXHAUSTED, and the
// queued ones finish normally once the worker is free.
TEST(RecommenderServiceTest, CallsPastTheInflightCapAreShedWithResourceExhausted) {
  const std::string dir = testing::TempDir("inflight_cap");
  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), dir + "/1").ok());
  ModelManagerOptions mo;
  mo.base_path = dir;
  mo.warmup_requests = 1;
  auto manager = ModelManager::Create(mo);
  ASSERT_TRUE(manager.ok()) << manager.status();
  ASSERT_TRUE((*manager)->WaitUntilServing(absl::Seconds(30)));

  WorkerPool pool(1);
  Notification release, busy;
  pool.Submit([&] {
    busy.Notify();
    release.WaitForNotification();
  });
  busy.WaitForNotification();
  RequestLimits limits;
  limits.max_inflight = 2;
  RecommenderService service(manager->get(), &pool, limits);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  auto stub = v1::Recommender::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

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
  server->Shutdown();
  pool.Stop();
}

}  // namespace
}  // namespace recserve
