// ShadowMetrics: the shadow comparison's Prometheus metrics, registered on the server's
// registry beside server/metrics.h's:
//   recserve_shadow_jobs_total{result="scored|dropped|failed"}  sampled requests by outcome
//   recserve_shadow_topk_overlap                                histogram of |served ∩ shadow| / k
//   recserve_shadow_score_psi{version}                           PSI of the shadow version's scores
//                                                                against the served ones
// Fed by ShadowScorerOptions::on_job. Observe is thread-safe for kDropped (a request
// worker's call: counter increments only, no allocation); kScored and kFailed come from
// the one shadow thread, which alone touches the PSI gauge's child (one per version: the
// previous version's is removed when another version is scored).
#ifndef RECSERVE_SERVER_SHADOW_METRICS_H_
#define RECSERVE_SERVER_SHADOW_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>

#include "server/shadow_scorer.h"

namespace recserve {

class ShadowMetrics {
 public:
  explicit ShadowMetrics(prometheus::Registry& registry);
  ShadowMetrics(const ShadowMetrics&) = delete;
  ShadowMetrics& operator=(const ShadowMetrics&) = delete;

  void Observe(const ShadowJobResult& job);

 private:
  prometheus::Counter* scored_;
  prometheus::Counter* dropped_;
  prometheus::Counter* failed_;
  prometheus::Histogram* topk_overlap_;
  prometheus::Family<prometheus::Gauge>* score_psi_;
  // The shadow thread's alone (see the file comment).
  prometheus::Gauge* psi_child_ = nullptr;
  int64_t psi_version_ = 0;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_SHADOW_METRICS_H_
