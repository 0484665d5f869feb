// SplitLog's protocols on hand-made logs, and Evaluate's metrics on cases whose ranks are
// known (baselines) and on a larger random log (determinism, consumed items).
#include "train/eval.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "engine/model.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

constexpr int64_t kT0 = 1600000000000;  // ms; any realistic instant
constexpr int64_t kDayMs = 86400000;

LoggedEvent Purchase(uint64_t user, uint64_t item, int64_t t_ms) {
  return LoggedEvent{user, item, EventKind::kPurchase, t_ms};
}

// As ReadEventLog returns them: sorted stably by (timestamp, user).
std::vector<LoggedEvent> Sorted(std::vector<LoggedEvent> events) {
  std::stable_sort(events.begin(), events.end(), [](const LoggedEvent& a, const LoggedEvent& b) {
    return a.timestamp_ms != b.timestamp_ms ? a.timestamp_ms < b.timestamp_ms : a.user_id < b.user_id;
  });
  return events;
}

std::vector<LoggedEvent> EventsOf(const std::vector<LoggedEvent>& events, uint64_t user) {
  std::vector<LoggedEvent> out;
  for (const LoggedEvent& e : events) {
    if (e.user_id == user) out.push_back(e);
  }
  return out;
}

std::vector<uint64_t> Items(const std::vector<LoggedEvent>& events) {
  std::vector<uint64_t> out;
  for (const LoggedEvent& e : events) out.push_back(e.item_id);
  return out;
}

const TestCase* CaseOf(const LogSplit& split, uint64_t user) {
  for (const TestCase& c : split.cases) {
    if (c.user_id == user) return &c;
  }
  return nullptr;
}

std::set<uint64_t> CaseUsers(const LogSplit& split) {
  std::set<uint64_t> users;
  for (const TestCase& c : split.cases) users.insert(c.user_id);
  return users;
}

// ---------------------------------------------------------------------------------------
// leave_last_out

// User 1: baskets at days 0..4; the last item new to them is 14 (the later of the two new
// items of day 3's basket); day 4 only repeats items.
std::vector<LoggedEvent> LeaveLastOutLog() {
  return Sorted({
      // user 1, 8 events
      Purchase(1, 10, kT0), Purchase(1, 11, kT0),
      Purchase(1, 12, kT0 + 1 * kDayMs),
      Purchase(1, 10, kT0 + 2 * kDayMs),
      Purchase(1, 13, kT0 + 3 * kDayMs), Purchase(1, 14, kT0 + 3 * kDayMs),
      Purchase(1, 11, kT0 + 4 * kDayMs), Purchase(1, 12, kT0 + 4 * kDayMs),
      // user 2, 3 events (< min_user_events = 5), some after user 1's cut
      Purchase(2, 10, kT0), Purchase(2, 14, kT0 + 3 * kDayMs), Purchase(2, 15, kT0 + 5 * kDayMs),
      // user 3, exactly 5 events: tested; target 16
      Purchase(3, 10, kT0), Purchase(3, 11, kT0 + kDayMs), Purchase(3, 10, kT0 + 2 * kDayMs),
      Purchase(3, 16, kT0 + 3 * kDayMs), Purchase(3, 11, kT0 + 4 * kDayMs),
      // user 4, 4 events: not tested
      Purchase(4, 10, kT0), Purchase(4, 11, kT0 + kDayMs), Purchase(4, 12, kT0 + 2 * kDayMs),
      Purchase(4, 13, kT0 + 3 * kDayMs),
      // user 5, 5 events: every item is new only in the first basket -> no request
      Purchase(5, 10, kT0), Purchase(5, 11, kT0), Purchase(5, 12, kT0),
      Purchase(5, 10, kT0 + kDayMs), Purchase(5, 11, kT0 + 2 * kDayMs),
  });
}

