// TrainFromLog: the trainer for real behaviour logs. See LogTrainerOptions in trainer.h
// for the method, and TrainerOptions::served for the server's labelled impressions.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <optional>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/features.h"
#include "engine/model.h"
#include "engine/quality.h"
#include "engine/ranker.h"
#include "engine/status_macros.h"
#include "train/artifacts.h"
#include "train/distill.h"
#include "train/mlp_trainer.h"
#include "train/served_rows.h"
#include "train/trainer.h"

namespace recserve {
namespace {

constexpr int64_t kDayMs = 86400000;
// Item activity features the log trainer puts in the catalog's dense block.
constexpr int kActivityFeatures = 8;

using Clock = std::chrono::steady_clock;

// Dense item features from the events before `cut_ms`: log counts over the last 7 and
// 30 days and overall, log distinct users, log days since the last and the first event.
void ActivityFeatures(const std::vector<LoggedEvent>& events, int64_t cut_ms,
                      const absl::flat_hash_map<uint64_t, int32_t>& index, int n,
                      std::vector<float>* dense) {
  std::vector<float> c7(n, 0), c30(n, 0), all(n, 0);
  std::vector<int64_t> first(n, INT64_MAX), last(n, INT64_MIN);
  absl::flat_hash_set<std::pair<uint64_t, int32_t>> user_item;
  std::vector<float> users(n, 0);
  for (const LoggedEvent& e : events) {
    if (e.timestamp_ms >= cut_ms) break;
    auto it = index.find(e.item_id);
    if (it == index.end()) continue;
    const int32_t i = it->second;
    all[i] += 1;
    if (e.timestamp_ms >= cut_ms - 30 * kDayMs) c30[i] += 1;
    if (e.timestamp_ms >= cut_ms - 7 * kDayMs) c7[i] += 1;
    first[i] = std::min(first[i], e.timestamp_ms);
    last[i] = std::max(last[i], e.timestamp_ms);
    if (user_item.insert({e.user_id, i}).second) users[i] += 1;
  }
  dense->assign(static_cast<size_t>(n) * kActivityFeatures, 0.f);
  constexpr double kNeverDays = 3650;
  // Counts as percentiles among the items (the share of items with a lower count), so
  // that a busier month or a longer log does not shift them.
  // Among the items seen before the cut only (an item not yet seen is 0), so that the
  // catalog's items of the future do not shift an early anchor's percentiles.
  auto percentile = [n, &all](const std::vector<float>& v) {
    std::vector<float> sorted;
    for (int i = 0; i < n; ++i) {
      if (all[i] > 0) sorted.push_back(v[i]);
    }
    std::sort(sorted.begin(), sorted.end());
    std::vector<float> p(n, 0.f);
    if (sorted.empty()) return p;
    for (int i = 0; i < n; ++i) {
      if (all[i] > 0) {
        p[i] = static_cast<float>(std::lower_bound(sorted.begin(), sorted.end(), v[i]) - sorted.begin() + 1) /
               sorted.size();
      }
    }
    return p;
  };
  // The recent counts also as log(1 + count) / log(1 + largest count): percentiles put
  // the hundred busiest items of a month within 1% of each other, where a ranker needs
  // them apart.
  const float max7 = *std::max_element(c7.begin(), c7.end()), max30 = *std::max_element(c30.begin(), c30.end());
  auto log_share = [](float x, float max) { return max > 0 ? std::log1p(x) / std::log1p(max) : 0.f; };
  const std::vector<float> p7 = percentile(c7), p30 = percentile(c30), pall = percentile(all), pusers = percentile(users);
  for (int i = 0; i < n; ++i) {
    float* d = dense->data() + static_cast<size_t>(i) * kActivityFeatures;
    d[0] = p7[i];
    d[1] = p30[i];
    d[2] = pall[i];
    d[3] = pusers[i];
    d[4] = static_cast<float>(std::log1p(last[i] == INT64_MIN ? kNeverDays : double(cut_ms - last[i]) / kDayMs));
    d[5] = static_cast<float>(std::log1p(first[i] == INT64_MAX ? 0.0 : double(cut_ms - first[i]) / kDayMs));
    d[6] = log_share(c7[i], max7);
    d[7] = log_share(c30[i], max30);
  }
}

// Per item, its events in the `days` before `cut_ms` (the catalog's recent_popularity).
std::vector<float> RecentCounts(const std::vector<LoggedEvent>& events, int64_t cut_ms, double days,
                                const absl::flat_hash_map<uint64_t, int32_t>& index, int n) {
  std::vector<float> counts(n, 0.f);
  const int64_t from_ms = cut_ms - static_cast<int64_t>(days * kDayMs);
  for (const LoggedEvent& e : events) {
    if (e.timestamp_ms < from_ms) continue;
    if (e.timestamp_ms >= cut_ms) break;
    if (auto it = index.find(e.item_id); it != index.end()) counts[it->second] += 1;
  }
  return counts;
}

// A ranker of the log trainer, before and after its refit on every anchor's rows.
struct Network {
  Mlp held_out;  // before the refit: the validation anchor is held out from it
  Mlp served;
};

// One ranker request: a user at an anchor.
struct Request {
  int anchor = 0;
  uint64_t user = 0;
  size_t history_end = 0;            // the user's events [0, history_end) are before the anchor
  std::vector<int32_t> positives;    // catalog indices, new to the user, in the next basket
};

struct Rows {
  std::vector<float> features;
  std::vector<float> labels;
  std::vector<int64_t> groups;
  int count = 0;
};

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 29);
}

}  // namespace

