// The recall stage: from a user's state to a few hundred candidate items.
//
// Three sources, each cheap next to ranking:
//   embedding  - top-K items by inner product with the user vector, through an
//                EmbeddingIndex (exact fp32 scan here; int8 and HNSW indexes implement the
//                same interface);
//   covisit    - the items with the highest accumulated co-visitation score;
//   popularity - the most popular items of the user's favourite categories (in
//                proportion to the user's category shares), then globally (all a cold
//                user gets).
// Recall() merges them with per-source quotas, dedupes (a candidate remembers every
// source that proposed it), drops consumed items (the user's events of the excluded
// types) and items the caller excludes, and caps the total.
//
// Indexes are immutable and shared by all threads of a model version; RecallScratch is
// per-thread working memory reused across requests.
#ifndef RECSERVE_ENGINE_RECALL_H_
#define RECSERVE_ENGINE_RECALL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "engine/catalog.h"
#include "engine/features.h"

namespace recserve {

struct ScoredItem {
  int32_t item;
  float score;
};

// Bits of Candidate::sources; the values of recserve.v1.RecallSource.
enum RecallSourceBit : uint32_t { kFromEmbedding = 1, kFromCovisit = 2, kFromPopularity = 4 };

struct Candidate {
  int32_t item;
  uint32_t sources;
};

// Per-thread scratch an index may need (e.g. a score buffer); owned by RecallScratch.
class IndexScratch {
 public:
  virtual ~IndexScratch() = default;
};

// Inner-product top-K over the catalog's embeddings.
class EmbeddingIndex {
 public:
  virtual ~EmbeddingIndex() = default;
  // Writes the best min(k, size) items, best first, into `out` (cleared first).
  virtual void TopK(const float* query, int k, IndexScratch* scratch,
                    std::vector<ScoredItem>* out) const = 0;
  virtual std::unique_ptr<IndexScratch> NewScratch() const { return nullptr; }
  // "exact-fp32", "exact-int8", "hnsw"...
  virtual std::string name() const = 0;
  // Bytes this index holds beyond the catalog.
  virtual int64_t memory_bytes() const { return 0; }
  // Whether a query costs more the larger its k (an HNSW search widens its beam to k);
  // an exact scan reads the whole catalog whatever k is. The recall merge asks such an
  // index first and for no more than it needs.
  virtual bool cost_grows_with_k() const { return false; }
};

// Exact scan of the fp32 embeddings; the reference the others are measured against.
class ExactFp32Index : public EmbeddingIndex {
 public:
  explicit ExactFp32Index(const Catalog* catalog) : catalog_(catalog) {}
  void TopK(const float* query, int k, IndexScratch* scratch,
            std::vector<ScoredItem>* out) const override;
  std::string name() const override { return "exact-fp32"; }

 private:
  const Catalog* catalog_;
};

// Keeps the k best of a stream of scored items; the heap lives in caller memory.
class TopKCollector {
 public:
  TopKCollector(int k, std::vector<ScoredItem>* heap);
  void Push(int32_t item, float score);
  float threshold() const { return full_ ? heap_->front().score : -__builtin_inff(); }
  // Sorts the kept items best first (ties by smaller index).
  void Finish();

 private:
  size_t k_;
  std::vector<ScoredItem>* heap_;
  bool full_ = false;
};

struct RecallOptions {
  int embedding_k = 200;
  int covisit_k = 200;
  int popularity_k = 50;   // for users with history; cold users get max_candidates
  int max_candidates = 500;
  // Items the user has an event of one of these types on are dropped (EventTypeBit mask;
  // 0 keeps everything, kAllEventTypes drops every item of the history).
  uint32_t exclude_types = kPurchasesOnly;
};

class RecallScratch {
 public:
  std::vector<ScoredItem> scored;
  std::vector<ScoredItem> heap;
  std::vector<uint32_t> stamp;  // [N] request generation per item, for dedupe
  std::vector<int32_t> slot;    // [N] position in the candidate list, valid when stamped
  uint32_t generation = 0;
  std::unique_ptr<IndexScratch> index;
  const void* prepared_for = nullptr;
};

// One way of proposing candidates for a user: the small interface every recall source
// implements. Sources are immutable and shared by all threads of a model version.
class RecallSource {
 public:
  virtual ~RecallSource() = default;
  virtual RecallSourceBit bit() const = 0;
  virtual const char* name() const = 0;
  // Up to `k` items for `user`, best first, into `out` (cleared first).
  virtual void Propose(const UserState& user, int k, RecallScratch* scratch,
                       std::vector<ScoredItem>* out) const = 0;
};

// Items with the highest accumulated co-visitation score; nothing for a cold user.
class CovisitSource : public RecallSource {
 public:
  RecallSourceBit bit() const override { return kFromCovisit; }
  const char* name() const override { return "covisit"; }
  void Propose(const UserState& user, int k, RecallScratch* scratch,
               std::vector<ScoredItem>* out) const override;
};

// Inner-product top-K of the user vector through an EmbeddingIndex; nothing for a cold user.
class EmbeddingSource : public RecallSource {
 public:
  explicit EmbeddingSource(const EmbeddingIndex* index) : index_(index) {}
  RecallSourceBit bit() const override { return kFromEmbedding; }
  const char* name() const override { return "embedding"; }
  void Propose(const UserState& user, int k, RecallScratch* scratch,
               std::vector<ScoredItem>* out) const override;

 private:
  const EmbeddingIndex* index_;
};

// The most popular items of the user's categories (in proportion to the user's shares
// of up to five categories), then the most popular overall.
class PopularitySource : public RecallSource {
 public:
  explicit PopularitySource(const Catalog* catalog) : catalog_(catalog) {}
  RecallSourceBit bit() const override { return kFromPopularity; }
  const char* name() const override { return "popularity"; }
  void Propose(const UserState& user, int k, RecallScratch* scratch,
               std::vector<ScoredItem>* out) const override;

 private:
  const Catalog* catalog_;
};

// The recall stage of one model version: its three sources and the merge.
class Recaller {
 public:
  Recaller(const Catalog* catalog, const EmbeddingIndex* index)
      : catalog_(catalog), index_(index), embedding_(index), popularity_(catalog) {}

  // Fills `candidates` (cleared first): co-visitation, then embedding, then popularity,
  // each adding at most its quota of new items (a cold user gets popularity up to
  // max_candidates); duplicates merge their source bits; consumed items
  // (options.exclude_types) and the catalog indices in `excluded` are dropped; at most
  // max_candidates in all. With an index whose cost grows with k
  // (HNSW) the embedding source goes first instead: then it needs slack only for the
  // consumed items the merge drops, not for overlaps with co-visitation, but items
  // both sources propose count against the embedding quota, so a warm user may get
  // fewer candidates than the quotas add up to.
  void Recall(const UserState& user, const RecallOptions& options, RecallScratch* scratch,
              std::vector<Candidate>* candidates,
              absl::Span<const int32_t> excluded = {}) const;
  const EmbeddingIndex& index() const { return *index_; }

 private:
  const Catalog* catalog_;
  const EmbeddingIndex* index_;
  CovisitSource covisit_;
  EmbeddingSource embedding_;
  PopularitySource popularity_;
};

}  // namespace recserve

#endif  // RECSERVE_ENGINE_RECALL_H_
