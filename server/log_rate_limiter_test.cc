#include "server/log_rate_limiter.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace recserve {
namespace {

TEST(LogRateLimiterTest, OneLinePerIntervalAndTheNextCountsTheOnesHeldBack) {
  LogRateLimiter limiter(absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  int64_t held_back = -1;
  ASSERT_TRUE(limiter.Allow(t0, &held_back));
  EXPECT_EQ(held_back, 0);
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Allow(t0 + absl::Milliseconds(100 * i), &held_back));
  EXPECT_FALSE(limiter.Allow(t0 + absl::Milliseconds(999), &held_back));
  ASSERT_TRUE(limiter.Allow(t0 + absl::Seconds(1), &held_back));
  EXPECT_EQ(held_back, 6);
  // The interval runs from the last line allowed, and the count starts again.
  EXPECT_FALSE(limiter.Allow(t0 + absl::Milliseconds(1500), &held_back));
  ASSERT_TRUE(limiter.Allow(t0 + absl::Seconds(5), &held_back));
  EXPECT_EQ(held_back, 1);
  ASSERT_TRUE(limiter.Allow(t0 + absl::Seconds(6), &held_back));
  EXPECT_EQ(held_back, 0);
}

TEST(LogRateLimiterTest, ConcurrentCallersLetExactlyOneLineThroughPerInterval) {
  LogRateLimiter limiter(absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  constexpr int kThreads = 4, kCalls = 1000;
  std::vector<int> allowed(kThreads, 0);
  std::vector<int64_t> reported(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        int64_t held_back = 0;
        if (limiter.Allow(t0, &held_back)) {
          ++allowed[t];
          reported[t] += held_back;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int total_allowed = 0;
  for (int a : allowed) total_allowed += a;
  EXPECT_EQ(total_allowed, 1);
  int64_t held_back = 0;
  ASSERT_TRUE(limiter.Allow(t0 + absl::Seconds(1), &held_back));
  EXPECT_EQ(held_back, kThreads * kCalls - 1);
}

}  // namespace
}  // namespace recserve
