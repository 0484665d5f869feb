#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "compression/accuracy.h"
#include "compression/compress.h"
#include "compression/prune.h"
#include "compression/quantize.h"
#include "compression/test_models.h"
#include "engine/features.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

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
  // Max ranges, so the comparison below isolates the constant columns (with MSE ranges
  // both forms are about equally close on these Gaussian columns).
  QuantizeOptions options;
  options.method = options.input_method = CalibrationMethod::kMax;
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
  options.constant_columns.clear();
  auto all_q = QuantizeMlp(mlp, cal, options);
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

// Every split of a 3-layer MLP into fp32 and int8 layers, as QuantizeMlp calibrates it.
// Columns whose spans float cannot bin: a subnormal-wide one (1024 / span overflows a
// float) and one as wide as the bundle limits allow. Their MSE ranges are the columns'
// own [min, max], every scale is finite, and the int8 ranker scores every row.
TEST(QuantizeTest, ColumnsOfExtremeSpansGetFiniteRanges) {
  const Mlp mlp = testing::RandomMlp({6, 16, 1}, 4);
  CalibrationSet cal = Rows(300, 6, 9);
  for (int r = 0; r < cal.rows; ++r) {
    cal.features[r * 6 + 1] = r % 2 ? 1e-39f : 0.f;
    cal.features[r * 6 + 4] = r % 2 ? 1e15f : -1e15f;
  }
  auto q = QuantizeMlp(mlp, cal, QuantizeOptions());
  ASSERT_TRUE(q.ok()) << q.status();
  for (float v : q->input_inv_scale) EXPECT_TRUE(std::isfinite(v));
  for (float v : q->input_offset) EXPECT_TRUE(std::isfinite(v));
  auto ranker = CreateInt8Ranker(*q);
  ASSERT_TRUE(ranker.ok()) << ranker.status();
  auto scores = ScoreAll(**ranker, cal.features, cal.rows);
  ASSERT_TRUE(scores.ok()) << scores.status();
  for (float p : *scores) EXPECT_TRUE(std::isfinite(p));
}

TEST(MixedPrecisionTest, OneDnnMixedRankerMatchesItsReferenceForEverySplit) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  const CalibrationSet cal = Rows(2000, 40, 1);
  QuantizeOptions options;
  options.constant_columns = {0, 1, 2, 3};
  auto q = QuantizeMlp(mlp, cal, options);
  ASSERT_TRUE(q.ok()) << q.status();
  for (const auto& layer : q->layers) EXPECT_EQ(layer.activation_scale.size(), layer.relu ? layer.out : 0);
  const CalibrationSet test = Rows(700, 40, 2);
  for (int split = 0; split < 8; ++split) {
    MixedPrecisionMlp m{*q, mlp, {(split & 1) != 0, (split & 2) != 0, (split & 4) != 0}};
    auto ranker = CreateMixedPrecisionRanker(m);
    ASSERT_TRUE(ranker.ok()) << ranker.status();
    auto got = ScoreAll(**ranker, test.features, test.rows);
    ASSERT_TRUE(got.ok());
    std::vector<float> want(test.rows);
    ReferenceScoreMixed(m, test.features, test.rows, absl::MakeSpan(want));
    // As for int8: identical integer arithmetic, float rounding order aside.
    for (int i = 0; i < test.rows; ++i) ASSERT_NEAR((*got)[i], want[i], 2e-3) << m.Describe() << " row " << i;
  }
}

