// recserve-recall-bench: embedding top-100 on a bundle's catalog with the exact fp32
// scan, the exact int8 scan and HNSW; time per query and recall@100 against exact fp32,
// side by side in one run.
//
//   recserve-recall-bench --bundle=/work/bench/models-1m/1 --queries=200
#include <chrono>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/marshalling.h"
#include "absl/container/flat_hash_set.h"
#include "engine/bundle.h"
#include "engine/embedding_index.h"

ABSL_FLAG(std::string, bundle, "", "Model version directory");
ABSL_FLAG(int, queries, 200, "Queries (means of 5 random item embeddings)");
ABSL_FLAG(int, k, 100, "Top-k");
ABSL_FLAG(int, build_threads, 2, "HNSW build threads");
ABSL_FLAG(std::vector<std::string>, kinds, std::vector<std::string>({"exact", "exact-int8", "hnsw"}),
          "Indexes to run (the first must be exact)");
ABSL_FLAG(std::string, hnsw_graph, "", "hnsw: load this prebuilt graph (recserve-index) instead of building");
ABSL_FLAG(std::vector<std::string>, hnsw_ef, std::vector<std::string>({"200"}),
          "hnsw: query-time beams to measure (one run each)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto bundle = recserve::ReadBundle(absl::GetFlag(FLAGS_bundle));
  if (!bundle.ok()) {
    std::fprintf(stderr, "%s\n", bundle.status().ToString().c_str());
    return 1;
  }
  auto catalog = recserve::Catalog::Create(std::move(bundle->items));
  if (!catalog.ok()) return 1;
  const int k = absl::GetFlag(FLAGS_k), nq = absl::GetFlag(FLAGS_queries);
  const int dim = (*catalog)->dim();
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int> pick(0, (*catalog)->size() - 1);
  std::vector<std::vector<float>> queries(nq, std::vector<float>(dim, 0.f));
  for (auto& q : queries) {
    for (int j = 0; j < 5; ++j) {
      const float* e = (*catalog)->embedding(pick(rng));
      for (int d = 0; d < dim; ++d) q[d] += e[d] / 5;
    }
  }
  std::printf("%d items x %d dims, %d queries, top-%d\n", (*catalog)->size(), dim, nq, k);
  recserve::ExactFp32Index exact(catalog->get());
  std::vector<std::vector<recserve::ScoredItem>> truth(nq);
  double exact_ms = 0;
  // One run per (kind, ef): hnsw runs once per --hnsw_ef value.
  std::vector<std::pair<std::string, int>> runs;
  for (const std::string& kind : absl::GetFlag(FLAGS_kinds)) {
    if (kind != "hnsw") {
      runs.push_back({kind, 0});
      continue;
    }
    for (const std::string& ef : absl::GetFlag(FLAGS_hnsw_ef)) runs.push_back({kind, std::stoi(ef)});
  }
  for (const auto& [kind_name, ef] : runs) {
    const char* kind = kind_name.c_str();
    recserve::EmbeddingIndexOptions o;
    o.kind = kind;
    o.build_threads = absl::GetFlag(FLAGS_build_threads);
    if (ef > 0) o.hnsw_ef_search = ef;
    if (kind_name == "hnsw") o.hnsw_graph_path = absl::GetFlag(FLAGS_hnsw_graph);
    const auto b0 = std::chrono::steady_clock::now();
    auto index = recserve::BuildEmbeddingIndex(catalog->get(), o);
    const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - b0).count();
    if (!index.ok()) {
      std::fprintf(stderr, "%s\n", index.status().ToString().c_str());
      return 1;
    }
    std::vector<recserve::ScoredItem> got;
    double hits = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < nq; ++i) {
      (*index)->TopK(queries[i].data(), k, nullptr, &got);
      if (std::string(kind) == "exact") truth[i] = got;
      absl::flat_hash_set<int32_t> want;
      for (auto& s : truth[i]) want.insert(s.item);
      for (auto& s : got) hits += want.contains(s.item);
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / nq;
    if (std::string(kind) == "exact") exact_ms = ms;
    std::printf("%-26s %s %7.1f s  %8.3f ms/query  (%5.1fx exact fp32)  recall@%d %.4f  index bytes %lld\n",
                (*index)->name().c_str(), o.hnsw_graph_path.empty() ? "build" : "load ", build_s, ms,
                exact_ms / ms, k, hits / (static_cast<double>(nq) * k),
                static_cast<long long>((*index)->memory_bytes()));
  }
  return 0;
}
