#include "train/eval.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "engine/pipeline.h"

namespace recserve {
namespace {

constexpr int64_t kDayMs = 86400000;

// Every user's events in log order (time, then file order), users by id.
std::vector<std::pair<uint64_t, std::vector<LoggedEvent>>> ByUser(const std::vector<LoggedEvent>& events) {
  absl::flat_hash_map<uint64_t, size_t> slot;
  std::vector<std::pair<uint64_t, std::vector<LoggedEvent>>> users;
  for (const LoggedEvent& e : events) {
    auto [it, fresh] = slot.emplace(e.user_id, users.size());
    if (fresh) users.emplace_back(e.user_id, std::vector<LoggedEvent>());
    users[it->second].second.push_back(e);
  }
  std::sort(users.begin(), users.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return users;
}

void SortByTime(std::vector<LoggedEvent>* events) {
  std::stable_sort(events->begin(), events->end(), [](const LoggedEvent& a, const LoggedEvent& b) {
    return a.timestamp_ms != b.timestamp_ms ? a.timestamp_ms < b.timestamp_ms : a.user_id < b.user_id;
  });
}

}  // namespace

absl::StatusOr<LogSplit> SplitLog(const std::vector<LoggedEvent>& events, const SplitOptions& o) {
  if (events.empty()) return absl::InvalidArgumentError("split: the log has no events");
  if (o.min_user_events < 2) return absl::InvalidArgumentError("split: min_user_events must be >= 2");
  if (o.max_users < 0) return absl::InvalidArgumentError("split: max_users must be >= 0");
  LogSplit split;
  auto users = ByUser(events);
  // Which users are tested: all, or a seeded sample (chosen among those that qualify).
  std::vector<TestCase> cases;
  std::vector<char> held_out(users.size(), 0);
  std::vector<int64_t> user_cut(users.size(), INT64_MAX);

  if (o.protocol == "leave_last_out") {
    split.description = absl::StrFormat("leave_last_out(min_user_events=%d)", o.min_user_events);
    for (size_t u = 0; u < users.size(); ++u) {
      const std::vector<LoggedEvent>& ev = users[u].second;
      if (static_cast<int>(ev.size()) < o.min_user_events) continue;
      // The latest first occurrence: walk forward, remember each item's first index.
      absl::flat_hash_set<uint64_t> seen;
      size_t target = SIZE_MAX;
      for (size_t i = 0; i < ev.size(); ++i) {
        if (seen.insert(ev[i].item_id).second) target = i;
      }
      const int64_t cut = ev[target].timestamp_ms;
      TestCase c;
      c.user_id = users[u].first;
      c.cut_ms = cut;
      for (const LoggedEvent& e : ev) {
        if (e.timestamp_ms < cut) c.request.push_back(e);
      }
      if (c.request.empty()) continue;  // the only new items are in the first basket
      c.targets.push_back(ev[target].item_id);
      user_cut[u] = cut;
      cases.push_back(std::move(c));
    }
  } else if (o.protocol == "time") {
    int64_t first = events.front().timestamp_ms, last = events.front().timestamp_ms;
    for (const LoggedEvent& e : events) {
      first = std::min(first, e.timestamp_ms);
      last = std::max(last, e.timestamp_ms);
    }
    int64_t t = o.split_time_ms;
    if (t == 0) {
      if (!(o.time_test_fraction > 0 && o.time_test_fraction < 1)) {
        return absl::InvalidArgumentError("split: time_test_fraction must be in (0, 1)");
      }
      t = last - static_cast<int64_t>(o.time_test_fraction * static_cast<double>(last - first));
    }
    if (t <= first || t > last) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "split: time %d ms is outside the log's range (%d, %d]", t, first, last));
    }
    const int64_t horizon_end =
        o.horizon_days > 0 ? t + static_cast<int64_t>(o.horizon_days * kDayMs) : INT64_MAX;
    split.description = absl::StrFormat("time(T=%d ms, horizon_days=%g)", t, o.horizon_days);
    for (size_t u = 0; u < users.size(); ++u) {
      user_cut[u] = t;  // every user's events from T on are held out
      const std::vector<LoggedEvent>& ev = users[u].second;
      TestCase c;
      c.user_id = users[u].first;
      c.cut_ms = t;
      absl::flat_hash_set<uint64_t> history, targets;
      for (const LoggedEvent& e : ev) {
        if (e.timestamp_ms < t) {
          c.request.push_back(e);
          history.insert(e.item_id);
        } else if (e.timestamp_ms < horizon_end && !history.contains(e.item_id) &&
                   targets.insert(e.item_id).second) {
          c.targets.push_back(e.item_id);
        }
      }
      if (c.request.empty() || c.targets.empty()) continue;
      cases.push_back(std::move(c));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrFormat("split: protocol '%s' is not leave_last_out or time", o.protocol));
  }
  if (o.max_users > 0 && static_cast<int>(cases.size()) > o.max_users) {
    std::mt19937_64 rng(o.seed);
    std::shuffle(cases.begin(), cases.end(), rng);
    cases.resize(o.max_users);
    std::sort(cases.begin(), cases.end(), [](const TestCase& a, const TestCase& b) { return a.user_id < b.user_id; });
  }
  if (cases.empty()) return absl::InvalidArgumentError("split: no user qualifies as a test case");
  // A sample changes which events train: the bundle must record it to be checked.
  if (o.max_users > 0) {
    split.description += absl::StrFormat("[test_users=%d,seed=%d]", o.max_users, o.seed);
  }
  // Training events: everything but the tested users' events from their cut on (for the
  // time protocol, nobody's events from T on).
  absl::flat_hash_map<uint64_t, int64_t> cut_of;
  if (o.protocol == "time") {
    for (size_t u = 0; u < users.size(); ++u) cut_of[users[u].first] = user_cut[u];
  } else {
    for (const TestCase& c : cases) cut_of[c.user_id] = c.cut_ms;
  }
  split.train_events.reserve(events.size());
  for (const LoggedEvent& e : events) {
    auto it = cut_of.find(e.user_id);
    if (it == cut_of.end() || e.timestamp_ms < it->second) split.train_events.push_back(e);
  }
  SortByTime(&split.train_events);
  split.cases = std::move(cases);
  return split;
}