// The fp32 layers of a mixed ranker compute what fp32 computes: with every layer in fp32
// it is the fp32 ranker; each layer moved to fp32 takes its quantization error away.
TEST(MixedPrecisionTest, Fp32LayersMatchTheFp32ReferenceAndEachOneClosesTheGap) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  const CalibrationSet cal = Rows(2000, 40, 1);
  auto q = QuantizeMlp(mlp, cal);
  ASSERT_TRUE(q.ok());
  const CalibrationSet test = Rows(1000, 40, 3);
  std::vector<float> want(test.rows);
  ReferenceScore(mlp, test.features, test.rows, absl::MakeSpan(want));

  MixedPrecisionMlp all_fp32{*q, mlp, {true, true, true}};
  auto same = CreateMixedPrecisionRanker(all_fp32);
  ASSERT_TRUE(same.ok()) << same.status();
  auto got = ScoreAll(**same, test.features, test.rows);
  ASSERT_TRUE(got.ok());
  for (int i = 0; i < test.rows; ++i) ASSERT_NEAR((*got)[i], want[i], 1e-5) << i;

  auto int8 = CreateInt8Ranker(*q);
  ASSERT_TRUE(int8.ok());
  auto int8_report = MeasureAccuracy(mlp, **int8, test);
  ASSERT_TRUE(int8_report.ok());
  double previous = int8_report->mean_abs_diff;
  for (const std::vector<bool>& split : std::vector<std::vector<bool>>{{true, false, false}, {true, true, false}}) {
    MixedPrecisionMlp m{*q, mlp, split};
    auto ranker = CreateMixedPrecisionRanker(m);
    ASSERT_TRUE(ranker.ok()) << ranker.status();
    EXPECT_EQ((*ranker)->kind(), m.Describe());
    auto report = MeasureAccuracy(mlp, **ranker, test);
    ASSERT_TRUE(report.ok());
    EXPECT_LT(report->mean_abs_diff, previous) << m.Describe() << ": " << report->ToString();
    previous = report->mean_abs_diff;
  }
  EXPECT_EQ((MixedPrecisionMlp{*q, mlp, {true, false, false}}.Describe()), "mixed(int8, layer 0 fp32)");
  EXPECT_EQ((MixedPrecisionMlp{*q, mlp, {true, false, true}}.Describe()), "mixed(int8, layers 0, 2 fp32)");
}

TEST(MixedPrecisionTest, RefusesASplitWithoutTheActivationScalesItNeeds) {
  const Mlp mlp = testing::RandomMlp({8, 16, 8, 1}, 7);
  auto q = QuantizeMlp(mlp, Rows(100, 8, 1));
  ASSERT_TRUE(q.ok());
  MixedPrecisionMlp m{*q, mlp, {true, false, false}};
  m.int8.layers[0].activation_scale.clear();
  auto ranker = CreateMixedPrecisionRanker(m);
  EXPECT_EQ(ranker.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ranker.status().message(), HasSubstr("layer 0: changes precision to layer 1 but has no activation scales"));
  m.fp32_layer = {true, false};
  EXPECT_THAT(CreateMixedPrecisionRanker(m).status().message(), HasSubstr("precision flags"));
}

// MSE ranges trim the sparse end of a long tail (log-normal, sigma 2: the max is ~30x
// the 99th percentile) and keep a uniform column's range and an isolated far outlier
// (clipping it would cost more than the bulk's rounding); max ranges keep everything.
// At 8 bits and 20,000 rows the trims are small: a wider clip costs more than it saves.
TEST(CalibrationTest, MseRangesTrimLongSparseTailsOnly) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  std::normal_distribution<float> normal(0.f, 1.f);
  CalibrationSet cal;
  cal.rows = 20000;
  cal.width = 3;
  std::vector<float> tail;
  for (int r = 0; r < cal.rows; ++r) {
    tail.push_back(std::exp(2.f * normal(rng)));
    cal.features.push_back(tail.back());
    cal.features.push_back(uniform(rng));
    cal.features.push_back(r == 17 ? 1000.f : uniform(rng));
    cal.labels.push_back(0.f);
    cal.groups.push_back(r);
  }
  std::sort(tail.begin(), tail.end());
  const float p99 = tail[static_cast<size_t>(0.99 * tail.size())];
  const Mlp mlp = testing::RandomMlp({3, 4, 1}, 1);
  QuantizeOptions options;
  options.input_method = CalibrationMethod::kMax;
  auto by_max = QuantizeMlp(mlp, cal, options);
  options.input_method = CalibrationMethod::kMse;
  auto by_mse = QuantizeMlp(mlp, cal, options);
  ASSERT_TRUE(by_max.ok() && by_mse.ok());
  auto high = [](const QuantizedMlp& q, int j) { return q.input_offset[j] + 255.f / q.input_inv_scale[j]; };
  EXPECT_FLOAT_EQ(high(*by_max, 0), tail.back());
  std::printf("log-normal column: max %.1f, 99th percentile %.1f, MSE bound %.1f\n", tail.back(), p99,
              high(*by_mse, 0));
  EXPECT_LT(high(*by_mse, 0), 0.995f * tail.back());
  EXPECT_GT(high(*by_mse, 0), p99);
  EXPECT_GT(high(*by_mse, 1), 0.99f);
  EXPECT_LT(by_mse->input_offset[1], 0.01f);
  EXPECT_NEAR(high(*by_mse, 2), 1000.f, 1.f);
}