ArtifactOptions ArtifactOptionsOf(const TrainerOptions& opt);

absl::StatusOr<TrainOutput> TrainFromLog(const World& w, const TrainerOptions& opt) {
  const auto start = Clock::now();
  auto say = [&](const std::string& line) {
    if (opt.verbose) {
      std::fprintf(stderr, "[train %7.1fs] %s\n",
                   std::chrono::duration<double>(Clock::now() - start).count(), line.c_str());
    }
  };
  const LogTrainerOptions& lo = opt.log;
  const std::vector<LoggedEvent>& events = w.train_events;
  if (events.empty()) return absl::InvalidArgumentError("the log has no train events");
  if (lo.anchor_fractions.empty()) return absl::InvalidArgumentError("log trainer: no anchor fractions");
  for (double f : lo.anchor_fractions) {
    if (!(f > 0 && f < 1)) return absl::InvalidArgumentError(absl::StrFormat("log trainer: anchor fraction %g is not in (0, 1)", f));
  }
  if (!std::is_sorted(events.begin(), events.end(),
                      [](const LoggedEvent& a, const LoggedEvent& b) { return a.timestamp_ms < b.timestamp_ms; })) {
    return absl::InvalidArgumentError("log trainer: training events are not sorted by time");
  }
  if (!(lo.recent_share >= 0 && lo.recent_share <= 0.5)) {
    return absl::InvalidArgumentError(absl::StrFormat("log trainer: recent_share is %g; must be in [0, 0.5]", lo.recent_share));
  }
  if (!(lo.recent_days > 0 && lo.recent_days <= 36500)) {
    return absl::InvalidArgumentError(absl::StrFormat("log trainer: recent_days is %g; must be in (0, 36500]", lo.recent_days));
  }
  // One thread for the learners unless asked (bit-reproducible bundles).
  const int threads = omp_get_max_threads();
  TrainerOptions o = opt;
  o.item2vec.threads = lo.parallel ? threads : 1;
  o.item2vec.epochs = lo.item2vec_epochs;
  o.covisit_k = lo.covisit_k;
  o.embedding_k = lo.embedding_k;
  o.popularity_k = lo.popularity_k;
  o.max_candidates = lo.max_candidates;

  // Catalog base: every item of the training events, in id order.
  TrainOutput out;
  BundleContents& b = out.bundle;
  CatalogData base;
  absl::flat_hash_map<uint64_t, int32_t> index;
  {
    std::vector<uint64_t> ids;
    for (const LoggedEvent& e : events) ids.push_back(e.item_id);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (uint64_t id : ids) {
      index.emplace(id, static_cast<int32_t>(base.ids.size()));
      base.ids.push_back(id);
      base.category.push_back(0);
      if (!w.item_keys.empty()) {
        auto key = w.item_keys.find(id);
        base.keys.push_back(key != w.item_keys.end() ? key->second : std::to_string(id));
      }
    }
  }
  const int n = static_cast<int>(base.ids.size());
  base.dense_dim = kActivityFeatures;
  ArtifactOptions ao = ArtifactOptionsOf(o);
  ao.covisit_window = lo.covisit_window;
  ao.covisit_max_gap_seconds = lo.covisit_max_gap_seconds;
  ao.covisit_basket_pairs = lo.covisit_basket_pairs;
  ao.covisit_half_life_days = lo.covisit_half_life_days;
  ao.covisit_cosine = lo.covisit_cosine;
  ao.covisit_neighbors = lo.covisit_neighbors;
  ao.covisit_counts = true;
  ao.knn_neighbors = lo.knn_neighbors;
  ao.popularity_half_life_days = lo.popularity_half_life_days;
  ao.verbose = false;

  v1::Manifest m = DefaultManifest(o, kActivityFeatures);
  // Only features that mean the same in every anchor's artifacts and in the bundle's:
  // embedding coordinates do not (each item2vec run is its own rotation), cosines do;
  // item activity features are percentiles, not counts that grow with the log.
  {
    v1::FeatureSpec& spec = *m.mutable_features();
    spec.clear_blocks();
    for (v1::FeatureBlockKind kind : {v1::ITEM_DENSE, v1::USER_DENSE, v1::USER_ITEM_DENSE_PRODUCT, v1::CANDIDATE_SIGNALS}) {
      v1::FeatureBlock* block = spec.add_blocks();
      block->set_kind(kind);
      block->set_width(kind == v1::CANDIDATE_SIGNALS ? 10 : kActivityFeatures);
    }
    if (lo.knn_neighbors > 0) {
      v1::FeatureBlock* block = spec.add_blocks();
      block->set_kind(v1::ITEM_KNN_SIGNALS);
      block->set_width(3);
    }
    m.mutable_user_model()->set_covisit_detail(true);
  }
  // Logs of one event type (purchases), ratings, logs without purchases: anything the user touched is consumed.
  {
    absl::flat_hash_set<int> kinds;
    for (const LoggedEvent& e : events) kinds.insert(static_cast<int>(e.kind));
    auto param = [&w](const char* key) { return w.params.count(key) ? w.params.at(key) : std::string(); };
    const bool ratings = param("format") == "ratings_csv" || param("log_format") == "ratings";
    if (kinds.size() == 1 || ratings || !kinds.contains(static_cast<int>(EventKind::kPurchase))) {
      for (const char* t : {"view", "click", "cart", "purchase"}) m.mutable_recall()->add_exclude_event_types(t);
    }
  }
  int width = 0;
  for (const v1::FeatureBlock& blk : m.features().blocks()) width += blk.width();

  // Every user's events, oldest first, as catalog indices (and the users in id order).
  absl::flat_hash_map<uint64_t, std::vector<UserEvent>> histories;
  for (const LoggedEvent& e : events) {
    histories[e.user_id].push_back({index.at(e.item_id), static_cast<EventType>(e.kind), e.timestamp_ms});
  }
  std::vector<uint64_t> users;
  for (const auto& [u, h] : histories) users.push_back(u);
  std::sort(users.begin(), users.end());

  const int64_t first_ms = events.front().timestamp_ms, last_ms = events.back().timestamp_ms;
  std::vector<double> fractions = lo.anchor_fractions;
  std::sort(fractions.begin(), fractions.end());
  const int anchors = static_cast<int>(fractions.size());
  const int max_events = m.user_model().max_events();
  // A model whose artifacts come from the events before `cut_ms` only, for features.
  auto model_before = [&](int64_t cut_ms) -> absl::StatusOr<std::shared_ptr<const Model>> {
    BundleContents probe;
    probe.manifest = m;
    probe.items = base;
    ActivityFeatures(events, cut_ms, index, n, &probe.items.dense);
    RETURN_IF_ERROR(BuildArtifacts(events, cut_ms, index, ao, &probe.items, &probe.covisit));
    probe.mlp.layers.push_back({width, 1, std::vector<float>(width, 0.f), {0.f}, false});
    return Model::Create(std::move(probe), 0);
  };
  Rows fit, val;
  int64_t requests_total = 0, requests_recalled = 0, val_requests = 0, val_recalled = 0;
  for (int a = 0; a < anchors; ++a) {
    const int64_t anchor = first_ms + static_cast<int64_t>(fractions[a] * static_cast<double>(last_ms - first_ms));
    ASSIGN_OR_RETURN(auto model, model_before(anchor));

    // Requests: users with a past and a next basket holding something new to them.
    std::vector<Request> requests;
    for (uint64_t u : users) {
      const std::vector<UserEvent>& h = histories.at(u);
      auto cut = std::lower_bound(h.begin(), h.end(), anchor,
                                  [](const UserEvent& e, int64_t t) { return e.timestamp_ms < t; });
      if (cut == h.begin() || cut == h.end()) continue;
      absl::flat_hash_set<int32_t> seen;
      for (auto it = h.begin(); it != cut; ++it) seen.insert(it->item);
      Request r{a, u, static_cast<size_t>(cut - h.begin()), {}};
      const int64_t horizon_end = lo.positive_horizon_days > 0
                                      ? anchor + static_cast<int64_t>(lo.positive_horizon_days * kDayMs) : 0;
      for (auto it = cut; it != h.end(); ++it) {
        // The next basket holding something new, and with a horizon every new item within it.
        if (!r.positives.empty() && it->timestamp_ms != (it - 1)->timestamp_ms && it->timestamp_ms >= horizon_end) break;
        if (!seen.contains(it->item) &&
            std::find(r.positives.begin(), r.positives.end(), it->item) == r.positives.end()) {
          r.positives.push_back(it->item);
        }
      }
      if (!r.positives.empty()) requests.push_back(std::move(r));
    }
    // Bound memory on large logs: at most max_rows rows over all anchors, a seeded
    // sample of whole requests (kept in user order).
    const size_t per_request = static_cast<size_t>(lo.negatives_per_request + std::max(lo.max_positives_per_request, 1));
    const size_t max_requests = std::max<size_t>(1, static_cast<size_t>(lo.max_rows) / anchors / per_request);
    if (lo.max_rows > 0 && requests.size() > max_requests) {
      std::vector<std::pair<uint64_t, size_t>> order;
      for (size_t q = 0; q < requests.size(); ++q) order.push_back({Mix(opt.seed ^ 0x5bd1e995, requests[q].user), q});
      std::sort(order.begin(), order.end());
      order.resize(max_requests);
      std::sort(order.begin(), order.end(), [](const auto& x, const auto& y) { return x.second < y.second; });
      std::vector<Request> kept;
      for (const auto& [key, q] : order) kept.push_back(std::move(requests[q]));
      say(absl::StrFormat("anchor %d: %d of %d requests kept (max_rows %d)", a + 1, kept.size(), requests.size(),
                          lo.max_rows));
      requests = std::move(kept);
    }
    // Rows, in request order whatever the thread count (per-request buffers, seeded draws).
    const bool validation = anchors > 1 && a == anchors - 1;
    std::vector<Rows> per(requests.size());
    std::vector<char> recalled(requests.size(), 0);
#pragma omp parallel
    {
      UserState state;
      RecallScratch scratch;
      std::vector<Candidate> candidates;
      std::vector<int32_t> items, negatives;
#pragma omp for schedule(dynamic, 32)
      for (size_t q = 0; q < requests.size(); ++q) {
        const Request& r = requests[q];
        const std::vector<UserEvent>& h = histories.at(r.user);
        const size_t from = r.history_end > static_cast<size_t>(max_events) ? r.history_end - max_events : 0;
        BuildUserState(model->catalog(), model->covisit(), m.user_model(),
                       absl::MakeConstSpan(h.data() + from, r.history_end - from), &state);
        model->recaller().Recall(state, model->recall_options(), &scratch, &candidates);
        items.clear();
        negatives.clear();
        for (const Candidate& c : candidates) {
          // An item nobody had touched before the anchor exists in this catalog only
          // because the bundle's catalog is the whole log's: not a row.
          if (model->catalog().data().popularity[c.item] <= 0) continue;
          if (std::find(r.positives.begin(), r.positives.end(), c.item) != r.positives.end()) {
            items.push_back(c.item);
          } else {
            negatives.push_back(c.item);
          }
        }
        if (items.empty()) continue;  // nothing to learn: the target was not recalled
        recalled[q] = 1;
        std::mt19937_64 rng(Mix(opt.seed, Mix(static_cast<uint64_t>(a), r.user)));
        // At most max_positives of them, so that a wholesale basket of fifty new items
        // does not outweigh fifty users.
        if (lo.max_positives_per_request > 0 && items.size() > static_cast<size_t>(lo.max_positives_per_request)) {
          for (int k = 0; k < lo.max_positives_per_request; ++k) {
            std::uniform_int_distribution<size_t> pick(k, items.size() - 1);
            std::swap(items[k], items[pick(rng)]);
          }
          items.resize(lo.max_positives_per_request);
        }
        const size_t positives = items.size();
        const size_t keep = std::min<size_t>(negatives.size(), lo.negatives_per_request);
        for (size_t k = 0; k < keep; ++k) {
          std::uniform_int_distribution<size_t> pick(k, negatives.size() - 1);
          std::swap(negatives[k], negatives[pick(rng)]);
          items.push_back(negatives[k]);
        }
        Rows& rows = per[q];
        rows.count = static_cast<int>(items.size());
        rows.features.resize(items.size() * static_cast<size_t>(width));
        model->features().Build(model->catalog(), state, RequestContext{}, items, rows.features.data());
        rows.labels.assign(items.size(), 0.f);
        std::fill(rows.labels.begin(), rows.labels.begin() + positives, 1.f);
        rows.groups.assign(items.size(), static_cast<int64_t>(requests_total + q));
      }
    }
    Rows& into = validation ? val : fit;
    for (size_t q = 0; q < per.size(); ++q) {
      into.features.insert(into.features.end(), per[q].features.begin(), per[q].features.end());
      into.labels.insert(into.labels.end(), per[q].labels.begin(), per[q].labels.end());
      into.groups.insert(into.groups.end(), per[q].groups.begin(), per[q].groups.end());
      into.count += per[q].count;
    }
    const int64_t hit = std::count(recalled.begin(), recalled.end(), 1);
    requests_total += static_cast<int64_t>(requests.size());
    requests_recalled += hit;
    if (validation) {
      val_requests = static_cast<int64_t>(requests.size());
      val_recalled = hit;
    }
    say(absl::StrFormat("anchor %d/%d at %.0f%% of the range: %d requests, next basket recalled in %.1f%%%s", a + 1,
                        anchors, 100 * fractions[a], requests.size(),
                        requests.empty() ? 0.0 : 100.0 * hit / requests.size(), validation ? " (validation)" : ""));
  }
  if (fit.count == 0) return absl::InvalidArgumentError("log trainer: no ranker rows (too little history before the anchors)");
  if (val.count == 0) {
    // One anchor: validate on every seventh request instead.
    Rows keep;
    for (int r = 0; r < fit.count; ++r) {
      Rows& into = fit.groups[r] % 7 == 0 ? val : keep;
      into.features.insert(into.features.end(), fit.features.begin() + static_cast<size_t>(r) * width,
                           fit.features.begin() + static_cast<size_t>(r + 1) * width);
      into.labels.push_back(fit.labels[r]);
      into.groups.push_back(fit.groups[r]);
      ++into.count;
    }
    fit = std::move(keep);
    if (val.count == 0 || fit.count == 0) return absl::InvalidArgumentError("log trainer: too few ranker rows");
  }
  say(absl::StrFormat("rows: %d train, %d validation (width %d)", fit.count, val.count, width));

  // What the ranker trains on: the anchors' rows, and with served impressions
  // (TrainerOptions::served) the rows of the real answers too, every row widened by the
  // shown position's columns (train/served_rows.h; the anchors' rows, whose users found
  // their items unprompted, as at the top). Added to the anchors' rows, not in place of
  // their sampled negatives: the served ranker scores every recall candidate, most of
  // which no ranker ever showed, and only the anchors' rows cover them; the served rows
  // add real negatives (shown, not taken) and the position effect on the lists earlier
  // rankers chose. Row for row: without clicks measured on served items there is no
  // figure to set another weight by, and this way the served rows weigh more as the log
  // grows. Features from artifacts of the events before the oldest answer (no label in
  // them); each answer's user state from the events its request carried.
  const bool with_impressions = !opt.served.empty();
  RowMatrix train_fit, train_val;
  if (with_impressions) {
    if (opt.distill.enabled()) {
      return absl::InvalidArgumentError(
          "--impressions cannot be combined with distillation (--teacher, --teacher_hidden) yet");
    }
    int64_t oldest = opt.served.front().time_ms;
    for (const ServedSlate& slate : opt.served) oldest = std::min(oldest, slate.time_ms);
    ASSIGN_OR_RETURN(auto model, model_before(std::min(oldest, last_ms + 1)));
    ServedRowsOptions served_options;
    served_options.position_columns = opt.position_columns;
    served_options.validation_fraction = opt.validation_fraction;
    ASSIGN_OR_RETURN(ServedTrainingRows rows,
                     CombineWithServedRows(*model, {fit.features, fit.labels, fit.count},
                                           {val.features, val.labels, val.count}, opt.served, served_options));
    out.served_rows = rows.stats;
    say(absl::StrFormat("served impressions: %d fit and %d validation rows (%d position columns), %d shown items "
                        "and %d answers left out (items the catalog does not know)",
                        rows.fit.count - fit.count, rows.val.count - val.count, opt.position_columns,
                        rows.stats.unknown_items, rows.stats.empty_slates));
    train_fit = std::move(rows.fit);
    train_val = std::move(rows.val);
    fit = Rows();
  } else {
    train_fit = {std::move(fit.features), std::move(fit.labels), fit.count, width};
    train_val = {val.features, val.labels, val.count, width};
  }

  // The ranker, on one thread unless parallel (sgemm's sums depend on the thread count).
  MlpTrainOptions mlp_options = opt.mlp;
  mlp_options.verbose = opt.verbose && opt.mlp.verbose;
  mlp_options.learning_rate = lo.learning_rate;
  mlp_options.patience = lo.patience;
  if (lo.ensemble < 1 || lo.ensemble > 16) {
    return absl::InvalidArgumentError(absl::StrFormat("log trainer: ensemble is %d; must be in [1, 16]", lo.ensemble));
  }
  if (!lo.parallel) omp_set_num_threads(1);
  // Every anchor's rows, for the refit after early stopping.
  RowMatrix all;
  if (lo.refit_on_all_rows) {
    all = train_fit;
    all.rows.insert(all.rows.end(), train_val.rows.begin(), train_val.rows.end());
    all.labels.insert(all.labels.end(), train_val.labels.begin(), train_val.labels.end());
    all.count += train_val.count;
  }
  // One ranker: `ensemble` members of `hidden` / ensemble, each early-stopped on the
  // validation anchor and then (refit) trained that many epochs on every anchor's rows,
  // combined into one network. `teacher` (may be null) is distilled into every member: its
  // network before the refit on the fit rows, its served one on every row.
  // When distilling, the networks the comparison needs.
  struct Distilled {
    Network teacher;
    Mlp student_held_out;
    Network baseline;
  };
  std::optional<Distilled> distilled;
  auto train_network = [&](const std::vector<int>& hidden, const Network* teacher,
                           MlpTrainReport* first_report) -> absl::StatusOr<Network> {
    std::vector<float> fit_logits, all_logits;
    if (teacher != nullptr) {
      ASSIGN_OR_RETURN(fit_logits, MlpLogits(teacher->held_out, train_fit.rows, train_fit.count));
      if (lo.refit_on_all_rows) {
        ASSIGN_OR_RETURN(all_logits, MlpLogits(teacher->served, all.rows, all.count));
      }
    }
    auto train = [&](const RowMatrix& rows, const std::vector<float>& logits, const MlpTrainOptions& options,
                     MlpTrainReport* report) {
      return teacher == nullptr
                 ? TrainMlp(rows.rows, rows.labels, rows.count, rows.width, train_val.rows, train_val.labels,
                            train_val.count, options, report)
                 : DistillMlp(rows.rows, rows.labels, rows.count, rows.width, train_val.rows, train_val.labels,
                              train_val.count, Distillation{logits, opt.distill.alpha, opt.distill.temperature},
                              options, report);
    };
    std::vector<Mlp> held_out, served;
    for (int k = 0; k < lo.ensemble; ++k) {
      MlpTrainOptions member_options = mlp_options;
      member_options.hidden = hidden;
      if (lo.ensemble > 1) {
        member_options.seed = Mix(mlp_options.seed, static_cast<uint64_t>(k));
        for (int& h : member_options.hidden) h = (h + lo.ensemble - 1) / lo.ensemble;
      }
      MlpTrainReport report;
      ASSIGN_OR_RETURN(Mlp member, train(train_fit, fit_logits, member_options, &report));
      held_out.push_back(member);
      if (lo.refit_on_all_rows) {
        // The validation anchor is the newest data, the closest to what the bundle will
        // serve: once it has chosen the epoch count, learn from it too.
        MlpTrainOptions refit = member_options;
        refit.max_epochs = report.best_epoch;
        refit.patience = 0;
        MlpTrainReport refit_report;
        ASSIGN_OR_RETURN(member, train(all, all_logits, refit, &refit_report));
        say(absl::StrFormat("mlp refit on train + validation rows: %d epochs", refit_report.epochs));
      }
      served.push_back(std::move(member));
      if (lo.ensemble > 1) {
        say(absl::StrFormat("ensemble member %d/%d: best epoch %d, validation AUC %.4f", k + 1, lo.ensemble,
                            report.best_epoch, report.best_val_auc));
      }
      if (k == 0) *first_report = std::move(report);
    }
    Network network;
    ASSIGN_OR_RETURN(network.held_out, CombineMlps(held_out));
    ASSIGN_OR_RETURN(network.served, CombineMlps(served));
    if (train_fit.width != width) {
      // Scored as shown at the top: the position inputs leave the first layer.
      ASSIGN_OR_RETURN(network.held_out, DropPositionInputs(network.held_out, width));
      ASSIGN_OR_RETURN(network.served, DropPositionInputs(network.served, width));
    }
    return network;
  };
  absl::StatusOr<Network> trained = [&]() -> absl::StatusOr<Network> {
    if (!opt.distill.enabled()) return train_network(mlp_options.hidden, nullptr, &out.mlp_report);
    RETURN_IF_ERROR(ValidateDistillOptions(opt.distill));
    Network teacher;
    if (!opt.distill.teacher_path.empty()) {
      ASSIGN_OR_RETURN(teacher.served, LoadTeacher(opt.distill.teacher_path, m.features()));
      teacher.held_out = teacher.served;
    } else {
      MlpTrainReport teacher_report;
      ASSIGN_OR_RETURN(teacher, train_network(opt.distill.teacher_hidden, nullptr, &teacher_report));
      say(absl::StrFormat("teacher %s trained", absl::StrJoin(teacher.served.LayerSizes(), "-")));
    }
    ASSIGN_OR_RETURN(Network student, train_network(mlp_options.hidden, &teacher, &out.mlp_report));
    MlpTrainReport baseline_report;
    ASSIGN_OR_RETURN(Network baseline, train_network(mlp_options.hidden, nullptr, &baseline_report));
    distilled = Distilled{std::move(teacher), student.held_out, std::move(baseline)};
    return student;
  }();
  omp_set_num_threads(threads);
  RETURN_IF_ERROR(trained.status());
  b.mlp = std::move(trained->served);
  if (lo.ensemble > 1 || with_impressions) {
    // The whole network's validation figures on the validation anchor's rows, before the
    // refit (which trains on them): the members' first report describes member 0 alone,
    // and with served impressions it also covers their validation rows, with positions.
    ASSIGN_OR_RETURN(std::unique_ptr<Ranker> ranker, CreateFp32Ranker(trained->held_out));
    ASSIGN_OR_RETURN(const std::vector<float> scores, ScoreAll(*ranker, val.features, val.count));
    out.mlp_report.best_val_auc = Auc(scores, val.labels);
    double logloss = 0;
    for (int r = 0; r < val.count; ++r) {
      const double p = std::clamp<double>(scores[r], 1e-7, 1 - 1e-7);
      logloss -= val.labels[r] > 0 ? std::log(p) : std::log(1 - p);
    }
    out.mlp_report.best_val_logloss = logloss / val.count;
  }
  say(absl::StrFormat("mlp: %d epochs, best %d, validation logloss %.4f AUC %.4f", out.mlp_report.epochs,
                      out.mlp_report.best_epoch, out.mlp_report.best_val_logloss, out.mlp_report.best_val_auc));

  // The bundle's artifacts: every training event.
  b.items = base;
  // "Now" for the recency features is the end of the log.
  ActivityFeatures(events, last_ms + 1, index, n, &b.items.dense);
  b.items.recent_popularity = RecentCounts(events, last_ms + 1, lo.recent_days, index, n);
  // Only when used: a manifest without the section stays readable by servers older than it.
  if (lo.recent_share > 0) m.mutable_answer()->set_recent_share(static_cast<float>(lo.recent_share));
  RETURN_IF_ERROR(BuildArtifacts(events, last_ms + 1, index, ao, &b.items, &b.covisit));

  // Calibration: the validation requests' positives and their first
  // calibration_negatives negatives (drawn at random already), newest requests first up
  // to the cap. Many requests with a few negatives each give the load-time gate enough
  // positives to measure an AUC on (with all 300 negatives, 20k rows held some 66
  // requests and 200 positives, and the gate refused sound int8 rankers on noise).
  CalibrationSet& cal = b.calibration;
  cal.width = width;
  {
    std::vector<int> keep;  // row indices, request by request from the newest
    int end = val.count;
    while (end > 0 && static_cast<int>(keep.size()) < opt.max_calibration_rows) {
      int begin = end - 1;
      while (begin > 0 && val.groups[begin - 1] == val.groups[end - 1]) --begin;
      std::vector<int> request;
      int negatives = 0;
      for (int r = begin; r < end; ++r) {
        if (val.labels[r] > 0 || negatives++ < lo.calibration_negatives) request.push_back(r);
      }
      if (static_cast<int>(keep.size() + request.size()) > opt.max_calibration_rows && !keep.empty()) break;
      keep.insert(keep.begin(), request.begin(), request.end());
      end = begin;
    }
    cal.rows = static_cast<int>(keep.size());
    cal.features.reserve(keep.size() * width);
    for (int r : keep) {
      cal.features.insert(cal.features.end(), val.features.begin() + static_cast<size_t>(r) * width,
                          val.features.begin() + static_cast<size_t>(r + 1) * width);
      cal.labels.push_back(val.labels[r]);
      cal.groups.push_back(val.groups[r]);
    }
  }

  v1::TrainingReport& report = out.report;
  if (distilled.has_value()) {
    const CalibrationSet held_out{val.features, val.labels, val.groups, val.count, width};
    ASSIGN_OR_RETURN(*report.mutable_distillation(),
                     CompareDistilled(distilled->teacher.held_out, distilled->student_held_out,
                                      distilled->baseline.held_out, opt.distill, m, cal, held_out,
                                      "the validation anchor's requests, networks before the refit"));
    out.teacher = std::move(distilled->teacher.served);
    out.baseline = std::move(distilled->baseline.served);
  }
  report.set_test_auc(out.mlp_report.best_val_auc);
  report.set_test_logloss(out.mlp_report.best_val_logloss);
  report.set_recall_k(m.recall().max_candidates());
  report.set_recall_hit_rate(val_requests > 0 ? static_cast<double>(val_recalled) / val_requests
                                              : static_cast<double>(requests_recalled) / std::max<int64_t>(1, requests_total));
  report.set_data_source(w.params.count("source") ? w.params.at("source") : "log");
  m.clear_layer_sizes();
  for (int s : b.mlp.LayerSizes()) m.add_layer_sizes(s);
  *m.mutable_training() = report;
  b.manifest = m;
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  say(absl::StrFormat("done: validation AUC %.4f over recalled candidates; next basket recalled in %.1f%% of validation requests",
                      report.test_auc(), 100 * report.recall_hit_rate()));
  return out;
}

}  // namespace recserve
