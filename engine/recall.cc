#include "engine/recall.h"

#include <algorithm>

namespace recserve {
namespace {

bool Worse(const ScoredItem& a, const ScoredItem& b) {
  return a.score > b.score || (a.score == b.score && a.item < b.item);
}

// The inner loop of every exact scan; cloned for the vector widths the CPU has.
__attribute__((target_clones("avx512f", "avx2", "default")))
void DotAll(const float* base, int n, int dim, const float* q, float* out) {
  for (int i = 0; i < n; ++i) {
    const float* e = base + static_cast<size_t>(i) * dim;
    float acc = 0;
    for (int k = 0; k < dim; ++k) acc += e[k] * q[k];
    out[i] = acc;
  }
}

}  // namespace

TopKCollector::TopKCollector(int k, std::vector<ScoredItem>* heap)
    : k_(std::max(0, k)), heap_(heap) {
  heap_->clear();
}

void TopKCollector::Push(int32_t item, float score) {
  if (k_ == 0) return;
  if (!full_) {
    heap_->push_back({item, score});
    std::push_heap(heap_->begin(), heap_->end(), Worse);
    full_ = heap_->size() == k_;
    return;
  }
  const ScoredItem& worst = heap_->front();
  if (score < worst.score || (score == worst.score && item > worst.item)) return;
  std::pop_heap(heap_->begin(), heap_->end(), Worse);
  heap_->back() = {item, score};
  std::push_heap(heap_->begin(), heap_->end(), Worse);
}

void TopKCollector::Finish() { std::sort_heap(heap_->begin(), heap_->end(), Worse); }

namespace {
class ScoreBuffer : public IndexScratch {
 public:
  std::vector<float> scores;
};
constexpr int kScanBlock = 4096;
constexpr size_t kMaxPopularCategories = 5;
}  // namespace

void ExactFp32Index::TopK(const float* query, int k, IndexScratch* scratch,
                          std::vector<ScoredItem>* out) const {
  float local[kScanBlock];
  (void)scratch;
  TopKCollector top(k, out);
  const int n = catalog_->size(), dim = catalog_->dim();
  const float* base = catalog_->embedding(0);
  for (int start = 0; start < n; start += kScanBlock) {
    const int len = std::min(kScanBlock, n - start);
    DotAll(base + static_cast<size_t>(start) * dim, len, dim, query, local);
    float threshold = top.threshold();
    for (int i = 0; i < len; ++i) {
      if (local[i] >= threshold) {
        top.Push(start + i, local[i]);
        threshold = top.threshold();
      }
    }
  }
  top.Finish();
}

void Recall(const Catalog& catalog, const EmbeddingIndex& index, const UserState& user,
            const RecallOptions& options, RecallScratch* scratch,
            std::vector<Candidate>* candidates) {
  candidates->clear();
  if (scratch->prepared_for != &catalog) {
    scratch->stamp.assign(catalog.size(), 0);
    scratch->slot.assign(catalog.size(), 0);
    scratch->generation = 0;
    scratch->index = index.NewScratch();
    scratch->prepared_for = &catalog;
  }
  if (++scratch->generation == 0) {  // wrapped: clear the stamps once every 2^32 requests
    std::fill(scratch->stamp.begin(), scratch->stamp.end(), 0);
    scratch->generation = 1;
  }
  const uint32_t gen = scratch->generation;
  const size_t cap = static_cast<size_t>(std::max(0, options.max_candidates));

  // Adds `item` from `source`; returns true if it was new.
  auto add = [&](int32_t item, uint32_t source) {
    if (scratch->stamp[item] == gen) {
      (*candidates)[scratch->slot[item]].sources |= source;
      return false;
    }
    if (candidates->size() >= cap) return false;
    if (options.exclude_purchased && user.purchased(item)) return false;
    scratch->stamp[item] = gen;
    scratch->slot[item] = static_cast<int32_t>(candidates->size());
    candidates->push_back({item, source});
    return true;
  };

  const bool warm = user.has_vector();
  if (warm) {
    // Co-visitation: the strongest accumulated scores.
    TopKCollector top(options.covisit_k, &scratch->scored);
    for (int32_t item : user.covisited()) {
      if (options.exclude_purchased && user.purchased(item)) continue;
      top.Push(item, user.covisit_score(item));
    }
    top.Finish();
    for (const ScoredItem& s : scratch->scored) add(s.item, kFromCovisit);

    // Embedding: ask for extra so purchased items and overlaps do not eat the quota.
    index.TopK(user.vector().data(), options.embedding_k + options.covisit_k / 4,
               scratch->index.get(), &scratch->scored);
    int added = 0;
    for (const ScoredItem& s : scratch->scored) {
      if (added >= options.embedding_k) {
        // Still mark overlaps so sources stay truthful.
        if (scratch->stamp[s.item] == gen) (*candidates)[scratch->slot[s.item]].sources |= kFromEmbedding;
        continue;
      }
      if (add(s.item, kFromEmbedding)) ++added;
    }
  }
  const int popularity_quota = warm ? options.popularity_k : options.max_candidates;
  int added = 0;
  if (warm) {
    // The most popular items of the user's own categories, shared out by the user's
    // category shares; what is left of the quota goes to global popularity.
    const std::vector<int32_t>& cats = user.categories();
    for (size_t ci = 0; ci < cats.size() && ci < kMaxPopularCategories; ++ci) {
      const int quota = std::max(1, static_cast<int>(popularity_quota * user.category_share(cats[ci]) + 0.5f));
      int taken = 0;
      for (int32_t item : catalog.category_by_popularity(cats[ci])) {
        if (taken >= quota || added >= popularity_quota || candidates->size() >= cap) break;
        if (add(item, kFromPopularity)) {
          ++taken;
          ++added;
        }
      }
    }
  }
  for (int32_t item : catalog.by_popularity()) {
    if (added >= popularity_quota || candidates->size() >= cap) break;
    if (add(item, kFromPopularity)) ++added;
  }
}

}  // namespace recserve
