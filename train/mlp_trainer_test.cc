#include "train/mlp_trainer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
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

// A 4 -> 5 -> 3 -> 1 network with random weights and 8 rows, small enough to probe
// every parameter by finite differences.
struct TinyProblem {
  Mlp mlp;
  std::vector<float> rows, labels, teacher_logits;
  int n = 8;
};

TinyProblem MakeTinyProblem() {
  std::mt19937_64 rng(77);
  TinyProblem p;
  int in = 4;
  for (int out : {5, 3, 1}) {
    DenseLayer l;
    l.in = in;
    l.out = out;
    l.relu = out != 1;
    for (int i = 0; i < in * out; ++i) l.weight.push_back(absl::Gaussian<float>(rng, 0.f, 0.8f));
    for (int o = 0; o < out; ++o) l.bias.push_back(absl::Uniform<float>(rng, 0.05f, 0.3f));
    p.mlp.layers.push_back(std::move(l));
    in = out;
  }
  for (int i = 0; i < p.n * 4; ++i) p.rows.push_back(absl::Gaussian<float>(rng));
  for (int r = 0; r < p.n; ++r) {
    p.labels.push_back(r % 3 == 0 ? 1.f : 0.f);
    p.teacher_logits.push_back(absl::Uniform<float>(rng, -4.f, 4.f));
  }
  return p;
}

TEST(MlpTrainerTest, DistillationLossIsTheWeightedHardAndTemperatureScaledSoftCrossEntropy) {
  const TinyProblem p = MakeTinyProblem();
  Distillation d{p.teacher_logits, 0.3f, 3.0f};
  std::vector<DenseLayer> gradient;
  absl::StatusOr<double> loss = MlpLossAndGradient(p.mlp, p.rows, p.labels, p.n, &d, &gradient);
  ASSERT_TRUE(loss.ok()) << loss.status();
  absl::StatusOr<std::vector<float>> z = MlpLogits(p.mlp, p.rows, p.n);
  ASSERT_TRUE(z.ok()) << z.status();
  auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  auto bce = [](double target, double q) { return -target * std::log(q) - (1 - target) * std::log(1 - q); };
  double want = 0;
  for (int r = 0; r < p.n; ++r) {
    const double zr = (*z)[r], t = p.teacher_logits[r], T = d.temperature;
    want += (1 - d.alpha) * bce(p.labels[r], sigmoid(zr)) +
            d.alpha * T * T * bce(sigmoid(t / T), sigmoid(zr / T));
  }
  EXPECT_NEAR(*loss, want / p.n, 1e-5);
  // Without a teacher: plain BCE.
  absl::StatusOr<double> plain = MlpLossAndGradient(p.mlp, p.rows, p.labels, p.n, nullptr, &gradient);
  ASSERT_TRUE(plain.ok());
  double want_plain = 0;
  for (int r = 0; r < p.n; ++r) want_plain += bce(p.labels[r], sigmoid((*z)[r]));
  EXPECT_NEAR(*plain, want_plain / p.n, 1e-5);
}

TEST(MlpTrainerTest, DistillationGradientMatchesFiniteDifferences) {
  const TinyProblem p = MakeTinyProblem();
  for (const auto& [alpha, temperature] : std::vector<std::pair<float, float>>{{0.3f, 3.f}, {1.f, 5.f}}) {
    Distillation d{p.teacher_logits, alpha, temperature};
    std::vector<DenseLayer> gradient, unused;
    ASSERT_TRUE(MlpLossAndGradient(p.mlp, p.rows, p.labels, p.n, &d, &gradient).ok());
    ASSERT_EQ(gradient.size(), p.mlp.layers.size());
    auto loss_at = [&](const Mlp& m) { return *MlpLossAndGradient(m, p.rows, p.labels, p.n, &d, &unused); };
    constexpr float kStep = 2e-3f;
    int checked = 0;
    for (size_t li = 0; li < p.mlp.layers.size(); ++li) {
      for (bool bias : {false, true}) {
        const size_t count = bias ? p.mlp.layers[li].bias.size() : p.mlp.layers[li].weight.size();
        for (size_t i = 0; i < count; ++i) {
          Mlp plus = p.mlp, minus = p.mlp;
          (bias ? plus.layers[li].bias : plus.layers[li].weight)[i] += kStep;
          (bias ? minus.layers[li].bias : minus.layers[li].weight)[i] -= kStep;
          const double numeric = (loss_at(plus) - loss_at(minus)) / (2 * kStep);
          const double analytic = (bias ? gradient[li].bias : gradient[li].weight)[i];
          EXPECT_NEAR(analytic, numeric, 2e-3 + 0.02 * std::fabs(numeric))
              << "alpha " << alpha << " T " << temperature << " layer " << li << (bias ? " bias " : " weight ") << i;
          ++checked;
        }
      }
    }
    EXPECT_EQ(checked, 4 * 5 + 5 + 5 * 3 + 3 + 3 + 1);
  }
}

