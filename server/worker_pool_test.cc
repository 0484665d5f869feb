#include "server/worker_pool.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

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

}  // namespace
}  // namespace recserve
