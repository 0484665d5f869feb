// Item-to-item tables built from users' item sequences: the pieces the offline
// evaluation's baselines and the trainer's item-kNN artifact share. Compressed rows
// (Lists, ItemTable), a per-thread sparse accumulator (ItemSums), a parallel row
// builder (BuildTable) and the item-kNN table itself (BuildItemKnn).
#ifndef RECSERVE_TRAIN_ITEM_TABLES_H_
#define RECSERVE_TRAIN_ITEM_TABLES_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace recserve {

// A table of item-to-item weights in compressed rows: row i's items and weights are at
// [offsets[i], offsets[i + 1]).
struct ItemTable {
  std::vector<int64_t> offsets;
  std::vector<int32_t> items;
  std::vector<float> weights;
};

// Sums of weights per item over a few of them: a table row being built, or a request's
// scores. Dense sums plus the list of the items touched, so that reading and resetting
// cost what was touched, not the catalog. One per thread, reused.
class ItemSums {
 public:
  explicit ItemSums(int items) : sum_(items, 0.f), touched_(items + 1) {}
  // Branch-free (tens of millions of calls, many of them on new items, unpredictably):
  // the item is always written past the touched ones, and kept there if it is new. A sum
  // that cancels to exactly 0 is nudged to 1e-30 so that the item is listed once.
  void Add(int32_t item, float w) {
    touched_[size_] = item;
    size_ += sum_[item] == 0.f;
    sum_[item] += w;
    if (sum_[item] == 0.f) sum_[item] = 1e-30f;
  }
  // The items added to since the last Clear, in the order they were first met.
  size_t size() const { return size_; }
  int32_t item(size_t k) const { return touched_[k]; }
  float sum(int32_t item) const { return sum_[item]; }
  void Clear() {
    for (size_t k = 0; k < size_; ++k) sum_[touched_[k]] = 0.f;
    size_ = 0;
  }

 private:
  std::vector<float> sum_;
  std::vector<int32_t> touched_;  // the first size_ are the items touched
  size_t size_ = 0;
};

// Builds an n-row co-occurrence table on every thread. Row i: accumulate(i, &sums) sums
// what co-occurs with item i, weight(i, j, sum) turns item j's sum into its weight; rows
// longer than `keep` are cut to the `keep` best (by weight, then item), best first, the
// others hold their items in the order they were met.
template <typename Accumulate, typename Weight>
ItemTable BuildTable(int n, size_t keep, const Accumulate& accumulate, const Weight& weight) {
  std::vector<std::vector<std::pair<float, int32_t>>> rows(n);
#pragma omp parallel
  {
    ItemSums sums(n);
    std::vector<std::pair<float, int32_t>> row;  // reused: a row may be far longer than what is kept
#pragma omp for schedule(dynamic, 16)
    for (int i = 0; i < n; ++i) {
      accumulate(i, &sums);
      row.clear();
      for (size_t k = 0; k < sums.size(); ++k) {
        const int32_t j = sums.item(k);
        row.push_back({weight(i, j, sums.sum(j)), j});
      }
      sums.Clear();
      if (row.size() > keep) {
        // Items are distinct: the order is total, the cut unambiguous.
        auto better = [](const auto& a, const auto& b) {
          return a.first != b.first ? a.first > b.first : a.second < b.second;
        };
        std::nth_element(row.begin(), row.begin() + keep, row.end(), better);
        row.resize(keep);
        std::sort(row.begin(), row.end(), better);
      }
      rows[i] = row;
    }
  }
  ItemTable table;
  table.offsets.assign(n + 1, 0);
  for (int i = 0; i < n; ++i) table.offsets[i + 1] = table.offsets[i] + static_cast<int64_t>(rows[i].size());
  table.items.reserve(table.offsets[n]);
  table.weights.reserve(table.offsets[n]);
  for (const auto& row : rows) {
    for (const auto& [w, j] : row) {
      table.items.push_back(j);
      table.weights.push_back(w);
    }
  }
  return table;
}

// Lists in compressed rows: list k is values[offsets[k], offsets[k + 1]).
template <typename T>
struct Lists {
  std::vector<int64_t> offsets{0};
  std::vector<T> values;
  void Close() { offsets.push_back(static_cast<int64_t>(values.size())); }  // ends the last list
  size_t size() const { return offsets.size() - 1; }
};

// Groups (key, value) pairs by key (a counting sort), each list in the pairs' order:
// emit(add) calls add(key, value) for every pair with key < keys, and must emit the same
// pairs in the same order both times it is called.
template <typename T, typename Emit>
Lists<T> GroupByKey(size_t keys, const Emit& emit) {
  Lists<T> lists;
  lists.offsets.assign(keys + 1, 0);
  emit([&](size_t key, T) { ++lists.offsets[key + 1]; });
  for (size_t k = 0; k < keys; ++k) lists.offsets[k + 1] += lists.offsets[k];
  lists.values.resize(lists.offsets[keys]);
  std::vector<int64_t> at(lists.offsets.begin(), lists.offsets.end() - 1);
  emit([&](size_t key, T value) { lists.values[at[key]++] = value; });
  return lists;
}

// Item-kNN: the cosine of two items' sets of users, |U_i & U_j| / sqrt(|U_i| |U_j|), the
// `neighbors` best per item (ties by item index), best first. `sequences` holds each
// user's items oldest first (repeats allowed); only a user's newest `max_items_per_user`
// distinct items count, which bounds the work by sum over users of that squared.
// Rows are built in parallel and independently: the table is the same on any number of
// threads.
ItemTable BuildItemKnn(const Lists<int32_t>& sequences, int num_items, size_t neighbors,
                       size_t max_items_per_user = 300);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_ITEM_TABLES_H_
