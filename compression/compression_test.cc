#include <algorithm>
#include <cmath>
#include <random>

#include "compression/accuracy.h"
#include "compression/compress.h"
#include "compression/prune.h"
#include "compression/quantize.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

// Calibration rows with columns of very different ranges, like real feature rows.
CalibrationSet Rows(int rows, int width, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  CalibrationSet c;
  c.rows = rows;
  c.width = width;
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < width; ++k) c.features.push_back(normal(rng) * (k % 3 == 0 ? 0.05f : 2.f) + (k % 5));
    c.labels.push_back(r % 4 == 0 ? 1.f : 0.f);
    c.groups.push_back(r / 10);
  }
  return c;
}

TEST(QuantizeTest, OneDnnInt8RankerMatchesTheIntegerReference) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  const CalibrationSet cal = Rows(2000, 40, 1);
  auto q = QuantizeMlp(mlp, cal);
  ASSERT_TRUE(q.ok()) << q.status();
  auto ranker = CreateInt8Ranker(*q);
  ASSERT_TRUE(ranker.ok()) << ranker.status();
  const CalibrationSet test = Rows(700, 40, 2);
  auto got = ScoreAll(**ranker, test.features, test.rows);
  ASSERT_TRUE(got.ok());
  std::vector<float> want(test.rows);
  ReferenceScoreQuantized(*q, test.features, test.rows, absl::MakeSpan(want));
  // Identical integer arithmetic; only float rounding order in the scale may differ,
  // moving an activation by at most one u8 step now and then.
  for (int i = 0; i < test.rows; ++i) EXPECT_NEAR((*got)[i], want[i], 2e-3) << i;
}

TEST(QuantizeTest, Int8StaysCloseToFp32AcrossColumnRanges) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  const CalibrationSet cal = Rows(2000, 40, 1);
  auto q = QuantizeMlp(mlp, cal);
  ASSERT_TRUE(q.ok());
  auto ranker = CreateInt8Ranker(*q);
  ASSERT_TRUE(ranker.ok());
  const CalibrationSet test = Rows(1000, 40, 3);
  auto report = MeasureAccuracy(mlp, **ranker, test);
  ASSERT_TRUE(report.ok());
  // A random net on raw inputs spanning 40x different ranges: 8-bit inputs alone move
  // logits by a few hundredths; the trained-model test holds the real accuracy line.
  EXPECT_LT(report->mean_abs_diff, 0.02) << report->ToString();
  EXPECT_LT(report->max_abs_diff, 0.35) << report->ToString();
}

// Rows in "requests" of 1 to 40 rows: within one, the constant columns are equal.
CalibrationSet RequestRows(int rows, int width, const std::vector<int>& constant, uint64_t seed) {
  CalibrationSet c = Rows(rows, width, seed);
  std::mt19937_64 rng(seed + 100);
  for (int start = 0; start < rows;) {
    const int len = std::min<int>(rows - start, 1 + static_cast<int>(rng() % 40));
    for (int r = start + 1; r < start + len; ++r) {
      for (int k : constant) c.features[static_cast<size_t>(r) * width + k] = c.features[static_cast<size_t>(start) * width + k];
    }
    start += len;
  }
  return c;
}

