// 2 MiB pages for the large arrays requests touch at random: catalog embeddings, the
// HNSW graph, co-visitation lists and the per-thread [catalog size] scratch. With 4 KiB
// pages nearly every random row costs a TLB miss and a page walk (docs/benchmarks.md:
// the 1M-item catalog's HNSW queries ran 14% faster with the huge pages and the new
// int8 scan).
//
// The machine's transparent huge page setting is honoured: where
// /sys/kernel/mm/transparent_hugepage/enabled says "never" (or cannot be read) these
// calls do nothing. Callers work the same either way.
#ifndef RECSERVE_ENGINE_HUGE_PAGES_H_
#define RECSERVE_ENGINE_HUGE_PAGES_H_

#include <cstddef>
#include <vector>

namespace recserve {

// Load time, for data already written: asks the kernel to back the whole 2 MiB pages
// inside [p, p + bytes) with huge pages now (MADV_COLLAPSE, Linux 6.1+, which copies the
// data) and on later faults (MADV_HUGEPAGE). The contents are unchanged. Returns the
// bytes collapsed (0 for small ranges, older kernels, or THP off). Collapsing takes the
// process's memory-map lock, so it is not for the request path.
size_t AdviseHugePages(const void* p, size_t bytes);

template <typename T>
size_t AdviseHugePages(const std::vector<T>& v) {
  return AdviseHugePages(v.data(), v.size() * sizeof(T));
}

// MADV_HUGEPAGE alone on the whole 2 MiB pages inside [p, p + bytes) (THP permitting):
// pages faulted in later come huge; nothing is copied.
void HintHugePages(const void* p, size_t bytes);

// Request-thread scratch: replaces *v with `n` copies of `value` in memory that was
// marked MADV_HUGEPAGE before it was first written, so its pages fault in huge, with
// no collapse and no copy.
template <typename T>
void AssignOnHugePages(std::vector<T>* v, size_t n, const T& value) {
  std::vector<T> fresh;
  fresh.reserve(n);
  HintHugePages(fresh.data(), n * sizeof(T));
  fresh.assign(n, value);
  v->swap(fresh);
}

}  // namespace recserve

#endif  // RECSERVE_ENGINE_HUGE_PAGES_H_
