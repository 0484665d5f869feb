#include "train/artifacts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/status_macros.h"
#include "train/item_tables.h"

namespace recserve {

absl::Status BuildArtifacts(const std::vector<LoggedEvent>& events, int64_t cut_ms,
                            const absl::flat_hash_map<uint64_t, int32_t>& index,
                            const ArtifactOptions& opt, CatalogData* items, CovisitData* cov) {
  const int n = static_cast<int>(items->ids.size());
  items->dim = opt.embedding_dim;
  items->popularity.assign(n, 0.f);
  // Train sequences per user, oldest first (events are sorted by time; ties keep log order).
  absl::flat_hash_map<uint64_t, std::vector<std::pair<int32_t, int64_t>>> sequences;
  for (const LoggedEvent& e : events) {
    if (e.timestamp_ms >= cut_ms) continue;
    auto it = index.find(e.item_id);
    if (it == index.end()) continue;
    items->popularity[it->second] +=
        opt.popularity_half_life_days > 0
            ? static_cast<float>(std::exp2(-static_cast<double>(cut_ms - e.timestamp_ms) / (opt.popularity_half_life_days * 86400000.0)))
            : 1.f;
    sequences[e.user_id].push_back({it->second, e.timestamp_ms});
  }
  std::vector<std::vector<int32_t>> item_sequences;
  item_sequences.reserve(sequences.size());
  for (auto& [user, seq] : sequences) {
    std::stable_sort(seq.begin(), seq.end(), [](auto& a, auto& b) { return a.second < b.second; });
    std::vector<int32_t>& s = item_sequences.emplace_back();
    for (auto& [item, ts] : seq) s.push_back(item);
  }
  // Deterministic order regardless of hash-map iteration.
  std::sort(item_sequences.begin(), item_sequences.end());

  // Co-visitation. Pairs are (a << 32 | c) with their weight; sorted, summed per pair.
  {
    std::vector<std::pair<uint64_t, float>> pairs;
    std::vector<float> occurrences(n, 0.f);
    const int64_t max_gap_ms = opt.covisit_max_gap_seconds * 1000;
    const double half_life_ms = opt.covisit_half_life_days * 86400000.0;
    constexpr size_t kMaxBasket = 64;
    auto add = [&](int32_t a, int32_t c, int64_t t) {
      if (a == c) return;
      const float w = half_life_ms > 0 ? static_cast<float>(std::exp2(-static_cast<double>(cut_ms - t) / half_life_ms)) : 1.f;
      pairs.push_back({uint64_t(uint32_t(a)) << 32 | uint32_t(c), w});
      pairs.push_back({uint64_t(uint32_t(c)) << 32 | uint32_t(a), w});
    };
    for (auto& [user, seq] : sequences) {
      for (size_t p = 0; p < seq.size(); ++p) {
        occurrences[seq[p].first] += 1;
        size_t q = p + 1;
        if (opt.covisit_basket_pairs) {
          // The rest of p's basket (same timestamp), then the window beyond it.
          for (; q < seq.size() && seq[q].second == seq[p].second; ++q) {
            if (q - p <= kMaxBasket) add(seq[p].first, seq[q].first, seq[p].second);
          }
          for (size_t r = q; r < seq.size() && r < q + opt.covisit_window; ++r) {
            if (seq[r].second - seq[p].second > max_gap_ms) break;
            add(seq[p].first, seq[r].first, seq[r].second);
          }
          continue;
        }
        for (; q < seq.size() && q <= p + opt.covisit_window; ++q) {
          if (seq[q].second - seq[p].second > max_gap_ms) break;
          add(seq[p].first, seq[q].first, seq[q].second);
        }
      }
    }
    // By pair, then weight: the sums then add in one order whatever order the users came in.
    std::sort(pairs.begin(), pairs.end());
    cov->offsets.assign(n + 1, 0);
    cov->neighbors.clear();
    cov->weights.clear();
    cov->counts.clear();
    struct Edge {
      float weight, count;
      int32_t item;
    };
    std::vector<Edge> row;
    auto by_weight = [](const Edge& x, const Edge& y) { return x.weight != y.weight ? x.weight > y.weight : x.item < y.item; };
    auto by_count = [](const Edge& x, const Edge& y) { return x.count != y.count ? x.count > y.count : x.item < y.item; };
    size_t i = 0;
    for (int32_t a = 0; a < n; ++a) {
      row.clear();
      while (i < pairs.size() && static_cast<int32_t>(pairs[i].first >> 32) == a) {
        size_t j = i;
        double sum = 0;
        while (j < pairs.size() && pairs[j].first == pairs[i].first) sum += pairs[j++].second;
        const int32_t c = static_cast<int32_t>(pairs[i].first & 0xffffffffu);
        const double norm = opt.covisit_cosine ? std::sqrt(double{occurrences[a]} * occurrences[c]) : 1.0;
        row.push_back({static_cast<float>(sum / norm), static_cast<float>(sum), c});
        i = j;
      }
      const size_t k = static_cast<size_t>(opt.covisit_neighbors);
      if (row.size() > k) {
        if (opt.covisit_counts) {
          // The strongest by weight and the most frequent by count: a count-based score
          // needs the popular co-items that the normalised weight ranks low.
          std::nth_element(row.begin(), row.begin() + k, row.end(), by_count);
          std::sort(row.begin() + k, row.end(), by_weight);
          size_t extra = std::min(k, row.size() - k);
          std::vector<Edge> kept(row.begin(), row.begin() + k);
          for (size_t e = 0; e < row.size() - k && extra > 0; ++e, --extra) kept.push_back(row[k + e]);
          row = std::move(kept);
        } else {
          std::nth_element(row.begin(), row.begin() + k, row.end(), by_weight);
          row.resize(k);
        }
      }
      std::sort(row.begin(), row.end(), by_weight);
      for (const Edge& e : row) {
        cov->neighbors.push_back(e.item);
        cov->weights.push_back(e.weight);
        if (opt.covisit_counts) cov->counts.push_back(e.count);
      }
      cov->offsets[a + 1] = static_cast<int64_t>(cov->neighbors.size());
    }
    if (opt.verbose) {
      std::fprintf(stderr, "[train] co-visitation: %zu pairs counted, %zu edges kept\n", pairs.size(),
                   cov->neighbors.size());
    }
  }

  cov->knn_offsets.clear();
  cov->knn_neighbors.clear();
  cov->knn_weights.clear();
  if (opt.knn_neighbors > 0) {
    Lists<int32_t> lists;
    for (const std::vector<int32_t>& s : item_sequences) {
      lists.values.insert(lists.values.end(), s.begin(), s.end());
      lists.Close();
    }
    ItemTable knn = BuildItemKnn(lists, n, static_cast<size_t>(opt.knn_neighbors));
    cov->knn_offsets = std::move(knn.offsets);
    cov->knn_neighbors = std::move(knn.items);
    cov->knn_weights = std::move(knn.weights);
  }

  // Item embeddings.
  Item2VecOptions i2v = opt.item2vec;
  i2v.dim = opt.embedding_dim;
  i2v.verbose = opt.verbose;
  ASSIGN_OR_RETURN(items->embeddings, TrainItem2Vec(item_sequences, n, i2v));
  return absl::OkStatus();
}

}  // namespace recserve
