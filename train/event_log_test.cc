// Tests of ReadEventLog: the formats, the import rules and the hostile-input table of
// docs/data-formats.md, and the two real logs under shared/data when they are present.
#include "train/event_log.h"

#include <stdlib.h>
#include <zlib.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/item_key.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Two item keys whose FNV-1a 64 hashes agree in the low 63 bits, so ItemIdFromKey gives
// both the same id (found with a Pollard-rho search over 13-letter keys).
constexpr char kCollidingKeyA[] = "JZESWCcDHPUGD";
constexpr char kCollidingKeyB[] = "FSQcBJAacHAIE";

class EventLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string pattern = absl::StrCat(base != nullptr ? base : "/tmp", "/event_log_test_XXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << pattern;
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code error;
    std::filesystem::remove_all(dir_, error);
  }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir_, "/", name);
    std::ofstream out(path, std::ios::binary);
    out << text;
    EXPECT_TRUE(out.good()) << path;
    return path;
  }

  std::string WriteGzip(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir_, "/", name);
    gzFile file = gzopen(path.c_str(), "wb6");
    EXPECT_NE(file, nullptr) << path;
    if (file == nullptr) return path;
    EXPECT_EQ(gzwrite(file, text.data(), static_cast<unsigned>(text.size())),
              static_cast<int>(text.size()));
    EXPECT_EQ(gzclose(file), Z_OK);
    return path;
  }

  std::string dir_;
};

EventLogOptions Options(const std::string& format = "auto", bool skip_bad_rows = false) {
  EventLogOptions options;
  options.format = format;
  options.skip_bad_rows = skip_bad_rows;
  return options;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

auto Key(const LoggedEvent& e) {
  return std::make_tuple(e.user_id, e.item_id, e.kind, e.timestamp_ms);
}
MATCHER_P4(IsEvent, user, item, kind, timestamp_ms, "") {
  return Key(arg) == std::make_tuple(static_cast<uint64_t>(user), static_cast<uint64_t>(item), kind,
                                     static_cast<int64_t>(timestamp_ms));
}

TEST_F(EventLogTest, EventsFormatFindsNamedColumnsInAnyOrderAndIgnoresExtras) {
  const std::string path = Write("events.csv",
                                 "Quantity,TS,Behavior_Type,SKU,Customer_ID\n"
                                 "3,1511658000,pv,10,7\n"
                                 "1,1511658001,CLICK,11,7\n"
                                 "2,1511658002,addtocart,12,8\n"
                                 "5,1511658003,Fav,12,8\n"
                                 "6,1511658004,transaction,13,9\n"
                                 "7,1511658005,buy,10,9\n");
  for (const std::string format : {"auto", "events"}) {
    absl::StatusOr<EventLog> log = ReadEventLog(path, Options(format));
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_THAT(log->events, ElementsAre(IsEvent(7, 10, EventKind::kView, 1511658000000),
                                         IsEvent(7, 11, EventKind::kClick, 1511658001000),
                                         IsEvent(8, 12, EventKind::kCart, 1511658002000),
                                         IsEvent(8, 12, EventKind::kCart, 1511658003000),
                                         IsEvent(9, 13, EventKind::kPurchase, 1511658004000),
                                         IsEvent(9, 10, EventKind::kPurchase, 1511658005000)));
    EXPECT_EQ(log->stats.format, "events");
    EXPECT_EQ(log->stats.timestamp_unit, "s");
    EXPECT_EQ(log->stats.rows, 6);
    EXPECT_EQ(log->stats.events, 6);
    EXPECT_EQ(log->stats.users, 3);
    EXPECT_EQ(log->stats.items, 4);
    EXPECT_EQ(log->item_keys.at(12), "12");
  }
}

TEST_F(EventLogTest, RatingsAtOrAboveThresholdBecomeClicksAndLowerOnesViews) {
  const std::string body =
      "1,31,2.5,1260759144\n"
      "1,1029,4.0,1260759179\n"
      "2,10,4.5,835355493\n";
  const std::string with_header = Write("ratings.csv", "userId,movieId,rating,timestamp\n" + body);
  const std::string without_header = Write("ratings_no_header.csv", body);
  for (const std::string& path : {with_header, without_header}) {
    for (const std::string format : {"auto", "ratings"}) {
      absl::StatusOr<EventLog> log = ReadEventLog(path, Options(format));
      ASSERT_TRUE(log.ok()) << path << " " << format << ": " << log.status();
      EXPECT_EQ(log->stats.format, "ratings");
      EXPECT_EQ(log->stats.rows, 3);
      EXPECT_THAT(log->events, ElementsAre(IsEvent(2, 10, EventKind::kClick, 835355493000),
                                           IsEvent(1, 31, EventKind::kView, 1260759144000),
                                           IsEvent(1, 1029, EventKind::kClick, 1260759179000)));
    }
  }
  EventLogOptions strict = Options("ratings");
  strict.ratings_click_threshold = 4.5;
  absl::StatusOr<EventLog> log = ReadEventLog(without_header, strict);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->events[2].kind, EventKind::kView);   // 4.0 < 4.5
  EXPECT_EQ(log->events[0].kind, EventKind::kClick);  // 4.5 >= 4.5
}

