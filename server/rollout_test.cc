#include "server/rollout.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rollout_stats.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

// `calls` calls of `latency` each, `errors` of them failed; every answer scores `score`.
RolloutStats::Snapshot Side(int calls, int errors, absl::Duration latency, float score) {
  RolloutStats stats;
  RecommendResult answer;
  answer.items = {{1, score, 0, 0}, {2, score, 0, 0}};
  for (int i = 0; i < calls; ++i) {
    const bool failed = i < errors;
    stats.RecordCall(failed ? absl::StatusCode::kInternal : absl::StatusCode::kOk, latency,
                     failed ? nullptr : &answer);
  }
  return stats.Read();
}

RolloutRules Rules() {
  RolloutRules r;
  r.min_requests = 100;
  r.window = absl::Seconds(60);
  return r;
}

TEST(RolloutStatsTest, ClientFaultsAndCancellationsAreNeitherCallsNorErrors) {
  RolloutStats stats;
  for (absl::StatusCode code : {absl::StatusCode::kCancelled, absl::StatusCode::kInvalidArgument,
                                absl::StatusCode::kNotFound}) {
    stats.RecordCall(code, absl::Milliseconds(1), nullptr);
  }
  EXPECT_EQ(stats.Read().calls, 0);
  stats.RecordCall(absl::StatusCode::kDeadlineExceeded, absl::Milliseconds(1), nullptr);
  stats.RecordCall(absl::StatusCode::kOk, absl::Milliseconds(1), nullptr);
  EXPECT_EQ(stats.Read().calls, 2);
  EXPECT_EQ(stats.Read().errors, 1);
}

TEST(RolloutStatsTest, P99IsTheUpperEdgeOfItsLogBin) {
  RolloutStats stats;
  for (int i = 0; i < 990; ++i) stats.RecordCall(absl::StatusCode::kOk, absl::Microseconds(100), nullptr);
  for (int i = 0; i < 10; ++i) stats.RecordCall(absl::StatusCode::kOk, absl::Milliseconds(50), nullptr);
  const RolloutStats::Snapshot s = stats.Read();
  // Bins are 2^(1/4) (19%) wide: the quantile is within one bin above the true value.
  EXPECT_GE(s.LatencyQuantile(0.99), absl::Microseconds(100));
  EXPECT_LT(s.LatencyQuantile(0.99), absl::Microseconds(120));
  EXPECT_GE(s.LatencyQuantile(0.999), absl::Milliseconds(50));
  EXPECT_LT(s.LatencyQuantile(0.999), absl::Milliseconds(60));
  EXPECT_EQ(RolloutStats().Read().LatencyQuantile(0.99), absl::ZeroDuration());
}

TEST(RolloutStatsTest, UnrankedAnswersAddNoScores) {
  RolloutStats stats;
  RecommendResult answer;
  answer.items = {{1, 0.7f, 0, 0}};
  stats.RecordCall(absl::StatusCode::kOk, absl::Milliseconds(1), &answer);
  answer.degraded = Degraded::kPopularity;
  stats.RecordCall(absl::StatusCode::kOk, absl::Milliseconds(1), &answer);
  const RolloutStats::Snapshot s = stats.Read();
  EXPECT_EQ(s.score_count(), 1);
  EXPECT_EQ(s.scores[14], 1);  // 0.7 of 20 bins
}

TEST(ScorePsiTest, ZeroForOneDistributionLargeForAShift) {
  const RolloutStats::Snapshot a = Side(500, 0, absl::Milliseconds(1), 0.3f);
  EXPECT_LT(ScorePsi(a, Side(800, 0, absl::Milliseconds(1), 0.3f)), 0.01);  // the prior alone
  EXPECT_GT(ScorePsi(a, Side(800, 0, absl::Milliseconds(1), 0.8f)), 5);
  EXPECT_EQ(ScorePsi(a, RolloutStats().Read()), 0);
}

TEST(JudgeRolloutTest, ObservesUntilBothSidesHaveMinRequests) {
  v1::RolloutStatus status;
  const RolloutVerdict v = JudgeRollout(Rules(), "canary", Side(99, 99, absl::Seconds(1), 0.9f),
                                        Side(1000, 0, absl::Milliseconds(1), 0.3f), absl::Hours(1), &status);
  EXPECT_EQ(v.kind, RolloutVerdict::Kind::kObserving);
  EXPECT_THAT(v.reason, HasSubstr("99 of 100 calls on the canary"));
  EXPECT_EQ(status.canary().calls(), 99);
  EXPECT_EQ(status.serving().calls(), 1000);
}

