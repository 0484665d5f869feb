// recserve-eval: replays held-out users of a real log through the served pipeline and
// compares the answers with classical baselines computed in the same run.
//
//   LOG=../shared/data/online-retail-uci/events.csv.gz
//   recserve-train --events_csv=$LOG --split=leave_last_out --model_dir=models/retail
//   recserve-eval --events_csv=$LOG --split=leave_last_out --model_dir=models/retail [--json=eval.json]
//
// The bundle is loaded as the server loads it (compression policy, accuracy gate), and the
// split must be the one the bundle was trained on (the manifest records it; a mismatch is
// refused unless --allow_split_mismatch).
//
// With --impressions, judges bundles side by side on a server's own logged traffic
// instead (train/impression_eval.h): the held-out answers of the log, labelled by what
// the users did next, re-scored by each bundle without position:
//
//   recserve-eval --impressions=LOG --bundles=models/1,models/5 --heldout_from_version=5
//     [--world=W] [--events_csv=CLICKS --event_log_end=TIME] [--label_window=1s]
#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "compression/compress.h"
#include "nlohmann/json.hpp"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "train/click_truth.h"
#include "train/eval.h"
#include "train/event_log.h"
#include "train/impression_eval.h"
#include "train/split_flags.h"

ABSL_FLAG(std::string, model_dir, "", "Model directory (versions below it)");
ABSL_FLAG(int64_t, version, 0, "Version to evaluate; 0 = the newest with READY");
ABSL_FLAG(int, n, 100, "Answer length asked of every method");
ABSL_FLAG(std::string, json, "", "Also write the report as JSON to this file ('-' = stdout)");
ABSL_FLAG(std::string, cases_csv, "",
          "Also write one line per test user: user id, request events and distinct items, days from "
          "the newest request event to the cut, targets, and each method's rank of its first target (0: none)");
ABSL_FLAG(bool, baselines, true, "Compute the baselines side by side");
ABSL_FLAG(bool, allow_split_mismatch, false,
          "Evaluate even when the bundle records another split or log than the one given");
ABSL_FLAG(int, threads, 0, "Threads (0 = all cores)");
ABSL_FLAG(std::string, compression, "",
          "Override the manifest's compression mode as the server's --compression does (none, int8, prune+int8)");
ABSL_FLAG(bool, progress, true, "Progress bar on stderr");
ABSL_FLAG(std::string, impressions, "",
          "A server's --impression_log_dir: judge --bundles on its held-out answers instead of a real log's users");
ABSL_FLAG(std::string, bundles, "",
          "With --impressions: version directories to compare, comma-separated; ratios are to the first");
ABSL_FLAG(std::string, world, "",
          "With --impressions: the world the log's users came from; its events label the answers too, and each "
          "bundle's own answer to the logged requests is scored by expected clicks under its click model");
ABSL_FLAG(absl::Duration, label_window, absl::Minutes(30),
          "With --impressions: a shown item is clicked if its user interacted with it this soon after");
ABSL_FLAG(absl::Time, event_log_end, absl::InfinitePast(),
          "With --impressions and --events_csv: the events CSV holds every interaction up to this time (RFC 3339; "
          "default: up to its newest event)");
ABSL_FLAG(absl::Time, heldout_from, absl::InfinitePast(),
          "With --impressions: only answers made at or after this time (RFC 3339) are judged");
ABSL_FLAG(int64_t, heldout_from_version, 0,
          "With --impressions: only answers of this model version or a later one are judged (0: any)");
ABSL_FLAG(int, top_k, 3, "With --impressions: clicks@top counts the clicks re-ranked into the first top_k places");
ABSL_FLAG(double, position_decay, 1.0,
          "With --impressions --world: examination of position k (0 = top) for expected clicks, 1 / (1 + k)^decay");
ABSL_FLAG(std::string, shown_csv, "",
          "With --impressions: also write one line per held-out shown item: time, user, item, position, label, "
          "and each bundle's score");

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "recserve-eval: %s\n", what.c_str());
  return 1;
}

int64_t NewestVersion(const std::string& dir) {
  int64_t best = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    int64_t v = 0;
    if (entry.is_directory() && absl::SimpleAtoi(entry.path().filename().string(), &v) && v > best &&
        std::filesystem::exists(entry.path() / "READY")) {
      best = v;
    }
  }
  return best;
}

struct LoadedBundle {
  std::shared_ptr<const recserve::Model> model;
  recserve::v1::ModelFigures figures;
};

