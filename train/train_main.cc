// recserve-train: behaviour logs -> a new model bundle version.
//
//   recserve-train --world=/tmp/world --model_dir=models/default
//   recserve-train --ratings_csv=ratings.csv --model_dir=models/ml
//   recserve-train --world=/tmp/world --impressions=/var/log/recserve --model_dir=models/default
//   recserve-train --events_csv=events.csv.gz --impressions=/var/log/recserve --model_dir=models/shop
//   recserve-train --world=/tmp/world --hidden=64,32,16 --teacher_hidden=512,256,128 \
//       --distill_compare_dir=/tmp/compare --model_dir=models/student
#include <omp.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "compression/compare.h"
#include "train/impression_labels.h"
#include "train/split_flags.h"
#include "train/trainer.h"
#include "train/world.h"

ABSL_FLAG(std::string, world, "", "World directory written by recserve-datagen (see train/world.h)");
ABSL_FLAG(std::string, ratings_csv, "",
          "Instead of --world: a user,item,rating,timestamp CSV (timestamps in seconds)");
ABSL_FLAG(double, click_threshold, 4.0, "With --ratings_csv: ratings >= this are clicks, lower views");
ABSL_FLAG(double, test_fraction, 0.1, "With --ratings_csv: newest share of events held out for test");
ABSL_FLAG(std::string, model_dir, "models/default", "Model directory; the bundle goes to <model_dir>/<version>");
ABSL_FLAG(int64_t, version, 0, "Version number to write; 0 = one above the highest existing");
ABSL_FLAG(std::string, model_name, "default", "Model name recorded in the manifest");
ABSL_FLAG(int, embedding_dim, 32, "Item embedding width");
ABSL_FLAG(std::string, hidden, "256,128,64", "Ranker hidden layer widths, comma-separated");
ABSL_FLAG(int, max_epochs, 30, "Upper bound on MLP epochs (early stopping usually ends sooner)");
ABSL_FLAG(int, item2vec_epochs, 0, "item2vec passes over the sequences (0: 3 for worlds, 10 for real logs)");
ABSL_FLAG(double, learning_rate, 0, "Ranker: Adam step size (0: 1e-3 for worlds, 3e-4 for real logs)");
ABSL_FLAG(double, weight_decay, 0, "Ranker: decoupled weight decay (AdamW)");
ABSL_FLAG(int, batch_size, 512, "Ranker: rows per Adam step");
ABSL_FLAG(int, patience, 0,
          "Ranker: epochs without a better validation logloss before stopping (0: 3 for worlds, 5 for real logs)");
ABSL_FLAG(int, max_train_rows, 1500000, "Cap on ranking rows used for gradient steps");
ABSL_FLAG(int, threads, 0, "Threads for training (0 = all cores)");
ABSL_FLAG(uint64_t, seed, 11, "Seed for every random choice");
ABSL_FLAG(bool, quiet, false, "No progress lines");
ABSL_FLAG(std::string, anchors, "0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9",
          "Real logs: ranker anchors as shares of the training time range (the last one validates)");
ABSL_FLAG(double, positive_horizon_days, 0,
          "Real logs: ranker positives are the next basket's new items and every new item within this many days");
ABSL_FLAG(double, popularity_half_life_days, 0,
          "Real logs: catalog popularity from events decayed by this half-life (0: plain counts)");
ABSL_FLAG(int64_t, max_rows, 4000000,
          "Real logs: ranker rows over all anchors at most (a seeded sample of whole requests past it; 0: no bound)");
ABSL_FLAG(int, max_positives, 3, "Real logs: recalled positives kept per ranker request (0: all)");
ABSL_FLAG(int, negatives, 100, "Real logs: candidates sampled as negatives per ranker request");
ABSL_FLAG(int, covisit_window, 5, "Real logs: co-visitation pairs up to this many positions apart (past the basket with --covisit_basket_pairs)");
ABSL_FLAG(double, covisit_gap_days, 365, "Real logs: ... and at most this many days apart");
ABSL_FLAG(bool, covisit_basket_pairs, false, "Real logs: every pair inside a basket (one timestamp) counts");
ABSL_FLAG(double, covisit_half_life_days, 0, "Real logs: pair weights halve every this many days before the end (0: off)");
ABSL_FLAG(bool, covisit_cosine, true, "Real logs: co-visitation weights normalised by sqrt(count a * count b)");
ABSL_FLAG(int, covisit_neighbors, 100, "Real logs: co-visitation neighbours kept per item");
ABSL_FLAG(int, knn_neighbors, 0,
          "Real logs: item-kNN neighbours kept per item, read by the ranker's ITEM_KNN_SIGNALS (0: none; "
          "200 measured neutral on online-retail)");
