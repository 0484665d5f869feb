#include "train/world.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

std::string FreshDir(const std::string& name) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/world_test_", name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

auto EventKey(const LoggedEvent& e) {
  return std::make_tuple(e.user_id, e.item_id, e.kind, e.timestamp_ms);
}
auto ImpressionKey(const Impression& i) {
  return std::make_tuple(i.impression_id, i.user_id, i.item_id, i.timestamp_ms, i.device, i.hour,
                         i.label, i.true_p);
}

void ExpectSameEvents(const std::vector<LoggedEvent>& a, const std::vector<LoggedEvent>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(EventKey(a[i]), EventKey(b[i])) << "event " << i;
}

void ExpectSameImpressions(const std::vector<Impression>& a, const std::vector<Impression>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(ImpressionKey(a[i]), ImpressionKey(b[i])) << "impression " << i;
  }
}

void ExpectSameWorld(const World& a, const World& b) {
  ASSERT_EQ(a.items.size(), b.items.size());
  for (size_t i = 0; i < a.items.size(); ++i) {
    EXPECT_EQ(a.items[i].item_id, b.items[i].item_id);
    EXPECT_EQ(a.items[i].category, b.items[i].category);
    EXPECT_EQ(a.items[i].dense, b.items[i].dense);
  }
  ExpectSameEvents(a.train_events, b.train_events);
  ExpectSameEvents(a.test_events, b.test_events);
  ExpectSameImpressions(a.train_impressions, b.train_impressions);
  ExpectSameImpressions(a.test_impressions, b.test_impressions);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.oracle_auc, b.oracle_auc);
}

// A small world that uses every event kind and awkward float values.
World SampleWorld() {
  World world;
  world.items = {{7, 0, {0.1f, -1e-7f, 3.4028235e38f}},
                 {9, 2, {1.0f / 3, 0.0f, -2.5f}},
                 {18446744073709551615ull, 1, {1e-30f, 12345.678f, -0.0f}}};
  world.train_events = {{1, 7, EventKind::kView, 1000},
                        {2, 9, EventKind::kClick, 1000},
                        {1, 9, EventKind::kClick, 2000},
                        {1, 9, EventKind::kCart, 2000},
                        {3, 18446744073709551615ull, EventKind::kPurchase, 3000}};
  world.test_events = {{1, 7, EventKind::kClick, 5000}, {4, 9, EventKind::kView, 6000}};
  world.train_impressions = {{11, 1, 7, 1500, 1, 13, 1.0f, 0.123456789f},
                             {11, 1, 9, 1500, 1, 13, 0.0f, 0.9f},
                             {12, 2, 9, 900, 0, 0, 0.0f, -1.0f}};
  world.test_impressions = {{13, 4, 18446744073709551615ull, 5500, 3, 23, 1.0f, 1.0f}};
  world.params = {{"seed", "42"}, {"note", "a value = with an equals sign"}};
  world.oracle_auc = 0.81234567890123;
  return world;
}

// A valid world directory whose `file` is then replaced by `contents`.
std::string WorldDirWith(const std::string& name, const std::string& file,
                         const std::string& contents) {
  const std::string dir = FreshDir(name);
  EXPECT_TRUE(WriteWorld(SampleWorld(), dir).ok());
  WriteText(absl::StrCat(dir, "/", file), contents);
  return dir;
}

TEST(WorldTest, WriteThenReadRoundTripsEveryField) {
  const std::string dir = FreshDir("round_trip");
  World world = SampleWorld();
  ASSERT_TRUE(WriteWorld(world, dir).ok());
  const absl::StatusOr<World> read = ReadWorld(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  // The writer records oracle_auc among the params.
  world.params["oracle_auc"] = "0.81234567890123";
  ExpectSameWorld(*read, world);
}

TEST(WorldTest, WriteReplacesFilesAndLeavesNoTemporaries) {
  const std::string dir = FreshDir("rewrite");
  World world = SampleWorld();
  ASSERT_TRUE(WriteWorld(world, dir).ok());
  world.test_events.clear();
  ASSERT_TRUE(WriteWorld(world, dir).ok());
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ::testing::UnorderedElementsAre(
                         "items.tsv", "events_train.tsv", "events_test.tsv",
                         "impressions_train.tsv", "impressions_test.tsv", "world.txt"));
  const absl::StatusOr<World> read = ReadWorld(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->test_events.empty());
}