namespace {

// Baselines: everything they need, built once from the training events.
class Baselines {
 public:
  Baselines(const std::vector<LoggedEvent>& train, const EvalOptions& o) : o_(o) {
    for (const LoggedEvent& e : train) {
      auto [it, fresh] = index_.emplace(e.item_id, static_cast<int32_t>(ids_.size()));
      if (fresh) ids_.push_back(e.item_id);
    }
    const int n = static_cast<int>(ids_.size());
    count_.assign(n, 0.f);
    for (const LoggedEvent& e : train) count_[index_[e.item_id]] += 1;
    by_popularity_.resize(n);
    std::iota(by_popularity_.begin(), by_popularity_.end(), 0);
    std::stable_sort(by_popularity_.begin(), by_popularity_.end(),
                     [&](int32_t a, int32_t b) { return count_[a] > count_[b]; });
    // Per-day event lists for recent popularity.
    std::vector<std::pair<int64_t, int32_t>> day_items;
    day_items.reserve(train.size());
    for (const LoggedEvent& e : train) day_items.push_back({e.timestamp_ms / kDayMs, index_[e.item_id]});
    std::sort(day_items.begin(), day_items.end());
    for (auto& [day, item] : day_items) {
      if (days_.empty() || days_.back() != day) {
        days_.push_back(day);
        day_offsets_.push_back(static_cast<int64_t>(day_items_.size()));
      }
      day_items_.push_back(item);
    }
    day_offsets_.push_back(static_cast<int64_t>(day_items_.size()));
    BuildCovisit(train);
    BuildKnn(train);
  }

  int size() const { return static_cast<int>(ids_.size()); }