TEST(QuantizeTest, ConstantColumnsStayFp32AndEveryRequestRunMatchesTheReference) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  const std::vector<int> constant = {0, 1, 2, 3, 4, 5, 6, 7, 30, 31, 32, 33};
  const CalibrationSet cal = RequestRows(2000, 40, constant, 1);
  QuantizeOptions options;
  options.constant_columns = constant;
  auto q = QuantizeMlp(mlp, cal, options);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->layers[0].in, 40 - 12);
  EXPECT_EQ(q->Segments().size(), 2u);          // columns 8..29 and 34..39
  EXPECT_EQ(q->ConstantSegments().size(), 2u);  // 0..7 and 30..33
  auto ranker = CreateInt8Ranker(*q);
  ASSERT_TRUE(ranker.ok()) << ranker.status();

  const CalibrationSet test = RequestRows(700, 40, constant, 2);
  auto batched = ScoreAll(**ranker, test.features, test.rows);
  ASSERT_TRUE(batched.ok());
  std::vector<float> want(test.rows);
  ReferenceScoreQuantized(*q, test.features, test.rows, absl::MakeSpan(want));
  // Row by row: every row its own run.
  auto scratch = (*ranker)->NewScratch();
  std::vector<float> row(static_cast<size_t>((*ranker)->PaddedRows(1)) * 40);
  for (int i = 0; i < test.rows; ++i) {
    std::copy_n(&test.features[static_cast<size_t>(i) * 40], 40, row.begin());
    float one = 0;
    ASSERT_TRUE((*ranker)->Score(row.data(), 1, &one, scratch.get()).ok());
    EXPECT_NEAR((*batched)[i], want[i], 2e-3) << i;
    EXPECT_NEAR(one, (*batched)[i], 1e-6) << i;  // the same run arithmetic, batched or not
  }

  // Against fp32, closer than with every column quantized.
  auto all_q = QuantizeMlp(mlp, cal);
  ASSERT_TRUE(all_q.ok());
  auto all_ranker = CreateInt8Ranker(*all_q);
  ASSERT_TRUE(all_ranker.ok());
  auto with_constant = MeasureAccuracy(mlp, **ranker, test);
  auto without = MeasureAccuracy(mlp, **all_ranker, test);
  ASSERT_TRUE(with_constant.ok() && without.ok());
  EXPECT_LT(with_constant->mean_abs_diff, without->mean_abs_diff)
      << with_constant->ToString() << "\n" << without->ToString();
}

TEST(QuantizeTest, RefusesBadConstantColumns) {
  const Mlp mlp = testing::RandomMlp({6, 8, 1}, 7);
  const CalibrationSet cal = Rows(50, 6, 1);
  QuantizeOptions options;
  options.constant_columns = {2, 6};
  EXPECT_THAT(QuantizeMlp(mlp, cal, options).status().message(), HasSubstr("constant column 6 is out of [0, 6)"));
  options.constant_columns = {3, 2};
  EXPECT_THAT(QuantizeMlp(mlp, cal, options).status().message(), HasSubstr("out of order"));
  options.constant_columns = {0, 1, 2, 3, 4, 5};
  EXPECT_THAT(QuantizeMlp(mlp, cal, options).status().message(), HasSubstr("every input column is constant"));
}

TEST(QuantizeTest, RefusesCalibrationOfTheWrongWidth) {
  const Mlp mlp = testing::RandomMlp({40, 8, 1}, 7);
  auto q = QuantizeMlp(mlp, Rows(10, 39, 1));
  EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(q.status().message(), HasSubstr("ranker takes 40 inputs"));
}

TEST(PruneTest, MagnitudePruningHitsTheSparsityAndKeepsTheOutputLayerDense) {
  Mlp mlp = testing::RandomMlp({50, 40, 20, 1}, 3);
  auto sparsity = MagnitudePrune(&mlp, {0.5f, {}, false, true});
  ASSERT_TRUE(sparsity.ok());
  for (size_t i = 0; i + 1 < mlp.layers.size(); ++i) {
    const auto& w = mlp.layers[i].weight;
    EXPECT_EQ(std::count(w.begin(), w.end(), 0.f), static_cast<long>(w.size() / 2)) << "layer " << i;
  }
  const auto& out = mlp.layers.back().weight;
  EXPECT_EQ(std::count(out.begin(), out.end(), 0.f), 0);
  EXPECT_NEAR(*sparsity, (1000 + 400) / 2820.0, 1e-9);
}

TEST(PruneTest, MagnitudePruningRemovesTheSmallestWeights) {
  Mlp mlp = testing::RandomMlp({20, 10, 1}, 4);
  std::vector<float> before = mlp.layers[0].weight;
  ASSERT_TRUE(MagnitudePrune(&mlp, {0.3f, {}, false, true}).ok());
  float largest_removed = 0, smallest_kept = 1e9;
  for (size_t i = 0; i < before.size(); ++i) {
    if (mlp.layers[0].weight[i] == 0.f) largest_removed = std::max(largest_removed, std::abs(before[i]));
    else smallest_kept = std::min(smallest_kept, std::abs(before[i]));
  }
  EXPECT_LE(largest_removed, smallest_kept);
}

