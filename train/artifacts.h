// The recall artifacts of a model, built from behaviour events before a cut time:
// item popularity, item-to-item co-visitation lists and item2vec embeddings. Shared by
// the synthetic-world trainer and the real-log trainer (which builds them once per
// ranker anchor from the past only, and once more from every event for the bundle).
#ifndef RECSERVE_TRAIN_ARTIFACTS_H_
#define RECSERVE_TRAIN_ARTIFACTS_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "engine/catalog.h"
#include "train/item2vec.h"
#include "train/world.h"

namespace recserve {

struct ArtifactOptions {
  int embedding_dim = 32;
  Item2VecOptions item2vec;  // dim is overridden by embedding_dim
  // Co-visitation: pairs at most `window` positions apart in a user's time-ordered
  // sequence and at most `max_gap_seconds` apart in time count; with `basket_pairs`,
  // every pair of items sharing one timestamp (a basket; the first 64 of it) counts too.
  // A pair weighs 0.5^(age / half_life_days) before the cut (0: no decay); the weight of
  // a neighbour is the sum over its pairs, divided by sqrt(count(a) * count(b)) when
  // `cosine`. The strongest `neighbors` per item are kept.
  int covisit_window = 4;
  int64_t covisit_max_gap_seconds = 3600;
  bool covisit_basket_pairs = false;
  double covisit_half_life_days = 0;
  bool covisit_cosine = true;
  int covisit_neighbors = 50;
  // Also store the raw counts (CovisitData::counts), and keep per item the `neighbors`
  // most frequent co-items besides the `neighbors` strongest by weight.
  bool covisit_counts = false;
  // Item-kNN lists (CovisitData::knn_*): the `knn_neighbors` items with the highest cosine
  // of user sets per item, from each user's newest 300 distinct items; 0: none.
  int knn_neighbors = 0;
  // Popularity: every event counts 1, or 0.5^(age / half-life) before the cut.
  double popularity_half_life_days = 0;
  bool verbose = true;
};

// Fills items->popularity, items->embeddings (items->dim) and `covisit` from the events
// with timestamp < cut_ms (`events` sorted by time; `index` maps item ids to catalog
// indices; events of unknown items are ignored). Deterministic for item2vec.threads == 1.
absl::Status BuildArtifacts(const std::vector<LoggedEvent>& events, int64_t cut_ms,
                            const absl::flat_hash_map<uint64_t, int32_t>& index,
                            const ArtifactOptions& options, CatalogData* items, CovisitData* covisit);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_ARTIFACTS_H_
