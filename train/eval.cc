#include "train/eval.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "engine/pipeline.h"
#include "train/item_tables.h"

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

// Baselines: everything they need, built once from the training events, on dense item
// indices (items numbered by first appearance in the training events).
class Baselines {
 public:
  Baselines(const LogSplit& split, const EvalOptions& o) : o_(o) {
    const std::vector<LoggedEvent>& train = split.train_events;
    std::vector<int32_t> item_of_event(train.size());
    for (size_t k = 0; k < train.size(); ++k) {
      auto [it, fresh] = index_.emplace(train[k].item_id, static_cast<int32_t>(ids_.size()));
      if (fresh) ids_.push_back(train[k].item_id);
      item_of_event[k] = it->second;
    }
    const int n = size();
    std::vector<float> count(n, 0.f);
    for (int32_t item : item_of_event) count[item] += 1;
    by_popularity_.resize(n);
    std::iota(by_popularity_.begin(), by_popularity_.end(), 0);
    std::stable_sort(by_popularity_.begin(), by_popularity_.end(),
                     [&](int32_t a, int32_t b) { return count[a] > count[b]; });
    popularity_rank_.resize(n);
    for (int r = 0; r < n; ++r) popularity_rank_[by_popularity_[r]] = r;
    BuildDays(train, item_of_event);
    const Lists<int32_t> sequences = UserSequences(train, item_of_event);
    covisit_ = BuildCovisit(sequences);
    knn_ = BuildKnn(sequences);
    PrepareRecent(split.cases);
  }

  int size() const { return static_cast<int>(ids_.size()); }

  // Per-thread working memory, for a catalog of `items`.
  struct Scratch {
    explicit Scratch(int items) : scores(items), excluded(items, 0) {}
    ItemSums scores;
    std::vector<char> excluded;
    std::vector<int32_t> history;
    std::vector<uint64_t> ranked;
  };

  // Methods: 0 popularity, 1 recent popularity, 2 co-visitation, 3 item-kNN, 4 item-kNN (recency).
  static constexpr int kMethods = 5;
  static const char* Name(int method) {
    static const char* kNames[] = {"popularity", "recent popularity", "co-visitation", "item-kNN",
                                   "item-kNN (recency)"};
    return kNames[method];
  }

  // Every method's answer for a request (answers[m] for method m): ids, best first, no
  // item of the request.
  void AnswerAll(const TestCase& c, Scratch* s, std::vector<uint64_t> answers[kMethods]) const {
    // History items (known to the baselines), newest first, distinct; excluded[] marks
    // them (1) for every method, and the items a method has taken (2) while it answers.
    s->history.clear();
    for (auto it = c.request.rbegin(); it != c.request.rend(); ++it) {
      auto found = index_.find(it->item_id);
      if (found == index_.end() || s->excluded[found->second]) continue;
      s->excluded[found->second] = 1;
      s->history.push_back(found->second);
    }
    for (int method = 0; method < kMethods; ++method) Answer(method, c, s, &answers[method]);
    for (int32_t h : s->history) s->excluded[h] = 0;
  }