TEST(PruneTest, StructuredPruningShrinksLayersToTheMultiple) {
  Mlp mlp = testing::RandomMlp({30, 100, 50, 1}, 5);
  ASSERT_TRUE(StructuredPrune(&mlp, {0.3f, 16}).ok());
  EXPECT_EQ(mlp.LayerSizes(), (std::vector<int>{30, 80, 48, 1}));  // ceil(70/16)*16, ceil(35/16)*16
  EXPECT_TRUE(ValidateMlp(mlp).ok());
}

TEST(PruneTest, StructuredPruningDropsDeadNeuronsWithoutChangingTheFunction) {
  Mlp mlp = testing::RandomMlp({8, 32, 1}, 6);
  // Neurons 0..15 get no outgoing weight: removing them changes nothing.
  for (int n = 0; n < 16; ++n) mlp.layers[1].weight[n] = 0.f;
  const Mlp original = mlp;
  ASSERT_TRUE(StructuredPrune(&mlp, {0.5f, 16}).ok());
  EXPECT_EQ(mlp.layers[0].out, 16);
  const CalibrationSet rows = Rows(50, 8, 9);
  std::vector<float> a(50), b(50);
  ReferenceScore(original, rows.features, 50, absl::MakeSpan(a));
  ReferenceScore(mlp, rows.features, 50, absl::MakeSpan(b));
  for (int i = 0; i < 50; ++i) EXPECT_NEAR(a[i], b[i], 1e-6);
}

TEST(AccuracyTest, ReportCountsChangedTopListsAndDeltas) {
  const std::vector<float> fp32 = {0.9f, 0.1f, 0.5f, 0.8f, 0.2f, 0.3f};
  const std::vector<float> served = {0.9f, 0.1f, 0.5f, 0.1f, 0.2f, 0.3f};
  const std::vector<float> labels = {1, 0, 0, 1, 0, 0};
  const std::vector<int64_t> groups = {1, 1, 1, 2, 2, 2};
  AccuracyReport r = CompareScores(fp32, served, labels, groups, 1);
  EXPECT_EQ(r.groups, 2);
  EXPECT_DOUBLE_EQ(r.topn_changed, 0.5);  // slate 2's best item changed
  EXPECT_DOUBLE_EQ(r.fp32_auc, 1.0);
  EXPECT_LT(r.auc_delta, 0);
  EXPECT_NEAR(r.max_abs_diff, 0.7, 1e-6);
}

TEST(AccuracyTest, GateRefusesAndReportsTheMeasuredDeltas) {
  AccuracyReport r;
  r.fp32_auc = 0.80;
  r.served_auc = 0.70;
  r.auc_delta = -0.10;
  r.logloss_delta = 0.05;
  v1::AccuracyGate gate;
  gate.set_max_auc_drop(0.002f);
  gate.set_max_logloss_rise(0.01f);
  absl::Status s = CheckGate(r, gate);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("AUC dropped by 0.10000 (limit 0.00200)"));
  EXPECT_THAT(s.message(), HasSubstr("logloss rose by 0.05000"));
  r.auc_delta = -0.001;
  r.logloss_delta = 0.001;
  EXPECT_TRUE(CheckGate(r, gate).ok());
}

TEST(PolicyTest, FlagsOverrideTheManifestAndBadValuesAreNamed) {
  v1::Manifest m;
  m.mutable_compression()->set_mode("int8");
  m.mutable_gate()->set_max_auc_drop(0.002f);
  PolicyOverrides o;
  o.mode = "prune+int8";
  o.unstructured_sparsity = 0.5f;
  auto p = ResolvePolicy(m, o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->mode, "prune+int8");
  EXPECT_FLOAT_EQ(p->unstructured_sparsity, 0.5f);
  EXPECT_FLOAT_EQ(p->gate.max_auc_drop(), 0.002f);
  o.mode = "fp16";
  EXPECT_THAT(ResolvePolicy(m, o).status().message(), HasSubstr("compression mode 'fp16'"));
  o.mode.reset();
  o.structured_ratio = 1.5f;
  EXPECT_THAT(ResolvePolicy(m, o).status().message(), HasSubstr("structured ratio 1.5"));
}

}  // namespace
}  // namespace recserve