ABSL_FLAG(double, recent_share, 0.1,
          "Real logs: share of each answer's last slots given to the candidates most bought in the log's "
          "last 30 days (manifest answer.recent_share, 0..0.5; 0: ranker order only)");
ABSL_FLAG(double, recent_days, 30, "Real logs: the window of the bundle's recent_popularity counts, in days");
ABSL_FLAG(std::string, recall_sizes, "",
          "Manifest recall sizes covisit_k,embedding_k,popularity_k,max_candidates (empty: 200,200,50,500 for worlds, 400,300,100,800 for real logs)");
ABSL_FLAG(double, half_life_days, 365, "User model: an event's weight halves every this many days before the newest");
ABSL_FLAG(int, user_max_events, 100, "User model: the newest events a user state uses (1..100000)");
ABSL_FLAG(int, ensemble, 2,
          "Real logs: rankers of different seeds served as one network averaging their logits, each "
          "--hidden / ensemble wide");
ABSL_FLAG(bool, refit, true, "Real logs: refit the ranker on every anchor's rows once validation chose the epochs");
ABSL_FLAG(std::string, impressions, "",
          "With --world or --events_csv: a server's --impression_log_dir; its answers, labelled by the world's "
          "events (or the log's training events) and later answers' events, train the ranker with the world's "
          "slates (or the log's anchor rows), the shown position a training-only input (train/served_rows.h)");
ABSL_FLAG(absl::Duration, label_window, absl::Minutes(30),
          "With --impressions: a shown item is clicked if its user interacted with it this soon after");
ABSL_FLAG(int, position_columns, 9, "With --impressions: shown positions 1..N as training-only inputs (0: none, for comparison)");
ABSL_FLAG(bool, parallel_training, false,
          "Real logs: item2vec and the MLP on every core (faster; the bundle then depends on the thread count)");
ABSL_FLAG(std::string, teacher, "",
          "Distil the ranker from this teacher: a bundle version directory with the same feature blocks, or an "
          "ONNX ranker taking the same input width");
ABSL_FLAG(std::string, teacher_hidden, "",
          "Distil the ranker from a teacher of these hidden widths (comma-separated), trained first in this run on "
          "the same rows");
ABSL_FLAG(double, distill_alpha, 0.5, "Distillation: weight of the teacher's soft labels in the loss, 0..1");
ABSL_FLAG(double, distill_temperature, 2, "Distillation: temperature softening teacher and student logits, 1..100");
ABSL_FLAG(std::string, distill_compare_dir, "",
          "Distillation: also write the teacher and the same-size ranker trained without it as bundles "
          "<dir>/teacher/<version> and <dir>/baseline/<version> (for recserve-eval and recserve-compress --compare)");

namespace {

// Comma-separated positive widths into `out`; false (after a message) on a bad one.
bool ParseWidths(const std::string& flag, const std::string& text, std::vector<int>* out) {
  out->clear();
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int w = 0;
    if (!absl::SimpleAtoi(part, &w) || w <= 0) {
      std::fprintf(stderr, "recserve-train: --%s: '%s' is not a positive width\n", flag.c_str(),
                   std::string(part).c_str());
      return false;
    }
    out->push_back(w);
  }
  return true;
}

// The bundle with `mlp` as its ranker and `name`'s figures as its test figures: a
// comparison ranker of a distillation run, servable and evaluable on its own.
recserve::BundleContents WithRanker(const recserve::TrainOutput& trained, const recserve::Mlp& mlp,
                                    const std::string& name) {
  recserve::BundleContents bundle = trained.bundle;
  bundle.mlp = mlp;
  recserve::v1::TrainingReport& report = *bundle.manifest.mutable_training();
  for (const recserve::v1::RankerFigures& r : report.distillation().rankers()) {
    if (r.name() == name) {
      report.set_test_auc(r.auc());
      report.set_test_logloss(r.logloss());
    }
  }
  report.clear_distillation();
  return bundle;
}

}  // namespace

