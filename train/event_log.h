// Real behaviour logs: CSV event files (plain or gzip) -> time-ordered events.
//
// Formats (EventLogOptions::format; "auto" picks one from the header line):
//   events         the documented generic layout: a header naming at least the columns
//                  user_id, item_id, event_type, timestamp (also accepted: user, item,
//                  type / behavior_type, time / ts), in any order, extra columns ignored.
//                  This covers shared/data/online-retail-uci (user_id,item_id,event_type,
//                  timestamp,quantity) and shared/data/taobao-userbehavior-slice
//                  (user_id,item_id,category_id,behavior_type,timestamp).
//   ratings        user,item,rating,timestamp (MovieLens and friends), optional header;
//                  rating >= ratings_click_threshold -> PURCHASE... see event_log.cc for
//                  the documented rating -> event-type mapping.
// Event type names (case-insensitive): view|pv|impression -> VIEW, click -> CLICK,
// cart|addtocart|add_to_cart|fav|favorite|favourite -> CART, purchase|buy|order|
// transaction -> PURCHASE.
//
// Ids are opaque strings of at most kMaxItemKeyBytes (engine/item_key.h): item ids keep
// their string as the item's key and get the numeric id ItemIdFromKey(key); user ids
// get ItemIdFromKey too (users have no key table).
// Timestamps: integers; unit "s", "ms" or "auto" (milliseconds when the largest value in
// the file is above 1e11, i.e. after 1973 in ms or year 5138 in seconds). Zero, negative,
// non-numeric and far-future (now + max_future_seconds) timestamps are bad rows.
// Rows may be unsorted (sorted stably by time), may end in CRLF, the file may start with
// a UTF-8 BOM; exact duplicate events (same user, item, type, timestamp) are dropped and
// counted.
// A bad row is an error naming file, line and column, unless skip_bad_rows: then it is
// counted (EventLogStats) and skipped; the first few reasons are kept.
#ifndef RECSERVE_TRAIN_EVENT_LOG_H_
#define RECSERVE_TRAIN_EVENT_LOG_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "train/world.h"

namespace recserve {

struct EventLogOptions {
  std::string format = "auto";          // "auto", "events", "ratings"
  std::string timestamp_unit = "auto";  // "auto", "s", "ms"
  bool skip_bad_rows = false;
  double ratings_click_threshold = 4.0;
  int64_t max_future_seconds = 86400;   // later than now + this: a bad row
  int64_t max_rows = 0;                 // 0 = no limit; past it an error (not a skip)
};

struct EventLogStats {
  int64_t rows = 0;            // data lines read (header excluded)
  int64_t events = 0;          // events kept
  int64_t duplicates = 0;      // exact duplicates dropped
  int64_t bad_rows = 0;        // skipped under skip_bad_rows
  std::vector<std::string> bad_row_examples;  // first 5 reasons, "file:line: column 'x': ..."
  int64_t users = 0, items = 0;
  std::string format;          // the format used
  std::string timestamp_unit;  // the unit used ("s" or "ms")
};

struct EventLog {
  std::vector<LoggedEvent> events;            // sorted by (timestamp, user), then file order
  std::map<uint64_t, std::string> item_keys;  // numeric id -> key, for every item of events
  EventLogStats stats;
};

absl::StatusOr<EventLog> ReadEventLog(const std::string& path, const EventLogOptions& options);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_EVENT_LOG_H_
