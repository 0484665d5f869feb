#include "server/log_rate_limiter.h"

namespace recserve {

bool LogRateLimiter::Allow(absl::Time now, int64_t* held_back) {
  MutexLock lock(&mu_);
  if (now < next_allowed_) {
    ++held_back_;
    return false;
  }
  next_allowed_ = now + interval_;
  *held_back = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace recserve
