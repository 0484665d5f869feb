// Embedding indexes beyond the exact fp32 scan (recall.h): an exact scan over int8
// embeddings (4x less memory traffic) and an approximate HNSW graph (hnswlib), chosen
// per model version by name, with their recall@k against the exact scan measured when
// the version loads.
#ifndef RECSERVE_ENGINE_EMBEDDING_INDEX_H_
#define RECSERVE_ENGINE_EMBEDDING_INDEX_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/catalog.h"
#include "engine/recall.h"

namespace recserve {

struct EmbeddingIndexOptions {
  // "exact" (fp32), "exact-int8" or "hnsw".
  std::string kind = "exact";
  int hnsw_m = 16;                 // graph degree
  int hnsw_ef_construction = 200;  // build-time beam
  int hnsw_ef_search = 300;        // query-time beam (>= k)
  int build_threads = 1;           // hnsw: threads used to add points
  // hnsw: a graph saved by SaveHnswGraph for this catalog (the bundle's hnsw_graph file);
  // loaded and checked instead of built. Empty: build at load.
  std::string hnsw_graph_path;
  // Names the graph in errors; empty: hnsw_graph_path. (A bundle's graph is read from an
  // in-memory copy whose path says nothing: MemoryFile.)
  std::string hnsw_graph_name;
};

// Builds the index over `catalog` (which must outlive it). An hnsw graph file that is not
// this catalog's or whose structure is unsound is InvalidArgument, naming what is wrong;
// an hnsw build that fails (hnswlib throws: out of memory, ...) is ResourceExhausted or
// Internal, whichever thread it failed on.
absl::StatusOr<std::unique_ptr<EmbeddingIndex>> BuildEmbeddingIndex(const Catalog* catalog,
                                                                   const EmbeddingIndexOptions& options);

// Builds the hnsw graph of `catalog` with `options` (M, ef_construction, threads) and
// writes it to `path` in hnswlib's format, for a bundle to ship (train/index_main.cc).
absl::Status SaveHnswGraph(const Catalog* catalog, const EmbeddingIndexOptions& options, const std::string& path);

// Mean recall@k of `index` against the exact fp32 scan over `queries` user-like vectors
// (means of a few catalog embeddings, seeded).
double MeasureIndexRecall(const Catalog& catalog, const EmbeddingIndex& index, int k, int queries,
                          uint64_t seed = 1);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_EMBEDDING_INDEX_H_