namespace {

// --impressions: the server's log labelled with the world's events (train and test),
// or with a real log's training events only (a split's test events judge the bundle
// and must not teach it), leaving out the records of users the log does not know.
absl::Status LoadServedImpressions(const recserve::World& world, bool real_log, recserve::TrainerOptions* options) {
  absl::StatusOr<std::vector<recserve::v1::Impression>> records =
      recserve::ReadImpressionLog(absl::GetFlag(FLAGS_impressions));
  if (!records.ok()) return records.status();
  std::vector<recserve::LoggedEvent> events = world.train_events;
  events.insert(events.end(), world.test_events.begin(), world.test_events.end());
  recserve::LabelOptions label_options;
  label_options.window = absl::GetFlag(FLAGS_label_window);
  label_options.known_users_only = real_log;
  recserve::LabelStats stats;
  absl::StatusOr<std::vector<recserve::ServedSlate>> slates =
      recserve::LabelImpressions(*records, events, label_options, &stats);
  if (!slates.ok()) return slates.status();
  std::fprintf(stderr, "[train] impressions: %lld records (%lld without events, %lld of users the log does not "
               "know left out), %lld shown items: %lld clicked, %lld not, %lld open (window not over) left out\n",
               static_cast<long long>(stats.records), static_cast<long long>(stats.digest_only),
               static_cast<long long>(stats.unknown_users), static_cast<long long>(stats.shown),
               static_cast<long long>(stats.clicked), static_cast<long long>(stats.not_clicked),
               static_cast<long long>(stats.open));
  options->served = *std::move(slates);
  options->position_columns = absl::GetFlag(FLAGS_position_columns);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains a recserve model bundle from behaviour logs.\n"
      "  recserve-train --world=DIR [--model_dir=models/default] [--version=N]\n"
      "  recserve-train --events_csv=FILE [--split=...] [--impressions=DIR] [--model_dir=...]\n"
      "  recserve-train --ratings_csv=FILE [--model_dir=...]");
  absl::ParseCommandLine(argc, argv);
  const std::string world_dir = absl::GetFlag(FLAGS_world);
  const std::string csv = absl::GetFlag(FLAGS_ratings_csv);
  const bool events_csv = recserve::EventsCsvFlagSet();
  if (int(!world_dir.empty()) + int(!csv.empty()) + int(events_csv) != 1) {
    std::fprintf(stderr, "recserve-train: give exactly one of --world, --events_csv or --ratings_csv\n");
    return 2;
  }
  if (!absl::GetFlag(FLAGS_impressions).empty() && !csv.empty()) {
    std::fprintf(stderr, "recserve-train: --impressions works with --world or --events_csv, not --ratings_csv "
                 "(give the ratings file as --events_csv)\n");
    return 2;
  }
  recserve::TrainerOptions options;
  options.model_name = absl::GetFlag(FLAGS_model_name);
  options.embedding_dim = absl::GetFlag(FLAGS_embedding_dim);
  options.mlp.max_epochs = absl::GetFlag(FLAGS_max_epochs);
  if (absl::GetFlag(FLAGS_learning_rate) > 0) {
    options.mlp.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_learning_rate));
    options.log.learning_rate = options.mlp.learning_rate;
  }
  if (absl::GetFlag(FLAGS_patience) > 0) {
    options.mlp.patience = absl::GetFlag(FLAGS_patience);
    options.log.patience = options.mlp.patience;
  }
  options.mlp.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  options.mlp.batch_size = absl::GetFlag(FLAGS_batch_size);
  if (absl::GetFlag(FLAGS_item2vec_epochs) > 0) {
    options.item2vec.epochs = absl::GetFlag(FLAGS_item2vec_epochs);
    options.log.item2vec_epochs = options.item2vec.epochs;
  }
  options.max_train_rows = absl::GetFlag(FLAGS_max_train_rows);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.mlp.seed = options.seed;
  options.item2vec.seed = options.seed;
  options.verbose = !absl::GetFlag(FLAGS_quiet);
  options.mlp.verbose = options.verbose;
  {
    recserve::LogTrainerOptions& lo = options.log;
    lo.anchor_fractions.clear();
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_anchors), ',', absl::SkipEmpty())) {
      double f = 0;
      if (!absl::SimpleAtod(part, &f) || !(f > 0 && f < 1)) {
        std::fprintf(stderr, "recserve-train: --anchors: '%s' is not in (0, 1)\n", std::string(part).c_str());
        return 2;
      }
      lo.anchor_fractions.push_back(f);
    }
    lo.negatives_per_request = absl::GetFlag(FLAGS_negatives);
    lo.max_positives_per_request = absl::GetFlag(FLAGS_max_positives);
    lo.max_rows = absl::GetFlag(FLAGS_max_rows);
    lo.popularity_half_life_days = absl::GetFlag(FLAGS_popularity_half_life_days);
    lo.positive_horizon_days = absl::GetFlag(FLAGS_positive_horizon_days);
    lo.covisit_window = absl::GetFlag(FLAGS_covisit_window);
    lo.covisit_max_gap_seconds = static_cast<int64_t>(absl::GetFlag(FLAGS_covisit_gap_days) * 86400);
    lo.covisit_basket_pairs = absl::GetFlag(FLAGS_covisit_basket_pairs);
    lo.covisit_half_life_days = absl::GetFlag(FLAGS_covisit_half_life_days);
    lo.covisit_cosine = absl::GetFlag(FLAGS_covisit_cosine);
    lo.covisit_neighbors = absl::GetFlag(FLAGS_covisit_neighbors);
    lo.knn_neighbors = absl::GetFlag(FLAGS_knn_neighbors);
    lo.recent_share = absl::GetFlag(FLAGS_recent_share);
    lo.recent_days = absl::GetFlag(FLAGS_recent_days);
    lo.parallel = absl::GetFlag(FLAGS_parallel_training);
    lo.refit_on_all_rows = absl::GetFlag(FLAGS_refit);
    lo.ensemble = absl::GetFlag(FLAGS_ensemble);
    options.half_life_seconds = absl::GetFlag(FLAGS_half_life_days) * 86400;
    options.user_max_events = absl::GetFlag(FLAGS_user_max_events);
    if (options.user_max_events < 1 || options.user_max_events > 100000) {
      std::fprintf(stderr, "recserve-train: --user_max_events must be in [1, 100000], not %d\n", options.user_max_events);
      return 2;
    }
    if (!absl::GetFlag(FLAGS_recall_sizes).empty()) {
      std::vector<std::string> parts = absl::StrSplit(absl::GetFlag(FLAGS_recall_sizes), ',');
      int* fields[] = {&options.covisit_k, &options.embedding_k, &options.popularity_k, &options.max_candidates};
      int* log_fields[] = {&lo.covisit_k, &lo.embedding_k, &lo.popularity_k, &lo.max_candidates};
      if (parts.size() != 4) {
        std::fprintf(stderr, "recserve-train: --recall_sizes needs four numbers\n");
        return 2;
      }
      for (int i = 0; i < 4; ++i) {
        if (!absl::SimpleAtoi(parts[i], fields[i]) || *fields[i] < 0 || *fields[i] > 100000) {
          std::fprintf(stderr, "recserve-train: --recall_sizes: '%s' is not a size\n", parts[i].c_str());
          return 2;
        }
        *log_fields[i] = *fields[i];
      }
    }
  }
  if (!ParseWidths("hidden", absl::GetFlag(FLAGS_hidden), &options.mlp.hidden) ||
      !ParseWidths("teacher_hidden", absl::GetFlag(FLAGS_teacher_hidden), &options.distill.teacher_hidden)) {
    return 2;
  }
  options.distill.teacher_path = absl::GetFlag(FLAGS_teacher);
  options.distill.alpha = static_cast<float>(absl::GetFlag(FLAGS_distill_alpha));
  options.distill.temperature = static_cast<float>(absl::GetFlag(FLAGS_distill_temperature));
  if (absl::Status s = recserve::ValidateDistillOptions(options.distill); !s.ok()) {
    std::fprintf(stderr, "recserve-train: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  const std::string compare_dir = absl::GetFlag(FLAGS_distill_compare_dir);
  if (!compare_dir.empty() && !options.distill.enabled()) {
    std::fprintf(stderr, "recserve-train: --distill_compare_dir needs --teacher or --teacher_hidden\n");
    return 2;
  }
  if (options.embedding_dim <= 0 || options.embedding_dim > 1024) {
    std::fprintf(stderr, "recserve-train: --embedding_dim must be in [1, 1024]\n");
    return 2;
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  if (threads > 0) omp_set_num_threads(threads);
  options.item2vec.threads = threads > 0 ? threads : omp_get_max_threads();

  absl::StatusOr<recserve::World> world;
  if (events_csv) {
    // A real log: train on the split's training events (every event with --split=none).
    absl::StatusOr<recserve::SplitInput> input = recserve::ReadSplitFromFlags();
    if (!input.ok()) {
      std::fprintf(stderr, "recserve-train: %s\n", input.status().ToString().c_str());
      return 1;
    }
    const recserve::EventLogStats& st = input->log.stats;
    std::fprintf(stderr, "[train] %s: %lld events (%lld duplicates dropped, %lld bad rows skipped), %lld users, "
                 "%lld items, format %s, timestamps in %s; %zu training events, %zu test users\n",
                 input->data_source.c_str(), static_cast<long long>(st.events), static_cast<long long>(st.duplicates),
                 static_cast<long long>(st.bad_rows), static_cast<long long>(st.users),
                 static_cast<long long>(st.items), st.format.c_str(), st.timestamp_unit.c_str(),
                 input->split.train_events.size(), input->split.cases.size());
    world = recserve::WorldFromLog(std::move(input->log), std::move(input->split.train_events),
                                   input->data_source);
  } else if (!csv.empty()) {
    world = recserve::ReadRatingsCsv(csv, absl::GetFlag(FLAGS_click_threshold), absl::GetFlag(FLAGS_test_fraction));
  } else {
    world = recserve::ReadWorld(world_dir);
  }
  if (!world.ok()) {
    std::fprintf(stderr, "recserve-train: %s\n", world.status().ToString().c_str());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_impressions).empty()) {
    absl::Status served = LoadServedImpressions(*world, events_csv, &options);
    if (!served.ok()) {
      std::fprintf(stderr, "recserve-train: --impressions: %s\n", served.ToString().c_str());
      return 1;
    }
  }
  absl::StatusOr<recserve::TrainOutput> trained = recserve::TrainModel(*world, options);
  if (!trained.ok()) {
    std::fprintf(stderr, "recserve-train: %s\n", trained.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::string> dir = recserve::WriteVersion(
      trained->bundle, absl::GetFlag(FLAGS_model_dir), absl::GetFlag(FLAGS_version));
  if (!dir.ok()) {
    std::fprintf(stderr, "recserve-train: %s\n", dir.status().ToString().c_str());
    return 1;
  }
  if (!compare_dir.empty()) {
    for (const auto& [name, mlp] : {std::pair<std::string, const recserve::Mlp*>{"teacher", &trained->teacher},
                                    {"baseline", &trained->baseline}}) {
      absl::StatusOr<std::string> written = recserve::WriteVersion(WithRanker(*trained, *mlp, name),
                                                                   compare_dir + "/" + name, absl::GetFlag(FLAGS_version));
      if (!written.ok()) {
        std::fprintf(stderr, "recserve-train: %s\n", written.status().ToString().c_str());
        return 1;
      }
      std::printf("wrote %s (%s)\n", written->c_str(), name.c_str());
    }
  }
  const recserve::v1::TrainingReport& r = trained->report;
  std::printf("wrote %s\n", dir->c_str());
  if (!options.served.empty()) {
    const recserve::ServedRowStats& s = trained->served_rows;
    std::printf("served rows       %lld (%lld shown items and %lld answers the catalog does not know left out)\n",
                static_cast<long long>(s.rows), static_cast<long long>(s.unknown_items),
                static_cast<long long>(s.empty_slates));
  }
  std::printf("%s %.4f\n", events_csv || !csv.empty() ? "validation AUC   " : "test AUC         ", r.test_auc());
  if (r.oracle_auc() > 0) {
    std::printf("oracle AUC        %.4f  (gap %.4f)\n", r.oracle_auc(), r.oracle_auc() - r.test_auc());
  }
  std::printf("test logloss      %.4f\n", r.test_logloss());
  if (events_csv || !csv.empty()) {
    // The real-log trainer's diagnostics; recserve-eval is the judge.
    std::printf("candidates        %d per request hold the next basket for %.1f%% of validation requests\n",
                r.recall_k(), 100 * r.recall_hit_rate());
    std::printf("quality           recserve-eval --events_csv=... --split=... --model_dir=%s\n",
                absl::GetFlag(FLAGS_model_dir).c_str());
  } else {
    std::printf("recall hit@%d    %.4f  vs popularity %.4f  (%.2fx)\n", r.recall_k(), r.recall_hit_rate(),
                r.popularity_hit_rate(),
                r.popularity_hit_rate() > 0 ? r.recall_hit_rate() / r.popularity_hit_rate() : 0.0);
  }
  if (r.has_distillation()) std::printf("%s", recserve::FormatDistillationReport(r.distillation()).c_str());
  std::printf("training time     %.1f s\n", trained->seconds);
  return 0;
}