TEST(JudgeRolloutTest, ErrorRateAboveRatioTimesFlooredServingRateRollsBack) {
  v1::RolloutStatus status;
  const RolloutStats::Snapshot serving = Side(1000, 0, absl::Milliseconds(1), 0.3f);
  // Floor 1%: 2% of errors against none is at the limit (2x), 3% breaks it.
  EXPECT_EQ(JudgeRollout(Rules(), "canary", Side(100, 2, absl::Milliseconds(1), 0.3f), serving, absl::Seconds(1), &status).kind,
            RolloutVerdict::Kind::kObserving);
  const RolloutVerdict v =
      JudgeRollout(Rules(), "canary", Side(100, 3, absl::Milliseconds(1), 0.3f), serving, absl::Seconds(1), &status);
  EXPECT_EQ(v.kind, RolloutVerdict::Kind::kRollBack);
  EXPECT_THAT(v.reason, HasSubstr("error rate 3.00% is 3.0x serving's 0.00% (floor 1.00%) > 2x (canary 100 calls, serving 1000)"));
  EXPECT_DOUBLE_EQ(status.error_ratio(), 3);
}

TEST(JudgeRolloutTest, SlowCanaryRollsBackOnP99) {
  v1::RolloutStatus status;
  const RolloutVerdict v = JudgeRollout(Rules(), "canary", Side(200, 0, absl::Milliseconds(30), 0.3f),
                                        Side(1000, 0, absl::Milliseconds(1), 0.3f), absl::Seconds(1), &status);
  EXPECT_EQ(v.kind, RolloutVerdict::Kind::kRollBack);
  EXPECT_THAT(v.reason, HasSubstr("p99 latency"));
  EXPECT_THAT(v.reason, HasSubstr("> 2x (canary 200 calls, serving 1000)"));
  EXPECT_GT(status.p99_ratio(), 25);
}

TEST(JudgeRolloutTest, DriftedScoresRollBackOnPsi) {
  v1::RolloutStatus status;
  const RolloutVerdict v = JudgeRollout(Rules(), "canary", Side(200, 0, absl::Milliseconds(1), 0.9f),
                                        Side(1000, 0, absl::Milliseconds(1), 0.3f), absl::Seconds(1), &status);
  EXPECT_EQ(v.kind, RolloutVerdict::Kind::kRollBack);
  EXPECT_THAT(v.reason, HasSubstr("score drift PSI"));
  EXPECT_THAT(v.reason, HasSubstr("(400 canary scores"));
  EXPECT_GT(status.score_psi(), 0.2);
  // A shadow is judged by the same rules; the verdict names its role.
  const RolloutVerdict shadow = JudgeRollout(Rules(), "shadow", Side(200, 0, absl::Milliseconds(1), 0.9f),
                                             Side(1000, 0, absl::Milliseconds(1), 0.3f), absl::Seconds(1), &status);
  EXPECT_THAT(shadow.reason, HasSubstr("(400 shadow scores, 2000 serving) (shadow 200 calls, serving 1000)"));
}

TEST(JudgeRolloutTest, LowTopKOverlapRollsBackOnlyWithSamples) {
  RolloutStats canary;
  RecommendResult answer;
  answer.items = {{1, 0.3f, 0, 0}};
  for (int i = 0; i < 200; ++i) canary.RecordCall(absl::StatusCode::kOk, absl::Milliseconds(1), &answer);
  const RolloutStats::Snapshot serving = Side(1000, 0, absl::Milliseconds(1), 0.3f);
  v1::RolloutStatus status;
  EXPECT_EQ(JudgeRollout(Rules(), "canary", canary.Read(), serving, absl::Seconds(1), &status).kind,
            RolloutVerdict::Kind::kObserving);
  for (int i = 0; i < 10; ++i) canary.RecordOverlap(0.2);
  const RolloutVerdict v = JudgeRollout(Rules(), "canary", canary.Read(), serving, absl::Seconds(1), &status);
  EXPECT_EQ(v.kind, RolloutVerdict::Kind::kRollBack);
  EXPECT_THAT(v.reason, HasSubstr("top-k overlap 0.200 < 0.5 over 10 samples"));
}

