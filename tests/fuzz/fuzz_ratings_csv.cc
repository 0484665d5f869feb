// Fuzzes both readers of the user,item,rating,timestamp layout on a file's bytes:
// ReadRatingsCsv (train/world.h, the world-directory tools' reader) and ReadEventLog with
// format "ratings" (train/event_log.h), strictly and with skip_bad_rows. What they accept
// must keep their promises: ReadRatingsCsv's train events sorted and all before its test
// events, every event's item in its item list; ReadEventLog's the checks of
// event_log_checks.h.
#include <algorithm>
#include <cstdint>
#include <string>

#include "tests/fuzz/event_log_checks.h"
#include "tests/fuzz/fuzz_util.h"
#include "train/event_log.h"
#include "train/world.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  static fuzz::MemFile* const file = new fuzz::MemFile("ratings.csv");
  const std::string& path = file->Set(data, size);

  auto world = ReadRatingsCsv(path, /*click_threshold=*/4.0, /*test_fraction=*/0.25);
  if (world.ok()) {
    auto by_time = [](const LoggedEvent& a, const LoggedEvent& b) { return a.timestamp_ms < b.timestamp_ms; };
    FUZZ_CHECK(std::is_sorted(world->train_events.begin(), world->train_events.end(), by_time), "train not sorted");
    FUZZ_CHECK(std::is_sorted(world->test_events.begin(), world->test_events.end(), by_time), "test not sorted");
    if (!world->train_events.empty() && !world->test_events.empty()) {
      FUZZ_CHECK(world->train_events.back().timestamp_ms < world->test_events.front().timestamp_ms,
                 "a train event not before every test event");
    }
    for (const auto* part : {&world->train_events, &world->test_events}) {
      for (const LoggedEvent& e : *part) {
        const bool listed = std::binary_search(
            world->items.begin(), world->items.end(), ItemInfo{e.item_id, 0, {}},
            [](const ItemInfo& a, const ItemInfo& b) { return a.item_id < b.item_id; });
        FUZZ_CHECK(listed, "an event's item is not in the item list");
        FUZZ_CHECK(e.kind == EventKind::kClick || e.kind == EventKind::kView, "a rating that is not click or view");
      }
    }
  }

  EventLogOptions options;
  options.format = "ratings";
  auto strict = ReadEventLog(path, options);
  if (strict.ok()) fuzz::CheckEventLog(*strict);
  options.skip_bad_rows = true;
  auto skipping = ReadEventLog(path, options);
  if (skipping.ok()) fuzz::CheckEventLog(*skipping);
  return 0;
}