  // "Recent popularity" for every cut day of `cases`: the items of the window of
  // recent_days before it (events on the cut day included), most events first (ties by
  // overall popularity). Once per day, not per case.
  void PrepareRecent(const std::vector<TestCase>& cases) {
    for (const TestCase& c : cases) recent_days_.push_back(c.cut_ms / kDayMs);
    std::sort(recent_days_.begin(), recent_days_.end());
    recent_days_.erase(std::unique(recent_days_.begin(), recent_days_.end()), recent_days_.end());
    std::vector<std::vector<int32_t>> lists(recent_days_.size());
    const int64_t window_days = static_cast<int64_t>(o_.recent_days);
#pragma omp parallel
    {
      std::vector<float> count(size(), 0.f);
      std::vector<int32_t> touched;
#pragma omp for schedule(dynamic, 4)
      for (size_t k = 0; k < recent_days_.size(); ++k) {
        const int64_t to_day = recent_days_[k], from_day = to_day - window_days + 1;
        for (auto d = std::lower_bound(days_.begin(), days_.end(), from_day); d != days_.end() && *d <= to_day; ++d) {
          const size_t at = d - days_.begin();
          for (int64_t p = day_offsets_[at]; p < day_offsets_[at + 1]; ++p) {
            if (count[day_items_[p]] == 0.f) touched.push_back(day_items_[p]);
            count[day_items_[p]] += 1.f;
          }
        }
        std::sort(touched.begin(), touched.end(), [&](int32_t a, int32_t b) {
          return count[a] != count[b] ? count[a] > count[b] : count_[a] != count_[b] ? count_[a] > count_[b] : a < b;
        });
        lists[k] = touched;
        for (int32_t item : touched) count[item] = 0.f;
        touched.clear();
      }
    }
    recent_offsets_.push_back(0);
    for (const auto& list : lists) {
      recent_items_.insert(recent_items_.end(), list.begin(), list.end());
      recent_offsets_.push_back(static_cast<int64_t>(recent_items_.size()));
    }
  }
  int32_t Find(uint64_t id) const {
    auto it = index_.find(id);
    return it == index_.end() ? -1 : it->second;
  }
  uint64_t id(int32_t item) const { return ids_[item]; }

  // Per-thread working memory.
  struct Scratch {
    std::vector<float> score;
    std::vector<int32_t> touched;
    std::vector<char> excluded;
    std::vector<std::pair<float, int32_t>> ranked;
  };
  void Prepare(Scratch* s) const {
    s->score.assign(size(), 0.f);
    s->excluded.assign(size(), 0);
  }

