// Command-line flags shared by recserve-train and recserve-eval for real logs: which
// file, how to read it, and how to split it. Both tools split the same log the same way
// from the same flags, and the trainer records the result (SplitInput::data_source) in
// the manifest so that recserve-eval can refuse a bundle trained on its test users.
#ifndef RECSERVE_TRAIN_SPLIT_FLAGS_H_
#define RECSERVE_TRAIN_SPLIT_FLAGS_H_

#include <string>

#include "absl/status/statusor.h"
#include "train/eval.h"
#include "train/event_log.h"

namespace recserve {

struct SplitInput {
  EventLog log;
  LogSplit split;  // with --split=none: every event trains, no cases
  // "<file name> sha256:<12 hex of the file> <split description>"
  std::string data_source;
};

// Whether --events_csv was given.
bool EventsCsvFlagSet();

// Reads --events_csv with the reader flags and splits it by the split flags.
absl::StatusOr<SplitInput> ReadSplitFromFlags();

// The trainer's input from a read log: `train_events` (sorted by time) as the world's
// training events, the items they name (category 0, no dense features), their keys.
World WorldFromLog(EventLog log, std::vector<LoggedEvent> train_events, const std::string& data_source);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_SPLIT_FLAGS_H_