// Loads a version directory exactly as the server does: the manifest's compression
// policy (or --compression) and its accuracy gate.
absl::StatusOr<LoadedBundle> LoadAsServed(const std::string& path, int64_t version) {
  recserve::ModelOptions model_options;
  recserve::PolicyOverrides overrides;
  if (!absl::GetFlag(FLAGS_compression).empty()) overrides.mode = absl::GetFlag(FLAGS_compression);
  auto check = recserve::InstallCompression(overrides, &model_options);
  LoadedBundle out;
  absl::StatusOr<std::shared_ptr<const recserve::Model>> model = recserve::Model::Load(path, version, model_options);
  if (!model.ok()) return absl::Status(model.status().code(), absl::StrCat(path, ": ", model.status().message()));
  out.model = *std::move(model);
  if (absl::Status gate = check(*out.model, &out.figures); !gate.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": the server would refuse this version: ", gate.message()));
  }
  return out;
}

// --impressions: bundles side by side on the held-out answers of a served log.
int EvaluateImpressions() {
  if (!absl::GetFlag(FLAGS_model_dir).empty()) {
    return Fail("--impressions compares --bundles (version directories), not --model_dir");
  }
  std::vector<std::string> paths = absl::StrSplit(absl::GetFlag(FLAGS_bundles), ',', absl::SkipEmpty());
  if (paths.empty()) return Fail("--impressions needs --bundles=VERSION_DIR[,VERSION_DIR...]");
  std::vector<LoadedBundle> loaded;
  std::vector<recserve::EvalBundle> bundles;
  for (const std::string& path : paths) {
    int64_t version = 0;
    absl::SimpleAtoi(std::filesystem::path(path).lexically_normal().filename().string(), &version);
    absl::StatusOr<LoadedBundle> bundle = LoadAsServed(path, version);
    if (!bundle.ok()) return Fail(std::string(bundle.status().message()));
    loaded.push_back(*std::move(bundle));
  }
  for (size_t b = 0; b < paths.size(); ++b) bundles.push_back({paths[b], loaded[b].model.get()});

  const std::string log_dir = absl::GetFlag(FLAGS_impressions);
  absl::StatusOr<std::vector<recserve::v1::Impression>> records = recserve::ReadImpressionLog(log_dir);
  if (!records.ok()) return Fail(absl::StrCat(log_dir, ": ", records.status().message()));
  std::vector<recserve::LoggedEvent> events;
  std::optional<recserve::WorldWithTruth> world;
  if (const std::string world_dir = absl::GetFlag(FLAGS_world); !world_dir.empty()) {
    absl::StatusOr<recserve::WorldWithTruth> read = recserve::ReadWorldWithTruth(world_dir);
    if (!read.ok()) return Fail(std::string(read.status().message()));
    world = *std::move(read);
    events = world->world.train_events;
    events.insert(events.end(), world->world.test_events.begin(), world->world.test_events.end());
  }
  if (recserve::EventsCsvFlagSet()) {
    absl::StatusOr<recserve::SplitInput> input = recserve::ReadSplitFromFlags();
    if (!input.ok()) return Fail(std::string(input.status().message()));
    events.insert(events.end(), input->log.events.begin(), input->log.events.end());
  }
  recserve::LabelOptions label_options;
  label_options.window = absl::GetFlag(FLAGS_label_window);
  if (absl::GetFlag(FLAGS_event_log_end) != absl::InfinitePast()) {
    label_options.event_log_end_ms = absl::ToUnixMillis(absl::GetFlag(FLAGS_event_log_end));
  }
  recserve::HeldOut held_out;
  if (absl::GetFlag(FLAGS_heldout_from) != absl::InfinitePast()) {
    held_out.from_ms = absl::ToUnixMillis(absl::GetFlag(FLAGS_heldout_from));
  }
  held_out.from_version = absl::GetFlag(FLAGS_heldout_from_version);
  absl::StatusOr<recserve::HeldOutSlates> held = recserve::LabelHeldOut(*records, events, label_options, held_out);
  if (!held.ok()) return Fail(absl::StrCat(log_dir, ": ", held.status().message()));

  // A bundle written after a held-out answer may have learnt from it (same log, later
  // training); one written before cannot have.
  const int64_t first_held_out = held->slates.front().time_ms;
  for (size_t b = 0; b < paths.size(); ++b) {
    const int64_t created = loaded[b].model->manifest().created_unix_ms();
    if (created > first_held_out) {
      std::fprintf(stderr, "recserve-eval: warning: %s was written at %s, after the first held-out answer (%s): if it "
                   "trained on this log, it saw answers it is judged on\n", paths[b].c_str(),
                   absl::FormatTime(absl::FromUnixMillis(created)).c_str(),
                   absl::FormatTime(absl::FromUnixMillis(first_held_out)).c_str());
    }
  }

  recserve::ImpressionEvalOptions options;
  options.top_k = absl::GetFlag(FLAGS_top_k);
  options.position_decay = absl::GetFlag(FLAGS_position_decay);
  if (world) options.truth = &world->truth;
  absl::StatusOr<recserve::ImpressionEvalReport> report =
      recserve::EvaluateOnImpressions(bundles, held->slates, options);
  if (!report.ok()) return Fail(std::string(report.status().message()));
  const recserve::ImpressionEvalReport& r = *report;

  std::string cut;
  if (held_out.from_version > 0) absl::StrAppend(&cut, " answered by version ", held_out.from_version, " or later");
  if (held_out.from_ms > 0) {
    absl::StrAppend(&cut, cut.empty() ? "" : " and", " at or after ", absl::FormatTime(absl::GetFlag(FLAGS_heldout_from)));
  }
  if (cut.empty()) cut = " (no cut: every answer; no bundle may have trained on this log)";
  std::printf("log       %s: %lld records, %lld held out%s; %lld of them without events left out\n", log_dir.c_str(),
              static_cast<long long>(held->records), static_cast<long long>(held->held_out_records), cut.c_str(),
              static_cast<long long>(held->digest_only));
  std::printf("labels    window %s%s: %lld answers labelled, %lld shown items, %lld clicked (%lld answers with a "
              "click)\n",
              absl::FormatDuration(label_options.window).c_str(),
              events.empty() ? " (later requests)" : " (later requests and the event log)",
              static_cast<long long>(r.slates), static_cast<long long>(r.shown), static_cast<long long>(r.clicks),
              static_cast<long long>(r.slates_with_click));
  if (world) {
    std::printf("truth     expected clicks per answer under the world's click model, examination 1 / (1 + "
                "position)^%g; the logged answers: %.4f\n",
                options.position_decay, r.logged_expected_clicks);
  }
  const int k = options.top_k;
  const std::string top = absl::StrCat("clicks@", k);
  std::printf("\n%-32s %-10s %7s %8s %7s %7s %9s %10s\n", "bundle", "form", "AUC", "logloss", "NDCG", "hit@1",
              top.c_str(), "exp.clicks");
  for (size_t b = 0; b < bundles.size(); ++b) {
    const recserve::RankingMetrics& m = r.bundles[b];
    std::printf("%-32s %-10s %7.4f %8.4f %7.4f %7.4f %9.4f %10s\n", paths[b].c_str(),
                loaded[b].figures.compression().c_str(), m.auc, m.logloss, m.ndcg, m.hit1, m.clicks_top,
                world ? absl::StrFormat("%.4f", m.expected_clicks).c_str() : "-");
  }
  auto ratio = [](double a, double b) { return b != 0 ? a / b : 0.0; };
  std::printf("\nratio to %s\n", paths[0].c_str());
  for (size_t b = 1; b < bundles.size(); ++b) {
    const recserve::RankingMetrics& m = r.bundles[b];
    const recserve::RankingMetrics& f = r.bundles[0];
    std::printf("%-32s %-10s %6.3fx %7.3fx %6.3fx %6.3fx %8.3fx %10s\n", paths[b].c_str(), "", ratio(m.auc, f.auc),
                ratio(m.logloss, f.logloss), ratio(m.ndcg, f.ndcg), ratio(m.hit1, f.hit1),
                ratio(m.clicks_top, f.clicks_top),
                world ? absl::StrFormat("%.3fx", ratio(m.expected_clicks, f.expected_clicks)).c_str() : "-");
  }

  if (const std::string csv_path = absl::GetFlag(FLAGS_shown_csv); !csv_path.empty()) {
    std::ofstream out(csv_path);
    out << "time_ms,user,item,position,label";
    for (const std::string& path : paths) out << ",score:" << path;
    out << "\n";
    size_t row = 0;
    for (const recserve::ServedSlate& slate : held->slates) {
      for (const recserve::ServedItem& item : slate.items) {
        out << slate.time_ms << ',' << slate.user << ',' << item.item_id << ',' << item.position << ','
            << item.label;
        for (const std::vector<float>& scores : r.scores) out << ',' << scores[row];
        out << "\n";
        ++row;
      }
    }
    if (!out) return Fail(absl::StrCat(csv_path, ": cannot write"));
  }
  return 0;
}

