// Labels of served impressions from a hand-made log: clicked within the window, not
// clicked, clicked after the window, clicked by another user, a view is not a click,
// an item shown twice (last touch), clicks seen only in a later record's events, open
// windows and digest-only records left out; a real log's string users and item keys, and
// the records of users it does not know left out.
#include "train/impression_labels.h"

#include <fstream>
#include <map>
#include <tuple>

#include "engine/file_util.h"
#include "engine/impression_file.h"
#include "engine/item_key.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "train/event_log.h"

namespace recserve {
namespace {

constexpr int64_t kT = 1'800'000'000'000;  // the first answers' time
constexpr int64_t kSecond = 1000;

v1::Impression Record(const std::string& user, int64_t time_ms, const std::vector<uint64_t>& items) {
  v1::Impression r;
  r.set_user(user);
  r.set_time_unix_ms(time_ms);
  r.mutable_context()->set_device(v1::MOBILE);
  r.mutable_context()->set_hour(7);
  r.mutable_response()->set_model_version(3);
  for (uint64_t item : items) r.mutable_response()->add_items()->set_item_id(item);
  return r;
}

void AddEvent(v1::Impression* r, uint64_t item, v1::EventType type, int64_t time_ms) {
  v1::Event* e = r->add_events();
  e->set_item_id(item);
  e->set_type(type);
  e->set_timestamp_ms(time_ms);
}

// (user, time, item) -> label, and the position each came with.
using Key = std::tuple<std::string, int64_t, uint64_t>;

TEST(ImpressionLabelsTest, HandMadeLogGetsTheRightLabels) {
  std::vector<v1::Impression> records;
  // User 1 at kT: 100 clicked in the window, 200 never, 300 clicked after the window,
  // 400 clicked by user 2 only, 500 only viewed, 600 shown again at kT + 20 s and
  // clicked after that second showing.
  records.push_back(Record("1", kT, {100, 200, 300, 400, 500, 600}));
  AddEvent(&records.back(), 42, v1::PURCHASE, kT - 5 * kSecond);  // history, not a label
  records.push_back(Record("1", kT + 20 * kSecond, {600, 700}));
  // A hashed user: the event log cannot name them, a later record's events do.
  records.push_back(Record("h:00ab", kT, {800, 900}));
  records.push_back(Record("h:00ab", kT + 100 * kSecond, {950}));
  AddEvent(&records.back(), 800, v1::CART, kT + 2 * kSecond);
  // Windows not over by the end of the log: open.
  records.push_back(Record("1", kT + 140 * kSecond, {1000}));
  // Only the events' digest was kept: the features cannot be rebuilt.
  records.push_back(Record("2", kT, {100}));
  records.back().set_events_count(3);

  const std::vector<LoggedEvent> log = {
      {1, 100, EventKind::kClick, kT + 5 * kSecond},
      {1, 300, EventKind::kClick, kT + 90 * kSecond},
      {2, 400, EventKind::kClick, kT + 1 * kSecond},
      {1, 500, EventKind::kView, kT + 1 * kSecond},
      {1, 600, EventKind::kClick, kT + 30 * kSecond},
      {1, 700, EventKind::kPurchase, kT + 50 * kSecond},
      {1, 1000, EventKind::kClick, kT + 145 * kSecond},  // clicked, but its window is still open
  };
  LabelOptions options;
  options.window = absl::Seconds(60);
  options.event_log_end_ms = kT + 150 * kSecond;
  LabelStats stats;
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions(records, log, options, &stats);
  ASSERT_TRUE(slates.ok()) << slates.status();

  std::map<Key, float> label;
  std::map<Key, int> position;
  int64_t previous = 0;
  for (const ServedSlate& s : *slates) {
    EXPECT_GE(s.time_ms, previous) << "slates come back by time";
    previous = s.time_ms;
    EXPECT_EQ(s.context.device, 1);
    EXPECT_EQ(s.context.hour, 7);
    EXPECT_EQ(s.model_version, 3);
    for (const ServedItem& item : s.items) {
      label[{s.user, s.time_ms, item.item_id}] = item.label;
      position[{s.user, s.time_ms, item.item_id}] = item.position;
    }
  }
  const std::map<Key, float> want = {
      {{"1", kT, 100}, 1.f},                    // clicked 5 s after
      {{"1", kT, 200}, 0.f},                    // never
      {{"1", kT, 300}, 0.f},                    // clicked 90 s after: past the window
      {{"1", kT, 400}, 0.f},                    // clicked by user 2
      {{"1", kT, 500}, 0.f},                    // a view is not a click
      {{"1", kT, 600}, 0.f},                    // the click came after the second showing ...
      {{"1", kT + 20 * kSecond, 600}, 1.f},     // ... which gets it
      {{"1", kT + 20 * kSecond, 700}, 1.f},     // a purchase counts
      {{"h:00ab", kT, 800}, 1.f},               // from the later record's events
      {{"h:00ab", kT, 900}, 0.f},               // the later record shows its window is over
  };
  EXPECT_EQ(label, want);
  EXPECT_EQ((position[{"1", kT, 600}]), 5);
  EXPECT_EQ((position[{"1", kT + 20 * kSecond, 600}]), 0);

  EXPECT_EQ(stats.records, 5);
  EXPECT_EQ(stats.digest_only, 1);
  EXPECT_EQ(stats.clicked, 4);
  EXPECT_EQ(stats.not_clicked, 6);
  EXPECT_EQ(stats.open, 2);  // the hashed user's 950 (no later evidence) and user 1's 1000
  EXPECT_EQ(stats.shown, 12);

  // The record's own events (as the request carried them) come along for the features.
  for (const ServedSlate& s : *slates) {
    if (s.user == "1" && s.time_ms == kT) {
      ASSERT_EQ(s.events.size(), 1u);
      EXPECT_EQ(s.events[0].item_id, 42u);
      EXPECT_EQ(s.events[0].type, EventType::kPurchase);
    }
  }
}

// A real log names users and items by strings (online-retail: customer 17850, stock
// code 85123A); the server answers with the catalog's ids (ItemIdFromKey of the key) and
// a request may name its events' items by key only.
TEST(ImpressionLabelsTest, RealLogAndHandMadeImpressionFileGetTheRightLabels) {
  constexpr int64_t kAt = 1'300'000'000'000;  // the answers' time, in the log's range
  constexpr int64_t kMinute = 60 * kSecond;
  const std::string dir = testing::TempDir("impression_labels_real_log");
  {
    std::ofstream csv(dir + "/events.csv");
    csv << "user_id,item_id,event_type,timestamp\n";
    auto row = [&csv](const std::string& user, const std::string& item, const std::string& type, int64_t ms) {
      csv << user << "," << item << "," << type << "," << ms / 1000 << "\n";
    };
    row("17850", "85123A", "purchase", kAt - 60 * kMinute);  // history
    row("17850", "71053", "purchase", kAt + 10 * kMinute);   // in the window
    row("17850", "84406B", "purchase", kAt + 120 * kMinute); // past it
    row("13047", "85123A", "purchase", kAt + 1 * kMinute);   // another user's
    row("alice", "22752", "purchase", kAt + 5 * kMinute);    // a user named by a string
    row("13047", "22752", "purchase", kAt + 180 * kMinute);  // the log's end
  }
  absl::StatusOr<EventLog> log = ReadEventLog(dir + "/events.csv", EventLogOptions());
  ASSERT_TRUE(log.ok()) << log.status();

  auto id = [](const std::string& key) { return ItemIdFromKey(key); };
  std::vector<v1::Impression> written;
  written.push_back(Record("17850", kAt, {id("85123A"), id("71053"), id("84406B"), id("22752"), id("21730")}));
  v1::Event* history = written.back().add_events();
  history->set_item("85123A");  // by key only, as a request may send it
  history->set_type(v1::PURCHASE);
  history->set_timestamp_ms(kAt - 60 * kMinute);
  written.push_back(Record("alice", kAt, {id("22752"), id("71053")}));
  written.push_back(Record("h:00ff", kAt, {id("22752")}));  // hashed: the log cannot vouch for them
  written.push_back(Record("99999", kAt, {id("22752")}));   // not in the log
  // A later answer whose request carried a cart event the log does not hold.
  written.push_back(Record("17850", kAt + 30 * kMinute, {id("22752")}));
  v1::Event* cart = written.back().add_events();
  cart->set_item("21730");
  cart->set_type(v1::CART);
  cart->set_timestamp_ms(kAt + 20 * kMinute);
  std::string bytes;
  for (const v1::Impression& r : written) AppendImpression(r, &bytes);
  ASSERT_TRUE(WriteFileAtomically(dir + "/" + ImpressionFileName(kAt, 0, /*active=*/false), bytes).ok());

  absl::StatusOr<std::vector<v1::Impression>> records = ReadImpressionLog(dir);
  ASSERT_TRUE(records.ok()) << records.status();
  LabelOptions options;
  options.window = absl::Hours(1);
  options.known_users_only = true;
  LabelStats stats;
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions(*records, log->events, options, &stats);
  ASSERT_TRUE(slates.ok()) << slates.status();
  std::map<Key, float> label;
  for (const ServedSlate& s : *slates) {
    for (const ServedItem& item : s.items) label[{s.user, s.time_ms, item.item_id}] = item.label;
  }
  const std::map<Key, float> want = {
      {{"17850", kAt, id("85123A")}, 0.f},  // bought by 13047, not by 17850
      {{"17850", kAt, id("71053")}, 1.f},   // bought 10 minutes after
      {{"17850", kAt, id("84406B")}, 0.f},  // two hours after: past the window
      {{"17850", kAt, id("22752")}, 0.f},   // bought by alice
      {{"17850", kAt, id("21730")}, 1.f},   // carted, as the later request's event (by key) tells
      {{"alice", kAt, id("22752")}, 1.f},   // alice joins the log's user ItemIdFromKey("alice")
      {{"alice", kAt, id("71053")}, 0.f},
      {{"17850", kAt + 30 * kMinute, id("22752")}, 0.f},
  };
  EXPECT_EQ(label, want);
  EXPECT_EQ(stats.unknown_users, 2);  // h:00ff and 99999: left out, not errors
  EXPECT_EQ(stats.records, 3);
  EXPECT_EQ(stats.open, 0);
  for (const ServedSlate& s : *slates) {
    if (s.user == "17850" && s.time_ms == kAt) {
      ASSERT_EQ(s.events.size(), 1u);
      EXPECT_EQ(s.events[0].item_id, id("85123A"));  // the features see the key's item
    }
  }
}

TEST(ImpressionLabelsTest, WithoutALogOnlyLaterRecordsCloseAWindow) {
  std::vector<v1::Impression> records = {Record("7", kT, {1, 2}), Record("7", kT + 61 * kSecond, {3})};
  AddEvent(&records.back(), 2, v1::CLICK, kT + 3 * kSecond);
  LabelOptions options;
  options.window = absl::Seconds(60);
  LabelStats stats;
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions(records, {}, options, &stats);
  ASSERT_TRUE(slates.ok()) << slates.status();
  ASSERT_EQ(slates->size(), 1u);
  ASSERT_EQ((*slates)[0].items.size(), 2u);
  EXPECT_EQ((*slates)[0].items[0].label, 0.f);
  EXPECT_EQ((*slates)[0].items[1].label, 1.f);
  EXPECT_EQ(stats.open, 1);  // item 3: nothing after it
}

TEST(ImpressionLabelsTest, AClickAfterTwoAnswersOfOneMillisecondIsTheLatersOnly) {
  const std::vector<v1::Impression> records = {Record("4", kT, {1, 2}), Record("4", kT, {2, 3})};
  const std::vector<LoggedEvent> log = {{4, 2, EventKind::kClick, kT + 3}};
  LabelOptions options;
  options.window = absl::Seconds(1);
  options.event_log_end_ms = kT + 5000;
  LabelStats stats;
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions(records, log, options, &stats);
  ASSERT_TRUE(slates.ok()) << slates.status();
  ASSERT_EQ(slates->size(), 2u);
  EXPECT_EQ((*slates)[0].items[1].label, 0.f);  // the first answer's 2
  EXPECT_EQ((*slates)[1].items[0].label, 1.f);  // the second answer's 2
  EXPECT_EQ(stats.clicked, 1);
}

TEST(ImpressionLabelsTest, AFileListedUnderBothNamesWhileRenamedIsReadOnce) {
  const std::string dir = testing::TempDir("impression_labels_rename");
  std::string bytes;
  AppendImpression(Record("1", kT, {5}), &bytes);
  ASSERT_TRUE(WriteFileAtomically(dir + "/" + ImpressionFileName(kT, 0, /*active=*/false), bytes).ok());
  ASSERT_TRUE(WriteFileAtomically(dir + "/" + ImpressionFileName(kT, 0, /*active=*/true), bytes).ok());
  AppendImpression(Record("2", kT, {6}), &bytes);
  ASSERT_TRUE(WriteFileAtomically(dir + "/" + ImpressionFileName(kT, 1, /*active=*/true), bytes).ok());
  absl::StatusOr<std::vector<v1::Impression>> records = ReadImpressionLog(dir);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(records->size(), 3u);  // file 0 once, file 1 (still written) with its two records
  EXPECT_EQ(ReadImpressionLog(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
}

TEST(ImpressionLabelsTest, AWindowThatIsNotPositiveIsRefused) {
  LabelOptions options;
  options.window = absl::ZeroDuration();
  absl::StatusOr<std::vector<ServedSlate>> slates = LabelImpressions({}, {}, options, nullptr);
  EXPECT_EQ(slates.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(slates.status().message()), ::testing::HasSubstr("window"));
}

}  // namespace
}  // namespace recserve