TEST(JudgeRolloutTest, HealthyCanaryIsPromotedOnlyAfterTheWindow) {
  v1::RolloutStatus status;
  const RolloutStats::Snapshot canary = Side(200, 1, absl::Milliseconds(1), 0.3f);
  const RolloutStats::Snapshot serving = Side(1000, 5, absl::Milliseconds(1), 0.3f);
  EXPECT_EQ(JudgeRollout(Rules(), "canary", canary, serving, absl::Seconds(59), &status).kind, RolloutVerdict::Kind::kObserving);
  const RolloutVerdict v = JudgeRollout(Rules(), "canary", canary, serving, absl::Seconds(60), &status);
  EXPECT_EQ(v.kind, RolloutVerdict::Kind::kPromote);
  EXPECT_THAT(v.reason, HasSubstr("every rule held for 1m"));
}

TEST(JudgeRolloutTest, ARuleAtZeroIsOff) {
  RolloutRules rules = Rules();
  rules.max_p99_ratio = 0;
  v1::RolloutStatus status;
  EXPECT_EQ(JudgeRollout(rules, "canary", Side(200, 0, absl::Milliseconds(30), 0.3f), Side(1000, 0, absl::Milliseconds(1), 0.3f),
                         absl::Seconds(60), &status)
                .kind,
            RolloutVerdict::Kind::kPromote);
}

TEST(ResolveRolloutTest, ManifestFieldsOverrideFlagsAndBadOnesAreNamed) {
  RolloutOptions flags;
  v1::RolloutSpec spec;
  spec.set_mode("canary");
  spec.set_share(0.25);
  spec.mutable_rules()->set_max_p99_ratio(0);  // set to 0: the rule is off, not the flag's
  spec.mutable_rules()->set_window_seconds(30);
  absl::StatusOr<RolloutOptions> o = ResolveRollout(flags, spec);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->mode, RolloutMode::kCanary);
  EXPECT_EQ(o->share, 0.25);
  EXPECT_EQ(o->rules.max_p99_ratio, 0);
  EXPECT_EQ(o->rules.window, absl::Seconds(30));
  EXPECT_EQ(o->rules.max_score_psi, flags.rules.max_score_psi);  // unset: the flag's

  const struct {
    void (*edit)(v1::RolloutSpec*);
    const char* error;
  } bad[] = {
      {[](v1::RolloutSpec* s) { s->set_mode("blue-green"); }, "rollout.mode: 'blue-green' is not a roll-out mode"},
      {[](v1::RolloutSpec* s) { s->set_share(1); }, "rollout.share: 1 is not a canary share, in (0, 1)"},
      {[](v1::RolloutSpec* s) { s->set_share(-0.5); }, "rollout.share: -0.5 is outside (0, 1]"},
      {[](v1::RolloutSpec* s) { s->mutable_rules()->set_max_score_psi(-1); }, "rollout.rules.max_score_psi: -1"},
      {[](v1::RolloutSpec* s) { s->mutable_rules()->set_error_floor(2); }, "rollout.rules.error_floor: 2 is outside"},
      {[](v1::RolloutSpec* s) { s->mutable_rules()->set_min_requests(-3); }, "rollout.rules.min_requests: -3"},
      {[](v1::RolloutSpec* s) { s->mutable_rules()->set_window_seconds(1e9); }, "rollout.rules.window"},
  };
  for (const auto& b : bad) {
    v1::RolloutSpec s = spec;
    b.edit(&s);
    absl::StatusOr<RolloutOptions> r = ResolveRollout(flags, s);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << b.error;
    EXPECT_THAT(r.status().message(), HasSubstr(b.error));
  }
}

TEST(ValidateRolloutOptionsTest, FlagsAreNamed) {
  RolloutOptions o;
  o.share = 1;
  EXPECT_THAT(ValidateRolloutOptions(o).message(), HasSubstr("--canary_share: 1 is not a canary share"));
  o.mode = RolloutMode::kShadow;
  EXPECT_TRUE(ValidateRolloutOptions(o).ok());
  o.rules.max_p99_ratio = std::nan("");
  EXPECT_THAT(ValidateRolloutOptions(o).message(), HasSubstr("--rollout_max_p99_ratio"));
  EXPECT_THAT(ParseRolloutMode("Canary").status().message(), HasSubstr("immediate, canary or shadow"));
}

}  // namespace
}  // namespace recserve