TEST(MlpTrainerTest, DistillationWithAlphaZeroTrainsExactlyLikeThePlainTrainer) {
  const Problem train = MakeProblem(3000, 16);
  const Problem val = MakeProblem(1000, 17);
  MlpTrainOptions o = QuietOptions();
  o.max_epochs = 3;
  std::vector<float> teacher(train.n);
  for (int r = 0; r < train.n; ++r) teacher[r] = 4 * train.probabilities[r] - 2;
  absl::StatusOr<Mlp> plain = Train(train, val, o, nullptr);
  absl::StatusOr<Mlp> alpha0 = DistillMlp(train.rows, train.labels, train.n, kFeatures, val.rows, val.labels,
                                          val.n, Distillation{teacher, 0.0f, 2.0f}, o, nullptr);
  absl::StatusOr<Mlp> alpha_half = DistillMlp(train.rows, train.labels, train.n, kFeatures, val.rows, val.labels,
                                              val.n, Distillation{teacher, 0.5f, 2.0f}, o, nullptr);
  ASSERT_TRUE(plain.ok() && alpha0.ok() && alpha_half.ok());
  for (size_t i = 0; i < plain->layers.size(); ++i) {
    EXPECT_EQ(plain->layers[i].weight, alpha0->layers[i].weight) << "layer " << i;
    EXPECT_EQ(plain->layers[i].bias, alpha0->layers[i].bias) << "layer " << i;
  }
  EXPECT_NE(plain->layers[0].weight, alpha_half->layers[0].weight);
}

TEST(MlpTrainerTest, DistillationWithAlphaOneLearnsFromTheTeacherAlone) {
  // With alpha = 1 the training labels carry no weight: reordering them (the same
  // positive rate, which sets the initial output bias) changes nothing, and a student of
  // an informative teacher still ranks the held-out rows.
  const Problem train = MakeProblem(6000, 18);
  const Problem val = MakeProblem(2000, 19);
  MlpTrainOptions o = QuietOptions();
  o.max_epochs = 4;
  o.patience = 0;
  std::vector<float> teacher(train.n);
  for (int r = 0; r < train.n; ++r) {
    const double q = train.probabilities[r];
    teacher[r] = static_cast<float>(std::log(q / (1 - q)));  // the oracle as teacher
  }
  const std::vector<float> reordered(train.labels.rbegin(), train.labels.rend());
  ASSERT_NE(reordered, train.labels);
  const Distillation d{teacher, 1.0f, 2.0f};
  absl::StatusOr<Mlp> a = DistillMlp(train.rows, train.labels, train.n, kFeatures, val.rows, val.labels, val.n,
                                     d, o, nullptr);
  absl::StatusOr<Mlp> b = DistillMlp(train.rows, reordered, train.n, kFeatures, val.rows, val.labels, val.n, d,
                                     o, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->layers[0].weight, b->layers[0].weight);
  EXPECT_EQ(a->layers.back().weight, b->layers.back().weight);
  // The oracle's soft labels teach more than the clicks drawn from it.
  absl::StatusOr<Mlp> plain = Train(train, val, o, nullptr);
  ASSERT_TRUE(plain.ok());
  const double student_auc = Auc(Score(*b, val), val.labels), plain_auc = Auc(Score(*plain, val), val.labels);
  EXPECT_GT(student_auc, plain_auc + 0.005) << "oracle " << Auc(val.probabilities, val.labels);
}

TEST(MlpTrainerTest, DistillationRefusesBadTeacherLogitsAndSettings) {
  const Problem train = MakeProblem(100, 20);
  const Problem val = MakeProblem(50, 21);
  const MlpTrainOptions o = QuietOptions();
  std::vector<float> teacher(train.n, 0.5f);
  auto distill = [&](absl::Span<const float> logits, float alpha, float temperature) {
    return DistillMlp(train.rows, train.labels, train.n, kFeatures, val.rows, val.labels, val.n,
                      Distillation{logits, alpha, temperature}, o, nullptr);
  };
  auto expect_invalid = [](const absl::StatusOr<Mlp>& result, const std::string& mention) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr(mention));
  };
  expect_invalid(distill(absl::MakeConstSpan(teacher).subspan(1), 0.5f, 2.f), "99 teacher logits for 100");
  expect_invalid(distill(teacher, 1.5f, 2.f), "alpha is 1.5");
  expect_invalid(distill(teacher, 0.5f, 0.5f), "temperature is 0.5");
  teacher[7] = std::numeric_limits<float>::infinity();
  expect_invalid(distill(teacher, 0.5f, 2.f), "teacher_logits: value at row 7");
}

}  // namespace
}  // namespace recserve
