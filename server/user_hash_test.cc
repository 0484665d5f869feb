#include "server/user_hash.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/serving_manager.h"

namespace recserve {
namespace {

// The values are fixed by the hash's definition (computed by an independent Python
// implementation of FNV-1a 64 + SplitMix64's finalizer): a change here moves users
// between versions in the middle of roll-outs, across every replica.
TEST(StableUserHashTest, KnownValuesArePinned) {
  EXPECT_EQ(StableUserHash(""), 0x552d3fb62b3c344full);
  EXPECT_EQ(StableUserHash("user-42"), 0xe1a2fed0654c3d97ull);
  EXPECT_EQ(StableUserHash("alice"), 0x580ae31c4d559908ull);
  EXPECT_DOUBLE_EQ(UserShareFraction("user-42"), 0.8813933619288016);
}

ServingSet CanaryAt(double share) {
  ServingSet set;
  set.members.push_back({1, ServingRole::kServing, nullptr, 1.0, nullptr});
  set.members.push_back({2, ServingRole::kCanary, nullptr, share, nullptr});
  set.members.push_back({3, ServingRole::kShadow, nullptr, 0.5, nullptr});
  return set;
}

TEST(ServingSetTest, CanaryShareOfUsersIsWithinBinomialBounds) {
  constexpr int kUsers = 10000;
  constexpr double kShare = 0.1;
  const ServingSet set = CanaryAt(kShare);
  int canary = 0;
  for (int i = 0; i < kUsers; ++i) {
    const ServingSet::Member* m = set.ForUser(absl::StrCat("user-", i));
    ASSERT_NE(m, nullptr);
    ASSERT_NE(m->role, ServingRole::kShadow);  // a shadow never answers
    canary += m->role == ServingRole::kCanary;
  }
  const double sigma = std::sqrt(kUsers * kShare * (1 - kShare));  // 30 users
  EXPECT_GT(canary, kUsers * kShare - 5 * sigma);
  EXPECT_LT(canary, kUsers * kShare + 5 * sigma);
}

TEST(ServingSetTest, SameUserAlwaysGetsTheSameVersionAndRaisingTheShareOnlyAddsUsers) {
  const ServingSet narrow = CanaryAt(0.1), again = CanaryAt(0.1), wide = CanaryAt(0.3);
  int moved_in = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string user = absl::StrCat("u", i * 7919);
    const int64_t version = narrow.ForUser(user)->version;
    EXPECT_EQ(again.ForUser(user)->version, version) << user;
    if (version == 2) {
      EXPECT_EQ(wide.ForUser(user)->version, 2) << user;
    }
    moved_in += version == 1 && wide.ForUser(user)->version == 2;
  }
  EXPECT_GT(moved_in, 0);
}

TEST(ServingSetTest, EmptyUserIdAndNoCanaryGoToServing) {
  const ServingSet set = CanaryAt(0.999);
  EXPECT_EQ(set.ForUser("")->version, 1);
  ServingSet serving_only;
  serving_only.members.push_back({1, ServingRole::kServing, nullptr, 1.0, nullptr});
  EXPECT_EQ(serving_only.ForUser("user-42")->version, 1);
  EXPECT_EQ(ServingSet().ForUser("user-42"), nullptr);
}

}  // namespace
}  // namespace recserve
