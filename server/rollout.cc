#include "server/rollout.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace recserve {
namespace {

absl::Status Bad(absl::string_view what, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", why));
}

absl::Status CheckRules(const RolloutRules& r, absl::string_view prefix) {
  const struct {
    const char* name;
    double value;
  } limits[] = {{"max_error_ratio", r.max_error_ratio},
                {"max_p99_ratio", r.max_p99_ratio},
                {"max_score_psi", r.max_score_psi}};
  for (const auto& l : limits) {
    if (!(l.value >= 0) || !std::isfinite(l.value)) {
      return Bad(absl::StrCat(prefix, l.name), absl::StrCat(l.value, " is not a finite limit >= 0 (0: off)"));
    }
  }
  if (!(r.error_floor >= 0 && r.error_floor <= 1)) {
    return Bad(absl::StrCat(prefix, "error_floor"), absl::StrCat(r.error_floor, " is outside [0, 1]"));
  }
  if (!(r.min_topk_overlap >= 0 && r.min_topk_overlap <= 1)) {
    return Bad(absl::StrCat(prefix, "min_topk_overlap"), absl::StrCat(r.min_topk_overlap, " is outside [0, 1]"));
  }
  if (r.min_requests < 0) {
    return Bad(absl::StrCat(prefix, "min_requests"), absl::StrCat(r.min_requests, " is negative"));
  }
  if (r.window < absl::ZeroDuration() || r.window > absl::Hours(24 * 7)) {
    return Bad(absl::StrCat(prefix, "window"), absl::StrCat(absl::FormatDuration(r.window), " is outside [0, 168h]"));
  }
  return absl::OkStatus();
}

std::string Percent(double rate) { return absl::StrFormat("%.2f%%", 100 * rate); }
std::string Millis(absl::Duration d) { return absl::StrFormat("%.2f ms", absl::ToDoubleMilliseconds(d)); }

void FillSide(const RolloutStats::Snapshot& s, v1::RolloutSide* side) {
  side->set_calls(s.calls);
  side->set_errors(s.errors);
  side->set_p99_ms(absl::ToDoubleMilliseconds(s.LatencyQuantile(0.99)));
  side->set_scores(s.score_count());
}

}  // namespace

absl::StatusOr<RolloutMode> ParseRolloutMode(absl::string_view name) {
  if (name == "immediate") return RolloutMode::kImmediate;
  if (name == "canary") return RolloutMode::kCanary;
  if (name == "shadow") return RolloutMode::kShadow;
  return absl::InvalidArgumentError(
      absl::StrCat("'", name, "' is not a roll-out mode (immediate, canary or shadow)"));
}

const char* RolloutModeName(RolloutMode mode) {
  switch (mode) {
    case RolloutMode::kCanary:
      return "canary";
    case RolloutMode::kShadow:
      return "shadow";
    case RolloutMode::kImmediate:
      break;
  }
  return "immediate";
}

std::string RolloutRules::Describe() const {
  std::string out;
  auto add = [&out](const std::string& rule) { absl::StrAppend(&out, out.empty() ? "" : ", ", rule); };
  if (max_error_ratio > 0) add(absl::StrFormat("error <= %gx serving (floor %s)", max_error_ratio, Percent(error_floor)));
  if (max_p99_ratio > 0) add(absl::StrFormat("p99 <= %gx", max_p99_ratio));
  if (max_score_psi > 0) add(absl::StrFormat("score PSI <= %g", max_score_psi));
  if (min_topk_overlap > 0) add(absl::StrFormat("top-k overlap >= %g", min_topk_overlap));
  if (out.empty()) out = "no rules";
  absl::StrAppendFormat(&out, "; after >= %d calls, promoted after %s", min_requests, absl::FormatDuration(window));
  return out;
}