// Hidden activations: MSE bounds are at most the max, and below it for some channels.
TEST(CalibrationTest, MseActivationRangesNeverExceedTheMaxRanges) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  const CalibrationSet cal = Rows(3000, 40, 1);
  QuantizeOptions options;
  options.method = CalibrationMethod::kMax;
  auto by_max = QuantizeMlp(mlp, cal, options);
  options.method = CalibrationMethod::kMse;
  auto by_mse = QuantizeMlp(mlp, cal, options);
  ASSERT_TRUE(by_max.ok() && by_mse.ok());
  int trimmed = 0;
  for (int l = 0; l < 2; ++l) {
    for (int o = 0; o < by_max->layers[l].out; ++o) {
      const float mse = by_mse->layers[l].activation_scale[o], max = by_max->layers[l].activation_scale[o];
      EXPECT_LE(mse, max * (1 + 1e-6f)) << l << " " << o;
      trimmed += mse < max;
    }
  }
  EXPECT_GT(trimmed, 0);
}

// Many moderately heavy-tailed columns (log-normal, sigma 1.5): MSE and max ranges leave
// int8 ~0.01 AUC below fp32, percentile 99.9 ranges stay within a 0.005 gate. The int8
// step tries them before giving up on int8: pure int8 still serves, the calibration
// named in the choice, the refused one in the reason.
TEST(FallbackTest, Int8RetriesOtherRangesBeforeLeavingInt8) {
  Mlp mlp = testing::RandomMlp({24, 64, 32, 1}, 12);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  CalibrationSet cal;
  cal.rows = 8000;
  cal.width = 24;
  for (int r = 0; r < cal.rows; ++r) {
    for (int k = 0; k < 24; ++k) cal.features.push_back(k % 2 ? std::exp(1.5f * normal(rng)) : normal(rng));
    cal.groups.push_back(r / 10);
  }
  std::vector<float> p(cal.rows);
  ReferenceScore(mlp, cal.features, cal.rows, absl::MakeSpan(p));
  for (int r = 0; r < cal.rows; ++r) cal.labels.push_back(uniform(rng) < p[r] ? 1.f : 0.f);

  CompressionPolicy policy;
  policy.gate.set_max_auc_drop(0.005f);
  policy.gate.set_max_logloss_rise(0.02f);
  auto gated = BuildGatedRanker(mlp, cal, policy);
  ASSERT_TRUE(gated.ok()) << gated.status();
  for (const CompressionAttempt& a : gated->attempts) {
    std::printf("%s (%s ranges): %s\n", a.form.c_str(), a.calibration.c_str(), a.report.ToString().c_str());
  }
  ASSERT_EQ(gated->attempts.size(), 2u);
  EXPECT_EQ(gated->attempts[0].calibration, "mse");
  EXPECT_NE(gated->attempts[0].refused, "");
  const RankerChoice& choice = *gated->ranker->choice();
  EXPECT_EQ(gated->ranker->kind(), "int8");
  EXPECT_EQ(choice.form, "int8");
  EXPECT_EQ(choice.calibration, "percentile 99.9");
  EXPECT_EQ(choice.fallback_reason, "int8: " + gated->attempts[0].refused);
  EXPECT_TRUE(choice.gate.ok());
}

