// Hot reload end to end: the real recserve binary under steady client traffic while 20
// new versions are published (by polling and by the admin RPC) and one rollback is made.
#include <signal.h>

#include <atomic>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "tests/e2e_util.h"

namespace recserve {
namespace {

class ReloadTest : public ::testing::Test {
 protected:
  int64_t ServingVersion(v1::Admin::Stub* admin) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::GetModelStatusResponse status;
    return admin->GetModelStatus(&ctx, {}, &status).ok() ? status.serving_version() : -1;
  }
  // The server loads on its own thread; the test can only watch it from outside.
  bool WaitForServing(v1::Admin::Stub* admin, int64_t version) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (ServingVersion(admin) == version) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
};

TEST_F(ReloadTest, TwentyReloadsAndARollbackUnderLoadFailNoRequest) {
  const std::string models = testing::TempDir("reload_models");
  ASSERT_TRUE(e2e::WriteTinyBundle(models, 1).ok());
  auto server = e2e::ServerProcess::Start({"--model_base_path=" + models, "--poll_interval=50ms",
                                           "--keep_previous", "--warmup_requests=20"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(e2e::WaitForServing((*server)->address(), "recserve.v1.Recommender", absl::Seconds(60)));
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto admin = v1::Admin::NewStub(
      grpc::CreateChannel((*server)->admin_address(), grpc::InsecureChannelCredentials()));

  v1::RecommendRequest request;
  request.set_n(10);
  const World& world = e2e::TinyWorld();
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (int i = 0; i < 20; ++i) {
    v1::Event* e = request.add_events();
    e->set_item_id(world.train_events[i * 97].item_id);
    e->set_type(v1::CLICK);
    e->set_timestamp_ms(now_ms - 60000 + i);
  }

  // Versions that have been published (made visible) so far; a response may name any
  // of them, never one that does not exist yet.
  std::atomic<int64_t> highest_published{1};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok{0}, failed{0}, impossible{0};
  std::mutex mu;
  std::string first_failure;
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&] {
      auto stub = v1::Recommender::NewStub(channel);
      while (!stop.load()) {
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
        v1::RecommendResponse response;
        grpc::Status s = stub->Recommend(&ctx, request, &response);
        const int64_t published = highest_published.load();
        if (!s.ok()) {
          ++failed;
          std::lock_guard<std::mutex> lock(mu);
          if (first_failure.empty()) first_failure = s.error_message();
        } else if (response.model_version() < 1 || response.model_version() > published ||
                   response.items_size() != 10) {
          ++impossible;
        } else {
          ++ok;
        }
      }
    });
  }

  const std::string source = models + "/1";
  for (int64_t v = 2; v <= 21; ++v) {
    highest_published = v;  // before it appears: a response can only name it afterwards
    ASSERT_TRUE(e2e::PublishCopy(source, models, v).ok());
    if (v % 2 == 1) {  // odd versions through the admin RPC, even ones by polling
      grpc::ClientContext ctx;
      v1::ReloadModelsResponse reply;
      ASSERT_TRUE(admin->ReloadModels(&ctx, {}, &reply).ok());
      EXPECT_EQ(reply.serving_version(), v);
    }
    ASSERT_TRUE(WaitForServing(admin.get(), v)) << "version " << v << "\n" << (*server)->Log();
  }
  // Rollback to 20 (kept loaded), then back to the newest.
  {
    grpc::ClientContext ctx;
    v1::SetServingVersionRequest pin;
    pin.set_version(20);
    v1::SetServingVersionResponse reply;
    ASSERT_TRUE(admin->SetServingVersion(&ctx, pin, &reply).ok());
    EXPECT_EQ(reply.serving_version(), 20);
  }
  {
    grpc::ClientContext ctx;
    v1::SetServingVersionResponse reply;
    ASSERT_TRUE(admin->SetServingVersion(&ctx, {}, &reply).ok());
    EXPECT_EQ(reply.serving_version(), 21);
  }
  absl::SleepFor(absl::Milliseconds(200));  // traffic on the final version
  stop = true;
  for (auto& c : clients) c.join();

  EXPECT_EQ(failed.load(), 0) << first_failure;
  EXPECT_EQ(impossible.load(), 0);
  EXPECT_GT(ok.load(), 100);
  EXPECT_EQ(ServingVersion(admin.get()), 21);
  std::printf("requests ok %lld during 20 reloads and a rollback\n", static_cast<long long>(ok.load()));
  (*server)->Signal(SIGTERM);
  EXPECT_EQ((*server)->WaitExit(absl::Seconds(30)), 0);
}

}  // namespace
}  // namespace recserve
