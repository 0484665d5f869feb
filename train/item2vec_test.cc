#include "train/item2vec.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/random/distributions.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

constexpr int kClusters = 10;
constexpr int kItemsPerCluster = 20;
constexpr int kClusteredItems = kClusters * kItemsPerCluster;

// Each sequence stays inside one planted cluster (item i is in cluster i / 20) and
// draws its items uniformly from it.
std::vector<std::vector<int32_t>> ClusteredSequences(int num_sequences, int length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> sequences(num_sequences);
  for (std::vector<int32_t>& seq : sequences) {
    const int cluster = absl::Uniform<int>(rng, 0, kClusters);
    for (int i = 0; i < length; ++i) {
      seq.push_back(cluster * kItemsPerCluster + absl::Uniform<int>(rng, 0, kItemsPerCluster));
    }
  }
  return sequences;
}

double Cosine(const std::vector<float>& v, int dim, int a, int b) {
  double dot = 0, na = 0, nb = 0;
  for (int k = 0; k < dim; ++k) {
    const double x = v[static_cast<size_t>(a) * dim + k], y = v[static_cast<size_t>(b) * dim + k];
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return dot / std::sqrt(na * nb);
}

struct Similarity {
  double within = 0;
  double across = 0;
};

Similarity MeanCosines(const std::vector<float>& v, int dim) {
  double within = 0, across = 0;
  int64_t n_within = 0, n_across = 0;
  for (int a = 0; a < kClusteredItems; ++a) {
    for (int b = a + 1; b < kClusteredItems; ++b) {
      const double c = Cosine(v, dim, a, b);
      if (a / kItemsPerCluster == b / kItemsPerCluster) {
        within += c;
        ++n_within;
      } else {
        across += c;
        ++n_across;
      }
    }
  }
  return {within / n_within, across / n_across};
}

Item2VecOptions QuietOptions() {
  Item2VecOptions o;
  o.verbose = false;
  return o;
}

TEST(Item2VecTest, PlantedClustersAreCloserWithinThanAcross) {
  const auto sequences = ClusteredSequences(20000, 20, 1);
  const Item2VecOptions o = QuietOptions();
  absl::StatusOr<std::vector<float>> v = TrainItem2Vec(sequences, kClusteredItems, o);
  ASSERT_TRUE(v.ok()) << v.status();
  ASSERT_EQ(v->size(), static_cast<size_t>(kClusteredItems) * o.dim);
  const Similarity s = MeanCosines(*v, o.dim);
  EXPECT_GT(s.within, s.across + 0.3) << "within " << s.within << " across " << s.across;
}

TEST(Item2VecTest, HogwildThreadsStillSeparateClusters) {
  const auto sequences = ClusteredSequences(20000, 20, 2);
  Item2VecOptions o = QuietOptions();
  o.threads = 2;
  absl::StatusOr<std::vector<float>> v = TrainItem2Vec(sequences, kClusteredItems, o);
  ASSERT_TRUE(v.ok()) << v.status();
  const Similarity s = MeanCosines(*v, o.dim);
  EXPECT_GT(s.within, s.across + 0.3) << "within " << s.within << " across " << s.across;
}

TEST(Item2VecTest, OneThreadIsDeterministic) {
  const auto sequences = ClusteredSequences(500, 20, 3);
  Item2VecOptions o = QuietOptions();
  absl::StatusOr<std::vector<float>> a = TrainItem2Vec(sequences, kClusteredItems, o);
  absl::StatusOr<std::vector<float>> b = TrainItem2Vec(sequences, kClusteredItems, o);
  o.seed = 8;
  absl::StatusOr<std::vector<float>> c = TrainItem2Vec(sequences, kClusteredItems, o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST(Item2VecTest, NeverSeenItemsKeepSmallRandomVectors) {
  const auto sequences = ClusteredSequences(500, 20, 4);
  const int num_items = kClusteredItems + 5;  // the last five never occur
  const Item2VecOptions o = QuietOptions();
  absl::StatusOr<std::vector<float>> v = TrainItem2Vec(sequences, num_items, o);
  ASSERT_TRUE(v.ok()) << v.status();
  for (int item = kClusteredItems; item < num_items; ++item) {
    double norm = 0;
    for (int k = 0; k < o.dim; ++k) {
      const float x = (*v)[static_cast<size_t>(item) * o.dim + k];
      EXPECT_LE(std::fabs(x), 0.5f / o.dim);
      norm += x * x;
    }
    EXPECT_GT(norm, 0) << "item " << item;
  }
}

TEST(Item2VecTest, RefusesOutOfRangeItemsAndBadOptions) {
  std::vector<std::vector<int32_t>> sequences = {{0, 1, 2}, {3, 4, 5}};
  sequences[1][2] = 6;
  absl::StatusOr<std::vector<float>> v = TrainItem2Vec(sequences, 6, QuietOptions());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("sequences[1][2] is 6"));

  sequences[1][2] = -1;
  v = TrainItem2Vec(sequences, 6, QuietOptions());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("sequences[1][2] is -1"));

  sequences[1][2] = 5;
  EXPECT_TRUE(TrainItem2Vec(sequences, 6, QuietOptions()).ok());
  EXPECT_EQ(TrainItem2Vec(sequences, 0, QuietOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);
  Item2VecOptions bad = QuietOptions();
  bad.dim = 0;
  EXPECT_THAT(std::string(TrainItem2Vec(sequences, 6, bad).status().message()),
              HasSubstr("options.dim"));
  bad = QuietOptions();
  bad.threads = 0;
  EXPECT_THAT(std::string(TrainItem2Vec(sequences, 6, bad).status().message()),
              HasSubstr("options.threads"));
}

}  // namespace
}  // namespace recserve
