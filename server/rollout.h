// Roll-outs: how a newly loaded version comes to serve, and the rules that promote a
// canary or roll it back.
//
// A version arriving while another serves enters in the RolloutMode of its options:
// immediate (it serves at once, as before roll-outs existed), canary (it answers the
// users whose StableUserHash falls in its share; server/user_hash.h) or shadow (it
// scores a share of requests off the critical path). The ServingManager places it; each
// load-thread cycle JudgeRollout compares the canary's RolloutStats with the serving
// version's over the same time and says: keep observing, promote (the window has passed
// with at least min_requests and every rule holds) or roll back (a rule broke, judged
// once both sides have min_requests), naming the rule and its figures.
//
// Options come from flags (ValidateRolloutOptions at start-up) with the manifest's
// RolloutSpec laid over them per version (ResolveRollout; the bundle reader has already
// checked each field's range, engine/bundle.cc).
//
// Thread-safety: plain values and pure functions.
#ifndef RECSERVE_SERVER_ROLLOUT_H_
#define RECSERVE_SERVER_ROLLOUT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "recserve/v1/model.pb.h"
#include "recserve/v1/recommender.pb.h"
#include "server/rollout_stats.h"

namespace recserve {

enum class RolloutMode { kImmediate, kCanary, kShadow };

// "immediate", "canary", "shadow"; anything else INVALID_ARGUMENT naming the choices.
absl::StatusOr<RolloutMode> ParseRolloutMode(absl::string_view name);
const char* RolloutModeName(RolloutMode mode);

// A limit of 0 turns its rule off.
struct RolloutRules {
  // The canary's error rate may be at most this times max(serving's rate, error_floor):
  // the floor keeps a serving version with no errors from making one error a breach.
  double max_error_ratio = 2.0;
  double error_floor = 0.01;
  // The canary's p99 latency may be at most this times serving's.
  double max_p99_ratio = 2.0;
  // ScorePsi of the canary's served scores against serving's.
  double max_score_psi = 0.2;
  // Mean top-k overlap with serving, judged only when samples exist.
  double min_topk_overlap = 0.5;
  // Calls each side must have had before any rule is judged (and to be promoted).
  int64_t min_requests = 1000;
  // A canary that holds every rule this long is promoted.
  absl::Duration window = absl::Minutes(5);

  // "error <= 2x serving (floor 1%), p99 <= 2x, score PSI <= 0.2, top-k overlap >= 0.5;
  // after >= 1000 calls, promoted after 5m".
  std::string Describe() const;
};

struct RolloutOptions {
  RolloutMode mode = RolloutMode::kImmediate;
  // Canary: share of users, in (0, 1) (serving keeps the rest to be compared with);
  // shadow: share of requests scored, in (0, 1].
  double share = 0.05;
  RolloutRules rules;
};

// INVALID_ARGUMENT naming the flag and value when `options` cannot be used.
absl::Status ValidateRolloutOptions(const RolloutOptions& options);
// `defaults` with every field `spec` sets laid over it, checked (the error names the
// manifest field, e.g. "rollout.share: 1 is not a canary share, in (0, 1)").
absl::StatusOr<RolloutOptions> ResolveRollout(const RolloutOptions& defaults, const v1::RolloutSpec& spec);
// The share a canary or shadow may have: INVALID_ARGUMENT naming `what` otherwise.
absl::Status CheckShare(RolloutMode mode, double share, absl::string_view what);

struct RolloutVerdict {
  enum class Kind { kObserving, kPromote, kRollBack };
  Kind kind = Kind::kObserving;
  // kRollBack: the broken rule and its figures, e.g. "p99 latency 3.1x serving's
  // (41.2 ms vs 13.3 ms) > 2x (canary 412 calls, serving 8911)"; otherwise what the
  // verdict waits for or why it promoted.
  std::string reason;
};

// Judges `canary` against `serving` after `observed` of the roll-out, and writes the
// figures the rules read (and both sides) into `status`. `side` names the new version's
// role in the verdict text ("canary" or "shadow"); a shadow's figures are in `canary` too.
RolloutVerdict JudgeRollout(const RolloutRules& rules, absl::string_view side,
                            const RolloutStats::Snapshot& canary, const RolloutStats::Snapshot& serving,
                            absl::Duration observed, v1::RolloutStatus* status);

}  // namespace recserve

#endif  // RECSERVE_SERVER_ROLLOUT_H_
