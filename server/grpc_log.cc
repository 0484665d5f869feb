#include "server/grpc_log.h"

#include <grpc/support/log.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/log_rate_limiter.h"
#include "server/sync.h"

namespace recserve {
namespace {

// One limiter per place in gRPC's code (its file name is a string literal, so the
// pointer names it); there are finitely many, so the map stays small.
class GrpcErrorLines {
 public:
  LogRateLimiter* For(const char* file, int line) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    std::unique_ptr<LogRateLimiter>& limiter = limiters_[std::make_pair(file, line)];
    if (limiter == nullptr) limiter = std::make_unique<LogRateLimiter>(absl::Seconds(1));
    return limiter.get();
  }

 private:
  Mutex mu_;
  absl::flat_hash_map<std::pair<const char*, int>, std::unique_ptr<LogRateLimiter>> limiters_
      ABSL_GUARDED_BY(mu_);
};

void WriteGrpcLine(gpr_log_func_args* args) {
  static GrpcErrorLines* const error_lines = new GrpcErrorLines();
  const absl::Time now = absl::Now();
  int64_t held_back = 0;
  if (args->severity == GPR_LOG_SEVERITY_ERROR &&
      !error_lines->For(args->file, args->line)->Allow(now, &held_back)) {
    return;
  }
  const char* slash = args->file != nullptr ? std::strrchr(args->file, '/') : nullptr;
  const char* file = slash != nullptr ? slash + 1 : (args->file != nullptr ? args->file : "?");
  const std::string more =
      held_back > 0 ? absl::StrFormat(" (and %d more from here since the last such line)", held_back) : "";
  std::fprintf(stderr, "%s %s %s:%d] %s%s\n", gpr_log_severity_string(args->severity),
               absl::FormatTime("%Y-%m-%dT%H:%M:%E6S", now, absl::UTCTimeZone()).c_str(), file, args->line,
               args->message, more.c_str());
}

}  // namespace

void InstallRateLimitedGrpcLog() { gpr_set_log_function(&WriteGrpcLine); }

}  // namespace recserve
