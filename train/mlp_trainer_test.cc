#include "train/mlp_trainer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/random/distributions.h"
#include "engine/mlp.h"
#include "engine/quality.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

constexpr int kFeatures = 20;

// Rows drawn from a known model: standard-normal latent z, raw features
// x_j = offset_j + scale_j * z_j (so standardisation has work to do), and
// P(click) = sigmoid(w . z + 1.5 z0 z1 + |z2| - 1.3), which a linear model cannot fit.
struct Problem {
  int n = 0;
  std::vector<float> rows;           // raw, [n x kFeatures]
  std::vector<float> labels;         // Bernoulli draws
  std::vector<float> probabilities;  // the generating probabilities (the oracle)
};

Problem MakeProblem(int n, uint64_t seed) {
  std::mt19937_64 weights_rng(12345);  // the same model for every sample
  std::vector<double> w(kFeatures), offset(kFeatures), scale(kFeatures);
  for (int j = 0; j < kFeatures; ++j) {
    w[j] = absl::Gaussian<double>(weights_rng, 0.0, 0.5);
    offset[j] = absl::Uniform<double>(weights_rng, -20.0, 20.0);
    scale[j] = absl::Uniform<double>(weights_rng, 0.1, 10.0);
  }
  std::mt19937_64 rng(seed);
  Problem p;
  p.n = n;
  std::vector<double> z(kFeatures);
  for (int r = 0; r < n; ++r) {
    double logit = -1.3;
    for (int j = 0; j < kFeatures; ++j) {
      z[j] = absl::Gaussian<double>(rng);
      logit += w[j] * z[j];
      p.rows.push_back(static_cast<float>(offset[j] + scale[j] * z[j]));
    }
    logit += 1.5 * z[0] * z[1] + std::fabs(z[2]);
    const double prob = 1.0 / (1.0 + std::exp(-logit));
    p.probabilities.push_back(static_cast<float>(prob));
    p.labels.push_back(absl::Bernoulli(rng, prob) ? 1.0f : 0.0f);
  }
  return p;
}

std::vector<float> Score(const Mlp& mlp, const Problem& p) {
  std::vector<float> scores(p.n);
  ReferenceScore(mlp, p.rows, p.n, absl::MakeSpan(scores));
  return scores;
}

absl::StatusOr<Mlp> Train(const Problem& train, const Problem& val, const MlpTrainOptions& o,
                          MlpTrainReport* report) {
  return TrainMlp(train.rows, train.labels, train.n, kFeatures, val.rows, val.labels, val.n, o,
                  report);
}

MlpTrainOptions QuietOptions() {
  MlpTrainOptions o;
  o.hidden = {64, 32};
  o.verbose = false;
  return o;
}

TEST(MlpTrainerTest, LearnsNonlinearProblemWithinOneHundredthOfOracleAuc) {
  // The gap to the oracle is mostly finite-sample error; 200k rows keep it near 0.004.
  const Problem train = MakeProblem(200000, 1);
  const Problem val = MakeProblem(10000, 2);
  const Problem test = MakeProblem(20000, 3);
  MlpTrainOptions o = QuietOptions();
  o.learning_rate = 3e-3f;
  MlpTrainReport report;
  absl::StatusOr<Mlp> mlp = Train(train, val, o, &report);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  ASSERT_TRUE(ValidateMlp(*mlp).ok());
  EXPECT_EQ(mlp->LayerSizes(), (std::vector<int>{kFeatures, 64, 32, 1}));

  const double oracle_auc = Auc(test.probabilities, test.labels);
  const double model_auc = Auc(Score(*mlp, test), test.labels);
  EXPECT_GT(model_auc, oracle_auc - 0.01) << "oracle " << oracle_auc;
  // A linear model on these features tops out well below the oracle; make sure the test
  // problem is one where the hidden layers matter.
  MlpTrainOptions linear = o;
  linear.hidden = {};
  absl::StatusOr<Mlp> logistic = Train(train, val, linear, nullptr);
  ASSERT_TRUE(logistic.ok()) << logistic.status();
  EXPECT_LT(Auc(Score(*logistic, test), test.labels), oracle_auc - 0.02);

  EXPECT_GE(report.best_epoch, 1);
  EXPECT_LE(report.best_epoch, report.epochs);
  EXPECT_NEAR(report.best_val_auc, Auc(Score(*mlp, val), val.labels), 1e-4);
}

