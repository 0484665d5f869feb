#include "server/version_loader.h"

#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/pipeline.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

// A few hundred requests from the catalog's own items, so the first real request finds
// pages touched, caches warm and every code path exercised.
absl::Status WarmUp(const Model& model, int requests, const std::atomic<bool>& cancelled) {
  PipelineScratch scratch;
  RecommendResult result;
  const std::vector<int32_t>& popular = model.catalog().by_popularity();
  std::vector<QueryEvent> events;
  for (int r = 0; r < requests; ++r) {
    if (cancelled.load(std::memory_order_relaxed)) return absl::CancelledError("shutting down");
    events.clear();
    const int count = r % 10;  // includes cold users
    for (int e = 0; e < count; ++e) {
      const int32_t item = popular[(static_cast<size_t>(r) * 7919 + e * 104729) % popular.size()];
      events.push_back({model.catalog().id(item), static_cast<EventType>(1 + (r + e) % 4),
                        1700000000000 + int64_t{e} * 60000});
    }
    RecommendQuery q;
    q.events = events;
    q.n = 10;
    q.context = {r % 4, r % 24};
    RETURN_IF_ERROR(Recommend(model, q, &scratch, &result));
    // Serving would answer these with the lowest score; a version that produces them on
    // its own catalog's items is refused instead.
    if (result.non_finite_scores > 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "warm-up request %d (%d events): %d of %d candidate scores are not finite; the ranker's arithmetic "
          "overflows on this version's values",
          r, count, result.non_finite_scores, result.candidates));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> VersionLoader::Load(int64_t version, const std::string& path,
                                                                 v1::ModelFigures* figures) const {
  if (cancelled_.load()) return absl::CancelledError("shutting down");
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> model, Model::Load(path, version, options_.model_options));
  figures->set_parameters(model->fp32_mlp().ParameterCount());
  figures->set_fp32_bytes(model->fp32_mlp().ParameterCount() * 4);
  figures->set_served_bytes(model->ranker().weight_bytes());
  figures->set_compression(model->ranker().kind());
  figures->set_items(model->catalog().size());
  figures->set_embedding_index(model->index().name());
  figures->set_index_recall(model->index_recall());
  *figures->mutable_training() = model->manifest().training();
  if (options_.check) RETURN_IF_ERROR(options_.check(*model, figures));
  if (!figures->compression_fallback_reason().empty()) {
    // The accuracy gate refused the asked compression (or its first int8 ranges) and the
    // fallback chain found another form: say so where operators look first.
    std::fprintf(stderr, "recserve: version %lld: compression %s (%s ranges), asked %s; refused: %s\n",
                 static_cast<long long>(version), figures->compression().c_str(),
                 figures->int8_calibration().empty() ? "no int8" : figures->int8_calibration().c_str(),
                 figures->compression_requested().c_str(), figures->compression_fallback_reason().c_str());
  }
  if (cancelled_.load()) return absl::CancelledError("shutting down");
  RETURN_IF_ERROR(WarmUp(*model, options_.warmup_requests, cancelled_));
  if (options_.before_publish) options_.before_publish(*model);
  return model;
}

}  // namespace recserve
