#include "engine/ranker.h"

#include <random>
#include <thread>

#include "engine/test_util.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

std::vector<float> RandomRows(int n, int width, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> rows(static_cast<size_t>(n) * width);
  for (float& v : rows) v = normal(rng);
  return rows;
}

TEST(Fp32RankerTest, MatchesReferenceWithin1e5AtEveryBucketAndTail) {
  const Mlp mlp = testing::RandomMlp({118, 256, 128, 64, 1}, 3);
  auto ranker = CreateFp32Ranker(mlp);
  ASSERT_TRUE(ranker.ok()) << ranker.status();
  auto scratch = (*ranker)->NewScratch();
  for (int n : {1, 5, 8, 31, 64, 200, 1000, 1024, 2500}) {
    std::vector<float> rows = RandomRows(n, 118, n);
    std::vector<float> want(n);
    ReferenceScore(mlp, rows, n, absl::MakeSpan(want));
    rows.resize(static_cast<size_t>((*ranker)->PaddedRows(n)) * 118, 123.f);
    std::vector<float> got(n);
    ASSERT_TRUE((*ranker)->Score(rows.data(), n, got.data(), scratch.get()).ok());
    for (int i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << "n=" << n << " row " << i;
  }
}

TEST(Fp32RankerTest, PaddedRowsRoundsUpToBucketsAndChunks) {
  auto ranker = CreateFp32Ranker(testing::RandomMlp({4, 3, 1}, 1), {{1, 8, 64}});
  ASSERT_TRUE(ranker.ok());
  EXPECT_EQ((*ranker)->PaddedRows(1), 1);
  EXPECT_EQ((*ranker)->PaddedRows(2), 8);
  EXPECT_EQ((*ranker)->PaddedRows(64), 64);
  EXPECT_EQ((*ranker)->PaddedRows(65), 65);   // one full chunk + bucket 1
  EXPECT_EQ((*ranker)->PaddedRows(70), 72);   // 64 + 8
  EXPECT_EQ((*ranker)->BucketFor(9), 64);
}

TEST(Fp32RankerTest, ThreadsWithOwnScratchAgree) {
  const Mlp mlp = testing::RandomMlp({32, 64, 1}, 9);
  auto ranker = CreateFp32Ranker(mlp);
  ASSERT_TRUE(ranker.ok());
  const int n = 300;
  std::vector<float> base = RandomRows(n, 32, 4);
  std::vector<float> want(n);
  ReferenceScore(mlp, base, n, absl::MakeSpan(want));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto scratch = (*ranker)->NewScratch();
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<float> rows = base;
        rows.resize(static_cast<size_t>((*ranker)->PaddedRows(n)) * 32);
        std::vector<float> got(n);
        if (!(*ranker)->Score(rows.data(), n, got.data(), scratch.get()).ok()) ++mismatches;
        for (int i = 0; i < n; ++i) {
          if (std::abs(got[i] - want[i]) > 1e-5) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Fp32RankerTest, RefusesInvalidMlpAndBuckets) {
  Mlp bad = testing::RandomMlp({4, 3, 1}, 1);
  bad.layers[0].weight[2] = std::nanf("");
  EXPECT_EQ(CreateFp32Ranker(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateFp32Ranker(testing::RandomMlp({4, 3, 1}, 1), {{8, 4}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recserve
