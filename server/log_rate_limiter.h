// LogRateLimiter: lets one log line through per interval and counts the lines it holds
// back, so a client that repeats a bad call cannot turn the server's log into an
// amplifier of its traffic. The caller writes the line (with the held-back count) when
// Allow() says so. Thread-safe; a lock taken only on the paths that log.
#ifndef RECSERVE_SERVER_LOG_RATE_LIMITER_H_
#define RECSERVE_SERVER_LOG_RATE_LIMITER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "server/sync.h"

namespace recserve {

class LogRateLimiter {
 public:
  // At most one line per `interval` (the first one always passes).
  explicit LogRateLimiter(absl::Duration interval) : interval_(interval) {}

  // Whether a line may be written at `now`. When it may, `*held_back` is set to the
  // number of lines refused since the last one allowed, and that count starts again.
  bool Allow(absl::Time now, int64_t* held_back) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Constant after construction.
  const absl::Duration interval_;
  // Protected by mu_.
  Mutex mu_;
  absl::Time next_allowed_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t held_back_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_LOG_RATE_LIMITER_H_
