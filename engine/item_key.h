// String item ids ("SKUs such as 85123A") and the numeric ids the engine works with.
//
// Real catalogs name items by strings. recserve keeps the string (the item's *key*) in
// the catalog beside a numeric id that is derived from it, the same way everywhere
// (importer, trainer, bundle, server, clients):
//   - a key that is a canonical decimal number below 2^63 ("71053", not "071053" or
//     "+5") is its own numeric id, so numeric logs keep their ids;
//   - any other key gets FNV-1a 64 of its bytes with the top bit set, so it can never
//     collide with a numeric key, and is stable across model versions and replicas.
// A catalog refuses two keys with the same numeric id (a hash collision) at load.
#ifndef RECSERVE_ENGINE_ITEM_KEY_H_
#define RECSERVE_ENGINE_ITEM_KEY_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace recserve {

// Longest key accepted anywhere (importers, bundle, requests).
inline constexpr size_t kMaxItemKeyBytes = 256;

// True when `key` is a canonical decimal below 2^63; sets *id.
inline bool CanonicalNumericKey(absl::string_view key, uint64_t* id) {
  if (key.empty() || key.size() > 19) return false;
  if (key.size() > 1 && key[0] == '0') return false;
  uint64_t v = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v >> 63) return false;
  *id = v;
  return true;
}

// The numeric id of `key` (see the header comment).
inline uint64_t ItemIdFromKey(absl::string_view key) {
  uint64_t id;
  if (CanonicalNumericKey(key, &id)) return id;
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 offset basis
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h | (uint64_t{1} << 63);
}

// Whether `id` was derived from a non-numeric key.
inline bool IsHashedItemId(uint64_t id) { return (id >> 63) != 0; }

}  // namespace recserve

#endif  // RECSERVE_ENGINE_ITEM_KEY_H_
