#include "train/artifacts.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/status_macros.h"

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
    items->popularity[it->second] += 1.f;
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
    std::sort(pairs.begin(), pairs.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    cov->offsets.assign(n + 1, 0);
    cov->neighbors.clear();
    cov->weights.clear();
    std::vector<std::pair<float, int32_t>> row;
    size_t i = 0;
    for (int32_t a = 0; a < n; ++a) {
      row.clear();
      while (i < pairs.size() && static_cast<int32_t>(pairs[i].first >> 32) == a) {
        size_t j = i;
        double sum = 0;
        while (j < pairs.size() && pairs[j].first == pairs[i].first) sum += pairs[j++].second;
        const int32_t c = static_cast<int32_t>(pairs[i].first & 0xffffffffu);
        const double norm = opt.covisit_cosine ? std::sqrt(double{occurrences[a]} * occurrences[c]) : 1.0;
        row.push_back({static_cast<float>(sum / norm), c});
        i = j;
      }
      const size_t keep = std::min<size_t>(row.size(), opt.covisit_neighbors);
      std::partial_sort(row.begin(), row.begin() + keep, row.end(),
                        [](auto& x, auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
      for (size_t k = 0; k < keep; ++k) {
        cov->neighbors.push_back(row[k].second);
        cov->weights.push_back(row[k].first);
      }
      cov->offsets[a + 1] = static_cast<int64_t>(cov->neighbors.size());
    }
    if (opt.verbose) {
      std::fprintf(stderr, "[train] co-visitation: %zu pairs counted, %zu edges kept\n", pairs.size(),
                   cov->neighbors.size());
    }
  }

  // Item embeddings.
  Item2VecOptions i2v = opt.item2vec;
  i2v.dim = opt.embedding_dim;
  i2v.verbose = opt.verbose;
  ASSIGN_OR_RETURN(items->embeddings, TrainItem2Vec(item_sequences, n, i2v));
  return absl::OkStatus();
}

}  // namespace recserve