SplitOptions LeaveLastOut(int min_user_events = 5) {
  SplitOptions o;
  o.protocol = "leave_last_out";
  o.min_user_events = min_user_events;
  return o;
}

TEST(SplitLogTest, LeaveLastOutTargetIsTheLatestFirstOccurrence) {
  auto split = SplitLog(LeaveLastOutLog(), LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  const TestCase* c = CaseOf(*split, 1);
  ASSERT_NE(c, nullptr);
  // 13 and 14 are both new in day 3's basket: the later in file order is the target; the
  // repeats of day 4 come later but are not new.
  EXPECT_EQ(c->targets, std::vector<uint64_t>({14}));
  EXPECT_EQ(c->cut_ms, kT0 + 3 * kDayMs);
  const TestCase* c3 = CaseOf(*split, 3);
  ASSERT_NE(c3, nullptr);
  EXPECT_EQ(c3->targets, std::vector<uint64_t>({16}));
}

TEST(SplitLogTest, LeaveLastOutRequestHoldsOnlyEarlierBaskets) {
  auto split = SplitLog(LeaveLastOutLog(), LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  const TestCase* c = CaseOf(*split, 1);
  ASSERT_NE(c, nullptr);
  // 13 shares the target's timestamp: it is not part of the request.
  EXPECT_EQ(Items(c->request), std::vector<uint64_t>({10, 11, 12, 10}));
  for (const LoggedEvent& e : c->request) {
    EXPECT_EQ(e.user_id, 1u);
    EXPECT_LT(e.timestamp_ms, c->cut_ms);
  }
  EXPECT_TRUE(std::is_sorted(c->request.begin(), c->request.end(),
                             [](const LoggedEvent& a, const LoggedEvent& b) { return a.timestamp_ms < b.timestamp_ms; }));
}

TEST(SplitLogTest, LeaveLastOutTestsOnlyUsersWithEnoughEventsAndARequest) {
  auto split = SplitLog(LeaveLastOutLog(), LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  // 2 and 4 have fewer than 5 events; 5's only new items are in its first basket.
  EXPECT_EQ(CaseUsers(*split), std::set<uint64_t>({1, 3}));
  // With a lower bar, user 4 (4 events) is tested too.
  auto lower = SplitLog(LeaveLastOutLog(), LeaveLastOut(4));
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(CaseUsers(*lower), std::set<uint64_t>({1, 3, 4}));
  EXPECT_EQ(split->description, "leave_last_out(min_user_events=5)");
}

TEST(SplitLogTest, LeaveLastOutTrainEventsLoseTheTestedUsersFutureOnly) {
  const std::vector<LoggedEvent> log = LeaveLastOutLog();
  auto split = SplitLog(log, LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  const std::vector<LoggedEvent>& train = split->train_events;
  // Tested users: exactly the events before their cut remain.
  EXPECT_EQ(Items(EventsOf(train, 1)), std::vector<uint64_t>({10, 11, 12, 10}));
  EXPECT_EQ(Items(EventsOf(train, 3)), std::vector<uint64_t>({10, 11, 10}));
  // Everybody else keeps every event, including those after the tested users' cuts.
  for (uint64_t user : {2, 4, 5}) {
    EXPECT_EQ(Items(EventsOf(train, user)), Items(EventsOf(log, user))) << "user " << user;
  }
  EXPECT_EQ(train.size(), log.size() - 4 - 2);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end(),
                             [](const LoggedEvent& a, const LoggedEvent& b) { return a.timestamp_ms < b.timestamp_ms; }));
  // No target of a case is in its own user's training events.
  for (const TestCase& c : split->cases) {
    for (const LoggedEvent& e : EventsOf(train, c.user_id)) {
      EXPECT_EQ(std::count(c.targets.begin(), c.targets.end(), e.item_id), 0) << "user " << c.user_id;
    }
  }
}

// ---------------------------------------------------------------------------------------
// time

constexpr int64_t kSplitT = kT0 + 10 * kDayMs;

std::vector<LoggedEvent> TimeLog() {
  return Sorted({
      // user 1: past {20, 21}; after T: 21 (not new), 22 twice, 23 at exactly T, 24 two days on
      Purchase(1, 20, kT0), Purchase(1, 21, kT0 + kDayMs),
      Purchase(1, 23, kSplitT), Purchase(1, 21, kSplitT + kDayMs / 2),
      Purchase(1, 22, kSplitT + kDayMs / 2), Purchase(1, 22, kSplitT + kDayMs),
      Purchase(1, 24, kSplitT + 2 * kDayMs),
      // user 2: nothing before T
      Purchase(2, 20, kSplitT + kDayMs),
      // user 3: only repeats after T
      Purchase(3, 20, kT0 + 2 * kDayMs), Purchase(3, 20, kSplitT + kDayMs),
      // user 4: nothing after T
      Purchase(4, 22, kT0 + 3 * kDayMs), Purchase(4, 23, kT0 + 4 * kDayMs),
      // user 5: past {22}; one new item after T
      Purchase(5, 22, kT0 + 5 * kDayMs), Purchase(5, 25, kSplitT + 3 * kDayMs),
  });
}

SplitOptions TimeAt(int64_t t_ms, double horizon_days = 0) {
  SplitOptions o;
  o.protocol = "time";
  o.split_time_ms = t_ms;
  o.horizon_days = horizon_days;
  return o;
}

TEST(SplitLogTest, TimeTrainEventsAreAllBeforeT) {
  const std::vector<LoggedEvent> log = TimeLog();
  auto split = SplitLog(log, TimeAt(kSplitT));
  ASSERT_TRUE(split.ok()) << split.status();
  size_t before = 0;
  for (const LoggedEvent& e : log) before += e.timestamp_ms < kSplitT;
  EXPECT_EQ(split->train_events.size(), before);
  for (const LoggedEvent& e : split->train_events) EXPECT_LT(e.timestamp_ms, kSplitT);
}

TEST(SplitLogTest, TimeTargetsAreTheDistinctNewItemsFromTOn) {
  auto split = SplitLog(TimeLog(), TimeAt(kSplitT));
  ASSERT_TRUE(split.ok()) << split.status();
  // 2 has no past, 3 no new item, 4 nothing after T.
  EXPECT_EQ(CaseUsers(*split), std::set<uint64_t>({1, 5}));
  const TestCase* c = CaseOf(*split, 1);
  ASSERT_NE(c, nullptr);
  // 23 at exactly T counts; 21 is not new; 22 once; in time order.
  EXPECT_EQ(c->targets, std::vector<uint64_t>({23, 22, 24}));
  EXPECT_EQ(Items(c->request), std::vector<uint64_t>({20, 21}));
  EXPECT_EQ(c->cut_ms, kSplitT);
  const TestCase* c5 = CaseOf(*split, 5);
  ASSERT_NE(c5, nullptr);
  EXPECT_EQ(c5->targets, std::vector<uint64_t>({25}));
}

TEST(SplitLogTest, TimeHorizonBoundsTheTargets) {
  auto split = SplitLog(TimeLog(), TimeAt(kSplitT, /*horizon_days=*/1.5));
  ASSERT_TRUE(split.ok()) << split.status();
  // 24 (T + 2 days) and user 5's 25 (T + 3 days) are past the horizon.
  EXPECT_EQ(CaseUsers(*split), std::set<uint64_t>({1}));
  EXPECT_EQ(CaseOf(*split, 1)->targets, std::vector<uint64_t>({23, 22}));
}

TEST(SplitLogTest, TimeFractionPlacesTFromTheEnd) {
  SplitOptions o;
  o.protocol = "time";
  o.time_test_fraction = 0.25;
  const std::vector<LoggedEvent> log = TimeLog();
  auto split = SplitLog(log, o);
  ASSERT_TRUE(split.ok()) << split.status();
  const int64_t first = log.front().timestamp_ms, last = log.back().timestamp_ms;
  const int64_t t = last - static_cast<int64_t>(0.25 * static_cast<double>(last - first));
  for (const TestCase& c : split->cases) EXPECT_EQ(c.cut_ms, t);
  for (const LoggedEvent& e : split->train_events) EXPECT_LT(e.timestamp_ms, t);
  ASSERT_FALSE(split->cases.empty());
}

// ---------------------------------------------------------------------------------------
// sampling and options

// 60 users with 6 events each: every one qualifies for leave_last_out.
std::vector<LoggedEvent> ManyUsersLog() {
  std::vector<LoggedEvent> events;
  for (uint64_t u = 1; u <= 60; ++u) {
    for (int k = 0; k < 6; ++k) events.push_back(Purchase(u, 100 + (u + k) % 17, kT0 + k * kDayMs + u));
  }
  return Sorted(events);
}

TEST(SplitLogTest, MaxUsersSampleIsDeterministicBySeed) {
  const std::vector<LoggedEvent> log = ManyUsersLog();
  SplitOptions o = LeaveLastOut();
  auto all = SplitLog(log, o);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->cases.size(), 60u);
  o.max_users = 10;
  o.seed = 7;
  auto a = SplitLog(log, o);
  auto b = SplitLog(log, o);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->cases.size(), 10u);
  EXPECT_EQ(CaseUsers(*a), CaseUsers(*b));
  EXPECT_EQ(Items(a->train_events), Items(b->train_events));
  // Cases stay in user order, and each is the full split's case for that user.
  for (size_t i = 0; i < a->cases.size(); ++i) {
    if (i > 0) {
      EXPECT_LT(a->cases[i - 1].user_id, a->cases[i].user_id);
    }
    const TestCase* full = CaseOf(*all, a->cases[i].user_id);
    ASSERT_NE(full, nullptr);
    EXPECT_EQ(a->cases[i].targets, full->targets);
    EXPECT_EQ(a->cases[i].cut_ms, full->cut_ms);
  }
  // Users outside the sample keep all their events for training.
  size_t removed = 0;
  for (const TestCase& c : a->cases) {
    for (const LoggedEvent& e : EventsOf(log, c.user_id)) removed += e.timestamp_ms >= c.cut_ms;
  }
  EXPECT_EQ(a->train_events.size(), log.size() - removed);
  // Another seed draws another sample.
  o.seed = 8;
  auto other = SplitLog(log, o);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->cases.size(), 10u);
  EXPECT_NE(CaseUsers(*other), CaseUsers(*a));
}

