// 2 MiB pages for the large arrays requests touch at random: catalog embeddings, the
// HNSW graph, co-visitation lists and the per-thread [catalog size] scratch. With 4 KiB
// pages nearly every random row costs a TLB miss and a page walk; on the 1M-item catalog
// backing them with huge pages cut server CPU per request by ~15% (docs/benchmarks.md).
#ifndef RECSERVE_ENGINE_HUGE_PAGES_H_
#define RECSERVE_ENGINE_HUGE_PAGES_H_

#include <cstddef>
#include <vector>

namespace recserve {

// Asks the kernel to back the whole 2 MiB pages inside [p, p + bytes) with huge pages,
// now (MADV_COLLAPSE, Linux 6.1+) and on later faults (MADV_HUGEPAGE). The contents are
// unchanged. Returns the bytes collapsed: 0 for small ranges, older kernels, or when the
// machine has transparent huge pages off ("never"); the caller works the same either way.
size_t AdviseHugePages(const void* p, size_t bytes);

template <typename T>
size_t AdviseHugePages(const std::vector<T>& v) {
  return AdviseHugePages(v.data(), v.size() * sizeof(T));
}

}  // namespace recserve

#endif  // RECSERVE_ENGINE_HUGE_PAGES_H_
