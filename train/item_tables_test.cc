#include "train/item_tables.h"

#include <omp.h>

#include <cmath>

#include "gtest/gtest.h"

namespace recserve {
namespace {

Lists<int32_t> Sequences(const std::vector<std::vector<int32_t>>& users) {
  Lists<int32_t> lists;
  for (const auto& items : users) {
    lists.values.insert(lists.values.end(), items.begin(), items.end());
    lists.Close();
  }
  return lists;
}

// Users {0,1,2}, {0,1}, {1,3}, {0,0,0}: item 0 has 3 users, item 1 has 3, they share 2:
// cos = 2/3; item 2 shares 1 user with 0 and 1 (1/sqrt(3)); item 3 only user 2 with item 1.
TEST(ItemKnnTest, WeightsAreCosinesOfUserSetsBestFirst) {
  const ItemTable t = BuildItemKnn(Sequences({{0, 1, 2}, {0, 1}, {1, 3}, {0, 0, 0}}), 4, 10);
  ASSERT_EQ(t.offsets.size(), 5u);
  // Row 0: 1 (2/3), 2 (1/sqrt 3); repeats of item 0 by one user count once, never itself.
  ASSERT_EQ(t.offsets[1] - t.offsets[0], 2);
  EXPECT_EQ(t.items[0], 1);
  EXPECT_FLOAT_EQ(t.weights[0], 2.f / 3.f);
  EXPECT_EQ(t.items[1], 2);
  EXPECT_FLOAT_EQ(t.weights[1], 1.f / std::sqrt(3.f));
  // Row 3: only item 1, 1/sqrt(1 * 3).
  ASSERT_EQ(t.offsets[4] - t.offsets[3], 1);
  EXPECT_EQ(t.items[t.offsets[3]], 1);
  EXPECT_FLOAT_EQ(t.weights[t.offsets[3]], 1.f / std::sqrt(3.f));
}

TEST(ItemKnnTest, RowsKeepTheBestNeighboursAndOnlyTheNewestItemsPerUserCount) {
  // Item 0 with 1 (two users) and 2, 3 (one each); keep 2: 1 first, then 2 by index.
  const ItemTable t = BuildItemKnn(Sequences({{0, 1}, {0, 1}, {0, 2}, {0, 3}}), 4, 2);
  ASSERT_EQ(t.offsets[1], 2);
  EXPECT_EQ(t.items[0], 1);
  EXPECT_EQ(t.items[1], 2);
  // With one item per user (the newest), nobody links anything.
  const ItemTable newest = BuildItemKnn(Sequences({{0, 1}, {2, 1}}), 3, 10, 1);
  EXPECT_EQ(newest.offsets.back(), 0);
}

TEST(ItemKnnTest, TableIsTheSameOnAnyNumberOfThreads) {
  std::vector<std::vector<int32_t>> users;
  for (int u = 0; u < 300; ++u) {
    std::vector<int32_t>& s = users.emplace_back();
    for (int k = 0; k < 20; ++k) s.push_back((u * 7 + k * k * 13 + u * k) % 500);
  }
  const Lists<int32_t> seq = Sequences(users);
  omp_set_num_threads(1);
  const ItemTable one = BuildItemKnn(seq, 500, 25);
  omp_set_num_threads(4);
  const ItemTable four = BuildItemKnn(seq, 500, 25);
  EXPECT_EQ(one.offsets, four.offsets);
  EXPECT_EQ(one.items, four.items);
  EXPECT_EQ(one.weights, four.weights);
  EXPECT_GT(one.items.size(), 1000u);
}

}  // namespace
}  // namespace recserve
