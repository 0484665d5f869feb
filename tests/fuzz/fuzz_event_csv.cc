// Fuzzes the event-log importer (train/event_log.h, ReadEventLog) on a file's bytes,
// plain or gzip, format "auto" (the events layout, or ratings when the header says so).
// Each input is read strictly and again with skip_bad_rows; what is read must keep the
// importer's promises: events sorted by (timestamp, user), no exact duplicates, every
// item's key known, the counts adding up, and a strict read that passes reads the same
// when skipping.
#include <cstdint>
#include <string>

#include "tests/fuzz/event_log_checks.h"
#include "tests/fuzz/fuzz_util.h"
#include "train/event_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  static fuzz::MemFile* const file = new fuzz::MemFile("events.csv");
  const std::string& path = file->Set(data, size);
  EventLogOptions options;
  auto strict = ReadEventLog(path, options);
  if (strict.ok()) fuzz::CheckEventLog(*strict);
  options.skip_bad_rows = true;
  auto skipping = ReadEventLog(path, options);
  if (skipping.ok()) fuzz::CheckEventLog(*skipping);
  if (strict.ok()) {
    FUZZ_CHECK(skipping.ok() && skipping->stats.bad_rows == 0 && skipping->events.size() == strict->events.size(),
               "a log read strictly reads differently when skipping bad rows");
  }
  return 0;
}
