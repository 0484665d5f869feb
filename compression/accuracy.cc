#include "compression/accuracy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/quality.h"

namespace recserve {

std::string AccuracyReport::ToString() const {
  return absl::StrFormat(
      "AUC fp32 %.5f served %.5f (delta %+.5f); logloss fp32 %.5f served %.5f (delta %+.5f); "
      "top-%d changed in %.2f%% of %d slates; |dp| mean %.4f max %.4f over %d rows",
      fp32_auc, served_auc, auc_delta, fp32_logloss, served_logloss, logloss_delta, top_n,
      100 * topn_changed, groups, mean_abs_diff, max_abs_diff, rows);
}

AccuracyReport CompareScores(absl::Span<const float> fp32, absl::Span<const float> served,
                             absl::Span<const float> labels, absl::Span<const int64_t> groups,
                             int top_n) {
  int non_finite = 0;
  for (size_t i = 0; i < fp32.size(); ++i) non_finite += !std::isfinite(fp32[i]) || !std::isfinite(served[i]);
  if (non_finite > 0) {
    // NaN breaks the ordering the AUC and top-n sorts need: measure copies with 0 instead.
    auto finite = [](absl::Span<const float> scores) {
      std::vector<float> out(scores.begin(), scores.end());
      for (float& p : out) p = std::isfinite(p) ? p : 0.f;
      return out;
    };
    const std::vector<float> fp32_copy = finite(fp32), served_copy = finite(served);
    AccuracyReport r = CompareScores(fp32_copy, served_copy, labels, groups, top_n);
    r.non_finite = non_finite;
    return r;
  }
  AccuracyReport r;
  r.rows = static_cast<int>(fp32.size());
  r.top_n = top_n;
  r.fp32_auc = Auc(fp32, labels);
  r.served_auc = Auc(served, labels);
  r.fp32_logloss = LogLoss(fp32, labels);
  r.served_logloss = LogLoss(served, labels);
  r.auc_delta = r.served_auc - r.fp32_auc;
  r.logloss_delta = r.served_logloss - r.fp32_logloss;
  for (size_t i = 0; i < fp32.size(); ++i) {
    const double d = std::abs(served[i] - fp32[i]);
    r.max_abs_diff = std::max(r.max_abs_diff, d);
    r.mean_abs_diff += d;
  }
  if (!fp32.empty()) r.mean_abs_diff /= static_cast<double>(fp32.size());
  // Slates are runs of equal group ids.
  int changed = 0;
  std::vector<size_t> a, b;
  for (size_t begin = 0; begin < groups.size();) {
    size_t end = begin;
    while (end < groups.size() && groups[end] == groups[begin]) ++end;
    const size_t n = std::min<size_t>(top_n, end - begin);
    auto top = [&](absl::Span<const float> s, std::vector<size_t>* out) {
      out->resize(end - begin);
      std::iota(out->begin(), out->end(), begin);
      std::partial_sort(out->begin(), out->begin() + n, out->end(),
                        [&](size_t x, size_t y) { return s[x] != s[y] ? s[x] > s[y] : x < y; });
      out->resize(n);
      std::sort(out->begin(), out->end());
    };
    top(fp32, &a);
    top(served, &b);
    changed += a != b;
    ++r.groups;
    begin = end;
  }
  r.topn_changed = r.groups ? static_cast<double>(changed) / r.groups : 0.0;
  return r;
}

absl::Status CheckGate(const AccuracyReport& r, const v1::AccuracyGate& gate) {
  if (r.non_finite > 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "accuracy gate: %d of %d calibration rows scored NaN or infinity (the ranker's arithmetic overflows); %s",
        r.non_finite, r.rows, r.ToString()));
  }
  const bool auc_ok = -r.auc_delta <= gate.max_auc_drop();
  const bool logloss_ok = r.logloss_delta <= gate.max_logloss_rise();
  if (auc_ok && logloss_ok) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrFormat(
      "accuracy gate: AUC dropped by %.5f (limit %.5f), logloss rose by %.5f (limit %.5f); %s",
      -r.auc_delta, gate.max_auc_drop(), r.logloss_delta, gate.max_logloss_rise(), r.ToString()));
}

std::string GateFailure(const AccuracyReport& r, const v1::AccuracyGate& gate) {
  if (r.non_finite > 0) return absl::StrFormat("rows scored NaN or infinity: %d", r.non_finite);
  std::string out;
  if (!(-r.auc_delta <= gate.max_auc_drop())) {
    out = absl::StrFormat("AUC drop %.4f > %g", -r.auc_delta, gate.max_auc_drop());
  }
  if (!(r.logloss_delta <= gate.max_logloss_rise())) {
    absl::StrAppendFormat(&out, "%slogloss rise %.4f > %g", out.empty() ? "" : ", ", r.logloss_delta,
                          gate.max_logloss_rise());
  }
  return out;
}

}  // namespace recserve
