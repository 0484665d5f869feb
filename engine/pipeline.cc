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

// Appends the items next(i, &item, &score, &sources) gives for i = 0 .. count - 1 (false:
// skip i) to result->items until it holds query.n, at most per_category_cap per category.
template <typename Next>
void TakeInOrder(const Catalog& catalog, const RecommendQuery& query, int count, Next next,
                 PipelineScratch* s, RecommendResult* result) {
  result->items.reserve(query.n);
  for (int i = 0; i < count && static_cast<int>(result->items.size()) < query.n; ++i) {
    int32_t item;
    float score;
    uint32_t sources;
    if (!next(i, &item, &score, &sources)) continue;
    const int32_t category = catalog.category(item);
    if (query.per_category_cap > 0 && ++s->per_category[category] > query.per_category_cap) continue;
    result->items.push_back({catalog.id(item), score, sources, category});
  }
  // A category is over its cap only after one of its items was taken: zeroing the taken
  // items' categories leaves every count at zero for the next call.
  if (query.per_category_cap > 0) {
    for (const RecommendedItem& it : result->items) s->per_category[it.category] = 0;
  }
}

// Degraded::kPopularity: the catalog's most popular items, less the consumed (events of
// `exclude_types`) and the excluded ones (s->excluded, which this sorts and extends).
void AnswerByPopularity(const Catalog& catalog, const RecommendQuery& query, uint32_t exclude_types,
                        PipelineScratch* s, RecommendResult* result) {
  for (const UserEvent& e : s->events) {
    if (EventTypeBit(e.type) & exclude_types) s->excluded.push_back(e.item);
  }
  std::sort(s->excluded.begin(), s->excluded.end());
  const std::vector<int32_t>& popular = catalog.by_popularity();
  TakeInOrder(
      catalog, query, static_cast<int>(popular.size()),
      [&](int i, int32_t* item, float* score, uint32_t* sources) {
        *item = popular[i];
        *score = 0.f;
        *sources = kFromPopularity;
        return !std::binary_search(s->excluded.begin(), s->excluded.end(), *item);
      },
      s, result);
}

// How many of recall's `n` candidates, best of recall's order first, the time left
// affords to rank: n, fewer but at least the `want` the answer needs, or none.
int CandidatesToRank(int n, int want, absl::Duration left, absl::Duration per_candidate) {
  if (per_candidate <= absl::ZeroDuration() || left == absl::InfiniteDuration()) return n;
  const double affordable = absl::FDivDuration(left, per_candidate);
  if (affordable >= n) return n;
  return affordable >= std::max(want, 1) ? static_cast<int>(affordable) : 0;
}

}  // namespace

const char* DegradedName(Degraded degraded) {
  switch (degraded) {
    case Degraded::kNone: return "none";
    case Degraded::kFewerCandidates: return "fewer_candidates";
    case Degraded::kRecallOrder: return "recall_order";
    case Degraded::kPopularity: return "popularity";
  }
  return "none";
}

absl::Status Recommend(const Model& model, const RecommendQuery& query, PipelineScratch* s,
                       RecommendResult* result) {
  const absl::Time t0 = absl::Now();
  result->items.clear();
  result->candidates = 0;
  result->ranked = 0;
  result->degraded = Degraded::kNone;
  for (int& c : result->candidates_by_source) c = 0;
  result->unknown_items = 0;
  result->non_finite_scores = 0;
  result->seconds = StageSeconds();
  // The plan: every stage unless the deadline's time left cannot afford it by the
  // version's measured costs. Refused before any work when even popularity does not fit.
  StageCosts& costs = model.stage_costs();
  StageCosts* const record = query.record_stage_costs ? &costs : nullptr;
  const StageEstimates estimates = query.estimates != nullptr ? *query.estimates : costs.Estimates(t0);
  const absl::Duration left = query.deadline - t0;
  if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("deadline passed before recall");
  if (left < estimates.prepare) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "deadline: %s left, less than the %s even the popularity answer takes; refused before recall",
        absl::FormatDuration(left), absl::FormatDuration(estimates.prepare)));
  }
  PrepareScratch(model, s);
  // A version's first request on this scratch sizes its buffers: not part of the stage.
  const absl::Time prepare_start = absl::Now();
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
  RecallOptions recall = model.recall_options();
  if (query.exclude_types >= 0) recall.exclude_types = static_cast<uint32_t>(query.exclude_types);
  s->excluded.clear();
  for (uint64_t id : query.exclude_items) {
    const int32_t item = catalog.Find(id);
    if (item >= 0) s->excluded.push_back(item);
  }
  const absl::Time prepared = absl::Now();
  if (record) record->Record(StageCosts::kPrepare, prepared - prepare_start, prepared);
  if (query.deadline - prepared < estimates.recall) {
    result->degraded = Degraded::kPopularity;
    AnswerByPopularity(catalog, query, recall.exclude_types, s, result);
    result->seconds.total = absl::ToDoubleSeconds(absl::Now() - t0);
    return absl::OkStatus();
  }

  BuildUserState(catalog, model.covisit(), model.manifest().user_model(), s->events, &s->user);
  model.recaller().Recall(s->user, recall, &s->recall, &s->candidates, s->excluded);
  const int recalled = static_cast<int>(s->candidates.size());
  result->candidates = recalled;
  for (const Candidate& c : s->candidates) {
    result->candidates_by_source[0] += (c.sources & kFromEmbedding) != 0;
    result->candidates_by_source[1] += (c.sources & kFromCovisit) != 0;
    result->candidates_by_source[2] += (c.sources & kFromPopularity) != 0;
  }
  const absl::Time t1 = absl::Now();
  if (record) record->Record(StageCosts::kRecall, t1 - prepared, t1);
  result->seconds.recall = absl::ToDoubleSeconds(t1 - t0);

  const int n = CandidatesToRank(recalled, std::min(query.n, recalled), query.deadline - t1,
                                 estimates.rank_per_candidate);
  if (n == 0 && recalled > 0) {
    result->degraded = Degraded::kRecallOrder;
    TakeInOrder(
        catalog, query, recalled,
        [&](int i, int32_t* item, float* score, uint32_t* sources) {
          *item = s->candidates[i].item;
          *score = 0.f;
          *sources = s->candidates[i].sources;
          return true;
        },
        s, result);
    result->seconds.total = absl::ToDoubleSeconds(absl::Now() - t0);
    return absl::OkStatus();
  }
  // Recall's order puts its best sources first: the affordable prefix is the best it has.
  if (n < recalled) {
    result->degraded = Degraded::kFewerCandidates;
    s->candidates.resize(n);
  }
  result->ranked = n;

  s->items.clear();
  for (const Candidate& c : s->candidates) s->items.push_back(c.item);
  model.features().Build(catalog, s->user, query.context, s->items, s->rows.data());
  const absl::Time t2 = absl::Now();
  result->seconds.features = absl::ToDoubleSeconds(t2 - t1);

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
  TakeInOrder(
      catalog, query, n,
      [&](int i, int32_t* item, float* score, uint32_t* sources) {
        const int32_t c = s->order[i];
        *item = s->candidates[c].item;
        *score = s->scores[c];
        *sources = s->candidates[c].sources;
        return true;
      },
      s, result);
  const absl::Time end = absl::Now();
  if (n > 0 && record) record->Record(StageCosts::kRankPerCandidate, (end - t1) / n, end);
  result->seconds.total = absl::ToDoubleSeconds(end - t0);
  return absl::OkStatus();
}

}  // namespace recserve
