#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/features.h"
#include "engine/model.h"
#include "engine/quality.h"
#include "engine/recall.h"
#include "engine/status_macros.h"
#include "train/artifacts.h"
#include "train/served_rows.h"

namespace recserve {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class Progress {
 public:
  explicit Progress(bool verbose) : verbose_(verbose), start_(Clock::now()) {}
  template <typename... Args>
  void Say(const absl::FormatSpec<Args...>& format, const Args&... args) {
    if (!verbose_) return;
    std::fprintf(stderr, "[train %7.1fs] %s\n", Since(start_), absl::StrFormat(format, args...).c_str());
  }
  double seconds() const { return Since(start_); }

 private:
  bool verbose_;
  Clock::time_point start_;
};

using Histories = absl::flat_hash_map<uint64_t, std::vector<UserEvent>>;

// Every user's events (train and test), oldest first, as catalog indices: the history
// before any moment is a prefix of it.
Histories UserHistories(const World& world, const Catalog& catalog) {
  Histories histories;
  for (const auto* events : {&world.train_events, &world.test_events}) {
    for (const LoggedEvent& e : *events) {
      const int32_t item = catalog.Find(e.item_id);
      if (item >= 0) histories[e.user_id].push_back({item, static_cast<EventType>(e.kind), e.timestamp_ms});
    }
  }
  for (auto& [user, events] : histories) {
    std::stable_sort(events.begin(), events.end(),
                     [](const UserEvent& a, const UserEvent& b) { return a.timestamp_ms < b.timestamp_ms; });
  }
  return histories;
}

// The newest `max_events` events of `all` strictly before `timestamp_ms`.
absl::Span<const UserEvent> EventsBefore(const std::vector<UserEvent>& all, int64_t timestamp_ms,
                                         int max_events) {
  auto end = std::lower_bound(all.begin(), all.end(), timestamp_ms,
                              [](const UserEvent& e, int64_t t) { return e.timestamp_ms < t; });
  const ptrdiff_t count = std::min<ptrdiff_t>(end - all.begin(), max_events);
  return absl::MakeConstSpan(all.data() + (end - all.begin()) - count, count);
}

struct Slate {
  size_t begin, end;  // range in the impression vector (sorted by slate)
  int64_t timestamp_ms;
};

struct RowSet {
  std::vector<float> rows;
  std::vector<float> labels;
  std::vector<float> true_p;
  std::vector<int64_t> groups;
  int count = 0;
};

// Groups impressions into slates (same impression_id), ordered by time.
std::vector<Slate> SlatesOf(std::vector<Impression>* imps) {
  std::stable_sort(imps->begin(), imps->end(), [](const Impression& a, const Impression& b) {
    return a.timestamp_ms != b.timestamp_ms ? a.timestamp_ms < b.timestamp_ms
                                            : a.impression_id < b.impression_id;
  });
  std::vector<Slate> slates;
  for (size_t i = 0; i < imps->size();) {
    size_t j = i;
    while (j < imps->size() && (*imps)[j].impression_id == (*imps)[i].impression_id) ++j;
    slates.push_back({i, j, (*imps)[i].timestamp_ms});
    i = j;
  }
  return slates;
}

// Builds feature rows for `slates` with the engine's own user-state and feature code.
RowSet BuildRows(const Model& model, const std::vector<Impression>& imps,
                 const std::vector<Slate>& slates,
                 const Histories& histories) {
  const Catalog& catalog = model.catalog();
  const int width = model.features().width();
  std::vector<size_t> offset(slates.size() + 1, 0);
  for (size_t s = 0; s < slates.size(); ++s) offset[s + 1] = offset[s] + (slates[s].end - slates[s].begin);
  RowSet out;
  out.count = static_cast<int>(offset.back());
  out.rows.resize(offset.back() * width);
  out.labels.resize(offset.back());
  out.true_p.resize(offset.back());
  out.groups.resize(offset.back());
  const int max_events = model.manifest().user_model().max_events();
#pragma omp parallel
  {
    UserState state;
    std::vector<int32_t> items;
    const std::vector<UserEvent> empty;
#pragma omp for schedule(dynamic, 256)
    for (size_t s = 0; s < slates.size(); ++s) {
      const Impression& first = imps[slates[s].begin];
      auto it = histories.find(first.user_id);
      const std::vector<UserEvent>& all = it == histories.end() ? empty : it->second;
      BuildUserState(catalog, model.covisit(), model.manifest().user_model(),
                     EventsBefore(all, first.timestamp_ms, max_events), &state);
      items.clear();
      for (size_t i = slates[s].begin; i < slates[s].end; ++i) items.push_back(catalog.Find(imps[i].item_id));
      RequestContext ctx{first.device, first.hour};
      model.features().Build(catalog, state, ctx, items, &out.rows[offset[s] * width]);
      for (size_t i = slates[s].begin, r = offset[s]; i < slates[s].end; ++i, ++r) {
        out.labels[r] = imps[i].label;
        out.true_p[r] = imps[i].true_p;
        out.groups[r] = static_cast<int64_t>(imps[i].impression_id);
      }
    }
  }
  return out;
}

std::vector<int> NumericSubdirs(const std::string& dir) {
  std::vector<int> versions;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    int v = 0;
    if (entry.is_directory() && absl::SimpleAtoi(entry.path().filename().string(), &v) && v > 0) {
      versions.push_back(v);
    }
  }
  return versions;
}