absl::Status CheckShare(RolloutMode mode, double share, absl::string_view what) {
  if (mode == RolloutMode::kCanary && !(share > 0 && share < 1)) {
    return Bad(what, absl::StrCat(share, " is not a canary share, in (0, 1) (serving keeps the rest to compare with)"));
  }
  if (mode == RolloutMode::kShadow && !(share > 0 && share <= 1)) {
    return Bad(what, absl::StrCat(share, " is not a shadow share, in (0, 1]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRolloutOptions(const RolloutOptions& o) {
  // Checked with --rollout=immediate too: SetRollout and manifests take it as their default.
  const RolloutMode as = o.mode == RolloutMode::kShadow ? RolloutMode::kShadow : RolloutMode::kCanary;
  if (absl::Status s = CheckShare(as, o.share, "--canary_share"); !s.ok()) return s;
  return CheckRules(o.rules, "--rollout_");
}

absl::StatusOr<RolloutOptions> ResolveRollout(const RolloutOptions& defaults, const v1::RolloutSpec& spec) {
  RolloutOptions o = defaults;
  if (!spec.mode().empty()) {
    absl::StatusOr<RolloutMode> mode = ParseRolloutMode(spec.mode());
    if (!mode.ok()) return Bad("rollout.mode", std::string(mode.status().message()));
    o.mode = *mode;
  }
  if (spec.has_share()) {
    if (!(spec.share() > 0 && spec.share() <= 1)) return Bad("rollout.share", absl::StrCat(spec.share(), " is outside (0, 1]"));
    o.share = spec.share();
  }
  if (o.mode != RolloutMode::kImmediate) {
    if (absl::Status s = CheckShare(o.mode, o.share, "rollout.share"); !s.ok()) return s;
  }
  const v1::RolloutRulesSpec& r = spec.rules();
  if (r.has_max_error_ratio()) o.rules.max_error_ratio = r.max_error_ratio();
  if (r.has_error_floor()) o.rules.error_floor = r.error_floor();
  if (r.has_max_p99_ratio()) o.rules.max_p99_ratio = r.max_p99_ratio();
  if (r.has_max_score_psi()) o.rules.max_score_psi = r.max_score_psi();
  if (r.has_min_topk_overlap()) o.rules.min_topk_overlap = r.min_topk_overlap();
  if (r.has_min_requests()) o.rules.min_requests = r.min_requests();
  if (r.has_window_seconds()) {
    if (!std::isfinite(r.window_seconds())) return Bad("rollout.rules.window_seconds", "is not finite");
    o.rules.window = absl::Seconds(r.window_seconds());
  }
  if (absl::Status s = CheckRules(o.rules, "rollout.rules."); !s.ok()) return s;
  return o;
}

RolloutVerdict JudgeRollout(const RolloutRules& rules, absl::string_view side,
                            const RolloutStats::Snapshot& canary, const RolloutStats::Snapshot& serving,
                            absl::Duration observed, v1::RolloutStatus* status) {
  FillSide(canary, status->mutable_canary());
  FillSide(serving, status->mutable_serving());
  status->set_observed_seconds(absl::ToDoubleSeconds(observed));
  status->set_overlap_samples(canary.overlap_samples);
  RolloutVerdict verdict;
  if (canary.calls < rules.min_requests || serving.calls < rules.min_requests) {
    verdict.reason = absl::StrFormat("observing: %d of %d calls on the %s, %d on serving", canary.calls,
                                     rules.min_requests, side, serving.calls);
    return verdict;
  }
  const std::string counts = absl::StrFormat("(%s %d calls, serving %d)", side, canary.calls, serving.calls);
  const double error_base = std::max(serving.error_rate(), rules.error_floor);
  const double error_ratio = error_base > 0 ? canary.error_rate() / error_base : 0;
  const absl::Duration canary_p99 = canary.LatencyQuantile(0.99), serving_p99 = serving.LatencyQuantile(0.99);
  const double p99_ratio = serving_p99 > absl::ZeroDuration() ? canary_p99 / serving_p99 : 0;
  const double psi = ScorePsi(canary, serving);
  const double overlap = canary.overlap_samples > 0 ? canary.overlap_sum / canary.overlap_samples : 0;
  status->set_error_ratio(error_ratio);
  status->set_p99_ratio(p99_ratio);
  status->set_score_psi(psi);
  status->set_topk_overlap(overlap);

  verdict.kind = RolloutVerdict::Kind::kRollBack;
  if (rules.max_error_ratio > 0 && error_ratio > rules.max_error_ratio) {
    verdict.reason = absl::StrFormat("error rate %s is %.1fx serving's %s (floor %s) > %gx %s",
                                     Percent(canary.error_rate()), error_ratio, Percent(serving.error_rate()),
                                     Percent(rules.error_floor), rules.max_error_ratio, counts);
    return verdict;
  }
  if (rules.max_p99_ratio > 0 && p99_ratio > rules.max_p99_ratio) {
    verdict.reason = absl::StrFormat("p99 latency %.1fx serving's (%s vs %s) > %gx %s", p99_ratio, Millis(canary_p99),
                                     Millis(serving_p99), rules.max_p99_ratio, counts);
    return verdict;
  }
  if (rules.max_score_psi > 0 && psi > rules.max_score_psi) {
    verdict.reason = absl::StrFormat("score drift PSI %.3f > %g (%d %s scores, %d serving) %s", psi,
                                     rules.max_score_psi, canary.score_count(), side, serving.score_count(), counts);
    return verdict;
  }
  if (rules.min_topk_overlap > 0 && canary.overlap_samples > 0 && overlap < rules.min_topk_overlap) {
    verdict.reason = absl::StrFormat("top-k overlap %.3f < %g over %d samples %s", overlap, rules.min_topk_overlap,
                                     canary.overlap_samples, counts);
    return verdict;
  }
  if (observed < rules.window) {
    verdict.kind = RolloutVerdict::Kind::kObserving;
    verdict.reason = absl::StrFormat("observing: every rule holds, %s of the %s window left %s",
                                     absl::FormatDuration(absl::Trunc(rules.window - observed, absl::Seconds(1))),
                                     absl::FormatDuration(rules.window), counts);
    return verdict;
  }
  verdict.kind = RolloutVerdict::Kind::kPromote;
  verdict.reason = absl::StrFormat("every rule held for %s %s", absl::FormatDuration(rules.window), counts);
  return verdict;
}

}  // namespace recserve
