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
#include <omp.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "compression/compress.h"
#include "nlohmann/json.hpp"
#include "train/eval.h"
#include "train/event_log.h"
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
      "Evaluates a model bundle on held-out users of a real log, against baselines.\n"
      "  recserve-eval --events_csv=FILE --split=leave_last_out|time --model_dir=DIR [--json=F]");
  absl::ParseCommandLine(argc, argv);
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  if (model_dir.empty()) return Fail("--model_dir is required");
  if (absl::GetFlag(FLAGS_threads) > 0) omp_set_num_threads(absl::GetFlag(FLAGS_threads));

  absl::StatusOr<recserve::SplitInput> input = recserve::ReadSplitFromFlags();
  if (!input.ok()) return Fail(std::string(input.status().message()));
  const recserve::LogSplit& split = input->split;

  const int64_t version = absl::GetFlag(FLAGS_version) > 0 ? absl::GetFlag(FLAGS_version) : NewestVersion(model_dir);
  if (version <= 0) return Fail(absl::StrCat(model_dir, ": no version with READY"));
  const std::string path = absl::StrCat(model_dir, "/", version);
  // Load exactly as the server does: the manifest's compression policy and its gate.
  recserve::ModelOptions model_options;
  recserve::PolicyOverrides overrides;
  if (!absl::GetFlag(FLAGS_compression).empty()) overrides.mode = absl::GetFlag(FLAGS_compression);
  auto check = recserve::InstallCompression(overrides, &model_options);
  absl::StatusOr<std::shared_ptr<const recserve::Model>> model =
      recserve::Model::Load(path, version, model_options);
  if (!model.ok()) return Fail(absl::StrCat(path, ": ", model.status().message()));
  recserve::v1::ModelFigures figures;
  if (absl::Status gate = check(**model, &figures); !gate.ok()) {
    return Fail(absl::StrCat(path, ": the server would refuse this version: ", gate.message()));
  }
  const std::string trained_on = (*model)->manifest().training().data_source();
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
  absl::StatusOr<recserve::EvalReport> report = recserve::Evaluate(**model, split, options);
  if (!report.ok()) return Fail(std::string(report.status().message()));

  const recserve::EvalReport& r = *report;
  std::printf("log       %s\n", input->data_source.c_str());
  std::printf("model     %s version %lld (%s, %s, %lld items), %.1f candidates per request\n",
              (*model)->name().c_str(), static_cast<long long>(version), figures.compression().c_str(),
              (*model)->index().name().c_str(), static_cast<long long>(r.catalog_items), r.mean_candidates);
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
                     {"index", (*model)->index().name()}, {"items", r.catalog_items}};
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
