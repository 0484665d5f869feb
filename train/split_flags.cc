#include "train/split_flags.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/item_key.h"
#include "engine/status_macros.h"

ABSL_FLAG(std::string, events_csv, "",
          "A behaviour log: CSV (or .csv.gz) with a header naming user_id,item_id,event_type,timestamp "
          "(docs/data-formats.md), or user,item,rating,timestamp");
ABSL_FLAG(std::string, format, "auto", "Log format: auto, events or ratings");
ABSL_FLAG(std::string, timestamp_unit, "auto", "Log timestamps: auto, s or ms");
ABSL_FLAG(bool, skip_bad_rows, false, "Count and skip rows that do not parse instead of stopping");
ABSL_FLAG(double, rating_click_threshold, 4.0, "Ratings logs: ratings >= this are clicks, lower views");
ABSL_FLAG(std::string, split, "none",
          "Hold out test users: none (train on everything), leave_last_out or time");
ABSL_FLAG(int, min_user_events, 5, "leave_last_out: users with fewer events are not tested");
ABSL_FLAG(double, time_test_fraction, 0.1, "time: the split time is this share of the range before the end");
ABSL_FLAG(int64_t, split_time, 0, "time: explicit split time in unix seconds (0: from --time_test_fraction)");
ABSL_FLAG(double, horizon_days, 0, "time: targets within this many days after the split (0: to the end)");
ABSL_FLAG(int, test_users, 0, "Test users to sample (0: all that qualify)");
ABSL_FLAG(uint64_t, split_seed, 1, "Seed of the test-user sample");

namespace recserve {

bool EventsCsvFlagSet() { return !absl::GetFlag(FLAGS_events_csv).empty(); }

absl::StatusOr<SplitInput> ReadSplitFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_events_csv);
  if (path.empty()) return absl::InvalidArgumentError("--events_csv is required");
  EventLogOptions reader;
  reader.format = absl::GetFlag(FLAGS_format);
  reader.timestamp_unit = absl::GetFlag(FLAGS_timestamp_unit);
  reader.skip_bad_rows = absl::GetFlag(FLAGS_skip_bad_rows);
  reader.ratings_click_threshold = absl::GetFlag(FLAGS_rating_click_threshold);
  SplitInput input;
  ASSIGN_OR_RETURN(input.log, ReadEventLog(path, reader));
  // The log's identity is its content, not the path it was read from.
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  const std::string digest = Sha256Hex(bytes.str()).substr(0, 12);

  const std::string protocol = absl::GetFlag(FLAGS_split);
  if (protocol == "none") {
    input.split.train_events = input.log.events;
    input.split.description = "all";
  } else {
    SplitOptions o;
    o.protocol = protocol;
    o.min_user_events = absl::GetFlag(FLAGS_min_user_events);
    o.time_test_fraction = absl::GetFlag(FLAGS_time_test_fraction);
    o.split_time_ms = absl::GetFlag(FLAGS_split_time) * 1000;
    o.horizon_days = absl::GetFlag(FLAGS_horizon_days);
    o.max_users = absl::GetFlag(FLAGS_test_users);
    o.seed = absl::GetFlag(FLAGS_split_seed);
    ASSIGN_OR_RETURN(input.split, SplitLog(input.log.events, o));
  }
  input.data_source = absl::StrCat(std::filesystem::path(path).filename().string(), " sha256:", digest, " ",
                                   input.split.description);
  return input;
}

World WorldFromLog(EventLog log, std::vector<LoggedEvent> train_events, const std::string& data_source) {
  World world;
  std::vector<uint64_t> ids;
  ids.reserve(train_events.size());
  for (const LoggedEvent& e : train_events) ids.push_back(e.item_id);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (uint64_t id : ids) {
    world.items.push_back(ItemInfo{id, 0, {}});
    auto key = log.item_keys.find(id);
    if (key != log.item_keys.end() && IsHashedItemId(id)) world.item_keys[id] = key->second;
  }
  // Keys for every item once any item needs one, so the catalog's key table is complete.
  if (!world.item_keys.empty()) {
    for (uint64_t id : ids) {
      auto key = log.item_keys.find(id);
      world.item_keys[id] = key != log.item_keys.end() ? key->second : std::to_string(id);
    }
  }
  world.train_events = std::move(train_events);
  world.params["source"] = data_source;
  world.params["format"] = "events_csv";
  world.params["log_format"] = log.stats.format;
  return world;
}

}  // namespace recserve