  // The `method`'s answer for a request: ids, best first, no item of the request.
  // Methods: 0 popularity, 1 recent popularity, 2 co-visitation, 3 item-kNN, 4 item-kNN (recency).
  static constexpr int kMethods = 5;
  static const char* Name(int method) {
    static const char* kNames[] = {"popularity", "recent popularity", "co-visitation", "item-kNN",
                                   "item-kNN (recency)"};
    return kNames[method];
  }
  void Answer(int method, const TestCase& c, Scratch* s, std::vector<uint64_t>* out) const {
    out->clear();
    // History items (known to the baselines), newest first, distinct.
    std::vector<int32_t> history;
    for (auto it = c.request.rbegin(); it != c.request.rend(); ++it) {
      const int32_t item = Find(it->item_id);
      if (item < 0 || s->excluded[item]) continue;
      s->excluded[item] = 1;
      history.push_back(item);
    }
    switch (method) {
      case 0: break;
      case 1: {
        // Precomputed per cut day (PrepareRecent): the window's items, most events first.
        const size_t d = std::lower_bound(recent_days_.begin(), recent_days_.end(), c.cut_ms / kDayMs) -
                         recent_days_.begin();
        for (int64_t p = recent_offsets_[d]; p < recent_offsets_[d + 1] && static_cast<int>(out->size()) < o_.n; ++p) {
          const int32_t item = recent_items_[p];
          if (!s->excluded[item]) {
            out->push_back(ids_[item]);
            s->excluded[item] = 2;
          }
        }
        for (int32_t item : by_popularity_) {
          if (static_cast<int>(out->size()) >= o_.n) break;
          if (!s->excluded[item]) out->push_back(ids_[item]);
        }
        for (int64_t p = recent_offsets_[d]; p < recent_offsets_[d + 1]; ++p) {
          if (s->excluded[recent_items_[p]] == 2) s->excluded[recent_items_[p]] = 0;
        }
        for (int32_t h : history) s->excluded[h] = 0;
        return;
      }
      case 2: {
        int used = 0;
        for (int32_t h : history) {
          if (used++ >= o_.covisit_last_items) break;
          for (int64_t p = cov_offsets_[h]; p < cov_offsets_[h + 1]; ++p) Add(s, cov_items_[p], cov_weights_[p]);
        }
        break;
      }
      case 3:
      case 4: {
        int used = 0;
        float w = 1.f;
        for (int32_t h : history) {
          if (used++ >= o_.knn_last_items) break;
          for (int64_t p = knn_offsets_[h]; p < knn_offsets_[h + 1]; ++p) Add(s, knn_items_[p], w * knn_weights_[p]);
          if (method == 4) w *= static_cast<float>(o_.knn_decay);
        }
        break;
      }
    }
    // Scored items best first (ties by popularity order), then popularity fill.
    s->ranked.clear();
    for (int32_t item : s->touched) {
      if (!s->excluded[item]) s->ranked.push_back({s->score[item], item});
    }
    const size_t want = std::min<size_t>(s->ranked.size(), o_.n);
    std::partial_sort(s->ranked.begin(), s->ranked.begin() + want, s->ranked.end(), [&](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : count_[a.second] != count_[b.second] ? count_[a.second] > count_[b.second] : a.second < b.second;
    });
    for (size_t i = 0; i < want; ++i) {
      out->push_back(ids_[s->ranked[i].second]);
      s->excluded[s->ranked[i].second] = 2;  // taken
    }
    for (int32_t item : by_popularity_) {
      if (static_cast<int>(out->size()) >= o_.n) break;
      if (!s->excluded[item]) out->push_back(ids_[item]);
    }
    for (int32_t item : s->touched) s->score[item] = 0.f;
    s->touched.clear();
    for (size_t i = 0; i < want; ++i) s->excluded[s->ranked[i].second] = 0;
    for (int32_t h : history) s->excluded[h] = 0;
  }

 private:
  static void Add(Scratch* s, int32_t item, float w) {
    if (s->score[item] == 0.f) s->touched.push_back(item);
    s->score[item] += w;
    if (s->score[item] == 0.f) s->score[item] = 1e-30f;  // stays in touched exactly once
  }

  // Item sequences of the training events per user, oldest first.
  std::vector<std::vector<int32_t>> Sequences(const std::vector<LoggedEvent>& train) const {
    absl::flat_hash_map<uint64_t, size_t> slot;
    std::vector<std::pair<uint64_t, std::vector<int32_t>>> users;
    for (const LoggedEvent& e : train) {
      auto [it, fresh] = slot.emplace(e.user_id, users.size());
      if (fresh) users.emplace_back(e.user_id, std::vector<int32_t>());
      users[it->second].second.push_back(index_.at(e.item_id));
    }
    std::sort(users.begin(), users.end());
    std::vector<std::vector<int32_t>> out;
    for (auto& u : users) out.push_back(std::move(u.second));
    return out;
  }

  // Pairs within +-covisit_window positions of each user's sequence, counted.
  void BuildCovisit(const std::vector<LoggedEvent>& train) {
    std::vector<uint64_t> pairs;
    for (const std::vector<int32_t>& seq : Sequences(train)) {
      for (size_t p = 0; p < seq.size(); ++p) {
        for (size_t q = p + 1; q < seq.size() && q <= p + o_.covisit_window; ++q) {
          if (seq[p] == seq[q]) continue;
          pairs.push_back(uint64_t(uint32_t(seq[p])) << 32 | uint32_t(seq[q]));
          pairs.push_back(uint64_t(uint32_t(seq[q])) << 32 | uint32_t(seq[p]));
        }
      }
    }
    std::sort(pairs.begin(), pairs.end());
    cov_offsets_.assign(size() + 1, 0);
    for (size_t i = 0; i < pairs.size();) {
      size_t j = i;
      while (j < pairs.size() && pairs[j] == pairs[i]) ++j;
      cov_items_.push_back(static_cast<int32_t>(pairs[i] & 0xffffffffu));
      cov_weights_.push_back(static_cast<float>(j - i));
      ++cov_offsets_[(pairs[i] >> 32) + 1];
      i = j;
    }
    for (int i = 0; i < size(); ++i) cov_offsets_[i + 1] += cov_offsets_[i];
  }

