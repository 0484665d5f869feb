// StableUserHash: which users a canary answers, the same in every process and replica.
//
// A canary's share of traffic is chosen by user, so that one user sees one version for
// the whole roll-out, and the same version from every replica behind a balancer. That
// needs a hash fixed by this file, not a per-process seeded one (absl::Hash,
// std::hash): FNV-1a 64 over the user_id's bytes, then the SplitMix64 finalizer (FNV's
// low and high bits alone are poorly mixed for short ids). UserShareFraction maps it to
// [0, 1) by its top 53 bits; a user is in a canary of share s when that fraction is < s,
// so raising a share only adds users. Changing either function moves users between
// versions in the middle of roll-outs: the test pins known values.
//
// Thread-safety: pure functions.
#ifndef RECSERVE_SERVER_USER_HASH_H_
#define RECSERVE_SERVER_USER_HASH_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace recserve {

inline uint64_t StableUserHash(absl::string_view user_id) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 offset basis
  for (unsigned char c : user_id) {
    h ^= c;
    h *= 1099511628211ull;  // FNV 64 prime
  }
  // SplitMix64's finalizer.
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

// The user's place in [0, 1): the hash's top 53 bits over 2^53.
inline double UserShareFraction(absl::string_view user_id) {
  return static_cast<double>(StableUserHash(user_id) >> 11) * 0x1.0p-53;
}

}  // namespace recserve

#endif  // RECSERVE_SERVER_USER_HASH_H_
