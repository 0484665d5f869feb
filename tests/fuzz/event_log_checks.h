// What every log ReadEventLog accepts must satisfy (train/event_log.h): events sorted by
// (timestamp, user), no exact duplicates, every item's key known and valid, the counts
// adding up. Shared by the event and ratings CSV fuzz targets.
#ifndef RECSERVE_TESTS_FUZZ_EVENT_LOG_CHECKS_H_
#define RECSERVE_TESTS_FUZZ_EVENT_LOG_CHECKS_H_

#include <cstdint>
#include <set>
#include <tuple>

#include "engine/catalog.h"
#include "engine/item_key.h"
#include "tests/fuzz/fuzz_util.h"
#include "train/event_log.h"

namespace recserve::fuzz {

inline void CheckEventLog(const EventLog& log) {
  const EventLogStats& s = log.stats;
  FUZZ_CHECK(!log.events.empty(), "an accepted log without events");
  FUZZ_CHECK(s.events == static_cast<int64_t>(log.events.size()), "stats.events");
  FUZZ_CHECK(s.rows == s.events + s.duplicates + s.bad_rows, "rows != events + duplicates + bad rows");
  FUZZ_CHECK(s.bad_row_examples.size() <= 5 && s.bad_row_examples.size() <= static_cast<size_t>(s.bad_rows),
             "bad_row_examples");
  FUZZ_CHECK(s.items == static_cast<int64_t>(log.item_keys.size()), "stats.items != item_keys");
  std::set<std::tuple<int64_t, uint64_t, uint64_t, EventKind>> seen;
  for (size_t i = 0; i < log.events.size(); ++i) {
    const LoggedEvent& e = log.events[i];
    FUZZ_CHECK(e.timestamp_ms > 0, "a timestamp <= 0");
    const auto key = log.item_keys.find(e.item_id);
    FUZZ_CHECK(key != log.item_keys.end() && ItemIdFromKey(key->second) == e.item_id, "an item without its key");
    FUZZ_CHECK(CheckItemKey(key->second).ok(), "a bad item key");
    FUZZ_CHECK(seen.insert({e.timestamp_ms, e.user_id, e.item_id, e.kind}).second, "an exact duplicate kept");
    if (i == 0) continue;
    const LoggedEvent& p = log.events[i - 1];
    FUZZ_CHECK(std::tie(p.timestamp_ms, p.user_id) <= std::tie(e.timestamp_ms, e.user_id), "events not sorted");
  }
}

}  // namespace recserve::fuzz

#endif  // RECSERVE_TESTS_FUZZ_EVENT_LOG_CHECKS_H_