  // Cosine of binary user sets, the knn_neighbors best per item.
  void BuildKnn(const std::vector<LoggedEvent>& train) {
    constexpr size_t kMaxItemsPerUser = 300;  // newest distinct items: bounds sum(|I_u|^2)
    std::vector<std::vector<int32_t>> user_items;
    for (std::vector<int32_t>& seq : Sequences(train)) {
      std::vector<int32_t> distinct;
      absl::flat_hash_set<int32_t> seen;
      for (auto it = seq.rbegin(); it != seq.rend() && distinct.size() < kMaxItemsPerUser; ++it) {
        if (seen.insert(*it).second) distinct.push_back(*it);
      }
      user_items.push_back(std::move(distinct));
    }
    const int n = size();
    std::vector<int64_t> users_offsets(n + 1, 0);
    std::vector<float> degree(n, 0.f);
    for (const auto& items : user_items) {
      for (int32_t i : items) {
        ++users_offsets[i + 1];
        degree[i] += 1;
      }
    }
    for (int i = 0; i < n; ++i) users_offsets[i + 1] += users_offsets[i];
    std::vector<int32_t> users_of(users_offsets[n]);
    {
      std::vector<int64_t> at(users_offsets.begin(), users_offsets.end() - 1);
      for (size_t u = 0; u < user_items.size(); ++u) {
        for (int32_t i : user_items[u]) users_of[at[i]++] = static_cast<int32_t>(u);
      }
    }
    std::vector<std::vector<std::pair<float, int32_t>>> rows(n);
#pragma omp parallel
    {
      std::vector<float> acc(n, 0.f);
      std::vector<int32_t> touched;
#pragma omp for schedule(dynamic, 16)
      for (int i = 0; i < n; ++i) {
        for (int64_t p = users_offsets[i]; p < users_offsets[i + 1]; ++p) {
          for (int32_t j : user_items[users_of[p]]) {
            if (j == i) continue;
            if (acc[j] == 0.f) touched.push_back(j);
            acc[j] += 1.f;
          }
        }
        std::vector<std::pair<float, int32_t>>& row = rows[i];
        for (int32_t j : touched) {
          row.push_back({acc[j] / std::sqrt(degree[i] * degree[j]), j});
          acc[j] = 0.f;
        }
        touched.clear();
        const size_t keep = std::min<size_t>(row.size(), o_.knn_neighbors);
        std::partial_sort(row.begin(), row.begin() + keep, row.end(), [](const auto& a, const auto& b) {
          return a.first != b.first ? a.first > b.first : a.second < b.second;
        });
        row.resize(keep);
      }
    }
    knn_offsets_.assign(n + 1, 0);
    for (int i = 0; i < n; ++i) {
      for (auto& [w, j] : rows[i]) {
        knn_items_.push_back(j);
        knn_weights_.push_back(w);
      }
      knn_offsets_[i + 1] = static_cast<int64_t>(knn_items_.size());
    }
  }

