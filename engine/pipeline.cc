#include "engine/pipeline.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

void PrepareScratch(const Model& model, PipelineScratch* s) {
  if (s->model_id == model.id()) return;
  // A new version may reuse a freed version's addresses: start the per-catalog parts
  // afresh instead of letting them recognise an old catalog by its address.
  s->user = UserState();
  s->recall = RecallScratch();
  const int max_candidates = std::max(model.recall_options().max_candidates, 1);
  const int padded = model.ranker().PaddedRows(max_candidates);
  s->rows.assign(static_cast<size_t>(padded) * model.features().width(), 0.f);
  s->scores.assign(padded, 0.f);
  s->candidates.reserve(max_candidates);
  s->items.reserve(max_candidates);
  s->order.reserve(max_candidates);
  s->per_category.assign(model.catalog().num_categories(), 0);
  s->events.reserve(model.manifest().user_model().max_events() * 4 + 64);
  s->ranker = model.ranker().NewScratch();
  s->user.Prepare(model.catalog());
  s->model_id = model.id();
}

absl::Status CheckDeadline(const RecommendQuery& q, const char* stage) {
  if (absl::Now() > q.deadline) {
    return absl::DeadlineExceededError(absl::StrFormat("deadline passed before %s", stage));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Recommend(const Model& model, const RecommendQuery& query, PipelineScratch* s,
                       RecommendResult* result) {
  const absl::Time t0 = absl::Now();
  result->items.clear();
  result->candidates = 0;
  result->unknown_items = 0;
  result->non_finite_scores = 0;
  result->seconds = StageSeconds();
  RETURN_IF_ERROR(CheckDeadline(query, "recall"));
  PrepareScratch(model, s);
  const Catalog& catalog = model.catalog();

  // Events -> catalog indices; unknown items are skipped and counted.
  s->events.clear();
  for (const QueryEvent& e : query.events) {
    const int32_t item = catalog.Find(e.item_id);
    if (item < 0) {
      ++result->unknown_items;
      continue;
    }
    s->events.push_back({item, e.type, e.timestamp_ms});
  }
  BuildUserState(catalog, model.covisit(), model.manifest().user_model(), s->events, &s->user);
  RecallOptions recall = model.recall_options();
  if (query.exclude_types >= 0) recall.exclude_types = static_cast<uint32_t>(query.exclude_types);
  s->excluded.clear();
  for (uint64_t id : query.exclude_items) {
    const int32_t item = catalog.Find(id);
    if (item >= 0) s->excluded.push_back(item);
  }
  model.recaller().Recall(s->user, recall, &s->recall, &s->candidates, s->excluded);
  const int n = static_cast<int>(s->candidates.size());
  result->candidates = n;
  for (int i = 0; i < 3; ++i) result->candidates_by_source[i] = 0;
  for (const Candidate& c : s->candidates) {
    result->candidates_by_source[0] += (c.sources & kFromEmbedding) != 0;
    result->candidates_by_source[1] += (c.sources & kFromCovisit) != 0;
    result->candidates_by_source[2] += (c.sources & kFromPopularity) != 0;
  }
  const absl::Time t1 = absl::Now();
  result->seconds.recall = absl::ToDoubleSeconds(t1 - t0);

  RETURN_IF_ERROR(CheckDeadline(query, "features"));
  s->items.clear();
  for (const Candidate& c : s->candidates) s->items.push_back(c.item);
  model.features().Build(catalog, s->user, query.context, s->items, s->rows.data());
  const absl::Time t2 = absl::Now();
  result->seconds.features = absl::ToDoubleSeconds(t2 - t1);

  RETURN_IF_ERROR(CheckDeadline(query, "rank"));
  if (n > 0) RETURN_IF_ERROR(model.ranker().Score(s->rows.data(), n, s->scores.data(), s->ranker.get()));
  // Features are finite (value_limits.h), but a ranker's arithmetic can still overflow
  // to NaN: such a score becomes 0, the lowest probability, so the sort below compares
  // numbers only (NaN breaks its ordering) and the answer carries none.
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(s->scores[i])) {
      s->scores[i] = 0.f;
      ++result->non_finite_scores;
    }
  }
  const absl::Time t3 = absl::Now();
  result->seconds.rank = absl::ToDoubleSeconds(t3 - t2);

  // Top-n, best first (ties by smaller item index), at most per_category_cap per category;
  // without a cap, the last floor(recent_share * n) slots go to the rest's most recently
  // popular candidates (manifest answer.recent_share).
  s->order.resize(n);
  for (int i = 0; i < n; ++i) s->order[i] = i;
  auto better = [&](int32_t a, int32_t b) {
    if (s->scores[a] != s->scores[b]) return s->scores[a] > s->scores[b];
    return s->candidates[a].item < s->candidates[b].item;
  };
  const int want = std::min(query.n, n);
  const std::vector<float>& recent = catalog.data().recent_popularity;
  const int tail = query.per_category_cap > 0 || recent.empty()
                       ? 0 : static_cast<int>(model.manifest().answer().recent_share() * static_cast<float>(want));
  const int head = want - tail;
  if (query.per_category_cap <= 0 && want * 4 < n) {
    std::partial_sort(s->order.begin(), s->order.begin() + head, s->order.end(), better);
  } else {
    std::sort(s->order.begin(), s->order.end(), better);
  }
  if (tail > 0) {
    auto more_recent = [&](int32_t a, int32_t b) {
      const float ra = recent[s->candidates[a].item], rb = recent[s->candidates[b].item];
      return ra != rb ? ra > rb : better(a, b);
    };
    std::partial_sort(s->order.begin() + head, s->order.begin() + want, s->order.end(), more_recent);
  }
  if (query.per_category_cap <= 0) s->order.resize(want);
  result->items.reserve(want);
  for (int32_t i : s->order) {
    if (static_cast<int>(result->items.size()) >= want) break;
    const int32_t item = s->candidates[i].item;
    if (query.per_category_cap > 0 && ++s->per_category[catalog.category(item)] > query.per_category_cap) {
      continue;
    }
    result->items.push_back({catalog.id(item), s->scores[i], s->candidates[i].sources,
                             catalog.category(item)});
  }
  if (query.per_category_cap > 0) {
    for (int32_t i : s->order) s->per_category[catalog.category(s->candidates[i].item)] = 0;
  }
  result->seconds.total = absl::ToDoubleSeconds(absl::Now() - t0);
  return absl::OkStatus();
}

}  // namespace recserve