TEST(WorldTest, ReadSortsEventsByTimestampThenUser) {
  const std::string dir = WorldDirWith("sorts", "events_train.tsv",
                                       "3\t7\tview\t200\n"
                                       "2\t7\tclick\t100\n"
                                       "1\t9\tcart\t200\n"
                                       "1\t9\tclick\t100\n");
  const absl::StatusOr<World> world = ReadWorld(dir);
  ASSERT_TRUE(world.ok()) << world.status();
  std::vector<std::pair<int64_t, uint64_t>> order;
  for (const LoggedEvent& e : world->train_events) order.emplace_back(e.timestamp_ms, e.user_id);
  EXPECT_THAT(order, ::testing::ElementsAre(std::pair<int64_t, uint64_t>{100, 1},
                                            std::pair<int64_t, uint64_t>{100, 2},
                                            std::pair<int64_t, uint64_t>{200, 1},
                                            std::pair<int64_t, uint64_t>{200, 3}));
}

TEST(WorldTest, ReadSkipsCommentsBlankLinesAndCarriageReturns) {
  const std::string dir = WorldDirWith("crlf", "events_train.tsv",
                                       "# user_id\titem_id\ttype\ttimestamp_ms\r\n"
                                       "\r\n"
                                       "1\t7\tview\t100\r\n"
                                       "\n"
                                       "2\t9\tpurchase\t200");  // no final newline
  const absl::StatusOr<World> world = ReadWorld(dir);
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_EQ(world->train_events.size(), 2u);
  EXPECT_EQ(world->train_events[1].kind, EventKind::kPurchase);
  EXPECT_EQ(world->train_events[1].timestamp_ms, 200);
}

TEST(WorldTest, ReadsLinesLongerThanOneBlock) {
  // Items with 1M dense values (5 MB lines) cross the reader's 8 MB blocks and make it
  // grow its buffer.
  const std::string dir = FreshDir("long_lines");
  World world = SampleWorld();
  for (ItemInfo& item : world.items) item.dense.assign(1000000, 0.25f);
  world.items[1].dense.back() = -7.5f;
  ASSERT_TRUE(WriteWorld(world, dir).ok());
  const absl::StatusOr<World> read = ReadWorld(dir);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->items.size(), 3u);
  EXPECT_EQ(read->items[1].dense, world.items[1].dense);
}

// One malformed line, and the "<file>:<line>: <message>" the reader must answer with.
struct MalformedCase {
  std::string name;
  std::string file;
  std::string contents;
  std::string expected_error;
};

class MalformedLineTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedLineTest, IsRefusedNamingFileLineAndField) {
  const MalformedCase& c = GetParam();
  const std::string dir = WorldDirWith(c.name, c.file, c.contents);
  const absl::StatusOr<World> world = ReadWorld(dir);
  ASSERT_FALSE(world.ok());
  EXPECT_EQ(world.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(world.status().message()),
              HasSubstr(absl::StrCat(dir, "/", c.expected_error)));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MalformedLineTest,
    ::testing::Values(
        MalformedCase{"too_few_fields", "events_train.tsv",
                      "# header\n1\t7\tview\t100\n1\t7\tview\n",
                      "events_train.tsv:3: expected 4 fields (user_id, item_id, type, "
                      "timestamp_ms), got 3 fields"},
        MalformedCase{"too_many_fields", "events_train.tsv", "1\t7\tview\t100\t5\n",
                      "events_train.tsv:1: expected 4 fields"},
        MalformedCase{"bad_user", "events_train.tsv", "1x\t7\tview\t100\n",
                      "events_train.tsv:1: field 'user_id': bad unsigned integer '1x'"},
        MalformedCase{"negative_id", "events_train.tsv", "-1\t7\tview\t100\n",
                      "events_train.tsv:1: field 'user_id': bad unsigned integer '-1'"},
        MalformedCase{"id_overflow", "events_train.tsv", "18446744073709551616\t7\tview\t100\n",
                      "events_train.tsv:1: field 'user_id': bad unsigned integer"},
        MalformedCase{"bad_timestamp", "events_train.tsv", "1\t7\tview\t1.5\n",
                      "events_train.tsv:1: field 'timestamp_ms': bad integer '1.5'"},
        MalformedCase{"negative_timestamp", "events_train.tsv", "1\t7\tview\t-5\n",
                      "events_train.tsv:1: field 'timestamp_ms': negative timestamp -5"},
        MalformedCase{"unknown_type", "events_train.tsv", "1\t7\tview\t100\n\n2\t9\tbuy\t100\n",
                      "events_train.tsv:3: field 'type': unknown event type 'buy'"},
        MalformedCase{"unknown_item", "events_train.tsv", "1\t8\tview\t100\n",
                      "events_train.tsv:1: field 'item_id': unknown item 8"},
        MalformedCase{"test_not_later", "events_test.tsv", "1\t7\tclick\t3000\n",
                      "events_test.tsv:1: field 'timestamp_ms': 3000 is not later than the "
                      "last train row (3000)"},
        MalformedCase{"bad_label", "impressions_train.tsv", "11\t1\t7\t1500\t1\t13\t2\t0.5\n",
                      "impressions_train.tsv:1: field 'label': bad label '2' (want 0 or 1)"},
        MalformedCase{"fractional_label", "impressions_train.tsv",
                      "11\t1\t7\t1500\t1\t13\t0.5\t0.5\n",
                      "impressions_train.tsv:1: field 'label': bad label '0.5'"},
        MalformedCase{"bad_true_p", "impressions_train.tsv", "11\t1\t7\t1500\t1\t13\t1\t1.5\n",
                      "impressions_train.tsv:1: field 'true_p': bad probability '1.5'"},
        MalformedCase{"nan_true_p", "impressions_train.tsv", "11\t1\t7\t1500\t1\t13\t1\tnan\n",
                      "impressions_train.tsv:1: field 'true_p': bad probability 'nan'"},
        MalformedCase{"bad_device", "impressions_train.tsv", "11\t1\t7\t1500\t4\t13\t1\t0.5\n",
                      "impressions_train.tsv:1: field 'device': 4 is outside [0, 3]"},
        MalformedCase{"bad_hour", "impressions_train.tsv", "11\t1\t7\t1500\t1\t24\t1\t0.5\n",
                      "impressions_train.tsv:1: field 'hour': 24 is outside [0, 23]"},
        MalformedCase{"impression_fields", "impressions_test.tsv", "13\t4\t7\t5500\t3\t23\t1\n",
                      "impressions_test.tsv:1: expected 8 fields"},
        MalformedCase{"dense_value", "items.tsv", "7\t0\t0.5,abc,1\n",
                      "items.tsv:1: field 'dense': bad number 'abc' at value 2"},
        MalformedCase{"dense_width", "items.tsv", "7\t0\t0.5,1\n9\t0\t0.5\n",
                      "items.tsv:2: field 'dense': 1 values, but line 1 has 2"},
        MalformedCase{"duplicate_item", "items.tsv", "7\t0\t1\n9\t0\t1\n7\t1\t1\n",
                      "items.tsv:3: field 'item_id': duplicate item 7 (also on line 1)"},
        MalformedCase{"negative_category", "items.tsv", "7\t-1\t1\n",
                      "items.tsv:1: field 'category': -1 is outside"},
        MalformedCase{"params_line", "world.txt", "seed=1\nno equals sign\n",
                      "world.txt:2: expected key=value, got 'no equals sign'"},
        MalformedCase{"params_duplicate", "world.txt", "seed=1\nseed=2\n",
                      "world.txt:2: duplicate key 'seed' (also on line 1)"},
        MalformedCase{"params_auc", "world.txt", "oracle_auc=high\n",
                      "world.txt:1: field 'oracle_auc': bad AUC 'high'"}),
    [](const ::testing::TestParamInfo<MalformedCase>& info) { return info.param.name; });

TEST(WorldTest, MissingFileIsNotFoundNamingThePath) {
  const std::string dir = FreshDir("missing");
  ASSERT_TRUE(WriteWorld(SampleWorld(), dir).ok());
  std::filesystem::remove(dir + "/impressions_test.tsv");
  const absl::StatusOr<World> world = ReadWorld(dir);
  ASSERT_FALSE(world.ok());
  EXPECT_EQ(world.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(world.status().message()), HasSubstr("impressions_test.tsv"));
}

