// Fuzzes the check of a shipped hnsw graph file (hnsw.bin): BuildEmbeddingIndex loading
// it for FuzzBundle's catalog (engine/embedding_index.cc: the header and link-list sizes
// before hnswlib reads the file, the loaded structure after). hnswlib trusts its file, so
// a graph that passes must be safe to search: a few searches run on every accepted graph
// and must return catalog items only.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/catalog.h"
#include "engine/embedding_index.h"
#include "tests/fuzz/fuzz_bundle.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

const recserve::Catalog& FuzzCatalog() {
  static const recserve::Catalog* const catalog = [] {
    auto created = recserve::Catalog::Create(recserve::fuzz::FuzzBundle().items);
    recserve::fuzz::CheckStartup(created.status(), "catalog");
    return created->release();
  }();
  return *catalog;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  static fuzz::MemFile* const graph = new fuzz::MemFile("hnsw.bin");
  const Catalog& catalog = FuzzCatalog();
  EmbeddingIndexOptions options = fuzz::FuzzHnswOptions();
  options.hnsw_graph_path = graph->Set(data, size);
  auto index = BuildEmbeddingIndex(&catalog, options);
  if (!index.ok()) return 0;
  std::vector<ScoredItem> found;
  const std::unique_ptr<IndexScratch> scratch = (*index)->NewScratch();
  for (int32_t item = 0; item < catalog.size(); item += 7) {
    for (int k : {1, 10, catalog.size()}) {
      (*index)->TopK(catalog.embedding(item), k, scratch.get(), &found);
      for (const ScoredItem& s : found) {
        FUZZ_CHECK(s.item >= 0 && s.item < catalog.size(), absl::StrCat("search returned item ", s.item));
      }
    }
  }
  return 0;
}