  const EvalOptions& o_;
  absl::flat_hash_map<uint64_t, int32_t> index_;
  std::vector<uint64_t> ids_;
  std::vector<float> count_;
  std::vector<int32_t> by_popularity_;
  std::vector<int64_t> days_, day_offsets_;
  std::vector<int64_t> recent_days_, recent_offsets_;
  std::vector<int32_t> recent_items_;
  std::vector<int32_t> day_items_;
  std::vector<int64_t> cov_offsets_, knn_offsets_;
  std::vector<int32_t> cov_items_, knn_items_;
  std::vector<float> cov_weights_, knn_weights_;
};

// One method's figures for one case.
struct CaseScore {
  float hit10 = 0, hit50 = 0, hit100 = 0, ndcg10 = 0, rr = 0, consumed10 = 0;
};

CaseScore Score(const std::vector<uint64_t>& answer, const TestCase& c,
                const absl::flat_hash_set<uint64_t>& history, int n) {
  CaseScore s;
  int first = 0;
  double dcg = 0;
  const int len = std::min<int>(static_cast<int>(answer.size()), n);
  for (int r = 0; r < len; ++r) {
    const bool hit = std::find(c.targets.begin(), c.targets.end(), answer[r]) != c.targets.end();
    if (hit && first == 0) first = r + 1;
    if (hit && r < 10) dcg += 1.0 / std::log2(r + 2.0);
    if (r < 10 && history.contains(answer[r])) s.consumed10 += 0.1f;
  }
  double idcg = 0;
  for (int r = 0; r < std::min<int>(10, static_cast<int>(c.targets.size())); ++r) idcg += 1.0 / std::log2(r + 2.0);
  s.ndcg10 = static_cast<float>(idcg > 0 ? dcg / idcg : 0);
  if (first > 0) {
    s.hit10 = first <= 10;
    s.hit50 = first <= 50;
    s.hit100 = first <= 100;
    s.rr = 1.f / first;
  }
  return s;
}

}  // namespace

