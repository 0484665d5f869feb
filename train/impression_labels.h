// Labels for what the server showed: the impression log (engine/impression_file.h)
// joined with what the same users did next.
//
// A shown item is clicked when the same user has an interaction (CLICK, CART or
// PURCHASE; views are not: the world logs a look at an unclicked item as a view) with the
// item in (shown time, shown time + window]. Interactions come from two sources, used
// together:
//   - later records' event lists: every request carries the user's recent events with
//     their timestamps, so the user's next request tells what they did after the last
//     answer (the horizon of these: the user's newest record);
//   - an event log (the world's events, or a real log read by train/event_log.h), whose
//     users are joined by their numeric id: a record's user as the request sent it, read
//     as the event log reader reads a user column (ItemIdFromKey, engine/item_key.h: a
//     decimal is its own id, any other string its hash); a hashed user ("h:...") joins
//     with later records only. Complete up to LabelOptions::event_log_end_ms.
// Items are the catalog's external ids as the server returns them (RecommendedItem
// item_id); an event names its item by key (Event.item, which wins, as on the server)
// or by id.
// A click is credited to the newest showing of that item to that user before it (last
// touch): when an item was shown twice and clicked after the second showing, the first
// showing is not clicked. Showings in the same millisecond come in the records' order
// (the log's: the order the server answered). A shown item whose window is not over by
// the horizon of its sources is open: left out and counted, clicked or not (keeping only
// the early clicks would over-represent clicks).
// A record that kept only its events' digest (--impression_events=digest) with a
// non-zero count cannot give its features back: left out and counted.
//
// Stateless functions; thread-safe.
#ifndef RECSERVE_TRAIN_IMPRESSION_LABELS_H_
#define RECSERVE_TRAIN_IMPRESSION_LABELS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/pipeline.h"
#include "recserve/v1/impression.pb.h"
#include "train/world.h"

namespace recserve {

struct ServedItem {
  uint64_t item_id = 0;
  int32_t position = 0;  // 0 = first shown
  float label = 0;       // 1 clicked within the window, 0 not
};

// One answer as the server computed it, with its labelled items.
struct ServedSlate {
  std::string user;
  int64_t time_ms = 0;
  RequestContext context;
  std::vector<QueryEvent> events;  // as the request carried them
  int64_t model_version = 0;
  std::vector<ServedItem> items;   // the labelled ones (open items left out), by position
};

struct LabelOptions {
  absl::Duration window = absl::Minutes(30);  // > 0
  // The event log holds every interaction up to this time; 0: up to its newest event.
  int64_t event_log_end_ms = 0;
  // Leave out (and count in LabelStats::unknown_users) the records of users without an
  // event in the event log. For a real log, which is the record of what its users did:
  // a user it does not know (a hashed or empty user id, a user of another system) has
  // interactions it does not hold, and their shown items would all look not clicked.
  bool known_users_only = false;
};

struct LabelStats {
  int64_t records = 0;
  int64_t shown = 0;          // items in the records used
  int64_t clicked = 0;
  int64_t not_clicked = 0;
  int64_t open = 0;           // window not over (clicked or not): left out
  int64_t digest_only = 0;    // records without their events: left out
  int64_t unknown_users = 0;  // records of users the event log does not know (known_users_only): left out
  int64_t skipped_events = 0; // record events naming neither an id nor a numeric key
};

// Every record of every impression file in `dir` (complete and still written ones; a
// file's truncated tail is skipped; a file closed while this lists or reads it is read
// once, under its complete name), oldest file first. Errors name the file.
absl::StatusOr<std::vector<v1::Impression>> ReadImpressionLog(const std::string& dir);

// Labels `records` (in log order) with `event_log` (any order; may be empty). Slates come
// back by time; slates without a labelled item are left out. InvalidArgument for a
// window that is not positive.
absl::StatusOr<std::vector<ServedSlate>> LabelImpressions(const std::vector<v1::Impression>& records,
                                                          const std::vector<LoggedEvent>& event_log,
                                                          const LabelOptions& options, LabelStats* stats);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_IMPRESSION_LABELS_H_