TEST(WorldTest, WriteRefusesParamThatIsNotOneLine) {
  World world = SampleWorld();
  world.params["multi"] = "two\nlines";
  const absl::Status status = WriteWorld(world, FreshDir("bad_param"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("'multi'"));
}

TEST(RatingsCsvTest, ReadsFileWithHeaderAndMapsRatingsAtThresholdToClicks) {
  const std::string path = FreshDir("csv_header") + "/ratings.csv";
  WriteText(path,
            "userId,movieId,rating,timestamp\n"
            "1,10,4.0,100\n"
            "1,20,3.5,101\n"
            "2,10,5,102\n");
  const absl::StatusOr<World> world = ReadRatingsCsv(path, /*click_threshold=*/4.0,
                                                     /*test_fraction=*/0.0);
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_EQ(world->train_events.size(), 3u);
  EXPECT_TRUE(world->test_events.empty());
  EXPECT_EQ(world->train_events[0].kind, EventKind::kClick);
  EXPECT_EQ(world->train_events[0].timestamp_ms, 100000);  // seconds -> ms
  EXPECT_EQ(world->train_events[1].kind, EventKind::kView);
  EXPECT_EQ(world->train_events[2].kind, EventKind::kClick);
  ASSERT_EQ(world->items.size(), 2u);
  EXPECT_EQ(world->items[0].item_id, 10u);
  EXPECT_EQ(world->items[1].item_id, 20u);
  EXPECT_EQ(world->items[1].category, 0);
  EXPECT_TRUE(world->items[1].dense.empty());
  EXPECT_TRUE(world->train_impressions.empty());
}

TEST(RatingsCsvTest, ReadsFileWithoutHeaderAndSortsByTime) {
  const std::string path = FreshDir("csv_plain") + "/ratings.csv";
  WriteText(path, "3,30,1,300\r\n1,10,5,100\r\n2,20,2,200\r\n");
  const absl::StatusOr<World> world = ReadRatingsCsv(path, 3.0, 0.0);
  ASSERT_TRUE(world.ok()) << world.status();
  ASSERT_EQ(world->train_events.size(), 3u);
  EXPECT_EQ(world->train_events[0].user_id, 1u);
  EXPECT_EQ(world->train_events[1].user_id, 2u);
  EXPECT_EQ(world->train_events[2].user_id, 3u);
  EXPECT_EQ(world->train_events[2].kind, EventKind::kView);
}

TEST(RatingsCsvTest, LastFractionOfTimeIsTestAndStrictlyLater) {
  const std::string path = FreshDir("csv_split") + "/ratings.csv";
  std::string text;
  for (int t = 1; t <= 10; ++t) absl::StrAppend(&text, t, ",", t, ",5,", t * 10, "\n");
  absl::StrAppend(&text, "11,11,5,80\n");  // ties with the first test event: goes to test
  WriteText(path, text);
  const absl::StatusOr<World> world = ReadRatingsCsv(path, 4.0, 0.3);
  ASSERT_TRUE(world.ok()) << world.status();
  // 11 events, round(3.3) = 3 for test; the cut at t=80 s also takes the tied event.
  ASSERT_EQ(world->test_events.size(), 4u);
  ASSERT_EQ(world->train_events.size(), 7u);
  EXPECT_EQ(world->train_events.back().timestamp_ms, 70000);
  EXPECT_EQ(world->test_events.front().timestamp_ms, 80000);
  // What it read is a valid world directory.
  const std::string dir = FreshDir("csv_split_world");
  ASSERT_TRUE(WriteWorld(*world, dir).ok());
  const absl::StatusOr<World> again = ReadWorld(dir);
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectSameWorld(*again, *world);
}

TEST(RatingsCsvTest, BadFieldIsRefusedNamingLineAndField) {
  const std::string path = FreshDir("csv_bad") + "/ratings.csv";
  WriteText(path, "user,item,rating,timestamp\n1,10,4,100\n1,10,good,101\n");
  const absl::StatusOr<World> world = ReadRatingsCsv(path, 4.0, 0.1);
  ASSERT_FALSE(world.ok());
  EXPECT_EQ(world.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(world.status().message()),
              HasSubstr("ratings.csv:3: field 'rating': bad number 'good'"));

  WriteText(path, "1,10,4\n");
  EXPECT_THAT(std::string(ReadRatingsCsv(path, 4.0, 0.1).status().message()),
              HasSubstr("ratings.csv:1: expected 4 fields (user, item, rating, timestamp), got 3"));
}

TEST(RatingsCsvTest, RefusesTestFractionOutsideUnitInterval) {
  const std::string path = FreshDir("csv_fraction") + "/ratings.csv";
  WriteText(path, "1,10,4,100\n");
  EXPECT_EQ(ReadRatingsCsv(path, 4.0, 1.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadRatingsCsv(path, 4.0, -0.1).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace recserve