absl::StatusOr<EvalReport> Evaluate(const Model& model, const LogSplit& split, const EvalOptions& o) {
  if (o.n < 100) return absl::InvalidArgumentError("eval: n must be >= 100 (hit@100 is reported)");
  const auto t0 = std::chrono::steady_clock::now();
  const int methods = 1 + (o.baselines ? Baselines::kMethods : 0);
  std::unique_ptr<Baselines> baselines;
  if (o.baselines) {
    baselines = std::make_unique<Baselines>(split.train_events, o);
    baselines->PrepareRecent(split.cases);
  }
  const double build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double recserve_seconds = 0;
  const int64_t cases = static_cast<int64_t>(split.cases.size());
  std::vector<CaseScore> scores(static_cast<size_t>(cases) * methods);
  std::vector<std::vector<uint64_t>> top10(static_cast<size_t>(cases) * methods);
  // Per case: which sources proposed a target (bits), whether any target was recalled.
  std::vector<uint32_t> target_sources(cases, 0);
  std::vector<char> recalled(cases, 0), unknown(cases, 0);
  std::vector<int32_t> candidates(cases, 0);
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  absl::Status first_error;
  const int want = std::max(o.n, model.recall_options().max_candidates);

#pragma omp parallel reduction(+ : recserve_seconds)
  {
    PipelineScratch scratch;
    RecommendResult result;
    std::vector<QueryEvent> events;
    std::vector<uint64_t> answer, older;
    Baselines::Scratch bs;
    if (baselines) baselines->Prepare(&bs);
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < cases; ++i) {
      if (failed.load(std::memory_order_relaxed)) continue;
      const TestCase& c = split.cases[i];
      absl::flat_hash_set<uint64_t> history;
      for (const LoggedEvent& e : c.request) history.insert(e.item_id);
      events.clear();
      const size_t from = c.request.size() > static_cast<size_t>(o.max_request_events)
                              ? c.request.size() - o.max_request_events : 0;
      for (size_t k = from; k < c.request.size(); ++k) {
        const LoggedEvent& e = c.request[k];
        events.push_back({e.item_id, static_cast<EventType>(e.kind), e.timestamp_ms});
      }
      // Items of older events go in the request's exclusion list, as a client with a long
      // history would send them (newest first, up to the same limit).
      older.clear();
      for (size_t k = from; k-- > 0 && older.size() < static_cast<size_t>(o.max_request_events);) {
        if (std::find(older.begin(), older.end(), c.request[k].item_id) == older.end()) {
          older.push_back(c.request[k].item_id);
        }
      }
      RecommendQuery query;
      query.events = events;
      query.exclude_items = older;
      query.n = want;
      const auto r0 = std::chrono::steady_clock::now();
      absl::Status status = Recommend(model, query, &scratch, &result);
      recserve_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - r0).count();
      if (!status.ok()) {
#pragma omp critical
        if (first_error.ok()) first_error = status;
        failed = true;
        continue;
      }
      answer.clear();
      for (const RecommendedItem& it : result.items) {
        answer.push_back(it.item_id);
        if (std::find(c.targets.begin(), c.targets.end(), it.item_id) != c.targets.end()) {
          recalled[i] = 1;
          target_sources[i] |= it.sources;
        }
      }
      candidates[i] = result.candidates;
      unknown[i] = std::none_of(c.targets.begin(), c.targets.end(),
                                [&](uint64_t t) { return model.catalog().Find(t) >= 0; });
      scores[i * methods] = Score(answer, c, history, o.n);
      top10[i * methods].assign(answer.begin(), answer.begin() + std::min<size_t>(10, answer.size()));
      for (int m = 1; m < methods; ++m) {
        baselines->Answer(m - 1, c, &bs, &answer);
        scores[i * methods + m] = Score(answer, c, history, o.n);
        top10[i * methods + m].assign(answer.begin(), answer.begin() + std::min<size_t>(10, answer.size()));
      }
      const int64_t d = done.fetch_add(1, std::memory_order_relaxed) + 1;
      if (o.progress && omp_get_thread_num() == 0) o.progress(d, cases);
    }
  }
  if (!first_error.ok()) return first_error;
  if (o.progress) o.progress(cases, cases);

  EvalReport report;
  report.cases = cases;
  report.catalog_items = model.catalog().size();
  for (int m = 0; m < methods; ++m) {
    MethodMetrics mm;
    mm.name = m == 0 ? "recserve" : Baselines::Name(m - 1);
    mm.cases = cases;
    absl::flat_hash_set<uint64_t> covered;
    double h10 = 0, h50 = 0, h100 = 0, nd = 0, rr = 0, con = 0;
    for (int64_t i = 0; i < cases; ++i) {
      const CaseScore& s = scores[i * methods + m];
      h10 += s.hit10;
      h50 += s.hit50;
      h100 += s.hit100;
      nd += s.ndcg10;
      rr += s.rr;
      con += s.consumed10;
      covered.insert(top10[i * methods + m].begin(), top10[i * methods + m].end());
    }
    const double inv = cases > 0 ? 1.0 / cases : 0;
    mm.hit10 = h10 * inv;
    mm.hit50 = h50 * inv;
    mm.hit100 = h100 * inv;
    mm.ndcg10 = nd * inv;
    mm.mrr = rr * inv;
    mm.consumed10 = con * inv;
    mm.coverage10 = report.catalog_items > 0 ? static_cast<double>(covered.size()) / report.catalog_items : 0;
    report.methods.push_back(mm);
  }
  double emb = 0, cov = 0, pop = 0, miss = 0, cand = 0;
  for (int64_t i = 0; i < cases; ++i) {
    emb += (target_sources[i] & kFromEmbedding) != 0;
    cov += (target_sources[i] & kFromCovisit) != 0;
    pop += (target_sources[i] & kFromPopularity) != 0;
    miss += !recalled[i];
    cand += candidates[i];
    report.unknown_target_cases += unknown[i];
  }
  if (cases > 0) {
    report.target_from_embedding = emb / cases;
    report.target_from_covisit = cov / cases;
    report.target_from_popularity = pop / cases;
    report.target_not_recalled = miss / cases;
    report.mean_candidates = cand / cases;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.baseline_build_seconds = build_seconds;
  report.recserve_seconds = recserve_seconds;
  return report;
}

const MethodMetrics* BestBaseline(const EvalReport& report, double MethodMetrics::*metric) {
  const MethodMetrics* best = nullptr;
  for (size_t m = 1; m < report.methods.size(); ++m) {
    if (best == nullptr || report.methods[m].*metric > best->*metric) best = &report.methods[m];
  }
  return best;
}

}  // namespace recserve