TEST_F(EventLogTest, BomCrlfBlankLinesAndSpacesAroundFieldsAreAccepted) {
  const std::string path = Write("bom.csv",
                                 "\xEF\xBB\xBFuser_id , item_id,event_type,timestamp\r\n"
                                 "\r\n"
                                 "  u1 ,  85123A ,  view  , 1511658000 \r\n"
                                 "   \r\n"
                                 "u1,71053,purchase,1511658001\r\n"
                                 "\r\n");
  absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_THAT(
      log->events,
      ElementsAre(
          IsEvent(ItemIdFromKey("u1"), ItemIdFromKey("85123A"), EventKind::kView, 1511658000000),
          IsEvent(ItemIdFromKey("u1"), 71053, EventKind::kPurchase, 1511658001000)));
  EXPECT_EQ(log->item_keys.at(ItemIdFromKey("85123A")), "85123A");
  EXPECT_EQ(log->stats.rows, 2);
}

TEST_F(EventLogTest, DoubleQuotedFieldsAreUnquotedOnOneLine) {
  const std::string path = Write("quoted.csv",
                                 "\"user_id\",\"item_id\",\"event_type\",\"timestamp\",note\n"
                                 "\"7\",\"A, \"\"B\"\"\",\"view\",\"1511658000\",\"x,y\"\n"
                                 "7, \"plain\" ,click,1511658001,a\"b\n");
  absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(log->events.size(), 2u);
  EXPECT_EQ(log->item_keys.at(log->events[0].item_id), "A, \"B\"");
  EXPECT_EQ(log->item_keys.at(log->events[1].item_id), "plain");
}

TEST_F(EventLogTest, UnsortedRowsAreSortedByTimeThenUserKeepingBasketOrder) {
  // Two baskets at one timestamp (users 2 and 1, interleaved with a later row), written
  // after a later event: each basket keeps its file order, users ordered by id.
  const std::string path = Write("unsorted.csv",
                                 "user_id,item_id,event_type,timestamp\n"
                                 "1,900,purchase,1511658100\n"
                                 "2,30,purchase,1511658000\n"
                                 "2,10,purchase,1511658000\n"
                                 "1,50,purchase,1511658000\n"
                                 "2,20,purchase,1511658000\n"
                                 "1,40,purchase,1511658000\n"
                                 "3,60,view,1511657000\n");
  absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<std::pair<uint64_t, uint64_t>> order;
  for (const LoggedEvent& e : log->events) order.emplace_back(e.user_id, e.item_id);
  EXPECT_THAT(
      order, ElementsAre(std::pair<uint64_t, uint64_t>{3, 60}, std::pair<uint64_t, uint64_t>{1, 50},
                         std::pair<uint64_t, uint64_t>{1, 40}, std::pair<uint64_t, uint64_t>{2, 30},
                         std::pair<uint64_t, uint64_t>{2, 10}, std::pair<uint64_t, uint64_t>{2, 20},
                         std::pair<uint64_t, uint64_t>{1, 900}));
}

