#include "server/worker_pool.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

TEST(WorkerPoolTest, RunOnEveryWorkerRunsOncePerThreadAndThePoolKeepsWorking) {
  WorkerPool pool(3);
  for (int round = 0; round < 300; ++round) {
    std::mutex mu;
    std::multiset<std::thread::id> ran_on;
    ASSERT_TRUE(pool.RunOnEveryWorker([&] {
      std::lock_guard<std::mutex> lock(mu);
      ran_on.insert(std::this_thread::get_id());
    }));
    ASSERT_EQ(ran_on.size(), 3u);
    ASSERT_EQ(std::set<std::thread::id>(ran_on.begin(), ran_on.end()).size(), 3u) << "a worker ran it twice";
    // Ordinary tasks still run after every round (no worker left waiting).
    std::atomic<int> done{0};
    Notification all;
    for (int i = 0; i < 3; ++i) {
      pool.Submit([&] {
        if (++done == 3) all.Notify();
      });
    }
    ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(30))) << "round " << round;
  }
}

TEST(WorkerPoolTest, StoppedPoolRefusesWork) {
  WorkerPool pool(2);
  pool.Stop();
  EXPECT_FALSE(pool.Submit([] {}));
  EXPECT_FALSE(pool.RunOnEveryWorker([] {}));
}

// Stop from several threads at once (a signal handler's thread and the destructor, say):
// each returns after the queued work ran, and no worker is joined twice.
TEST(WorkerPoolTest, ConcurrentStopsRunTheQueueAndJoinOnce) {
  for (int round = 0; round < 50; ++round) {
    std::atomic<int> ran{0};
    auto pool = std::make_unique<WorkerPool>(2);
    for (int i = 0; i < 20; ++i) pool->Submit([&] { ran.fetch_add(1); });
    std::vector<std::thread> stoppers;
    for (int i = 0; i < 3; ++i) {
      stoppers.emplace_back([&] {
        pool->Stop();
        EXPECT_EQ(ran.load(), 20);  // returned only once the queue ran
      });
    }
    for (std::thread& t : stoppers) t.join();
    pool.reset();  // the destructor's Stop too
    EXPECT_EQ(ran.load(), 20);
  }
}

}  // namespace
}  // namespace recserve
