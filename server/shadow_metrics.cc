#include "server/shadow_metrics.h"

#include <string>

namespace recserve {

ShadowMetrics::ShadowMetrics(prometheus::Registry& registry) {
  auto& jobs = prometheus::BuildCounter()
                   .Name("recserve_shadow_jobs_total")
                   .Help("Requests sampled for the shadow version, by outcome: scored; dropped (its queue "
                         "was full or busy); failed (its pipeline returned an error).")
                   .Register(registry);
  scored_ = &jobs.Add({{"result", "scored"}});
  dropped_ = &jobs.Add({{"result", "dropped"}});
  failed_ = &jobs.Add({{"result", "failed"}});
  topk_overlap_ = &prometheus::BuildHistogram()
                       .Name("recserve_shadow_topk_overlap")
                       .Help("Per scored request, the share of the served top-n the shadow version also "
                             "returned (1: the same items).")
                       .Register(registry)
                       .Add({}, prometheus::Histogram::BucketBoundaries{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                                        0.8, 0.9, 0.95, 0.999});
  score_psi_ = &prometheus::BuildGauge()
                    .Name("recserve_shadow_score_psi")
                    .Help("Population stability index of the shadow version's answer scores against the "
                          "served ones (0: same distribution; > 0.25: a different model).")
                    .Register(registry);
}

void ShadowMetrics::Observe(const ShadowJobResult& job) {
  switch (job.outcome) {
    case ShadowJobResult::kDropped:
      dropped_->Increment();
      return;
    case ShadowJobResult::kFailed:
      failed_->Increment();
      return;
    case ShadowJobResult::kScored:
      break;
  }
  scored_->Increment();
  topk_overlap_->Observe(job.topk_overlap);
  if (psi_child_ == nullptr || psi_version_ != job.shadow_version) {
    if (psi_child_ != nullptr) score_psi_->Remove(psi_child_);
    psi_child_ = &score_psi_->Add({{"version", std::to_string(job.shadow_version)}});
    psi_version_ = job.shadow_version;
  }
  psi_child_->Set(job.score_psi);
}

}  // namespace recserve