TEST_F(EventLogTest, ExactDuplicatesAreDroppedAndCountedKeepingTheFirst) {
  std::string text = "user_id,item_id,event_type,timestamp\n";
  text += "1,10,view,1511658000\n";
  text += "1,11,view,1511658000\n";
  text += "1,10,view,1511658000\n";   // duplicate of line 2
  text += "1,10,click,1511658000\n";  // other type: kept
  text += "2,10,view,1511658000\n";   // other user: kept
  text += "1,10,view,1511658001\n";   // other time: kept
  text += "1,11,view,1511658000\n";   // duplicate of line 3
  // A basket of 40 distinct items written twice: the hash-set path of large groups.
  for (int copy = 0; copy < 2; ++copy) {
    for (int i = 0; i < 40; ++i) text += absl::StrCat("5,", 100 + i, ",cart,1511659000\n");
  }
  absl::StatusOr<EventLog> log = ReadEventLog(Write("dups.csv", text), Options());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->stats.rows, 87);
  EXPECT_EQ(log->stats.duplicates, 42);
  EXPECT_EQ(log->stats.events, 45);
  ASSERT_EQ(log->events.size(), 45u);
  EXPECT_THAT(std::vector<LoggedEvent>(log->events.begin(), log->events.begin() + 4),
              ElementsAre(IsEvent(1, 10, EventKind::kView, 1511658000000),
                          IsEvent(1, 11, EventKind::kView, 1511658000000),
                          IsEvent(1, 10, EventKind::kClick, 1511658000000),
                          IsEvent(2, 10, EventKind::kView, 1511658000000)));
  for (int i = 0; i < 40; ++i) EXPECT_EQ(log->events[5 + i].item_id, uint64_t(100 + i));
}

TEST_F(EventLogTest, TimestampUnitAutoTellsSecondsFromMilliseconds) {
  const std::string header = "user_id,item_id,event_type,timestamp\n";
  const std::string seconds =
      Write("s.csv", header + "1,2,view,1511658000\n1,3,view,1511658001.25\n");
  const std::string millis =
      Write("ms.csv", header + "1,2,view,1511658000000\n1,3,view,1511658001250.7\n");
  for (const auto& [path, unit] : {std::pair{seconds, "s"}, std::pair{millis, "ms"}}) {
    absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ(log->stats.timestamp_unit, unit);
    EXPECT_EQ(log->events[0].timestamp_ms, 1511658000000);
    EXPECT_EQ(log->events[1].timestamp_ms, 1511658001250);  // fraction: ms kept, sub-ms dropped
  }
  // An explicit unit overrides the guess: the seconds file read as milliseconds is 1970.
  EventLogOptions as_ms = Options();
  as_ms.timestamp_unit = "ms";
  absl::StatusOr<EventLog> log = ReadEventLog(seconds, as_ms);
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->events[0].timestamp_ms, 1511658000);
  EXPECT_EQ(log->stats.timestamp_unit, "ms");
  // The milliseconds file read as seconds is far in the future.
  EventLogOptions as_s = Options();
  as_s.timestamp_unit = "s";
  EXPECT_THAT(Message(ReadEventLog(millis, as_s).status()),
              AllOf(HasSubstr("ms.csv:2: column 'timestamp': timestamp in the future"),
                    HasSubstr("read as seconds"), HasSubstr("(value '1511658000000')")));
}

