#include "engine/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <fstream>
#include <string>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; glibc 2.36's headers predate it
#endif

namespace recserve {
namespace {

// "always [madvise] never": the bracketed word is the setting. MADV_COLLAPSE would
// ignore "never", so read it ourselves, once.
bool TransparentHugePagesAllowed() {
  static const bool allowed = [] {
    std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string line;
    if (!std::getline(in, line)) return false;
    return line.find("[never]") == std::string::npos;
  }();
  return allowed;
}

// The whole 2 MiB pages inside [p, p + bytes), or an empty range.
bool HugeRange(const void* p, size_t bytes, void** start, size_t* len) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end <= begin || !TransparentHugePagesAllowed()) return false;
  *start = reinterpret_cast<void*>(begin);
  *len = end - begin;
  return true;
}

}  // namespace

void HintHugePages(const void* p, size_t bytes) {
  void* start;
  size_t len;
  if (HugeRange(p, bytes, &start, &len)) ::madvise(start, len, MADV_HUGEPAGE);
}

size_t AdviseHugePages(const void* p, size_t bytes) {
  void* start;
  size_t len;
  if (!HugeRange(p, bytes, &start, &len)) return 0;
  if (::madvise(start, len, MADV_HUGEPAGE) != 0) return 0;  // not anonymous memory
  return ::madvise(start, len, MADV_COLLAPSE) == 0 ? len : 0;
}

}  // namespace recserve