 private:
  void Answer(int method, const TestCase& c, Scratch* s, std::vector<uint64_t>* out) const {
    out->clear();
    switch (method) {
      case 0: break;
      case 1: {
        // Precomputed per cut day (PrepareRecent): the window's items, most events first, as
        // far as an answer reads.
        const size_t d = RecentDay(c);
        for (int64_t p = recent_.offsets[d]; p < recent_.offsets[d + 1] && static_cast<int>(out->size()) < o_.n; ++p) {
          const int32_t item = recent_.values[p];
          if (!s->excluded[item]) {
            out->push_back(ids_[item]);
            s->excluded[item] = 2;
          }
        }
        FillByPopularity(s, out);
        for (int64_t p = recent_.offsets[d]; p < recent_.offsets[d + 1]; ++p) {
          if (s->excluded[recent_.values[p]] == 2) s->excluded[recent_.values[p]] = 0;
        }
        return;
      }
      case 2:
        SumRows(covisit_, o_.covisit_last_items, 1.f, s);
        break;
      case 3:
        SumRows(knn_, o_.knn_last_items, 1.f, s);
        break;
      case 4:
        SumRows(knn_, o_.knn_last_items, static_cast<float>(o_.knn_decay), s);
        break;
    }
    // Scored items best first (ties by popularity order), then popularity fill. Each is
    // ranked by one integer: the score's bits mapped so that unsigned order is float
    // order, complemented for best first, above the item's popularity rank.
    s->ranked.clear();
    for (size_t k = 0; k < s->scores.size(); ++k) {
      const int32_t item = s->scores.item(k);
      if (s->excluded[item]) continue;
      const float score = s->scores.sum(item);
      uint32_t bits;
      std::memcpy(&bits, &score, sizeof(bits));
      bits = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
      s->ranked.push_back(uint64_t(~bits) << 32 | uint32_t(popularity_rank_[item]));
    }
    const size_t want = std::min<size_t>(s->ranked.size(), o_.n);
    std::partial_sort(s->ranked.begin(), s->ranked.begin() + want, s->ranked.end());
    for (size_t i = 0; i < want; ++i) {
      const int32_t item = by_popularity_[s->ranked[i] & 0xffffffffu];
      out->push_back(ids_[item]);
      s->excluded[item] = 2;  // taken
    }
    FillByPopularity(s, out);
    for (size_t k = 0; k < s->scores.size(); ++k) {
      if (s->excluded[s->scores.item(k)] == 2) s->excluded[s->scores.item(k)] = 0;
    }
    s->scores.Clear();
  }

  // Sums the rows of the newest `last_items` history items into s->scores, row k
  // weighted by decay^k.
  void SumRows(const ItemTable& table, int last_items, float decay, Scratch* s) const {
    float w = 1.f;
    const size_t rows = std::min<size_t>(s->history.size(), std::max(last_items, 0));
    for (size_t k = 0; k < rows; ++k) {
      const int32_t h = s->history[k];
      for (int64_t p = table.offsets[h]; p < table.offsets[h + 1]; ++p) {
        s->scores.Add(table.items[p], w * table.weights[p]);
      }
      w *= decay;
    }
  }

  // Appends the most popular items not excluded until `out` holds n.
  void FillByPopularity(const Scratch* s, std::vector<uint64_t>* out) const {
    for (int32_t item : by_popularity_) {
      if (static_cast<int>(out->size()) >= o_.n) break;
      if (!s->excluded[item]) out->push_back(ids_[item]);
    }
  }

  // Per-day item lists (days_, day_items_) for recent popularity.
  void BuildDays(const std::vector<LoggedEvent>& train, const std::vector<int32_t>& item_of_event) {
    std::vector<std::pair<int64_t, int32_t>> day_items;
    day_items.reserve(train.size());
    for (size_t k = 0; k < train.size(); ++k) day_items.push_back({train[k].timestamp_ms / kDayMs, item_of_event[k]});
    // Sorted by time already (LogSplit's contract): only a day's events are counted
    // together, so their order within the day does not matter.
    auto by_day = [](const auto& a, const auto& b) { return a.first < b.first; };
    if (!std::is_sorted(day_items.begin(), day_items.end(), by_day)) {
      std::sort(day_items.begin(), day_items.end(), by_day);
    }
    for (const auto& [day, item] : day_items) {
      if (days_.empty() || days_.back() != day) {
        if (!days_.empty()) day_items_.Close();
        days_.push_back(day);
      }
      day_items_.values.push_back(item);
    }
    if (!days_.empty()) day_items_.Close();
  }

