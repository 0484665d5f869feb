#include "engine/ranker.h"

#include <random>
#include <thread>

#include "engine/quantized_mlp.h"
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

// A 6 -> 8 -> 4 -> 1 network whose int8 form is exact on integer inputs in [0, 3]: small
// integer weights, activations on even numbers (activation scale 2), so every u8 value,
// product and sum is exact and int8, fp32 and every mixed split must agree to float
// rounding. Column 5 is request-constant (fp32 in the int8 layer 0).
struct ExactNet {
  Mlp fp32;
  QuantizedMlp int8;
};

ExactNet ExactlyQuantizableNet() {
  std::mt19937_64 rng(17);
  auto pick = [&rng](std::initializer_list<int> values) {
    return *(values.begin() + static_cast<int>(rng() % values.size()));
  };
  const int sizes[] = {6, 8, 4, 1};
  ExactNet net;
  QuantizedMlp& q = net.int8;
  q.row_width = 6;
  q.quantized_columns = {0, 1, 2, 3, 4};
  q.constant_columns = {5};
  q.input_offset.assign(5, 0.f);
  q.input_inv_scale.assign(5, 1.f);
  for (int l = 0; l < 3; ++l) {
    DenseLayer f;
    f.in = sizes[l];
    f.out = sizes[l + 1];
    f.relu = l < 2;
    QuantizedLayer ql;
    ql.in = l == 0 ? 5 : f.in;
    ql.out = f.out;
    ql.relu = f.relu;
    // Real input per u8 unit: 1 for the raw columns, 2 for hidden activations.
    const float in_scale = l == 0 ? 1.f : 2.f;
    // Layer 0: weights even, so its outputs are even; layer 1: weights in {-1, 0, 1},
    // biases even; layer 2: weights 0.01 x {-1, 0, 1}, the logit stays small.
    const float w_scale = l == 0 ? 2.f : l == 1 ? 2.f : 0.02f;
    for (int o = 0; o < f.out; ++o) {
      for (int k = 0; k < f.in; ++k) {
        const int qw = l == 0 ? pick({-1, 0, 1}) : pick({-1, 0, 1});
        // fp32 weight = qw * w_scale / in_scale (the quantizer's folding, backwards).
        f.weight.push_back(qw * w_scale / in_scale);
        if (l == 0 && k == 5) {
          q.constant_weight.push_back(0.f);  // filled below (column-major)
        } else {
          ql.weight.push_back(static_cast<int8_t>(qw));
        }
      }
      const float bias = l == 2 ? 0.1f : 2.f * pick({-1, 0, 1});
      f.bias.push_back(bias);
      ql.bias.push_back(bias / w_scale);
      // Hidden outputs are even integers: one u8 unit is 2.
      ql.output_scale.push_back(f.relu ? w_scale / 2.f : w_scale);
      if (f.relu) ql.activation_scale.push_back(2.f);
    }
    if (l == 0) {
      q.constant_weight.assign(f.out, 0.f);
      for (int o = 0; o < f.out; ++o) q.constant_weight[o] = f.weight[static_cast<size_t>(o) * f.in + 5] / w_scale;
    }
    net.fp32.layers.push_back(std::move(f));
    q.layers.push_back(std::move(ql));
  }
  return net;
}

std::vector<float> IntegerRows(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> rows(static_cast<size_t>(n) * 6);
  for (float& v : rows) v = static_cast<float>(rng() % 4);
  return rows;
}

TEST(MixedPrecisionRankerTest, EverySplitEqualsFp32WhenQuantizationIsExact) {
  const ExactNet net = ExactlyQuantizableNet();
  ASSERT_TRUE(ValidateMlp(net.fp32).ok());
  ASSERT_TRUE(ValidateQuantizedMlp(net.int8).ok()) << ValidateQuantizedMlp(net.int8);
  for (int split = 0; split < 8; ++split) {
    const MixedPrecisionMlp m{net.int8, net.fp32, {(split & 1) != 0, (split & 2) != 0, (split & 4) != 0}};
    auto ranker = CreateMixedPrecisionRanker(m);
    ASSERT_TRUE(ranker.ok()) << ranker.status();
    auto scratch = (*ranker)->NewScratch();
    for (int n : {1, 7, 64, 300, 1100}) {
      std::vector<float> rows = IntegerRows(n, n + split);
      std::vector<float> want(n), reference(n);
      ReferenceScore(net.fp32, rows, n, absl::MakeSpan(want));
      ReferenceScoreMixed(m, rows, n, absl::MakeSpan(reference));
      rows.resize(static_cast<size_t>((*ranker)->PaddedRows(n)) * 6, 7.f);
      std::vector<float> got(n);
      ASSERT_TRUE((*ranker)->Score(rows.data(), n, got.data(), scratch.get()).ok());
      for (int i = 0; i < n; ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-5) << m.Describe() << " n=" << n << " row " << i;
        ASSERT_NEAR(reference[i], want[i], 1e-5) << m.Describe() << " reference, row " << i;
      }
    }
  }
  // The pure int8 ranker on the same network, for comparison: the same answers.
  auto int8 = CreateInt8Ranker(net.int8);
  ASSERT_TRUE(int8.ok());
  std::vector<float> rows = IntegerRows(300, 5), want(300);
  ReferenceScore(net.fp32, rows, 300, absl::MakeSpan(want));
  auto got = ScoreAll(**int8, rows, 300);
  ASSERT_TRUE(got.ok());
  for (int i = 0; i < 300; ++i) ASSERT_NEAR((*got)[i], want[i], 1e-5) << i;
}

TEST(MixedPrecisionRankerTest, NamesItsSplitAndRefusesMismatchedForms) {
  const ExactNet net = ExactlyQuantizableNet();
  auto ranker = CreateMixedPrecisionRanker({net.int8, net.fp32, {false, true, false}});
  ASSERT_TRUE(ranker.ok()) << ranker.status();
  EXPECT_EQ((*ranker)->kind(), "mixed(int8, layer 1 fp32)");
  EXPECT_EQ((*ranker)->macs_per_row(), 5 * 8 + 8 * 4 + 4);  // layer 0 int8: the 5 quantized columns

  MixedPrecisionMlp no_scales{net.int8, net.fp32, {false, true, false}};
  no_scales.int8.layers[0].activation_scale.clear();
  EXPECT_EQ(CreateMixedPrecisionRanker(no_scales).status().code(), absl::StatusCode::kInvalidArgument);
  MixedPrecisionMlp other_shape{net.int8, testing::RandomMlp({6, 9, 4, 1}, 1), {true, false, false}};
  EXPECT_EQ(CreateMixedPrecisionRanker(other_shape).status().code(), absl::StatusCode::kInvalidArgument);
  MixedPrecisionMlp bad_scale{net.int8, net.fp32, {true, false, false}};
  bad_scale.int8.layers[0].activation_scale[3] = 0.f;
  EXPECT_EQ(CreateMixedPrecisionRanker(bad_scale).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recserve