TEST_F(EventLogTest, StringSkusKeepTheirKeysAndIdsMatchItemIdFromKey) {
  const std::string path = Write("skus.csv",
                                 "user_id,item_id,event_type,timestamp\n"
                                 "17850,85123A,purchase,1291191960\n"
                                 "17850,71053,purchase,1291191960\n"
                                 "17850,84029G,purchase,1291191960\n"
                                 "13047,071053,purchase,1291192000\n");
  absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_EQ(log->item_keys.size(), 4u);
  for (const char* key : {"85123A", "71053", "84029G", "071053"}) {
    ASSERT_EQ(log->item_keys.count(ItemIdFromKey(key)), 1u) << key;
    EXPECT_EQ(log->item_keys.at(ItemIdFromKey(key)), key);
  }
  EXPECT_EQ(log->events[0].item_id, ItemIdFromKey("85123A"));
  EXPECT_TRUE(IsHashedItemId(log->events[0].item_id));
  EXPECT_EQ(log->events[1].item_id, 71053u);            // canonical numbers keep their value
  EXPECT_TRUE(IsHashedItemId(log->events[3].item_id));  // "071053" is not canonical
  EXPECT_EQ(log->events[0].user_id, 17850u);
}

TEST_F(EventLogTest, HashCollisionBetweenTwoItemKeysIsAnErrorNamingBoth) {
  ASSERT_EQ(ItemIdFromKey(kCollidingKeyA), ItemIdFromKey(kCollidingKeyB));
  const std::string path =
      Write("collide.csv", absl::StrCat("user_id,item_id,event_type,timestamp\n"
                                        "1,",
                                        kCollidingKeyA, ",view,1511658000\n1,", kCollidingKeyB,
                                        ",view,1511658001\n"));
  for (bool skip : {false, true}) {
    absl::Status status = ReadEventLog(path, Options("auto", skip)).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(status), AllOf(HasSubstr("collide.csv:3: column 'item_id':"),
                                       HasSubstr(absl::StrCat("'", kCollidingKeyB, "'")),
                                       HasSubstr(absl::StrCat("'", kCollidingKeyA, "' (line 2)")),
                                       HasSubstr("hash collision")));
  }
}

TEST_F(EventLogTest, GzipInputReadsLikeThePlainFile) {
  std::string text = "user_id,item_id,event_type,timestamp\n";
  for (int i = 0; i < 5000; ++i) {
    text += absl::StrCat(i % 97, ",SKU", i % 311, ",view,", 1511658000 + i, "\n");
  }
  absl::StatusOr<EventLog> plain = ReadEventLog(Write("plain.csv", text), Options());
  absl::StatusOr<EventLog> gzip = ReadEventLog(WriteGzip("events.csv.gz", text), Options());
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(gzip.ok()) << gzip.status();
  ASSERT_EQ(gzip->events.size(), 5000u);
  for (size_t i = 0; i < plain->events.size(); ++i) {
    ASSERT_EQ(Key(plain->events[i]), Key(gzip->events[i])) << i;
  }
  EXPECT_EQ(plain->item_keys, gzip->item_keys);
}

TEST_F(EventLogTest, TruncatedGzipIsAnErrorNotAShortLog) {
  std::string text = "user_id,item_id,event_type,timestamp\n";
  for (int i = 0; i < 20000; ++i) {
    text += absl::StrCat(i, ",", i * 7, ",view,", 1511658000 + i, "\n");
  }
  const std::string path = WriteGzip("whole.csv.gz", text);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string cut = Write("cut.csv.gz", bytes.substr(0, bytes.size() / 2));
  absl::Status status = ReadEventLog(cut, Options()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              AllOf(HasSubstr("cut.csv.gz"),
                    HasSubstr(": gzip data ends early (truncated file?): unexpected end of file")));
}

// The hostile-input table of docs/data-formats.md: each row's input and what must happen.
struct HostileCase {
  std::string name;
  std::string text;        // file content
  std::string format;      // EventLogOptions::format
  std::string want_error;  // how the error starts after "<path>"; empty: accepted
};

