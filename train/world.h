// Behaviour logs as the offline tools read and write them: the "world" directory.
//
// Layout of a world directory (all text, tab-separated, '#' lines are comments, UTF-8):
//   items.tsv              item_id  category  dense            (dense: comma-separated floats)
//   events_train.tsv       user_id  item_id  type  timestamp_ms   (type: view|click|cart|purchase)
//   events_test.tsv        same; every test event is later than every train event
//   impressions_train.tsv  impression_id  user_id  item_id  timestamp_ms  device  hour  label  true_p
//   impressions_test.tsv   same; label is 0/1, true_p the generating model's click
//                          probability (-1 when unknown); device 0..3, hour 0..23
//   world.txt              key=value lines: generator parameters and oracle_auc
// An impression's history is the user's events with timestamp < the impression's.
// Ids are unsigned 64-bit; users and items need not be dense.
//
// The public `user,item,rating,timestamp` CSV layout (MovieLens and friends; timestamp in
// seconds, an optional header line) is read by ReadRatingsCsv into the same structure:
// ratings >= the threshold become clicks, lower ones views; no impressions.
#ifndef RECSERVE_TRAIN_WORLD_H_
#define RECSERVE_TRAIN_WORLD_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace recserve {

enum class EventKind : int32_t { kView = 1, kClick = 2, kCart = 3, kPurchase = 4 };

struct LoggedEvent {
  uint64_t user_id;
  uint64_t item_id;
  EventKind kind;
  int64_t timestamp_ms;
};

struct Impression {
  uint64_t impression_id;  // a slate: the items shown together share it
  uint64_t user_id;
  uint64_t item_id;
  int64_t timestamp_ms;
  int32_t device;          // 0 unknown, 1 mobile, 2 desktop, 3 tablet
  int32_t hour;            // 0..23
  float label;             // 0 or 1
  float true_p;            // generating model's probability, -1 if unknown
};

struct ItemInfo {
  uint64_t item_id;
  int32_t category;
  std::vector<float> dense;
};

struct World {
  std::vector<ItemInfo> items;
  std::vector<LoggedEvent> train_events;  // sorted by (timestamp, user)
  std::vector<LoggedEvent> test_events;
  std::vector<Impression> train_impressions;
  std::vector<Impression> test_impressions;
  std::map<std::string, std::string> params;  // world.txt
  // String keys of the items (engine/item_key.h) when the log named items by strings;
  // empty for numeric logs. Not part of the world directory format.
  std::map<uint64_t, std::string> item_keys;
  double oracle_auc = 0;                      // 0 when unknown
};

absl::StatusOr<World> ReadWorld(const std::string& dir);
absl::Status WriteWorld(const World& world, const std::string& dir);

// Reads `user,item,rating,timestamp` lines; the last `test_fraction` of time goes to
// test_events. Items get category 0 and no dense features.
absl::StatusOr<World> ReadRatingsCsv(const std::string& path, double click_threshold,
                                     double test_fraction);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_WORLD_H_
