#include "train/item_tables.h"

#include <cmath>

namespace recserve {

ItemTable BuildItemKnn(const Lists<int32_t>& sequences, int num_items, size_t neighbors,
                       size_t max_items_per_user) {
  const int n = num_items;
  // Each user's newest distinct items.
  Lists<int32_t> user_items;
  {
    std::vector<int32_t> last_user(n, -1);  // the user whose list holds the item already
    for (size_t u = 0; u < sequences.size(); ++u) {
      size_t taken = 0;
      for (int64_t p = sequences.offsets[u + 1]; p-- > sequences.offsets[u] && taken < max_items_per_user;) {
        const int32_t item = sequences.values[p];
        if (last_user[item] == static_cast<int32_t>(u)) continue;
        last_user[item] = static_cast<int32_t>(u);
        user_items.values.push_back(item);
        ++taken;
      }
      user_items.Close();
    }
  }
  // The users of each item; an item's degree is their number.
  const Lists<int32_t> users_of = GroupByKey<int32_t>(n, [&](auto&& add) {
    for (size_t u = 0; u < user_items.size(); ++u) {
      for (int64_t p = user_items.offsets[u]; p < user_items.offsets[u + 1]; ++p) {
        add(user_items.values[p], static_cast<int32_t>(u));
      }
    }
  });
  std::vector<float> degree(n);
  for (int i = 0; i < n; ++i) degree[i] = static_cast<float>(users_of.offsets[i + 1] - users_of.offsets[i]);
  auto count_common_users = [&](int i, ItemSums* sums) {
    for (int64_t p = users_of.offsets[i]; p < users_of.offsets[i + 1]; ++p) {
      const int32_t u = users_of.values[p];
      for (int64_t q = user_items.offsets[u]; q < user_items.offsets[u + 1]; ++q) {
        if (user_items.values[q] != i) sums->Add(user_items.values[q], 1.f);
      }
    }
  };
  ItemTable table = BuildTable(n, neighbors, count_common_users, [&](int i, int32_t j, float common) {
    return common / std::sqrt(degree[i] * degree[j]);
  });
  // BuildTable orders only the rows it cut; every row best first (ties by item).
  std::vector<std::pair<float, int32_t>> row;
  for (int i = 0; i < n; ++i) {
    const int64_t from = table.offsets[i], to = table.offsets[i + 1];
    row.clear();
    for (int64_t p = from; p < to; ++p) row.push_back({-table.weights[p], table.items[p]});
    std::sort(row.begin(), row.end());
    for (int64_t p = from; p < to; ++p) {
      table.weights[p] = -row[p - from].first;
      table.items[p] = row[p - from].second;
    }
  }
  return table;
}

}  // namespace recserve
