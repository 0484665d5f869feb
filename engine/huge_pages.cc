#include "engine/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; glibc 2.36's headers predate it
#endif

namespace recserve {

size_t AdviseHugePages(const void* p, size_t bytes) {
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end <= begin) return 0;
  void* start = reinterpret_cast<void*>(begin);
  const size_t len = end - begin;
  if (::madvise(start, len, MADV_HUGEPAGE) != 0) return 0;  // THP off or not anonymous memory
  return ::madvise(start, len, MADV_COLLAPSE) == 0 ? len : 0;
}

}  // namespace recserve