CompressionPolicy GatePolicy(const std::string& mode, float max_auc_drop, float max_logloss_rise) {
  CompressionPolicy policy;
  policy.mode = mode;
  policy.gate.set_max_auc_drop(max_auc_drop);
  policy.gate.set_max_logloss_rise(max_logloss_rise);
  return policy;
}

TEST(FallbackTest, ChainGoesFromTheAskedFormTowardsFp32) {
  CompressionPolicy p;
  EXPECT_THAT(FallbackChain(p), ElementsAre("int8", "mixed", "none"));
  p.mode = "prune+int8";
  EXPECT_THAT(FallbackChain(p), ElementsAre("prune+int8", "int8", "mixed", "none"));
  p.mode = "none";
  EXPECT_THAT(FallbackChain(p), ElementsAre("none"));
  p.mode = "int8";
  p.fallback = false;
  EXPECT_THAT(FallbackChain(p), ElementsAre("int8"));
}

TEST(FallbackTest, Int8RefusedByTheGateFallsBackToMixedPrecisionWithTheSensitiveLayerInFp32) {
  Mlp mlp = testing::RandomMlp({24, 32, 16, 1}, 5);
  const CalibrationSet cal = testing::SentinelColumnCalibration(&mlp, 4000, 3, 9);
  const CompressionPolicy policy = GatePolicy("int8", 0.005f, 0.02f);
  auto gated = BuildGatedRanker(mlp, cal, policy);
  ASSERT_TRUE(gated.ok()) << gated.status();
  for (const CompressionAttempt& a : gated->attempts) std::printf("%s: %s\n", a.form.c_str(), a.report.ToString().c_str());
  for (const LayerSensitivity& s : gated->sensitivity) {
    std::printf("only layer %d int8: %s\n", s.layer, s.report.ToString().c_str());
  }
  // int8 with each of its ranges, then mixed precision.
  ASSERT_EQ(gated->attempts.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(gated->attempts[i].form, "int8");
    EXPECT_THAT(gated->attempts[i].refused, StartsWith("AUC drop "));
  }
  EXPECT_EQ(gated->attempts[1].calibration, "percentile 99.9");
  EXPECT_EQ(gated->attempts[2].calibration, "max");
  EXPECT_EQ(gated->attempts[3].form, "mixed(int8, layer 0 fp32)");
  EXPECT_EQ(gated->attempts[3].calibration, "mse");
  EXPECT_EQ(gated->attempts[3].refused, "");
  ASSERT_EQ(gated->sensitivity.size(), 3u);
  EXPECT_GT(gated->sensitivity[0].report.mean_abs_diff, 3 * gated->sensitivity[1].report.mean_abs_diff);

  const Ranker& ranker = *gated->ranker;
  EXPECT_EQ(ranker.kind(), "mixed(int8, layer 0 fp32)");
  ASSERT_NE(ranker.choice(), nullptr);
  const RankerChoice& choice = *ranker.choice();
  EXPECT_EQ(choice.form, "mixed(int8, layer 0 fp32)");
  EXPECT_EQ(choice.requested, "int8");
  EXPECT_EQ(choice.calibration, "mse");
  EXPECT_EQ(choice.fallback_reason,
            absl::StrCat("int8: ", gated->attempts[0].refused, "; int8 (percentile 99.9 ranges): ",
                         gated->attempts[1].refused, "; int8 (max ranges): ", gated->attempts[2].refused));
  EXPECT_THAT(choice.fallback_reason, HasSubstr("> 0.005"));
  EXPECT_TRUE(choice.gate.ok());
  EXPECT_LE(-choice.auc_delta, 0.005);
  // The gate measured the ranker that serves: scoring it again gives the same figures.
  auto again = MeasureAccuracy(mlp, ranker, cal);
  ASSERT_TRUE(again.ok());
  EXPECT_DOUBLE_EQ(again->auc_delta, choice.auc_delta);
}

