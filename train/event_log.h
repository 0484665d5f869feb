// Real behaviour logs: CSV event files (plain or gzip) -> time-ordered events.
// The user-facing rules, with the exact error texts, are in docs/data-formats.md.
//
// Formats (EventLogOptions::format; "auto" picks one from the first non-blank line):
//   events   the documented generic layout: a header naming the four columns below, in
//            any order, names compared case-insensitively, extra columns ignored; every
//            row has as many fields as the header.
//              user        user_id | user | userid | customer_id
//              item        item_id | item | itemid | product_id | sku
//              event type  event_type | type | behavior_type | behaviour_type | event
//              time        timestamp | time | ts | unix_time
//            This covers shared/data/online-retail-uci (user_id,item_id,event_type,
//            timestamp,quantity) and shared/data/taobao-userbehavior-slice
//            (user_id,item_id,category_id,behavior_type,timestamp).
//   ratings  user,item,rating,timestamp by position (MovieLens and friends), 4 fields; a
//            first line whose rating field is not a number is a header and must name
//            rating|score third. rating >= ratings_click_threshold -> CLICK, lower -> VIEW
//            (the mapping ReadRatingsCsv uses).
//   auto     a header with an event-type column -> events; a header with a rating column,
//            or a headerless first line of 4 numbers -> ratings; anything else an error
//            saying what was expected.
// Event type names (case-insensitive): view|pv|impression -> VIEW, click -> CLICK,
// cart|addtocart|add_to_cart|fav|favorite|favourite -> CART, purchase|buy|order|
// transaction -> PURCHASE.
//
// Ids are opaque strings: non-empty, at most kMaxItemKeyBytes (engine/item_key.h), no
// control characters. Item ids keep their string as the item's key (item_keys) and get
// the numeric id ItemIdFromKey(key); two keys with one numeric id (a hash collision) are
// an error naming both. User ids get ItemIdFromKey too (users have no key table).
// Timestamps: Unix time, an integer with an optional decimal fraction ("1511658000.25");
// unit "s", "ms" or "auto" (each value above 1e11 is milliseconds, i.e. after 1973 in ms
// or after year 5138 in seconds; a file with values on both sides is refused, naming a
// line of each). Zero, negative, non-numeric, out-of-range and far-future (later than
// now + max_future_seconds) timestamps are bad rows.
// Lines: '\n' or CRLF, an optional UTF-8 BOM, blank lines skipped, spaces around fields
// trimmed, double-quoted fields ("" for a quote, no line breaks inside) unquoted; a line
// longer than 64 KiB is a bad row. Rows may be unsorted: events are sorted stably by
// (timestamp, user), so rows with equal time and user (a basket) keep their file order.
// Exact duplicate events (same user, item, type, timestamp) are dropped and counted.
//
// Content errors are InvalidArgumentError "<path>:<line>: column '<name>': <what> (value
// '<x>')" (row-level ones without the column); I/O errors carry their errno's code
// (NotFound for a missing file). A bad row is an error unless skip_bad_rows: then
// it is counted (EventLogStats) and skipped, the first 5 reasons kept. Always errors:
// I/O and gzip errors (a truncated .gz included), header errors, a key collision, more
// than max_rows rows, mixed units under "auto", and no events at all (empty file, header
// only, every row bad).
// Work and memory are O(rows log rows) and O(events + distinct items), whatever the shape.
// Thread-safety: ReadEventLog has no shared state; concurrent calls are fine.
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
  int64_t rows = 0;            // non-blank data lines read (header excluded, bad rows included)
  int64_t events = 0;          // events kept
  int64_t duplicates = 0;      // exact duplicates dropped
  int64_t bad_rows = 0;        // skipped under skip_bad_rows
  std::vector<std::string> bad_row_examples;  // first 5 reasons, "file:line: column 'x': ..."
  int64_t users = 0, items = 0;  // distinct, over the kept events
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
