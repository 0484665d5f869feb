// Hot reload under load without gRPC: client threads submit Recommend calls to the
// service (worker pool, pinned model, two-slot pipeline scratch) while the model manager
// publishes 20 new versions (by polling and by ReloadNow), warms the workers for each,
// rolls back once and frees the replaced versions on its load thread.
//
// The same machinery as tests/reload_test.cc minus the gRPC transport, so the
// ThreadSanitizer build can check every hand-off between our threads: Debian's gRPC is
// not TSAN-instrumented, and its internal hand-offs drown a TSAN run of the e2e test.
#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"
#include "server/model_manager.h"
#include "server/recommender_service.h"
#include "server/sync.h"
#include "server/worker_pool.h"

namespace recserve {
namespace {

// Writes a version the way ops publish one: under a hidden name, then renamed into place.
void Publish(const std::string& base, int64_t version, uint64_t seed) {
  const std::string tmp = absl::StrCat(base, "/.incoming-", version);
  ASSERT_TRUE(WriteBundle(testing::TinyBundle(64, 8, 3, {16, 8}, seed), tmp).ok());
  std::filesystem::rename(tmp, absl::StrCat(base, "/", version));
}

TEST(ReloadStressTest, TwentyReloadsAndARollbackUnderConcurrentCallsFailNoCall) {
  const std::string base = testing::TempDir("reload_stress");
  ASSERT_NO_FATAL_FAILURE(Publish(base, 1, 1));

  WorkerPool pool(3);
  std::atomic<int> unloaded{0};
  RecommenderService* service_for_warmup = nullptr;
  ModelManagerOptions options;
  options.base_path = base;
  options.poll_interval = absl::Milliseconds(5);
  options.keep_previous = true;
  options.warmup_requests = 5;
  options.start_paused = true;
  options.before_publish = [&](const Model& model) { service_for_warmup->WarmWorkers(model); };
  options.on_unloaded = [&](int64_t) { unloaded.fetch_add(1); };
  auto manager = ModelManager::Create(options);
  ASSERT_TRUE(manager.ok()) << manager.status();
  RecommenderService service(manager->get(), &pool, RequestLimits{});
  service_for_warmup = &service;
  (*manager)->Start();
  ASSERT_TRUE((*manager)->WaitUntilServing(absl::Seconds(60)));

  v1::RecommendRequest request;
  request.set_n(5);
  for (int i = 0; i < 6; ++i) {
    v1::Event* e = request.add_events();
    e->set_item_id(1000 + i * 7);  // TinyBundle's item ids are 1000 + i
    e->set_type(v1::CLICK);
    e->set_timestamp_ms(absl::ToUnixMillis(absl::Now()) - 60000 + i);
  }

  std::atomic<int64_t> highest_published{1};
  std::atomic<bool> stop{false};
  std::atomic<int64_t> ok{0}, failed{0}, impossible{0};
  std::mutex mu;
  std::string first_failure;
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        v1::RecommendResponse response;
        absl::Status status;
        Notification done;
        RecommendCall call;
        call.request = &request;
        call.response = &response;
        call.deadline = absl::Now() + absl::Seconds(30);
        service.Submit(std::move(call), [&](const absl::Status& s) {
          status = s;
          done.Notify();
        });
        done.WaitForNotification();
        const int64_t published = highest_published.load();
        if (!status.ok()) {
          ++failed;
          std::lock_guard<std::mutex> lock(mu);
          if (first_failure.empty()) first_failure = status.ToString();
        } else if (response.model_version() < 1 || response.model_version() > published ||
                   response.items_size() != 5) {
          ++impossible;
        } else {
          ++ok;
        }
      }
    });
  }

  auto wait_for = [&](int64_t version) {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    while ((*manager)->serving_version() != version && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(2));
    }
    return (*manager)->serving_version() == version;
  };
  for (int64_t v = 2; v <= 21; ++v) {
    highest_published = v;  // before it appears: a response can only name it afterwards
    ASSERT_NO_FATAL_FAILURE(Publish(base, v, static_cast<uint64_t>(v)));
    if (v % 2 == 1) {  // odd versions by an explicit scan, even ones by polling
      auto serving = (*manager)->ReloadNow();
      ASSERT_TRUE(serving.ok()) << serving.status();
    }
    ASSERT_TRUE(wait_for(v)) << "version " << v;
  }
  auto rolled_back = (*manager)->SetServingVersion(20);
  ASSERT_TRUE(rolled_back.ok()) << rolled_back.status();
  EXPECT_EQ(*rolled_back, 20);
  auto newest = (*manager)->SetServingVersion(0);
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_EQ(*newest, 21);
  const absl::Time traffic_deadline = absl::Now() + absl::Seconds(60);
  while (ok.load() < 200 && absl::Now() < traffic_deadline) absl::SleepFor(absl::Milliseconds(2));
  stop = true;
  for (auto& c : clients) c.join();

  EXPECT_EQ(failed.load(), 0) << first_failure;
  EXPECT_EQ(impossible.load(), 0);
  EXPECT_GE(ok.load(), 200);
  EXPECT_EQ((*manager)->serving_version(), 21);
  // Replaced versions were freed along the way (serving + previous stay loaded).
  EXPECT_GE(unloaded.load(), 15);
  EXPECT_LE((*manager)->loaded_count(), 3);
  std::printf("calls ok %lld during 20 reloads and a rollback; %d versions freed\n",
              static_cast<long long>(ok.load()), unloaded.load());
  (*manager)->Stop();
  pool.Stop();
}

}  // namespace
}  // namespace recserve
