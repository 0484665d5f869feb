#include "train/click_truth.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace recserve {

absl::StatusOr<WorldWithTruth> ReadWorldWithTruth(const std::string& dir) {
  WorldWithTruth out;
  ASSIGN_OR_RETURN(out.world, ReadWorld(dir));
  ASSIGN_OR_RETURN(WorldOptions options, WorldOptionsFromParams(out.world.params));
  const World regenerated = GenerateWorld(options, &out.truth);
  if (regenerated.train_events.size() != out.world.train_events.size() ||
      regenerated.train_impressions.size() != out.world.train_impressions.size()) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": its world.txt does not regenerate its events"));
  }
  return out;
}

std::vector<double> ExaminationCurve(int n, double position_decay) {
  std::vector<double> examination(std::max(n, 0));
  for (int k = 0; k < n; ++k) examination[k] = std::pow(1.0 + k, -position_decay);
  return examination;
}

ListScore ScoreList(const ClickModel& truth, absl::Span<const double> examination, uint64_t user,
                    absl::Span<const uint64_t> items, const RequestContext& context) {
  ListScore score;
  for (size_t k = 0; k < items.size() && k < examination.size(); ++k) {
    const double p = truth.Probability(user, items[k], context.device, context.hour);
    score.expected_clicks += examination[k] * p;
    score.mean_p += p / examination.size();
  }
  return score;
}

absl::StatusOr<std::vector<uint64_t>> AnswerItems(const Model& model, absl::Span<const QueryEvent> events,
                                                  const RequestContext& context, int n,
                                                  PipelineScratch* scratch) {
  RecommendQuery query;
  query.events = events;
  query.context = context;
  query.n = n;
  RecommendResult result;
  RETURN_IF_ERROR(Recommend(model, query, scratch, &result));
  std::vector<uint64_t> items;
  items.reserve(result.items.size());
  for (const RecommendedItem& item : result.items) items.push_back(item.item_id);
  return items;
}

}  // namespace recserve