void Bar(int64_t done, int64_t total) {
  static int last = -1;
  const int pct = total > 0 ? static_cast<int>(100 * done / total) : 100;
  if (pct == last) return;
  last = pct;
  const int width = 40, filled = width * pct / 100;
  std::fprintf(stderr, "\r[%s%s] %3d%% %lld/%lld users", std::string(filled, '#').c_str(),
               std::string(width - filled, '.').c_str(), pct, static_cast<long long>(done),
               static_cast<long long>(total));
  if (done >= total) std::fprintf(stderr, "\n");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Evaluates a model bundle on held-out users of a real log, against baselines, or bundles side by side on a\n"
      "server's logged answers.\n"
      "  recserve-eval --events_csv=FILE --split=leave_last_out|time --model_dir=DIR [--json=F]\n"
      "  recserve-eval --impressions=LOG_DIR --bundles=VERSION_DIR,... [--world=DIR] [--heldout_from_version=N]");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_threads) > 0) omp_set_num_threads(absl::GetFlag(FLAGS_threads));
  if (!absl::GetFlag(FLAGS_impressions).empty()) return EvaluateImpressions();
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (model_dir.empty()) return Fail("--model_dir is required");

  absl::StatusOr<recserve::SplitInput> input = recserve::ReadSplitFromFlags();
  if (!input.ok()) return Fail(std::string(input.status().message()));
  const recserve::LogSplit& split = input->split;

  const int64_t version = absl::GetFlag(FLAGS_version) > 0 ? absl::GetFlag(FLAGS_version) : NewestVersion(model_dir);
  if (version <= 0) return Fail(absl::StrCat(model_dir, ": no version with READY"));
  const std::string path = absl::StrCat(model_dir, "/", version);
  absl::StatusOr<LoadedBundle> loaded = LoadAsServed(path, version);
  if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
  const recserve::Model& model = *loaded->model;
  const recserve::v1::ModelFigures& figures = loaded->figures;
  const std::string trained_on = model.manifest().training().data_source();
  if (trained_on != input->data_source) {
    const std::string msg = absl::StrCat("the bundle was trained on '", trained_on, "', this run splits '",
                                         input->data_source, "'");
    if (!absl::GetFlag(FLAGS_allow_split_mismatch)) {
      return Fail(msg + " (its test users may be in its training data; --allow_split_mismatch to go on)");
    }
    std::fprintf(stderr, "recserve-eval: warning: %s\n", msg.c_str());
  }

  recserve::EvalOptions options;
  options.n = absl::GetFlag(FLAGS_n);
  options.baselines = absl::GetFlag(FLAGS_baselines);
  if (absl::GetFlag(FLAGS_progress)) options.progress = Bar;
  absl::StatusOr<recserve::EvalReport> report = recserve::Evaluate(model, split, options);
  if (!report.ok()) return Fail(std::string(report.status().message()));

  const recserve::EvalReport& r = *report;
  std::printf("log       %s\n", input->data_source.c_str());
  std::printf("model     %s version %lld (%s, %s, %lld items), %.1f candidates per request\n",
              model.name().c_str(), static_cast<long long>(version), figures.compression().c_str(),
              model.index().name().c_str(), static_cast<long long>(r.catalog_items), r.mean_candidates);
  const int threads = omp_get_max_threads();
  std::printf("users     %lld test users (%lld whose targets the model has never seen)\n",
              static_cast<long long>(r.cases), static_cast<long long>(r.unknown_target_cases));
  std::printf("speed     %.2f s on %d threads, %.0f users/s in all (baseline tables %.2f s); recserve's "
              "pipeline alone %.0f users/s (%.3f ms per request per thread)\n",
              r.seconds, threads, r.cases / std::max(r.seconds, 1e-9), r.baseline_build_seconds,
              r.cases * threads / std::max(r.recserve_seconds, 1e-9), 1e3 * r.recserve_seconds / std::max<int64_t>(1, r.cases));
  std::printf("\n%-20s %7s %7s %7s %8s %7s %9s %10s\n", "method", "hit@10", "hit@50", "hit@100", "NDCG@10",
              "MRR", "cover@10", "consumed@10");
  for (const recserve::MethodMetrics& m : r.methods) {
    std::printf("%-20s %7.4f %7.4f %7.4f %8.4f %7.4f %9.4f %10.4f\n", m.name.c_str(), m.hit10, m.hit50,
                m.hit100, m.ndcg10, m.mrr, m.coverage10, m.consumed10);
  }
  nlohmann::json json;
  if (r.methods.size() > 1) {
    const recserve::MethodMetrics& us = r.methods[0];
    const auto* best100 = recserve::BestBaseline(r, &recserve::MethodMetrics::hit100);
    const auto* best_ndcg = recserve::BestBaseline(r, &recserve::MethodMetrics::ndcg10);
    const recserve::MethodMetrics& pop = r.methods[1];
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    std::printf("\nrecserve / best baseline: hit@100 %.3fx (%s), NDCG@10 %.3fx (%s); hit@10 / popularity %.2fx\n",
                ratio(us.hit100, best100->hit100), best100->name.c_str(), ratio(us.ndcg10, best_ndcg->ndcg10),
                best_ndcg->name.c_str(), ratio(us.hit10, pop.hit10));
    json["ratios"] = {{"hit100_vs_best", ratio(us.hit100, best100->hit100)},
                      {"best_hit100", best100->name},
                      {"ndcg10_vs_best", ratio(us.ndcg10, best_ndcg->ndcg10)},
                      {"best_ndcg10", best_ndcg->name},
                      {"hit10_vs_popularity", ratio(us.hit10, pop.hit10)}};
  }
  std::printf("targets among recserve's candidates: %.1f%% (by source: covisit %.1f%%, embedding %.1f%%, "
              "popularity %.1f%%); not recalled %.1f%%\n",
              100 * (1 - r.target_not_recalled), 100 * r.target_from_covisit, 100 * r.target_from_embedding,
              100 * r.target_from_popularity, 100 * r.target_not_recalled);

  if (const std::string csv_path = absl::GetFlag(FLAGS_cases_csv); !csv_path.empty()) {
    std::ofstream out(csv_path);
    out << "user_id,request_events,request_items,idle_days,targets";
    for (const recserve::MethodMetrics& m : r.methods) out << ",first_hit:" << m.name;
    out << "\n";
    const size_t methods = r.methods.size();
    for (size_t i = 0; i < split.cases.size(); ++i) {
      const recserve::TestCase& c = split.cases[i];
      absl::flat_hash_set<uint64_t> items;
      for (const recserve::LoggedEvent& e : c.request) items.insert(e.item_id);
      const double idle_days =
          c.request.empty() ? 0.0 : static_cast<double>(c.cut_ms - c.request.back().timestamp_ms) / 86400000.0;
      out << c.user_id << ',' << c.request.size() << ',' << items.size() << ',' << idle_days << ','
          << c.targets.size();
      for (size_t m = 0; m < methods; ++m) out << ',' << r.first_hit[i * methods + m];
      out << "\n";
    }
    if (!out) return Fail(absl::StrCat(csv_path, ": cannot write"));
  }

  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    json["log"] = input->data_source;
    json["split"] = split.description;
    json["model"] = {{"path", path}, {"version", version}, {"compression", figures.compression()},
                     {"index", model.index().name()}, {"items", r.catalog_items}};
    json["users"] = r.cases;
    json["seconds"] = r.seconds;
    json["users_per_second"] = r.cases / std::max(r.seconds, 1e-9);
    json["recserve_users_per_second"] = r.cases * threads / std::max(r.recserve_seconds, 1e-9);
    json["baseline_build_seconds"] = r.baseline_build_seconds;
    json["threads"] = omp_get_max_threads();
    json["mean_candidates"] = r.mean_candidates;
    json["target_sources"] = {{"covisit", r.target_from_covisit}, {"embedding", r.target_from_embedding},
                              {"popularity", r.target_from_popularity}, {"not_recalled", r.target_not_recalled}};
    for (const recserve::MethodMetrics& m : r.methods) {
      json["methods"].push_back({{"name", m.name}, {"hit10", m.hit10}, {"hit50", m.hit50}, {"hit100", m.hit100},
                                 {"ndcg10", m.ndcg10}, {"mrr", m.mrr}, {"coverage10", m.coverage10},
                                 {"consumed10", m.consumed10}});
    }
    if (json_path == "-") {
      std::printf("%s\n", json.dump(2).c_str());
    } else {
      std::ofstream out(json_path);
      out << json.dump(2) << "\n";
      if (!out) return Fail(absl::StrCat(json_path, ": cannot write"));
    }
  }
  return 0;
}