  // "Recent popularity" for every cut day of `cases`: the items of the window of
  // recent_days before it (events on the cut day included), most events first (ties by
  // overall popularity). Once per day, not per case, and only as far as an answer can
  // read: n items past those its request excludes (at most one per event).
  void PrepareRecent(const std::vector<TestCase>& cases) {
    for (const TestCase& c : cases) recent_days_.push_back(c.cut_ms / kDayMs);
    std::sort(recent_days_.begin(), recent_days_.end());
    recent_days_.erase(std::unique(recent_days_.begin(), recent_days_.end()), recent_days_.end());
    std::vector<size_t> reach(recent_days_.size(), 0);
    for (const TestCase& c : cases) {
      size_t& day_reach = reach[RecentDay(c)];
      day_reach = std::max(day_reach, o_.n + c.request.size());
    }
    std::vector<std::vector<int32_t>> lists(recent_days_.size());
    const int64_t window_days = static_cast<int64_t>(o_.recent_days);
#pragma omp parallel
    {
      ItemSums count(size());
#pragma omp for schedule(dynamic, 4)
      for (size_t k = 0; k < recent_days_.size(); ++k) {
        const int64_t to_day = recent_days_[k], from_day = to_day - window_days + 1;
        for (auto d = std::lower_bound(days_.begin(), days_.end(), from_day); d != days_.end() && *d <= to_day; ++d) {
          const size_t at = d - days_.begin();
          for (int64_t p = day_items_.offsets[at]; p < day_items_.offsets[at + 1]; ++p) {
            count.Add(day_items_.values[p], 1.f);
          }
        }
        std::vector<int32_t>& list = lists[k];
        for (size_t t = 0; t < count.size(); ++t) list.push_back(count.item(t));
        const size_t keep = std::min(list.size(), reach[k]);
        std::partial_sort(list.begin(), list.begin() + keep, list.end(), [&](int32_t a, int32_t b) {
          return count.sum(a) != count.sum(b) ? count.sum(a) > count.sum(b) : popularity_rank_[a] < popularity_rank_[b];
        });
        list.resize(keep);
        count.Clear();
      }
    }
    for (const auto& list : lists) {
      recent_.values.insert(recent_.values.end(), list.begin(), list.end());
      recent_.Close();
    }
  }

  // The case's cut day's position in recent_days_.
  size_t RecentDay(const TestCase& c) const {
    return std::lower_bound(recent_days_.begin(), recent_days_.end(), c.cut_ms / kDayMs) - recent_days_.begin();
  }

  // Item sequences of the training events per user, oldest first (users in order of
  // first appearance).
  static Lists<int32_t> UserSequences(const std::vector<LoggedEvent>& train,
                                      const std::vector<int32_t>& item_of_event) {
    absl::flat_hash_map<uint64_t, int32_t> slot;
    std::vector<int32_t> user_of_event(train.size());
    for (size_t k = 0; k < train.size(); ++k) {
      user_of_event[k] = slot.emplace(train[k].user_id, static_cast<int32_t>(slot.size())).first->second;
    }
    return GroupByKey<int32_t>(slot.size(), [&](auto&& add) {
      for (size_t k = 0; k < train.size(); ++k) add(user_of_event[k], item_of_event[k]);
    });
  }

  // Pairs within +-covisit_window positions of each user's sequence, counted (pairs of
  // an item with itself are not).
  ItemTable BuildCovisit(const Lists<int32_t>& sequences) const {
    const int n = size();
    const int64_t window = o_.covisit_window;
    const std::vector<int32_t>& items = sequences.values;
    // Where each item occurs (positions in `items`), and whose sequence each position is in.
    std::vector<int32_t> user_at(items.size());
    for (size_t u = 0; u < sequences.size(); ++u) {
      std::fill(user_at.begin() + sequences.offsets[u], user_at.begin() + sequences.offsets[u + 1],
                static_cast<int32_t>(u));
    }
    const Lists<int64_t> occurrences = GroupByKey<int64_t>(n, [&](auto&& add) {
      for (size_t p = 0; p < items.size(); ++p) add(items[p], static_cast<int64_t>(p));
    });
    auto count = [&](int i, ItemSums* sums) {
      for (int64_t o = occurrences.offsets[i]; o < occurrences.offsets[i + 1]; ++o) {
        const int64_t p = occurrences.values[o];
        const int32_t u = user_at[p];
        const int64_t from = std::max(sequences.offsets[u], p - window);
        const int64_t to = std::min(sequences.offsets[u + 1], p + window + 1);
        for (int64_t q = from; q < to; ++q) {
          if (items[q] != i) sums->Add(items[q], 1.f);
        }
      }
    };
    return BuildTable(n, SIZE_MAX, count, [](int, int32_t, float pairs) { return pairs; });
  }

  // Cosine of binary user sets, the knn_neighbors best per item.
  ItemTable BuildKnn(const Lists<int32_t>& sequences) const {
    return BuildItemKnn(sequences, size(), static_cast<size_t>(std::max(o_.knn_neighbors, 0)));
  }