TEST(SplitLogTest, BadOptionsAreRefused) {
  const std::vector<LoggedEvent> log = TimeLog();
  auto refused = [&](SplitOptions o, const std::vector<LoggedEvent>& events) {
    auto s = SplitLog(events, o);
    return s.status().code() == absl::StatusCode::kInvalidArgument;
  };
  SplitOptions o;
  o.protocol = "random";
  EXPECT_TRUE(refused(o, log));
  EXPECT_TRUE(refused(LeaveLastOut(1), log));
  o = LeaveLastOut();
  o.max_users = -1;
  EXPECT_TRUE(refused(o, log));
  EXPECT_TRUE(refused(LeaveLastOut(), {}));
  // No user of TimeLog has 50 events.
  EXPECT_TRUE(refused(LeaveLastOut(50), log));
  o = TimeAt(0);
  for (double f : {0.0, 1.0, -0.5, 1.5}) {
    o.time_test_fraction = f;
    EXPECT_TRUE(refused(o, log)) << "fraction " << f;
  }
  // T must be inside (first, last].
  EXPECT_TRUE(refused(TimeAt(log.front().timestamp_ms), log));
  EXPECT_TRUE(refused(TimeAt(log.back().timestamp_ms + 1), log));
  // Valid options, but nobody qualifies: an error, not an empty split.
  EXPECT_TRUE(refused(TimeAt(kSplitT), {Purchase(1, 20, kT0), Purchase(2, 21, kSplitT)}));
}