TEST_F(EventLogTest, HostileInputIsRefusedNamingLineAndColumnOrAcceptedAsDocumented) {
  const std::string h = "user_id,item_id,event_type,timestamp\n";
  const std::string with_note = "user_id,item_id,event_type,timestamp,note\n";
  const std::string row_prefix = "1,2,view,1511658000,";  // + note: a line of 65536 bytes
  const std::string longest_row = row_prefix + std::string(65536 - row_prefix.size(), 'n');
  const std::vector<HostileCase> cases = {
      {"empty_file", "", "auto", ": no events: the file is empty"},
      {"blank_lines_only", "\n  \r\n\n", "auto", ": no events: the file is empty"},
      {"header_only", h, "auto", ": no events: the file has only a header line"},
      {"missing_column", "user_id,item_id,timestamp,event_typo\n1,2,3,view\n", "events",
       ":1: header: missing column 'event_type' (accepted names: event_type|type|"
       "behavior_type|behaviour_type|event;"},
      {"missing_timestamp", "user,item,type\n1,2,view\n", "auto",
       ":1: header: missing column 'timestamp' (accepted names: timestamp|time|ts|unix_time;"},
      {"two_user_columns", "user,user_id,item,type,ts\n", "auto",
       ":1: header: columns 'user' and 'user_id' both name the user_id column"},
      {"unknown_header", "a,b,c\n1,2,3\n", "auto",
       ":1: cannot tell the format from the first line 'a,b,c'"},
      {"events_without_header", "1,2,view,1511658000\n", "events",
       ":1: header: missing column 'user_id'"},
      {"wrong_field_count", h + "1,2,view\n", "auto",
       ":2: expected 4 fields as in the header, got 3"},
      {"extra_field", h + "1,2,view,1511658000,9\n", "auto",
       ":2: expected 4 fields as in the header, got 5"},
      {"unknown_event_type", h + "1,2,like,1511658000\n", "auto",
       ":2: column 'event_type': unknown event type, want one of view|pv|"},
      {"empty_user", h + ",2,view,1511658000\n", "auto",
       ":2: column 'user_id': empty id (value '')"},
      {"empty_item", h + "1,  ,view,1511658000\n", "auto",
       ":2: column 'item_id': empty id (value '')"},
      {"control_character_id", h + "1,a\x01z,view,1511658000\n", "auto",
       ":2: column 'item_id': id with control character 0x01 (value 'a\\x01z')"},
      {"overlong_id", h + "1," + std::string(257, 'x') + ",view,1511658000\n", "auto",
       ":2: column 'item_id': id of 257 bytes, longer than 256 (value 'xxxx"},
      {"negative_id", h + "-5,-7,view,1511658000\n", "auto", ""},
      {"huge_id", h + "99999999999999999999,9223372036854775808,view,1511658000\n", "auto", ""},
      {"zero_timestamp", h + "1,2,view,0\n", "auto",
       ":2: column 'timestamp': zero timestamp (value '0')"},
      {"negative_timestamp", h + "1,2,view,-1511658000\n", "auto",
       ":2: column 'timestamp': negative timestamp (value '-1511658000')"},
      {"non_numeric_timestamp", h + "1,2,view,2017-11-26 01:00:00\n", "auto",
       ":2: column 'timestamp': not a Unix timestamp"},
      {"exponent_timestamp", h + "1,2,view,1.5e9\n", "auto",
       ":2: column 'timestamp': not a Unix timestamp"},
      {"empty_timestamp", h + "1,2,view,\n", "auto",
       ":2: column 'timestamp': not a Unix timestamp"},
      {"overflowing_timestamp", h + "1,2,view,99999999999999999999\n", "auto",
       ":2: column 'timestamp': timestamp out of range (value '99999999999999999999')"},
      {"future_seconds", h + "1,2,view,99999999999\n", "auto",
       ":2: column 'timestamp': timestamp in the future: 5138-11-16 09:46:39 UTC read as "
       "seconds is later than now + 86400 s (value '99999999999')"},
      {"future_milliseconds", h + "1,2,view,9999999999999\n", "auto",
       ":2: column 'timestamp': timestamp in the future: 2286-11-20 17:46:39 UTC read as "
       "milliseconds"},
      {"mixed_units", h + "1,2,view,1511658000\n1,3,view,1511658000000\n", "auto",
       ": timestamps mix seconds and milliseconds: line 2 has 1511658000 (seconds) and line "
       "3 has 1511658000000 (milliseconds)"},
      {"unterminated_quote", h + "1,\"85123A,view,1511658000\n", "auto",
       ":2: column 'item_id': unterminated quoted field"},
      {"text_after_quote", h + "1,\"85123A\"x,view,1511658000\n", "auto",
       ":2: column 'item_id': text after the closing quote"},
      {"overlong_line", h + "1," + std::string(70000, 'x') + ",view,1511658000\n", "auto",
       ":2: line longer than 65536 bytes"},
      {"longest_line", with_note + longest_row + "\r\n", "auto", ""},
      {"one_byte_too_long", with_note + longest_row + "n\n", "auto",
       ":2: line longer than 65536 bytes"},
      {"no_final_newline", h + "1,2,view,1511658000", "auto", ""},
      {"overlong_header", std::string(70000, 'x') + "\n", "auto",
       ":1: first line longer than 65536 bytes"},
      {"utf16", std::string("\xFF\xFEu\0s\0", 6), "auto", ":1: the file starts with a UTF-16"},
      {"ratings_bad_rating", "1,2,4,1511658000\n1,2,abc,1511658001\n", "ratings",
       ":2: column 'rating': rating is not a finite number (value 'abc')"},
      {"ratings_unknown_first_line", "1,2,abc,1511658000\n", "ratings",
       ":1: header: the ratings format wants the columns user,item,rating,timestamp"},
      {"ratings_nan", "1,2,3,1511658000\n1,2,nan,1511658001\n", "auto",
       ":2: column 'rating': rating is not a finite number (value 'nan')"},
      {"ratings_columns_out_of_order", "user,item,timestamp,rating\n1,2,1511658000,4\n", "auto",
       ":1: header: the ratings format wants the columns user,item,rating,timestamp"},
      {"ratings_field_count", "1,2,3,1511658000\n1,2,3\n", "auto",
       ":2: expected 4 fields (user, item, rating, timestamp), got 3"},
      {"ratings_bad_timestamp", "1,2,3,1511658000\n1,2,3,soon\n", "auto",
       ":2: column 'timestamp': not a Unix timestamp"},
  };
  for (const HostileCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = Write(c.name + ".csv", c.text);
    absl::StatusOr<EventLog> log = ReadEventLog(path, Options(c.format));
    if (c.want_error.empty()) {
      EXPECT_TRUE(log.ok()) << log.status();
      continue;
    }
    EXPECT_EQ(log.status().code(), absl::StatusCode::kInvalidArgument) << log.status();
    EXPECT_THAT(Message(log.status()), StartsWith(path + c.want_error));
  }
}