TEST(FallbackTest, StrictPolicyReturnsTheRefusedFormWithTheGatesError) {
  Mlp mlp = testing::RandomMlp({24, 32, 16, 1}, 5);
  const CalibrationSet cal = testing::SentinelColumnCalibration(&mlp, 4000, 3, 9);
  CompressionPolicy policy = GatePolicy("int8", 0.005f, 0.02f);
  policy.fallback = false;
  auto gated = BuildGatedRanker(mlp, cal, policy);
  ASSERT_TRUE(gated.ok()) << gated.status();
  ASSERT_EQ(gated->attempts.size(), 1u);
  EXPECT_TRUE(gated->sensitivity.empty());
  const RankerChoice& choice = *gated->ranker->choice();
  EXPECT_EQ(choice.form, "int8");
  EXPECT_EQ(choice.fallback_reason, "");
  EXPECT_EQ(choice.gate.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(choice.gate.message(), HasSubstr("accuracy gate: AUC dropped by"));
}

// One layer (logistic regression): no mixed split exists, fp32 serves.
TEST(FallbackTest, Fp32ServesWhenNoQuantizedFormPasses) {
  Mlp mlp = testing::RandomMlp({24, 1}, 5);
  const CalibrationSet cal = testing::SentinelColumnCalibration(&mlp, 4000, 3, 9);
  auto gated = BuildGatedRanker(mlp, cal, GatePolicy("int8", 0.005f, 0.02f));
  ASSERT_TRUE(gated.ok()) << gated.status();
  ASSERT_EQ(gated->attempts.size(), 4u);  // int8 with three ranges, fp32
  EXPECT_TRUE(gated->sensitivity.empty());
  const RankerChoice& choice = *gated->ranker->choice();
  EXPECT_EQ(gated->ranker->kind(), "fp32");
  EXPECT_EQ(choice.calibration, "");
  EXPECT_EQ(choice.form, "none");
  EXPECT_THAT(choice.fallback_reason, StartsWith("int8: AUC drop "));
  EXPECT_TRUE(choice.gate.ok());
  EXPECT_EQ(choice.auc_delta, 0);
}

TEST(FallbackTest, PruningThatDestroysTheRankerFallsBackToPlainInt8) {
  const Mlp mlp = testing::RandomMlp({40, 64, 32, 1}, 7);
  CalibrationSet cal = Rows(3000, 40, 1);
  std::vector<float> p(cal.rows);
  ReferenceScore(mlp, cal.features, cal.rows, absl::MakeSpan(p));
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (int r = 0; r < cal.rows; ++r) cal.labels[r] = uniform(rng) < p[r] ? 1.f : 0.f;
  CompressionPolicy policy = GatePolicy("prune+int8", 0.01f, 0.05f);
  policy.unstructured_sparsity = 0.99f;
  auto gated = BuildGatedRanker(mlp, cal, policy);
  ASSERT_TRUE(gated.ok()) << gated.status();
  ASSERT_EQ(gated->attempts.size(), 2u);
  EXPECT_NE(gated->attempts[0].refused, "");
  const RankerChoice& choice = *gated->ranker->choice();
  EXPECT_EQ(choice.form, "int8");
  EXPECT_EQ(choice.requested, "prune+int8");
  EXPECT_THAT(choice.fallback_reason, StartsWith("prune+int8: "));
}

TEST(FallbackTest, GateFailureNamesTheMeasuredFiguresAndTheLimits) {
  AccuracyReport r;
  r.auc_delta = -0.0061;
  r.logloss_delta = 0.0123;
  v1::AccuracyGate gate;
  gate.set_max_auc_drop(0.002f);
  gate.set_max_logloss_rise(0.01f);
  EXPECT_EQ(GateFailure(r, gate), "AUC drop 0.0061 > 0.002, logloss rise 0.0123 > 0.01");
  r.logloss_delta = 0;
  EXPECT_EQ(GateFailure(r, gate), "AUC drop 0.0061 > 0.002");
  r.auc_delta = 0.001;
  EXPECT_EQ(GateFailure(r, gate), "");
}

// Through model loading: the factory serves the fallback form, the check fills the
// figures from the ranker's choice and passes; strict mode refuses with the figures set.
TEST(FallbackTest, InstalledCompressionNamesTheServedFormAndWhyInTheFigures) {
  for (bool strict : {false, true}) {
    PolicyOverrides overrides;
    if (strict) overrides.fallback = false;
    ModelOptions options;
    auto check = InstallCompression(overrides, &options);
    auto model = Model::Create(testing::SentinelBundle(0.005f, 0.02f), 1, options);
    ASSERT_TRUE(model.ok()) << model.status();
    v1::ModelFigures figures;
    absl::Status gate = check(**model, &figures);
    EXPECT_EQ(figures.compression_requested(), "int8");
    EXPECT_LT(figures.fp32_auc(), 1.0);
    EXPECT_GT(figures.fp32_auc(), 0.6);
    if (strict) {
      EXPECT_EQ(gate.code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_EQ(figures.compression(), "int8");
      EXPECT_EQ(figures.compression_fallback_reason(), "");
      EXPECT_LT(figures.auc_delta(), -0.005);
    } else {
      EXPECT_TRUE(gate.ok()) << gate;
      EXPECT_EQ(figures.compression(), "mixed(int8, layer 0 fp32)");
      EXPECT_EQ((*model)->ranker().kind(), "mixed(int8, layer 0 fp32)");
      EXPECT_THAT(figures.compression_fallback_reason(), StartsWith("int8: AUC drop "));
      EXPECT_GE(figures.auc_delta(), -0.005);
    }
  }
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

TEST(AccuracyTest, NonFiniteScoresFailTheGateAndNeverReachAComparator) {
  const std::vector<float> fp32 = {0.9f, 0.1f, 0.5f, 0.8f, 0.2f, 0.3f};
  const std::vector<float> served = {0.9f, std::nanf(""), 0.5f, 0.8f, 0.2f, 0.3f};
  const std::vector<float> labels = {1, 0, 0, 1, 0, 0};
  const std::vector<int64_t> groups = {1, 1, 1, 2, 2, 2};
  const AccuracyReport r = CompareScores(fp32, served, labels, groups, 1);
  EXPECT_EQ(r.non_finite, 1);
  EXPECT_TRUE(std::isfinite(r.served_auc) && std::isfinite(r.auc_delta) && std::isfinite(r.max_abs_diff));
  v1::AccuracyGate gate;
  gate.set_max_auc_drop(1.f);  // everything else would pass
  gate.set_max_logloss_rise(1.f);
  const absl::Status s = CheckGate(r, gate);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("1 of 6 calibration rows scored NaN or infinity"));
  EXPECT_EQ(GateFailure(r, gate), "rows scored NaN or infinity: 1");
}

// A ranker within every value limit whose arithmetic still overflows on the calibration
// rows (weights and features near 1e14: the second hidden layer is past FLT_MAX): the
// fp32 reference itself scores NaN, so no form can be measured, fp32 included.
TEST(FallbackTest, NonFiniteFp32CalibrationScoresRefuseEveryForm) {
  Mlp mlp = testing::RandomMlp({24, 16, 8, 1}, 3);
  for (DenseLayer& l : mlp.layers) {
    for (float& w : l.weight) w *= 1e14f;
  }
  CalibrationSet cal = Rows(400, 24, 2);
  for (float& x : cal.features) x *= 1e14f;
  for (const char* mode : {"int8", "none"}) {
    auto gated = BuildGatedRanker(mlp, cal, GatePolicy(mode, 0.01f, 0.01f));
    EXPECT_EQ(gated.status().code(), absl::StatusCode::kFailedPrecondition) << mode;
    EXPECT_THAT(std::string(gated.status().message()), HasSubstr("fp32 ranker scores")) << mode;
    EXPECT_THAT(std::string(gated.status().message()), HasSubstr("calibration rows NaN or infinity")) << mode;
  }
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
  EXPECT_TRUE(ResolvePolicy(m, o)->fallback);  // fallback on unless asked off
  o.fallback = false;
  EXPECT_FALSE(ResolvePolicy(m, o)->fallback);
  o.structured_ratio = 1.5f;
  EXPECT_THAT(ResolvePolicy(m, o).status().message(), HasSubstr("structured ratio 1.5"));
}

}  // namespace
}  // namespace recserve