// ---------------------------------------------------------------------------------------
// Evaluate

std::shared_ptr<const Model> TinyModel() {
  auto model = Model::Create(testing::TinyBundle(), 1);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

const MethodMetrics* Method(const EvalReport& report, const std::string& name) {
  for (const MethodMetrics& m : report.methods) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

// Item ids of the tiny bundle (1000 + i), so that recserve runs on known items too.
constexpr uint64_t kA = 1000, kB = 1001, kP = 1010, kQ = 1011, kX = 1020, kY = 1021, kZ = 1022;

// Five users bought A then B; twenty bought P then Q (more popular, never with A). User 1
// buys A twice, then B: its target, which co-visitation with A must rank first.
std::vector<LoggedEvent> CoBoughtLog() {
  std::vector<LoggedEvent> events;
  for (uint64_t u = 100; u < 105; ++u) {
    events.push_back(Purchase(u, kA, kT0 + u * 1000));
    events.push_back(Purchase(u, kB, kT0 + kDayMs + u * 1000));
  }
  for (uint64_t u = 200; u < 220; ++u) {
    events.push_back(Purchase(u, kP, kT0 + u * 1000));
    events.push_back(Purchase(u, kQ, kT0 + kDayMs + u * 1000));
  }
  events.push_back(Purchase(1, kA, kT0 + 2 * kDayMs));
  events.push_back(Purchase(1, kA, kT0 + 3 * kDayMs));
  events.push_back(Purchase(1, kB, kT0 + 4 * kDayMs));
  return Sorted(events);
}

TEST(EvaluateTest, CoVisitationRanksTheCoBoughtTargetFirst) {
  auto model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto split = SplitLog(CoBoughtLog(), LeaveLastOut(3));
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_EQ(split->cases.size(), 1u);
  ASSERT_EQ(split->cases[0].targets, std::vector<uint64_t>({kB}));
  auto report = Evaluate(*model, *split, EvalOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->methods.size(), 6u);
  EXPECT_EQ(report->methods[0].name, "recserve");
  EXPECT_EQ(report->cases, 1);
  const MethodMetrics* covisit = Method(*report, "co-visitation");
  ASSERT_NE(covisit, nullptr);
  EXPECT_EQ(covisit->hit10, 1.0);
  EXPECT_EQ(covisit->hit100, 1.0);
  EXPECT_DOUBLE_EQ(covisit->ndcg10, 1.0);
  EXPECT_DOUBLE_EQ(covisit->mrr, 1.0);
  // Popularity: P and Q (20 each) first, A (7) is consumed, then B (5) at rank 3.
  const MethodMetrics* popularity = Method(*report, "popularity");
  ASSERT_NE(popularity, nullptr);
  EXPECT_EQ(popularity->hit10, 1.0);
  EXPECT_NEAR(popularity->ndcg10, 1.0 / std::log2(4.0), 1e-6);
  EXPECT_NEAR(popularity->mrr, 1.0 / 3, 1e-6);
  // Without exclusion popularity would show A at rank 3: every baseline drops it.
  for (const MethodMetrics& m : report->methods) {
    if (m.name != "recserve") {
      EXPECT_EQ(m.consumed10, 0.0) << m.name;
    }
  }
}

TEST(EvaluateTest, MetricsAverageEachCaseAtItsRank) {
  // CoBoughtLog, plus user 2 buying X twice then Y, where X was bought with Z by three
  // users and with Y by two: co-visitation ranks Y second.
  std::vector<LoggedEvent> events = CoBoughtLog();
  for (uint64_t u = 300; u < 303; ++u) {
    events.push_back(Purchase(u, kX, kT0 + u * 1000));
    events.push_back(Purchase(u, kZ, kT0 + kDayMs + u * 1000));
  }
  for (uint64_t u = 400; u < 402; ++u) {
    events.push_back(Purchase(u, kX, kT0 + u * 1000));
    events.push_back(Purchase(u, kY, kT0 + kDayMs + u * 1000));
  }
  events.push_back(Purchase(2, kX, kT0 + 2 * kDayMs));
  events.push_back(Purchase(2, kX, kT0 + 3 * kDayMs));
  events.push_back(Purchase(2, kY, kT0 + 4 * kDayMs));
  auto split = SplitLog(Sorted(events), LeaveLastOut(3));
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_EQ(CaseUsers(*split), std::set<uint64_t>({1, 2}));
  auto model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto report = Evaluate(*model, *split, EvalOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const MethodMetrics* covisit = Method(*report, "co-visitation");
  ASSERT_NE(covisit, nullptr);
  EXPECT_EQ(covisit->cases, 2);
  EXPECT_EQ(covisit->hit10, 1.0);
  EXPECT_NEAR(covisit->ndcg10, (1.0 + 1.0 / std::log2(3.0)) / 2, 1e-6);
  EXPECT_NEAR(covisit->mrr, (1.0 + 0.5) / 2, 1e-6);
  // The per-case ranks behind them: case order, method order.
  const size_t methods = report->methods.size();
  ASSERT_EQ(report->first_hit.size(), split->cases.size() * methods);
  const size_t m = covisit - report->methods.data();
  for (size_t i = 0; i < split->cases.size(); ++i) {
    EXPECT_EQ(report->first_hit[i * methods + m], split->cases[i].user_id == 1 ? 1 : 2) << "user " << split->cases[i].user_id;
  }
}

// Recent popularity reads its list as deep as the request's items push it: user 1 bought
// the first 105 of the month's 240 items (by sales, then by first sale), so its target,
// the 111th, is 6th. Older items sold more overall: popularity alone never reaches it.
TEST(EvaluateTest, RecentPopularityReadsPastEveryItemOfTheRequest) {
  constexpr int64_t kCut = kT0 + 100 * kDayMs;
  auto recent = [](int k) { return uint64_t{5000} + k; };
  std::vector<LoggedEvent> events;
  // One basket each (so not tested): user 2, long before the 30 days, buys 100 items
  // twice; user 3, two days before the cut, buys the 240 recent items once, in order.
  for (int k = 0; k < 200; ++k) events.push_back(Purchase(2, 6000 + k / 2, kT0));
  for (int k = 0; k < 240; ++k) events.push_back(Purchase(3, recent(k), kCut - 2 * kDayMs));
  for (int k = 0; k < 105; ++k) events.push_back(Purchase(1, recent(k), kCut - 3 * kDayMs));
  events.push_back(Purchase(1, recent(110), kCut));
  auto split = SplitLog(Sorted(events), LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_EQ(CaseUsers(*split), std::set<uint64_t>({1}));
  ASSERT_EQ(split->cases[0].targets, std::vector<uint64_t>({recent(110)}));
  auto model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto report = Evaluate(*model, *split, EvalOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const MethodMetrics* recent_popularity = Method(*report, "recent popularity");
  ASSERT_NE(recent_popularity, nullptr);
  EXPECT_EQ(recent_popularity->hit10, 1.0);
  EXPECT_NEAR(recent_popularity->mrr, 1.0 / 6, 1e-6);
  EXPECT_EQ(Method(*report, "popularity")->hit100, 0.0);
}

TEST(EvaluateTest, RefusesAListShorterThanHitAt100) {
  auto model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto split = SplitLog(CoBoughtLog(), LeaveLastOut(3));
  ASSERT_TRUE(split.ok());
  EvalOptions o;
  o.n = 50;
  EXPECT_EQ(Evaluate(*model, *split, o).status().code(), absl::StatusCode::kInvalidArgument);
}

// 400 users buying from the tiny catalog with a popularity skew and repeats.
std::vector<LoggedEvent> RandomLog(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<LoggedEvent> events;
  for (uint64_t u = 1; u <= 400; ++u) {
    std::uniform_int_distribution<int> count(3, 25);
    const int n = count(rng);
    int64_t t = kT0 + static_cast<int64_t>(rng() % (30 * kDayMs));
    for (int k = 0; k < n; ++k) {
      // Skewed to the low ids (popular), with repeats of the user's earlier items.
      std::uniform_real_distribution<double> uni(0, 1);
      uint64_t item;
      if (k > 0 && uni(rng) < 0.3) {
        item = events[events.size() - 1 - rng() % k].item_id;
      } else {
        item = 1000 + static_cast<uint64_t>(64 * uni(rng) * uni(rng));
      }
      events.push_back(Purchase(u, item, t));
      if (uni(rng) < 0.5) t += static_cast<int64_t>(rng() % (3 * kDayMs)) + 1;  // else same basket
    }
  }
  return Sorted(events);
}

TEST(EvaluateTest, BaselinesNeverRecommendTheRequestsItems) {
  auto model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto split = SplitLog(RandomLog(3), LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_GT(split->cases.size(), 100u);
  auto report = Evaluate(*model, *split, EvalOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->methods.size(), 6u);
  for (const MethodMetrics& m : report->methods) {
    if (m.name != "recserve") {
      EXPECT_EQ(m.consumed10, 0.0) << m.name;
    }
    EXPECT_EQ(m.cases, static_cast<int64_t>(split->cases.size()));
    EXPECT_GE(m.hit100, m.hit50) << m.name;
    EXPECT_GE(m.hit50, m.hit10) << m.name;
    EXPECT_LE(m.ndcg10, m.hit10) << m.name;  // one target: NDCG@10 <= hit@10
  }
  // The popular skew makes popularity hit the target sometimes: the figures are not
  // trivially zero (otherwise consumed10 == 0 would say nothing).
  EXPECT_GT(Method(*report, "popularity")->hit10, 0.0);
}

TEST(EvaluateTest, ResultsDoNotDependOnTheThreadCount) {
  auto model = TinyModel();
  ASSERT_NE(model, nullptr);
  auto split = SplitLog(RandomLog(4), LeaveLastOut());
  ASSERT_TRUE(split.ok()) << split.status();
  ASSERT_GT(split->cases.size(), 100u);  // several chunks of the dynamic schedule
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = Evaluate(*model, *split, EvalOptions());
  omp_set_num_threads(2);
  auto two = Evaluate(*model, *split, EvalOptions());
  omp_set_num_threads(threads);
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_TRUE(two.ok()) << two.status();
  ASSERT_EQ(one->methods.size(), two->methods.size());
  for (size_t m = 0; m < one->methods.size(); ++m) {
    const MethodMetrics& a = one->methods[m];
    const MethodMetrics& b = two->methods[m];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.hit10, b.hit10) << a.name;
    EXPECT_EQ(a.hit50, b.hit50) << a.name;
    EXPECT_EQ(a.hit100, b.hit100) << a.name;
    EXPECT_EQ(a.ndcg10, b.ndcg10) << a.name;
    EXPECT_EQ(a.mrr, b.mrr) << a.name;
    EXPECT_EQ(a.coverage10, b.coverage10) << a.name;
    EXPECT_EQ(a.consumed10, b.consumed10) << a.name;
  }
  EXPECT_EQ(one->target_from_embedding, two->target_from_embedding);
  EXPECT_EQ(one->target_from_covisit, two->target_from_covisit);
  EXPECT_EQ(one->target_from_popularity, two->target_from_popularity);
  EXPECT_EQ(one->target_not_recalled, two->target_not_recalled);
  EXPECT_EQ(one->mean_candidates, two->mean_candidates);
}

}  // namespace
}  // namespace recserve