  const EvalOptions& o_;
  absl::flat_hash_map<uint64_t, int32_t> index_;
  std::vector<uint64_t> ids_;
  std::vector<int32_t> by_popularity_;   // items by count, most first (ties by index)
  std::vector<int32_t> popularity_rank_; // an item's position in by_popularity_
  std::vector<int64_t> days_;            // days with training events, ascending
  Lists<int32_t> day_items_;             // per day of days_: its events' items
  std::vector<int64_t> recent_days_;     // cut days of the cases, ascending
  Lists<int32_t> recent_;                // per day of recent_days_: its items by recent popularity
  ItemTable covisit_, knn_;
};

// One method's figures for one case.
struct CaseScore {
  float hit10 = 0, hit50 = 0, hit100 = 0, ndcg10 = 0, rr = 0, consumed10 = 0;
  int32_t first = 0;  // rank of the first target, 0: none
};

// `request_items`: the request's items, sorted.
CaseScore Score(const std::vector<uint64_t>& answer, const TestCase& c,
                const std::vector<uint64_t>& request_items, int n) {
  CaseScore s;
  int first = 0;
  double dcg = 0;
  const int len = std::min<int>(static_cast<int>(answer.size()), n);
  for (int r = 0; r < len; ++r) {
    const bool hit = std::find(c.targets.begin(), c.targets.end(), answer[r]) != c.targets.end();
    if (hit && first == 0) first = r + 1;
    if (hit && r < 10) dcg += 1.0 / std::log2(r + 2.0);
    if (r < 10 && std::binary_search(request_items.begin(), request_items.end(), answer[r])) s.consumed10 += 0.1f;
  }
  double idcg = 0;
  for (int r = 0; r < std::min<int>(10, static_cast<int>(c.targets.size())); ++r) idcg += 1.0 / std::log2(r + 2.0);
  s.ndcg10 = static_cast<float>(idcg > 0 ? dcg / idcg : 0);
  s.first = first;
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
    baselines = std::make_unique<Baselines>(split, o);
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

#pragma omp parallel reduction(+ : recserve_seconds)
  {
    PipelineScratch scratch;
    RecommendResult result;
    std::vector<QueryEvent> events;
    std::vector<uint64_t> answer, older, request_items;
    std::vector<uint64_t> baseline_answers[Baselines::kMethods];
    Baselines::Scratch bs(baselines ? baselines->size() : 0);
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < cases; ++i) {
      if (failed.load(std::memory_order_relaxed)) continue;
      const TestCase& c = split.cases[i];
      request_items.clear();
      for (const LoggedEvent& e : c.request) request_items.push_back(e.item_id);
      std::sort(request_items.begin(), request_items.end());
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
      query.n = o.n;  // the answer a client asking for n gets
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
      for (const RecommendedItem& it : result.items) answer.push_back(it.item_id);
      // Which candidates held a target, and from which sources: the pipeline's recall
      // output, still in the scratch.
      for (const Candidate& cand : scratch.candidates) {
        if (std::find(c.targets.begin(), c.targets.end(), model.catalog().id(cand.item)) != c.targets.end()) {
          recalled[i] = 1;
          target_sources[i] |= cand.sources;
        }
      }
      candidates[i] = result.candidates;
      unknown[i] = std::none_of(c.targets.begin(), c.targets.end(),
                                [&](uint64_t t) { return model.catalog().Find(t) >= 0; });
      scores[i * methods] = Score(answer, c, request_items, o.n);
      top10[i * methods].assign(answer.begin(), answer.begin() + std::min<size_t>(10, answer.size()));
      if (baselines) baselines->AnswerAll(c, &bs, baseline_answers);
      for (int m = 1; m < methods; ++m) {
        const std::vector<uint64_t>& a = baseline_answers[m - 1];
        scores[i * methods + m] = Score(a, c, request_items, o.n);
        top10[i * methods + m].assign(a.begin(), a.begin() + std::min<size_t>(10, a.size()));
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
  report.first_hit.reserve(scores.size());
  for (const CaseScore& s : scores) report.first_hit.push_back(s.first);
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