// For logs without impressions (ratings CSVs): every click-or-better event becomes a
// slate of its item (label 1) and `negatives` items sampled by popularity (label 0),
// shown at the event's time with an unknown context.
std::vector<Impression> SlatesFromEvents(const std::vector<LoggedEvent>& events,
                                         const std::vector<uint64_t>& ids,
                                         const std::vector<float>& popularity, int negatives,
                                         uint64_t seed, uint64_t first_slate_id) {
  std::vector<Impression> out;
  std::vector<double> weights(popularity.begin(), popularity.end());
  for (double& w : weights) w += 1.0;  // items never seen in the window can still be drawn
  std::discrete_distribution<size_t> pick(weights.begin(), weights.end());
  std::mt19937_64 rng(seed);
  uint64_t slate = first_slate_id;
  for (const LoggedEvent& e : events) {
    if (e.kind == EventKind::kView) continue;
    out.push_back({slate, e.user_id, e.item_id, e.timestamp_ms, 0, -1, 1.f, -1.f});
    for (int k = 0; k < negatives; ++k) {
      const uint64_t item = ids[pick(rng)];
      if (item == e.item_id) continue;
      out.push_back({slate, e.user_id, item, e.timestamp_ms, 0, -1, 0.f, -1.f});
    }
    ++slate;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> WriteVersion(const BundleContents& bundle,
                                         const std::string& model_dir, int64_t version) {
  if (version <= 0) {
    std::vector<int> existing = NumericSubdirs(model_dir);
    version = existing.empty() ? 1 : *std::max_element(existing.begin(), existing.end()) + 1;
  }
  const std::string dir = absl::StrCat(model_dir, "/", version);
  RETURN_IF_ERROR(WriteBundle(bundle, dir));
  return dir;
}

absl::StatusOr<RecallEvaluation> EvaluateRecall(const BundleContents& bundle, const World& world,
                                                int k, int max_clicks, uint64_t seed) {
  ASSIGN_OR_RETURN(auto model, Model::Create(bundle, 0));
  const Catalog& catalog = model->catalog();
  Histories histories = UserHistories(world, catalog);
  std::vector<size_t> clicks;
  for (size_t i = 0; i < world.test_events.size(); ++i) {
    if (world.test_events[i].kind == EventKind::kClick && catalog.Find(world.test_events[i].item_id) >= 0) {
      clicks.push_back(i);
    }
  }
  std::mt19937_64 rng(seed);
  std::shuffle(clicks.begin(), clicks.end(), rng);
  if (static_cast<int>(clicks.size()) > max_clicks) clicks.resize(max_clicks);

  RecallOptions options;
  options.covisit_k = k / 2;
  options.embedding_k = k * 2 / 5;
  options.popularity_k = k - options.covisit_k - options.embedding_k;
  options.max_candidates = k;
  std::vector<char> popular(catalog.size(), 0);
  for (int i = 0; i < std::min(k, catalog.size()); ++i) popular[catalog.by_popularity()[i]] = 1;

  int64_t hits = 0, pop_hits = 0;
#pragma omp parallel reduction(+ : hits, pop_hits)
  {
    UserState state;
    RecallScratch scratch;
    std::vector<Candidate> candidates;
#pragma omp for schedule(dynamic, 64)
    for (size_t c = 0; c < clicks.size(); ++c) {
      const LoggedEvent& click = world.test_events[clicks[c]];
      BuildUserState(catalog, model->covisit(), model->manifest().user_model(),
                     EventsBefore(histories[click.user_id], click.timestamp_ms,
                                  model->manifest().user_model().max_events()),
                     &state);
      model->recaller().Recall(state, options, &scratch, &candidates);
      const int32_t target = catalog.Find(click.item_id);
      for (const Candidate& cand : candidates) {
        if (cand.item == target) {
          ++hits;
          break;
        }
      }
      pop_hits += popular[target];
    }
  }
  RecallEvaluation eval;
  eval.clicks = static_cast<int>(clicks.size());
  if (eval.clicks > 0) {
    eval.recall_hit_rate = static_cast<double>(hits) / eval.clicks;
    eval.popularity_hit_rate = static_cast<double>(pop_hits) / eval.clicks;
  }
  return eval;
}

v1::Manifest DefaultManifest(const TrainerOptions& opt, int dense_dim) {
  v1::Manifest m;
  m.set_schema_version(kBundleSchemaVersion);
  m.set_model_name(opt.model_name);
  // SOURCE_DATE_EPOCH (the reproducible-builds convention) fixes the creation time, so
  // that the same data, flags and seed give a byte-identical bundle.
  int64_t created_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  if (const char* epoch = std::getenv("SOURCE_DATE_EPOCH"); epoch != nullptr) {
    int64_t seconds = 0;
    if (absl::SimpleAtoi(epoch, &seconds) && seconds >= 0) created_ms = seconds * 1000;
  }
  m.set_created_unix_ms(created_ms);
  *m.mutable_features() = DefaultFeatureSpec(opt.embedding_dim, dense_dim);
  *m.mutable_user_model() = DefaultUserModel();
  m.mutable_user_model()->set_half_life_seconds(static_cast<float>(opt.half_life_seconds));
  m.mutable_user_model()->set_max_events(opt.user_max_events);
  m.mutable_recall()->set_embedding_k(opt.embedding_k);
  m.mutable_recall()->set_covisit_k(opt.covisit_k);
  m.mutable_recall()->set_popularity_k(opt.popularity_k);
  m.mutable_recall()->set_max_candidates(opt.max_candidates);
  m.mutable_recall()->set_embedding_index("exact");
  m.mutable_compression()->set_mode("int8");
  m.mutable_gate()->set_max_auc_drop(0.002f);
  m.mutable_gate()->set_max_logloss_rise(0.01f);
  return m;
}

ArtifactOptions ArtifactOptionsOf(const TrainerOptions& opt) {
  ArtifactOptions ao;
  ao.embedding_dim = opt.embedding_dim;
  ao.item2vec = opt.item2vec;
  ao.covisit_window = opt.covisit_window;
  ao.covisit_max_gap_seconds = opt.covisit_max_gap_seconds;
  ao.covisit_neighbors = opt.covisit_neighbors;
  ao.verbose = opt.verbose;
  return ao;
}

absl::StatusOr<TrainOutput> TrainModel(const World& world_in, const TrainerOptions& opt) {
  if (world_in.train_impressions.empty() && opt.log_trainer) return TrainFromLog(world_in, opt);
  Progress progress(opt.verbose);
  TrainOutput out;
  BundleContents& b = out.bundle;

  // 1. Catalog.
  CatalogData& items = b.items;
  absl::flat_hash_map<uint64_t, int32_t> index;
  if (!world_in.items.empty()) {
    items.dense_dim = static_cast<int>(world_in.items.front().dense.size());
    for (const ItemInfo& it : world_in.items) {
      if (static_cast<int>(it.dense.size()) != items.dense_dim) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "items.tsv: item %d has %d dense features, the first item has %d", it.item_id,
            it.dense.size(), items.dense_dim));
      }
      if (!index.emplace(it.item_id, static_cast<int32_t>(items.ids.size())).second) {
        return absl::InvalidArgumentError(absl::StrFormat("items.tsv: item %d listed twice", it.item_id));
      }
      items.ids.push_back(it.item_id);
      items.category.push_back(std::max(0, it.category));
      items.dense.insert(items.dense.end(), it.dense.begin(), it.dense.end());
    }
  } else {
    for (const auto* events : {&world_in.train_events, &world_in.test_events}) {
      for (const LoggedEvent& e : *events) {
        if (index.emplace(e.item_id, static_cast<int32_t>(items.ids.size())).second) {
          items.ids.push_back(e.item_id);
          items.category.push_back(0);
        }
      }
    }
  }
  const int n = static_cast<int>(items.ids.size());
  if (n == 0) return absl::InvalidArgumentError("world has no items");
  if (world_in.train_events.empty()) return absl::InvalidArgumentError("world has no train events");
  items.dim = opt.embedding_dim;
  // Popularity, co-visitation and embeddings come from the train events before
  // `artifact_cut`; the ranker learns from impressions after it. Were they built from the
  // same sessions the ranker learns from, a clicked item's own co-visitation edges would
  // leak its label into the features.
  int64_t first_ms = INT64_MAX, last_ms = INT64_MIN;
  for (const LoggedEvent& e : world_in.train_events) {
    first_ms = std::min(first_ms, e.timestamp_ms);
    last_ms = std::max(last_ms, e.timestamp_ms);
  }
  const int64_t artifact_cut =
      first_ms + static_cast<int64_t>((1.0 - opt.ranking_window_fraction) * static_cast<double>(last_ms - first_ms));
  {
    ArtifactOptions ao = ArtifactOptionsOf(opt);
    RETURN_IF_ERROR(BuildArtifacts(world_in.train_events, artifact_cut, index, ao, &items, &b.covisit));
  }
  progress.Say("catalog: %d items, %d train events, %d test events; artifacts from events before the ranking window",
               n, world_in.train_events.size(), world_in.test_events.size());

  // Manifest defaults; the ranker shape is filled in once it is trained.
  v1::Manifest& m = b.manifest;
  m = DefaultManifest(opt, items.dense_dim);

  // A feature-only model (a placeholder ranker of the right input width) so rows are
  // built by exactly the serving code path.
  int width = 0;
  for (const v1::FeatureBlock& blk : m.features().blocks()) width += blk.width();
  {
    BundleContents probe;
    probe.manifest = m;
    probe.items = items;
    probe.covisit = b.covisit;
    probe.mlp.layers.push_back({width, 1, std::vector<float>(width, 0.f), {0.f}, false});
    ASSIGN_OR_RETURN(auto feature_model, Model::Create(std::move(probe), 0));

    const Histories histories = UserHistories(world_in, feature_model->catalog());

    // 4. Ranking rows. Impressions with unknown items are dropped.
    auto known = [&](std::vector<Impression> v) {
      v.erase(std::remove_if(v.begin(), v.end(), [&](const Impression& i) { return !index.contains(i.item_id); }),
              v.end());
      return v;
    };
    const bool synthesized = world_in.train_impressions.empty();
    std::vector<Impression> train_imps =
        synthesized ? SlatesFromEvents(world_in.train_events, items.ids, items.popularity,
                                       opt.synthetic_negatives, opt.seed, 1)
                    : known(world_in.train_impressions);
    std::vector<Impression> test_imps =
        synthesized ? SlatesFromEvents(world_in.test_events, items.ids, items.popularity,
                                       opt.synthetic_negatives, opt.seed + 1, uint64_t{1} << 40)
                    : known(world_in.test_impressions);
    if (synthesized) {
      progress.Say("no impressions in the logs: %d train and %d test rows from clicks plus %d "
                   "popularity-sampled negatives each",
                   train_imps.size(), test_imps.size(), opt.synthetic_negatives);
    }
    train_imps.erase(std::remove_if(train_imps.begin(), train_imps.end(),
                                    [&](const Impression& i) { return i.timestamp_ms < artifact_cut; }),
                     train_imps.end());
    if (train_imps.empty()) {
      return absl::InvalidArgumentError(
          "world has no train impressions after the artifact window to learn the ranker from");
    }
    std::vector<Slate> train_slates = SlatesOf(&train_imps);
    std::vector<Slate> test_slates = SlatesOf(&test_imps);
    const size_t val_begin = static_cast<size_t>(train_slates.size() * (1.0 - opt.validation_fraction));
    std::vector<Slate> fit(train_slates.begin(), train_slates.begin() + val_begin);
    std::vector<Slate> val(train_slates.begin() + val_begin, train_slates.end());
    std::mt19937_64 rng(opt.seed);
    size_t fit_rows = 0;
    for (const Slate& s : fit) fit_rows += s.end - s.begin;
    if (fit_rows > static_cast<size_t>(opt.max_train_rows)) {
      std::shuffle(fit.begin(), fit.end(), rng);
      size_t kept = 0, k = 0;
      while (k < fit.size() && kept < static_cast<size_t>(opt.max_train_rows)) {
        kept += fit[k].end - fit[k].begin;
        ++k;
      }
      fit.resize(k);
    }
    RowSet fit_rows_set = BuildRows(*feature_model, train_imps, fit, histories);
    RowSet val_rows = BuildRows(*feature_model, train_imps, val, histories);
    RowSet test_rows = BuildRows(*feature_model, test_imps, test_slates, histories);
    progress.Say("rows: %d train, %d validation, %d test (width %d)", fit_rows_set.count,
                 val_rows.count, test_rows.count, width);

    // 5. MLP.
    MlpTrainOptions mlp_options = opt.mlp;
    mlp_options.verbose = opt.verbose && opt.mlp.verbose;
    if (!opt.served.empty()) {
      if (opt.distill.enabled()) {
        return absl::InvalidArgumentError(
            "--impressions cannot be combined with distillation (--teacher, --teacher_hidden) yet");
      }
      ServedRowsOptions served_options;
      served_options.position_columns = opt.position_columns;
      served_options.validation_fraction = opt.validation_fraction;
      ASSIGN_OR_RETURN(b.mlp, TrainWithServedImpressions(
                                  *feature_model, {fit_rows_set.rows, fit_rows_set.labels, fit_rows_set.count},
                                  {val_rows.rows, val_rows.labels, val_rows.count}, opt.served,
                                  served_options, mlp_options, &out.mlp_report, &out.served_rows));
    } else if (!opt.distill.enabled()) {
      ASSIGN_OR_RETURN(b.mlp, TrainMlp(fit_rows_set.rows, fit_rows_set.labels, fit_rows_set.count, width,
                                       val_rows.rows, val_rows.labels, val_rows.count, mlp_options,
                                       &out.mlp_report));
    } else {
      RETURN_IF_ERROR(ValidateDistillOptions(opt.distill));
      if (!opt.distill.teacher_path.empty()) {
        ASSIGN_OR_RETURN(out.teacher, LoadTeacher(opt.distill.teacher_path, m.features()));
      } else {
        MlpTrainOptions teacher_options = mlp_options;
        teacher_options.hidden = opt.distill.teacher_hidden;
        ASSIGN_OR_RETURN(out.teacher, TrainMlp(fit_rows_set.rows, fit_rows_set.labels, fit_rows_set.count, width,
                                               val_rows.rows, val_rows.labels, val_rows.count, teacher_options,
                                               nullptr));
        progress.Say("teacher %s trained", absl::StrJoin(out.teacher.LayerSizes(), "-"));
      }
      ASSIGN_OR_RETURN(const std::vector<float> teacher_logits,
                       MlpLogits(out.teacher, fit_rows_set.rows, fit_rows_set.count));
      const Distillation distillation{teacher_logits, opt.distill.alpha, opt.distill.temperature};
      ASSIGN_OR_RETURN(b.mlp, DistillMlp(fit_rows_set.rows, fit_rows_set.labels, fit_rows_set.count, width,
                                         val_rows.rows, val_rows.labels, val_rows.count, distillation,
                                         mlp_options, &out.mlp_report));
      ASSIGN_OR_RETURN(out.baseline, TrainMlp(fit_rows_set.rows, fit_rows_set.labels, fit_rows_set.count, width,
                                              val_rows.rows, val_rows.labels, val_rows.count, mlp_options,
                                              nullptr));
    }
    progress.Say("mlp: %d epochs, best %d, validation logloss %.4f AUC %.4f",
                 out.mlp_report.epochs, out.mlp_report.best_epoch,
                 out.mlp_report.best_val_logloss, out.mlp_report.best_val_auc);

    // Calibration: whole validation slates, newest last, up to the cap.
    CalibrationSet& cal = b.calibration;
    cal.width = width;
    const int cal_rows = std::min(val_rows.count, opt.max_calibration_rows);
    const int first = val_rows.count - cal_rows;
    cal.rows = cal_rows;
    cal.features.assign(val_rows.rows.begin() + static_cast<size_t>(first) * width, val_rows.rows.end());
    cal.labels.assign(val_rows.labels.begin() + first, val_rows.labels.end());
    cal.groups.assign(val_rows.groups.begin() + first, val_rows.groups.end());

    // 6. Evaluation on test impressions.
    v1::TrainingReport& report = out.report;
    if (test_rows.count > 0) {
      ASSIGN_OR_RETURN(auto ranker, CreateFp32Ranker(b.mlp));
      ASSIGN_OR_RETURN(std::vector<float> p, ScoreAll(*ranker, test_rows.rows, test_rows.count));
      report.set_test_auc(Auc(p, test_rows.labels));
      report.set_test_logloss(LogLoss(p, test_rows.labels));
      const bool oracle = std::all_of(test_rows.true_p.begin(), test_rows.true_p.end(),
                                      [](float q) { return q >= 0; });
      if (oracle) report.set_oracle_auc(Auc(test_rows.true_p, test_rows.labels));
      if (opt.distill.enabled()) {
        const CalibrationSet held_out{test_rows.rows, test_rows.labels, test_rows.groups, test_rows.count, width};
        ASSIGN_OR_RETURN(*report.mutable_distillation(),
                         CompareDistilled(out.teacher, b.mlp, out.baseline, opt.distill, m, cal, held_out,
                                          "test impressions"));
      }
      if (opt.keep_test_rows) {
        out.test_rows.rows = test_rows.count;
        out.test_rows.width = width;
        out.test_rows.features = std::move(test_rows.rows);
        out.test_rows.labels = std::move(test_rows.labels);
        out.test_rows.groups = std::move(test_rows.groups);
      }
    }
  }
  m.clear_layer_sizes();
  for (int s : b.mlp.LayerSizes()) m.add_layer_sizes(s);
  ASSIGN_OR_RETURN(RecallEvaluation eval, EvaluateRecall(b, world_in, opt.recall_k, opt.eval_clicks, opt.seed));
  v1::TrainingReport& report = out.report;
  report.set_recall_k(opt.recall_k);
  report.set_recall_hit_rate(eval.recall_hit_rate);
  report.set_popularity_hit_rate(eval.popularity_hit_rate);
  report.set_data_source(world_in.params.count("source") ? world_in.params.at("source") : "world");
  *m.mutable_training() = report;
  progress.Say("test AUC %.4f (oracle %.4f), logloss %.4f; recall hit-rate@%d %.3f vs popularity %.3f over %d clicks",
               report.test_auc(), report.oracle_auc(), report.test_logloss(), opt.recall_k,
               eval.recall_hit_rate, eval.popularity_hit_rate, eval.clicks);
  out.seconds = progress.seconds();
  return out;
}

}  // namespace recserve