TEST_F(EventLogTest, NegativeAndHugeNumericIdsAreOpaqueHashedStrings) {
  const std::string path = Write("ids.csv",
                                 "user_id,item_id,event_type,timestamp\n"
                                 "-5,-7,view,1511658000\n"
                                 "99999999999999999999,9223372036854775808,view,1511658001\n"
                                 "9223372036854775807,007,view,1511658002\n");
  absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_THAT(
      log->events,
      ElementsAre(
          IsEvent(ItemIdFromKey("-5"), ItemIdFromKey("-7"), EventKind::kView, 1511658000000),
          IsEvent(ItemIdFromKey("99999999999999999999"), ItemIdFromKey("9223372036854775808"),
                  EventKind::kView, 1511658001000),
          IsEvent(9223372036854775807u, ItemIdFromKey("007"), EventKind::kView, 1511658002000)));
  for (const LoggedEvent& e : log->events) EXPECT_TRUE(IsHashedItemId(e.item_id));
  EXPECT_EQ(log->item_keys.at(ItemIdFromKey("9223372036854775808")), "9223372036854775808");
}

TEST_F(EventLogTest, SkipBadRowsCountsThemKeepsFiveReasonsAndReadsTheRest) {
  std::string text = "user_id,item_id,event_type,timestamp\n";
  text += "1,2,view,1511658000\n";                                    // line 2
  for (int i = 0; i < 7; ++i) text += "1,2,frobnicate,1511658000\n";  // lines 3..9
  text += "1," + std::string(100000, 'y') + ",view,1511658000\n";     // line 10
  text += "1,3,view,0\n";                                             // line 11
  text += "1,4,click,1511658005\n";                                   // line 12
  absl::StatusOr<EventLog> log = ReadEventLog(Write("skip.csv", text), Options("auto", true));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->stats.rows, 11);
  EXPECT_EQ(log->stats.bad_rows, 9);
  EXPECT_EQ(log->stats.events, 2);
  ASSERT_EQ(log->stats.bad_row_examples.size(), 5u);
  EXPECT_THAT(log->stats.bad_row_examples[0],
              HasSubstr("skip.csv:3: column 'event_type': unknown event type"));
  EXPECT_THAT(log->stats.bad_row_examples[4], HasSubstr("skip.csv:7: column 'event_type'"));
  EXPECT_EQ(log->item_keys.size(), 2u);  // items of skipped rows are not kept
}

