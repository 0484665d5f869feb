#include "engine/recall.h"

#include "engine/cpu_dispatch.h"
#include "engine/huge_pages.h"

#include <algorithm>

namespace recserve {
namespace {

// Heap order with the worst kept item on top; a functor so the heap code inlines it.
struct Worse {
  bool operator()(const ScoredItem& a, const ScoredItem& b) const {
    return a.score > b.score || (a.score == b.score && a.item < b.item);
  }
};

// The inner loop of every exact scan; cloned for the vector widths the CPU has.
RECSERVE_VECTOR_CLONES
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
    std::push_heap(heap_->begin(), heap_->end(), Worse());
    full_ = heap_->size() == k_;
    return;
  }
  const ScoredItem& worst = heap_->front();
  if (score < worst.score || (score == worst.score && item > worst.item)) return;
  std::pop_heap(heap_->begin(), heap_->end(), Worse());
  heap_->back() = {item, score};
  std::push_heap(heap_->begin(), heap_->end(), Worse());
}

void TopKCollector::Finish() { std::sort_heap(heap_->begin(), heap_->end(), Worse()); }

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
  const int n = catalog_->size(), dim = catalog_->dim();
  const float* base = catalog_->embedding(0);
  if (static_cast<int64_t>(k) * 8 >= n) {
    // k is a large share of a small catalog: score everything, then select, instead of a
    // heap that most items enter.
    out->resize(n);
    for (int start = 0; start < n; start += kScanBlock) {
      const int len = std::min(kScanBlock, n - start);
      DotAll(base + static_cast<size_t>(start) * dim, len, dim, query, local);
      for (int i = 0; i < len; ++i) (*out)[start + i] = {start + i, local[i]};
    }
    auto better = [](const ScoredItem& a, const ScoredItem& b) {
      return a.score > b.score || (a.score == b.score && a.item < b.item);
    };
    if (k < n) {
      std::nth_element(out->begin(), out->begin() + std::max(k, 0), out->end(), better);
      out->resize(std::max(k, 0));
    }
    std::sort(out->begin(), out->end(), better);
    return;
  }
  TopKCollector top(k, out);
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

void CovisitSource::Propose(const UserState& user, int k, RecallScratch*,
                            std::vector<ScoredItem>* out) const {
  out->clear();
  if (!user.has_vector() || k <= 0) return;
  // Selection then a sort of the k kept: linear in the co-visited items, where a heap of
  // k would pay log k per item (k is in the hundreds and grows with the user's history).
  for (int32_t item : user.covisited()) out->push_back({item, user.covisit_score(item)});
  auto better = [](const ScoredItem& a, const ScoredItem& b) {
    return a.score > b.score || (a.score == b.score && a.item < b.item);
  };
  if (out->size() > static_cast<size_t>(k)) {
    std::nth_element(out->begin(), out->begin() + k, out->end(), better);
    out->resize(k);
  }
  std::sort(out->begin(), out->end(), better);
}

void EmbeddingSource::Propose(const UserState& user, int k, RecallScratch* scratch,
                              std::vector<ScoredItem>* out) const {
  out->clear();
  if (!user.has_vector()) return;
  index_->TopK(user.vector().data(), k, scratch->index.get(), out);
}

void PopularitySource::Propose(const UserState& user, int k, RecallScratch*,
                               std::vector<ScoredItem>* out) const {
  out->clear();
  const std::vector<int32_t>& cats = user.categories();
  for (size_t ci = 0; ci < cats.size() && ci < kMaxPopularCategories; ++ci) {
    const int quota = std::max(1, static_cast<int>(k * user.category_share(cats[ci]) + 0.5f));
    int taken = 0;
    for (int32_t item : catalog_->category_by_popularity(cats[ci])) {
      if (taken >= quota || static_cast<int>(out->size()) >= k) break;
      out->push_back({item, user.category_share(cats[ci])});
      ++taken;
    }
  }
  // Global popularity after the user's categories (an item may repeat: the merge dedupes).
  for (int32_t item : catalog_->by_popularity()) {
    if (static_cast<int>(out->size()) >= 2 * k) break;
    out->push_back({item, 0.f});
  }
}

void Recaller::Recall(const UserState& user, const RecallOptions& options, RecallScratch* scratch,
                      std::vector<Candidate>* candidates, absl::Span<const int32_t> excluded) const {
  candidates->clear();
  const Catalog& catalog = *catalog_;
  if (scratch->prepared_for != this) {
    // Read and written at random, per request.
    AssignOnHugePages(&scratch->stamp, catalog.size(), uint32_t{0});
    AssignOnHugePages(&scratch->slot, catalog.size(), int32_t{0});
    scratch->generation = 0;
    scratch->index = index().NewScratch();
    scratch->prepared_for = this;
  }
  if (++scratch->generation == 0) {  // wrapped: clear the stamps once every 2^32 requests
    std::fill(scratch->stamp.begin(), scratch->stamp.end(), 0);
    scratch->generation = 1;
  }
  const uint32_t gen = scratch->generation;
  const size_t cap = static_cast<size_t>(std::max(0, options.max_candidates));

  // Excluded items are stamped with slot -1: never added, never merged.
  for (int32_t item : excluded) {
    scratch->stamp[item] = gen;
    scratch->slot[item] = -1;
  }
  const uint32_t exclude_types = options.exclude_types;
  // Adds `item` from `source`; true if it was new.
  auto add = [&](int32_t item, uint32_t source) {
    if (scratch->stamp[item] == gen) {
      if (scratch->slot[item] >= 0) (*candidates)[scratch->slot[item]].sources |= source;
      return false;
    }
    if (candidates->size() >= cap) return false;
    if (user.consumed(item, exclude_types)) return false;
    scratch->stamp[item] = gen;
    scratch->slot[item] = static_cast<int32_t>(candidates->size());
    candidates->push_back({item, source});
    return true;
  };

  const bool warm = user.has_vector();
  // Co-visitation first, then embedding items that are new, unless the index's cost
  // grows with its k: then the embedding index goes first, where it needs no slack for
  // overlaps (header comment).
  const std::pair<const RecallSource*, int> covisit{&covisit_, options.covisit_k};
  const std::pair<const RecallSource*, int> embedding{&embedding_, options.embedding_k};
  const bool embedding_first = index_->cost_grows_with_k();
  const std::pair<const RecallSource*, int> plan[] = {
      embedding_first ? embedding : covisit, embedding_first ? covisit : embedding,
      {&popularity_, warm ? options.popularity_k : options.max_candidates}};
  int dropped = static_cast<int>(excluded.size());
  if (exclude_types != 0) {
    for (int32_t item : user.history()) dropped += user.consumed(item, exclude_types) ? 1 : 0;
  }
  for (const auto& [source, quota] : plan) {
    if (quota <= 0) continue;
    // Ask for more than the quota: overlaps and dropped items do not count toward it.
    const int slack = static_cast<int>(candidates->size()) + dropped;
    source->Propose(user, quota + slack, scratch, &scratch->scored);
    int added = 0;
    for (const ScoredItem& s : scratch->scored) {
      if (added >= quota) {
        // Past the quota, still record overlaps so every candidate's sources are true.
        if (scratch->stamp[s.item] == gen && scratch->slot[s.item] >= 0) {
          (*candidates)[scratch->slot[s.item]].sources |= source->bit();
        }
        continue;
      }
      if (add(s.item, source->bit())) ++added;
    }
  }
}

}  // namespace recserve