TEST(MlpTrainerTest, ReturnedMlpScoresRawRowsLikeTheTrainer) {
  const Problem train = MakeProblem(5000, 4);
  const Problem val = MakeProblem(2000, 5);
  MlpTrainOptions o = QuietOptions();
  o.max_epochs = 5;
  MlpTrainReport report;
  absl::StatusOr<Mlp> mlp = Train(train, val, o, &report);
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  ASSERT_EQ(report.val_predictions.size(), static_cast<size_t>(val.n));
  const std::vector<float> reference = Score(*mlp, val);
  float worst = 0;
  for (int i = 0; i < val.n; ++i) {
    worst = std::max(worst, std::fabs(reference[i] - report.val_predictions[i]));
  }
  EXPECT_LT(worst, 1e-5f);
  EXPECT_NEAR(LogLoss(reference, val.labels), report.best_val_logloss, 1e-6);
}

TEST(MlpTrainerTest, EarlyStoppingReturnsBestEpochWeights) {
  // Few rows and a wide, fast-learning net: validation loss bottoms out after a few
  // epochs and then climbs as it memorises the noise.
  const Problem train = MakeProblem(400, 6);
  const Problem val = MakeProblem(2000, 7);
  MlpTrainOptions o = QuietOptions();
  o.hidden = {256, 128};
  o.batch_size = 32;
  o.learning_rate = 1e-2f;
  o.max_epochs = 60;
  o.patience = 3;
  MlpTrainReport report;
  absl::StatusOr<Mlp> mlp = Train(train, val, o, &report);
  ASSERT_TRUE(mlp.ok()) << mlp.status();

  ASSERT_LT(report.epochs, o.max_epochs) << "did not stop early";
  EXPECT_EQ(report.epochs, report.best_epoch + o.patience);
  ASSERT_EQ(report.val_logloss_history.size(), static_cast<size_t>(report.epochs));
  EXPECT_EQ(report.val_logloss_history[report.best_epoch - 1], report.best_val_logloss);
  const double last = report.val_logloss_history.back();
  ASSERT_GT(last, report.best_val_logloss + 1e-3);
  // The returned weights are the best epoch's, not the last epoch's.
  const double returned = LogLoss(Score(*mlp, val), val.labels);
  EXPECT_NEAR(returned, report.best_val_logloss, 1e-5);
}

TEST(MlpTrainerTest, SameSeedGivesIdenticalWeights) {
  const Problem train = MakeProblem(3000, 8);
  const Problem val = MakeProblem(1000, 9);
  MlpTrainOptions o = QuietOptions();
  o.max_epochs = 3;
  o.weight_decay = 1e-2f;
  absl::StatusOr<Mlp> a = Train(train, val, o, nullptr);
  absl::StatusOr<Mlp> b = Train(train, val, o, nullptr);
  o.seed = 2;
  absl::StatusOr<Mlp> c = Train(train, val, o, nullptr);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_EQ(a->layers.size(), b->layers.size());
  for (size_t i = 0; i < a->layers.size(); ++i) {
    EXPECT_EQ(a->layers[i].weight, b->layers[i].weight) << "layer " << i;
    EXPECT_EQ(a->layers[i].bias, b->layers[i].bias) << "layer " << i;
  }
  EXPECT_NE(a->layers[0].weight, c->layers[0].weight);
}