TEST_F(EventLogTest, EveryRowBadIsAnErrorEvenWhenSkipping) {
  const std::string path = Write("all_bad.csv",
                                 "user_id,item_id,event_type,timestamp\n"
                                 "1,2,view,never\n"
                                 "1,2,view,-1\n");
  absl::Status status = ReadEventLog(path, Options("auto", true)).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status),
              AllOf(StartsWith(path + ": no events: all 2 rows are bad; the first: "),
                    HasSubstr("all_bad.csv:2: column 'timestamp': not a Unix timestamp")));
}

TEST_F(EventLogTest, MaxRowsIsAnErrorNotASkip) {
  const std::string path = Write("many.csv",
                                 "user_id,item_id,event_type,timestamp\n"
                                 "1,2,view,1511658000\n1,3,view,1511658001\n1,4,view,1511658002\n");
  EventLogOptions options = Options("auto", true);
  options.max_rows = 2;
  EXPECT_THAT(Message(ReadEventLog(path, options).status()),
              StartsWith(path + ":4: more than max_rows=2 data rows"));
  options.max_rows = 3;
  EXPECT_TRUE(ReadEventLog(path, options).ok());
}

TEST_F(EventLogTest, BadOptionsAndMissingFilesAreRefused) {
  const std::string path =
      Write("ok.csv", "user_id,item_id,event_type,timestamp\n1,2,view,1511658000\n");
  EventLogOptions options;
  options.format = "parquet";
  EXPECT_THAT(Message(ReadEventLog(path, options).status()), HasSubstr("format must be auto"));
  options = EventLogOptions();
  options.timestamp_unit = "us";
  EXPECT_THAT(Message(ReadEventLog(path, options).status()),
              HasSubstr("unit must be auto, s or ms"));
  options = EventLogOptions();
  options.max_future_seconds = -1;
  EXPECT_FALSE(ReadEventLog(path, options).ok());
  EXPECT_EQ(ReadEventLog(dir_ + "/absent.csv", EventLogOptions()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(EventLogTest, OneUserWithAMillionEventsIsReadWithoutQuadraticWork) {
  // One user, 10^6 events written newest first; 100 timestamps of 10,000 events each, so
  // both the sort and the per-(timestamp, user) duplicate check see huge groups.
  constexpr int kEvents = 1000000;
  std::string text = "user_id,item_id,event_type,timestamp\n";
  text.reserve(size_t{kEvents} * 32);
  for (int i = 0; i < kEvents; ++i) {
    absl::StrAppend(&text, "shopper,P", i % 50000, ",view,", 1511658000 + (kEvents - 1 - i) / 10000,
                    "\n");
  }
  const std::string path = Write("one_user.csv", text);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<EventLog> log = ReadEventLog(path, Options());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->stats.events, kEvents);
  EXPECT_EQ(log->stats.duplicates, 0);
  EXPECT_EQ(log->stats.users, 1);
  EXPECT_EQ(log->stats.items, 50000);
  EXPECT_EQ(log->events.front().timestamp_ms, 1511658000000);
  // The first second is the file's last 10,000 rows (i = 990000...), in file order.
  EXPECT_EQ(log->events[0].item_id, ItemIdFromKey("P40000"));
  EXPECT_EQ(log->events[1].item_id, ItemIdFromKey("P40001"));
  EXPECT_EQ(log->events.back().timestamp_ms, 1511658099000);
  // Not a speed check (that is the printed figure): a guard against quadratic work in
  // the huge groups, which would take hours. ~1 s quiet, 6 s seen at load average 15.
  EXPECT_LT(seconds, 120.0);
  std::printf("1,000,000 events of one user read in %.2f s\n", seconds);
}

// The real logs of shared/data (see their README.md for the counts checked here).
std::string SharedDataPath(const std::string& relative) {
  const char* source = std::getenv("RECSERVE_SOURCE_DIR");
  if (source == nullptr) return "";
  const std::string path = absl::StrCat(source, "/../shared/data/", relative);
  return std::filesystem::exists(path) ? path : "";
}

TEST(EventLogRealDataTest, OnlineRetailUciMatchesItsReadme) {
  const std::string path = SharedDataPath("online-retail-uci/events.csv.gz");
  if (path.empty()) GTEST_SKIP() << "online-retail-uci/events.csv.gz not present";
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<EventLog> log = ReadEventLog(path, EventLogOptions());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->stats.format, "events");
  EXPECT_EQ(log->stats.timestamp_unit, "s");
  EXPECT_EQ(log->stats.rows, 386278);
  EXPECT_EQ(log->stats.events, 386278);
  EXPECT_EQ(log->stats.duplicates, 0);
  EXPECT_EQ(log->stats.bad_rows, 0);
  EXPECT_EQ(log->stats.users, 4335);
  EXPECT_EQ(log->stats.items, 3659);
  EXPECT_EQ(log->item_keys.at(ItemIdFromKey("85123A")), "85123A");
  EXPECT_EQ(log->item_keys.at(71053), "71053");
  for (const LoggedEvent& e : log->events) ASSERT_EQ(e.kind, EventKind::kPurchase);
  // The README's first rows: user 17850's first invoice, 85123A then 71053.
  EXPECT_EQ(log->events[0].timestamp_ms, 1291191960000);
  EXPECT_EQ(log->events[0].user_id, 17850u);
  EXPECT_EQ(log->events[0].item_id, ItemIdFromKey("85123A"));
  EXPECT_EQ(log->events[1].item_id, 71053u);
  EXPECT_EQ(log->events.back().timestamp_ms, 1323435000000);
  std::printf("online-retail-uci: %lld events read in %.2f s\n",
              static_cast<long long>(log->stats.events), seconds);
}

TEST(EventLogRealDataTest, TaobaoSliceMatchesItsReadme) {
  const std::string path = SharedDataPath("taobao-userbehavior-slice/events.csv.gz");
  if (path.empty()) GTEST_SKIP() << "taobao-userbehavior-slice/events.csv.gz not present";
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<EventLog> log = ReadEventLog(path, EventLogOptions());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ(log->stats.format, "events");
  EXPECT_EQ(log->stats.timestamp_unit, "s");
  EXPECT_EQ(log->stats.events, 110300);
  EXPECT_EQ(log->stats.duplicates, 0);
  EXPECT_EQ(log->stats.users, 66454);
  EXPECT_EQ(log->stats.items, 84793);
  std::map<EventKind, int64_t> kinds;
  for (const LoggedEvent& e : log->events) ++kinds[e.kind];
  EXPECT_EQ(kinds[EventKind::kView], 98361);        // pv
  EXPECT_EQ(kinds[EventKind::kCart], 6063 + 3383);  // cart + fav
  EXPECT_EQ(kinds[EventKind::kPurchase], 2493);     // buy
  EXPECT_EQ(kinds[EventKind::kClick], 0);
  EXPECT_EQ(log->events.front().timestamp_ms, 1511658000000);
  EXPECT_EQ(log->events.back().timestamp_ms, 1511665811000);
  std::printf("taobao-userbehavior-slice: %lld events read in %.2f s\n",
              static_cast<long long>(log->stats.events), seconds);
}

}  // namespace
}  // namespace recserve