TEST(MlpTrainerTest, RefusesInconsistentOrInvalidInputs) {
  const Problem train = MakeProblem(100, 10);
  const Problem val = MakeProblem(50, 11);
  const MlpTrainOptions o = QuietOptions();
  auto expect_invalid = [](const absl::StatusOr<Mlp>& result, const std::string& mention) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(mention));
  };

  // Sizes.
  std::vector<float> short_rows(train.rows.begin(), train.rows.end() - 1);
  expect_invalid(TrainMlp(short_rows, train.labels, train.n, kFeatures, val.rows, val.labels, val.n,
                          o, nullptr),
                 "rows has 1999 values");
  std::vector<float> short_labels(train.labels.begin(), train.labels.end() - 1);
  expect_invalid(TrainMlp(train.rows, short_labels, train.n, kFeatures, val.rows, val.labels, val.n,
                          o, nullptr),
                 "labels has 99 values");
  expect_invalid(TrainMlp(train.rows, train.labels, train.n, kFeatures, val.rows, val.labels,
                          val.n + 1, o, nullptr),
                 "val_rows");
  expect_invalid(TrainMlp(train.rows, train.labels, train.n, kFeatures, {}, {}, 0, o, nullptr),
                 "num_val");
  expect_invalid(
      TrainMlp(train.rows, train.labels, train.n, 0, val.rows, val.labels, val.n, o, nullptr),
      "input_dim");

  // Values.
  std::vector<float> nan_rows = train.rows;
  nan_rows[3 * kFeatures + 2] = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(
      TrainMlp(nan_rows, train.labels, train.n, kFeatures, val.rows, val.labels, val.n, o, nullptr),
      "rows: value at row 3, column 2");
  std::vector<float> inf_val = val.rows;
  inf_val[7] = std::numeric_limits<float>::infinity();
  expect_invalid(TrainMlp(train.rows, train.labels, train.n, kFeatures, inf_val, val.labels, val.n,
                          o, nullptr),
                 "val_rows: value at row 0, column 7");
  std::vector<float> half_labels = train.labels;
  half_labels[5] = 0.5f;
  expect_invalid(TrainMlp(train.rows, half_labels, train.n, kFeatures, val.rows, val.labels, val.n,
                          o, nullptr),
                 "labels[5]");

  // Options.
  MlpTrainOptions bad = o;
  bad.batch_size = 0;
  expect_invalid(Train(train, val, bad, nullptr), "batch_size");
  bad = o;
  bad.hidden = {64, 0};
  expect_invalid(Train(train, val, bad, nullptr), "hidden[1]");
  bad = o;
  bad.learning_rate = -1;
  expect_invalid(Train(train, val, bad, nullptr), "learning_rate");
}

TEST(MlpTrainerTest, CombinedMembersScoreTheMeanOfTheirLogits) {
  const Problem train = MakeProblem(3000, 12);
  const Problem val = MakeProblem(1000, 13);
  MlpTrainOptions o = QuietOptions();
  o.max_epochs = 2;
  std::vector<Mlp> members;
  for (uint64_t seed : {1, 2, 3}) {
    o.seed = seed;
    o.hidden = {16 + static_cast<int>(seed), 8};  // widths may differ between members
    absl::StatusOr<Mlp> m = Train(train, val, o, nullptr);
    ASSERT_TRUE(m.ok()) << m.status();
    members.push_back(*std::move(m));
  }
  absl::StatusOr<Mlp> combined = CombineMlps(members);
  ASSERT_TRUE(combined.ok()) << combined.status();
  EXPECT_EQ(combined->LayerSizes(), (std::vector<int>{kFeatures, 17 + 18 + 19, 24, 1}));
  std::vector<std::vector<float>> member_scores;
  for (const Mlp& m : members) member_scores.push_back(Score(m, val));
  const std::vector<float> scores = Score(*combined, val);
  auto logit = [](double p) { return std::log(p / (1 - p)); };
  for (int r = 0; r < val.n; ++r) {
    double mean = 0;
    for (const auto& s : member_scores) mean += logit(s[r]) / members.size();
    ASSERT_NEAR(logit(scores[r]), mean, 1e-3) << "row " << r;
  }
  // One member is itself.
  absl::StatusOr<Mlp> one = CombineMlps(absl::MakeConstSpan(members).subspan(0, 1));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->layers[0].weight, members[0].layers[0].weight);
}

TEST(MlpTrainerTest, CombineRefusesMembersOfDifferentShapes) {
  const Problem train = MakeProblem(500, 14);
  const Problem val = MakeProblem(200, 15);
  MlpTrainOptions o = QuietOptions();
  o.max_epochs = 1;
  absl::StatusOr<Mlp> deep = Train(train, val, o, nullptr);
  o.hidden = {8};
  absl::StatusOr<Mlp> shallow = Train(train, val, o, nullptr);
  ASSERT_TRUE(deep.ok() && shallow.ok());
  const std::vector<Mlp> members = {*deep, *shallow};
  absl::StatusOr<Mlp> combined = CombineMlps(members);
  EXPECT_EQ(combined.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(combined.status().message()), HasSubstr("member 1 has 2 layers"));
  EXPECT_EQ(CombineMlps({}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recserve
