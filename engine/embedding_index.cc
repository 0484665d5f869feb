#include "engine/embedding_index.h"

#include <hnswlib/hnswlib.h>
#include <immintrin.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <fstream>
#include <random>
#include <system_error>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "engine/status_macros.h"
#include "engine/cpu_dispatch.h"
#include "engine/huge_pages.h"

namespace recserve {
namespace {

// The int8 scan works on blocks of 16 items whose codes are interleaved by groups of 4
// dimensions: group g of a block is 64 bytes, 4 codes of each of its 16 items. One
// VPDPBUSD then adds a 4-dimension slice of 16 dot products at once (no horizontal sums),
// and the 16 scores of a block are compared with the top-k threshold in one instruction.
constexpr int kLanes = 16;

// The quantized catalog as the scan reads it. A scan function (ScanInt8Fn) pushes into
// the collector every item of blocks [first_block, first_block + blocks) whose score,
// query_scale x item scale x (query codes . item codes), reaches its threshold; items
// past `n` (the last block's padding) are skipped. `q` holds the query's codes,
// `groups` * 4 of them (zero padded).
struct Int8Scan {
  const int8_t* codes;   // [blocks x groups x 64]
  const int32_t* sums;   // [blocks x 16] sum of each item's codes
  const float* scales;   // [blocks x 16] item scale (the query's is passed apart)
  int groups;
  int n;
};

// Without VNNI (AVX2, AVX-512 without VNNI) the compiler vectorizes this across the 16
// lanes of a block.
RECSERVE_VECTOR_CLONES
void ScanInt8Generic(const Int8Scan& s, const int8_t* q, float query_scale, int first_block, int blocks,
                     TopKCollector* top) {
  for (int b = first_block; b < first_block + blocks; ++b) {
    int32_t acc[kLanes] = {};
    const int8_t* block = s.codes + static_cast<size_t>(b) * s.groups * 64;
    for (int g = 0; g < s.groups; ++g) {
      for (int j = 0; j < kLanes; ++j) {
        for (int t = 0; t < 4; ++t) acc[j] += int32_t{block[g * 64 + j * 4 + t]} * int32_t{q[g * 4 + t]};
      }
    }
    const int items = std::min(kLanes, s.n - b * kLanes);
    float threshold = top->threshold();
    for (int j = 0; j < items; ++j) {
      const float score = query_scale * s.scales[b * kLanes + j] * static_cast<float>(acc[j]);
      if (score >= threshold) {
        top->Push(b * kLanes + j, score);
        threshold = top->threshold();
      }
    }
  }
}

#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's AVX-512 intrinsics (PR105593)
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
void ScanInt8Vnni(const Int8Scan& s, const int8_t* q, float query_scale, int first_block, int blocks,
                  TopKCollector* top) {
  // VPDPBUSD multiplies unsigned by signed bytes: with u = q + 128,
  // u . e = q . e + 128 * sum(e), so the item sums take the 128 back out.
  int32_t qu[1024];
  for (int g = 0; g < s.groups; ++g) {
    uint32_t word = 0;
    for (int t = 0; t < 4; ++t) word |= static_cast<uint32_t>(static_cast<uint8_t>(q[g * 4 + t] + 128)) << (8 * t);
    qu[g] = static_cast<int32_t>(word);
  }
  const __m512 qs = _mm512_set1_ps(query_scale);
  float threshold = top->threshold();
  for (int b = first_block; b < first_block + blocks; ++b) {
    const int8_t* block = s.codes + static_cast<size_t>(b) * s.groups * 64;
    __m512i acc = _mm512_setzero_si512();
    for (int g = 0; g < s.groups; ++g) {
      acc = _mm512_dpbusd_epi32(acc, _mm512_set1_epi32(qu[g]), _mm512_loadu_si512(block + g * 64));
    }
    acc = _mm512_sub_epi32(acc, _mm512_slli_epi32(_mm512_loadu_si512(s.sums + b * kLanes), 7));
    const __m512 score = _mm512_mul_ps(_mm512_mul_ps(qs, _mm512_loadu_ps(s.scales + b * kLanes)),
                                       _mm512_cvtepi32_ps(acc));
    __mmask16 hits = _mm512_cmp_ps_mask(score, _mm512_set1_ps(threshold), _CMP_GE_OQ);
    if (hits == 0) continue;
    const int items = std::min(kLanes, s.n - b * kLanes);
    if (items < kLanes) hits &= static_cast<__mmask16>((1u << items) - 1);
    alignas(64) float scores[kLanes];
    _mm512_store_ps(scores, score);
    for (; hits != 0; hits &= hits - 1) {
      const int j = __builtin_ctz(hits);
      if (scores[j] >= threshold) {
        top->Push(b * kLanes + j, scores[j]);
        threshold = top->threshold();
      }
    }
  }
}
#pragma GCC diagnostic pop
#endif

using ScanInt8Fn = void (*)(const Int8Scan&, const int8_t*, float, int, int, TopKCollector*);
ScanInt8Fn PickScanInt8() {
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) return ScanInt8Vnni;
#endif
  return ScanInt8Generic;
}
const ScanInt8Fn ScanInt8 = PickScanInt8();

// Per-item symmetric int8 embeddings: e ~ scale[i] * code[i], scanned in full per query.
class ExactInt8Index : public EmbeddingIndex {
 public:
  explicit ExactInt8Index(const Catalog* catalog) : catalog_(catalog) {
    const int n = catalog->size(), d = catalog->dim();
    groups_ = (d + 3) / 4;
    const int blocks = (n + kLanes - 1) / kLanes;
    codes_.assign(static_cast<size_t>(blocks) * groups_ * 64, 0);
    sums_.assign(static_cast<size_t>(blocks) * kLanes, 0);
    scales_.assign(static_cast<size_t>(blocks) * kLanes, 0.f);
    for (int i = 0; i < n; ++i) {
      const float* e = catalog->embedding(i);
      float max_abs = 0;
      for (int k = 0; k < d; ++k) max_abs = std::max(max_abs, std::abs(e[k]));
      const float s = max_abs > 0 ? max_abs / 127.f : 1.f;
      scales_[i] = s;
      int8_t* block = &codes_[static_cast<size_t>(i / kLanes) * groups_ * 64];
      for (int k = 0; k < d; ++k) {
        const int8_t code = static_cast<int8_t>(std::nearbyint(e[k] / s));
        block[(k / 4) * 64 + (i % kLanes) * 4 + k % 4] = code;
        sums_[i] += code;
      }
    }
    AdviseHugePages(codes_);
  }
  void TopK(const float* query, int k, IndexScratch*, std::vector<ScoredItem>* out) const override {
    const int n = catalog_->size(), d = catalog_->dim();
    int8_t q[4096] = {};
    float max_abs = 0;
    for (int j = 0; j < d; ++j) max_abs = std::max(max_abs, std::abs(query[j]));
    const float qs = max_abs > 0 ? max_abs / 127.f : 1.f;
    for (int j = 0; j < d; ++j) q[j] = static_cast<int8_t>(std::nearbyint(query[j] / qs));
    TopKCollector top(k, out);
    if (k <= 0) return;
    const Int8Scan scan{codes_.data(), sums_.data(), scales_.data(), groups_, n};
    ScanInt8(scan, q, qs, 0, (n + kLanes - 1) / kLanes, &top);
    top.Finish();
  }
  std::string name() const override { return "exact-int8"; }
  int64_t memory_bytes() const override {
    return static_cast<int64_t>(codes_.size() + sizeof(int32_t) * sums_.size() + sizeof(float) * scales_.size());
  }

 private:
  const Catalog* catalog_;
  int groups_;                 // dimensions / 4, rounded up
  std::vector<int8_t> codes_;  // interleaved blocks of 16 items (Int8Scan)
  std::vector<int32_t> sums_;
  std::vector<float> scales_;
};

class HnswIndex : public EmbeddingIndex {
 public:
  // Builds the graph over every catalog item (label = item index) on o.build_threads
  // threads. hnswlib reports errors by throwing (std::runtime_error, std::bad_alloc): an
  // exception is caught on the thread that throws it (none may leave a thread: that ends
  // the process), the other threads stop before their next item, and the first one
  // becomes the returned Status; the half-built graph is dropped.
  static absl::StatusOr<std::unique_ptr<HnswIndex>> Build(const Catalog* catalog, const EmbeddingIndexOptions& o) {
    std::unique_ptr<HnswIndex> index(new HnswIndex(catalog, o.hnsw_ef_search, /*prebuilt=*/false));
    const int n = catalog->size();
    try {
      index->graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(&index->space_, n, o.hnsw_m,
                                                                        o.hnsw_ef_construction);
    } catch (...) {
      return BuildError("allocating the graph", std::current_exception());
    }
    const int threads = std::max(1, o.build_threads);
    struct FirstFailure {
      absl::Mutex mu;
      std::exception_ptr error ABSL_GUARDED_BY(mu);  // kept as thrown: a Status could not be built without memory
      int item ABSL_GUARDED_BY(mu) = -1;             // -1: no build thread could be started
    } first;
    std::atomic<bool> failed{false};
    auto record = [&](int item) {
      absl::MutexLock lock(&first.mu);
      if (!first.error) {
        first.error = std::current_exception();
        first.item = item;
      }
      failed.store(true, std::memory_order_relaxed);
    };
    auto add_items = [&](int t) {
      for (int i = t; i < n && !failed.load(std::memory_order_relaxed); i += threads) {
        try {
          index->graph_->addPoint(catalog->embedding(i), static_cast<size_t>(i));
        } catch (...) {
          record(i);
        }
      }
    };
    std::vector<std::thread> workers;
    try {
      for (int t = 0; t < threads; ++t) workers.emplace_back(add_items, t);
    } catch (...) {  // std::system_error: no thread to be had
      record(-1);
    }
    for (auto& w : workers) w.join();
    {
      absl::MutexLock lock(&first.mu);  // uncontended: the builders are joined
      if (first.error) {
        return BuildError(first.item < 0 ? absl::StrCat("starting ", threads, " build threads")
                                         : absl::StrFormat("adding item %d (id %d)", first.item,
                                                           catalog->id(first.item)),
                          first.error);
      }
    }
    index->graph_->setEf(index->ef_);
    index->UseHugePages();
    return index;
  }

  // Loads a graph saved by SaveHnswGraph for this catalog and checks, before any search,
  // that it is one (CheckFile, CheckGraph): a graph of another catalog, or one whose
  // structure would lead hnswlib's search out of bounds, is refused with InvalidArgument
  // naming what is wrong.
  static absl::StatusOr<std::unique_ptr<HnswIndex>> Load(const Catalog* catalog, const EmbeddingIndexOptions& o) {
    const std::string& path = o.hnsw_graph_path;
    const std::string& name = o.hnsw_graph_name.empty() ? path : o.hnsw_graph_name;
    // hnswlib trusts its file; check its header against this catalog and its link-list
    // sizes against the header and the file's size first.
    RETURN_IF_ERROR(CheckFile(path, name, catalog));
    std::unique_ptr<HnswIndex> index(new HnswIndex(catalog, o.hnsw_ef_search, /*prebuilt=*/true));
    try {
      index->graph_ = std::make_unique<hnswlib::HierarchicalNSW<float>>(&index->space_, path, false, catalog->size());
      RETURN_IF_ERROR(index->CheckGraph(name));
      // hnswlib 0.6's loading constructor adds the deleted elements it finds to a
      // num_deleted_ it never initialized; CheckGraph found none.
      index->graph_->num_deleted_ = 0;
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": not an hnsw graph for this catalog: ", e.what()));
    }
    index->graph_->setEf(index->ef_);
    index->UseHugePages();
    return index;
  }

  void TopK(const float* query, int k, IndexScratch*, std::vector<ScoredItem>* out) const override {
    out->clear();
    // hnswlib's search is safe to run from many threads at once.
    auto result = graph_->searchKnn(query, std::max(1, k));
    while (!result.empty()) {
      const auto& [dist, label] = result.top();
      out->push_back({static_cast<int32_t>(label), 1.f - dist});  // inner-product space: 1 - ip
      result.pop();
    }
    std::reverse(out->begin(), out->end());  // best first
  }
  bool cost_grows_with_k() const override { return true; }
  std::string name() const override {
    return absl::StrCat("hnsw(M=", graph_->M_, ",ef=", ef_, prebuilt_ ? ",prebuilt)" : ")");
  }
  int64_t memory_bytes() const override {
    return static_cast<int64_t>(graph_->max_elements_) * graph_->size_data_per_element_;
  }
  absl::Status Save(const std::string& path) const {
    try {
      graph_->saveIndex(path);
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("writing ", path, ": ", e.what()));
    }
    return absl::OkStatus();
  }

 private:
  HnswIndex(const Catalog* catalog, int ef, bool prebuilt)
      : catalog_(catalog), space_(catalog->dim()), ef_(ef), prebuilt_(prebuilt) {}

  // What hnswlib threw while building (`where`) as a Status: ResourceExhausted when
  // memory or threads ran out (std::bad_alloc, hnswlib's "Not enough memory",
  // std::system_error), Internal otherwise.
  static absl::Status BuildError(const std::string& where, std::exception_ptr error) {
    const std::string prefix = absl::StrCat("hnsw build: ", where, ": ");
    try {
      std::rethrow_exception(error);
    } catch (const std::bad_alloc& e) {
      return absl::ResourceExhaustedError(absl::StrCat(prefix, e.what()));
    } catch (const std::system_error& e) {
      return absl::ResourceExhaustedError(absl::StrCat(prefix, e.what()));
    } catch (const std::exception& e) {
      return absl::StartsWith(e.what(), "Not enough memory") ? absl::ResourceExhaustedError(absl::StrCat(prefix, e.what()))
                                                            : absl::InternalError(absl::StrCat(prefix, e.what()));
    } catch (...) {
      return absl::InternalError(absl::StrCat(prefix, "an exception that is not a std::exception"));
    }
  }

  // Before hnswlib reads the file, which it trusts: the header, field by field, against
  // the layout hnswlib 0.6 writes (saveIndex) for this catalog; then the upper link lists
  // (per element a u32 byte size and that many bytes) against the header and the file's
  // size: each a whole number of levels, none above the top level, the entry point on the
  // top level, and the last list ending where the file does.
  // `name` names the file in errors.
  static absl::Status CheckFile(const std::string& path, const std::string& name, const Catalog* catalog) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(name, ": cannot open"));
    in.seekg(0, std::ios::end);
    const std::streamoff file_size = in.tellg();
    in.seekg(0, std::ios::beg);
    struct {
      size_t offset_level0, max_elements, count, size_per_element, label_offset, offset_data;
      int max_level;
      uint32_t entry;
      size_t max_m, max_m0, m;
      double mult;
      size_t ef_construction;
    } h{};
    auto read = [&in](auto* v) { in.read(reinterpret_cast<char*>(v), sizeof(*v)); };
    read(&h.offset_level0), read(&h.max_elements), read(&h.count), read(&h.size_per_element);
    read(&h.label_offset), read(&h.offset_data), read(&h.max_level), read(&h.entry);
    read(&h.max_m), read(&h.max_m0), read(&h.m), read(&h.mult), read(&h.ef_construction);
    const size_t n = static_cast<size_t>(catalog->size()), vector_bytes = catalog->dim() * sizeof(float);
    const size_t links0 = h.max_m0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
    const bool ok = in && h.offset_level0 == 0 && h.count == n && h.max_elements >= n && h.m >= 2 && h.m <= 128 &&
                    h.max_m == h.m && h.max_m0 == 2 * h.m && h.offset_data == links0 &&
                    h.label_offset == h.offset_data + vector_bytes &&
                    h.size_per_element == h.label_offset + sizeof(hnswlib::labeltype) && h.max_level >= 0 &&
                    h.max_level < 64 && h.entry < n;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the graph's header does not fit this catalog (%d items of dimension %d): %d vectors, %d bytes per "
          "element, M=%d",
          name, n, catalog->dim(), h.count, h.size_per_element, h.m));
    }
    // The header's fields are now bounded (n < 2^31, an element under 17 KiB): no overflow.
    const uint64_t upper_start = static_cast<uint64_t>(in.tellg()) + uint64_t{n} * h.size_per_element;
    if (file_size < 0 || upper_start + 4 * uint64_t{n} > static_cast<uint64_t>(file_size)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: %d bytes, too short for the %d elements its header describes", name, file_size, n));
    }
    // The upper lists are small (a sixteenth of the elements have any): read them whole.
    std::string upper(static_cast<size_t>(file_size - upper_start), '\0');
    in.seekg(static_cast<std::streamoff>(upper_start), std::ios::beg);
    in.read(upper.data(), static_cast<std::streamsize>(upper.size()));
    if (!in) return absl::DataLossError(absl::StrCat(name, ": read error"));
    const uint64_t level_bytes = h.max_m * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
    uint64_t at = 0;
    for (size_t i = 0; i < n; ++i) {
      uint32_t bytes = 0;
      if (at + sizeof(bytes) > upper.size()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: the file ends before the link lists of element %d", name, i));
      }
      std::memcpy(&bytes, upper.data() + at, sizeof(bytes));
      at += sizeof(bytes);
      if (bytes % level_bytes != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: element %d has %d bytes of upper link lists, not a whole number of levels (%d bytes each)", name,
            i, bytes, level_bytes));
      }
      const uint64_t level = bytes / level_bytes;
      if (level > static_cast<uint64_t>(h.max_level)) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: element %d reaches level %d, above the top level %d",
                                                          name, i, level, h.max_level));
      }
      if (i == h.entry && level != static_cast<uint64_t>(h.max_level)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: the entry point, element %d, is on level %d, not the top level %d", name, i, level, h.max_level));
      }
      if (at + bytes > upper.size()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: the file ends inside the link lists of element %d", name, i));
      }
      at += bytes;
    }
    if (at != upper.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %d bytes after the last link list; the header describes %d elements", name,
                          upper.size() - at, n));
    }
    return absl::OkStatus();
  }

  // After hnswlib has loaded the graph, before any search: the structure hnswlib's search
  // follows without checking. Every element's level within the top level and its lists
  // allocated; the entry point on the top level; every list no longer than its level
  // allows (maxM0 on level 0, maxM above), every link to an element that exists and has
  // the level it is linked on; every label a distinct item index, none deleted; and every
  // stored vector bit for bit the catalog's (a graph of another catalog is refused, and
  // search meets only the catalog's checked values).
  absl::Status CheckGraph(const std::string& name) const {
    const hnswlib::HierarchicalNSW<float>& g = *graph_;
    const size_t n = static_cast<size_t>(catalog_->size());
    auto bad = [&name](const std::string& what) { return absl::InvalidArgumentError(absl::StrCat(name, ": ", what)); };
    if (g.cur_element_count != n || g.max_elements_ != n || g.maxlevel_ < 0) {
      return bad(absl::StrFormat("%d elements (room for %d), top level %d; want %d elements", g.cur_element_count,
                                 g.max_elements_, g.maxlevel_, n));
    }
    if (g.enterpoint_node_ >= n || g.element_levels_[g.enterpoint_node_] != g.maxlevel_) {
      return bad(absl::StrFormat("the entry point, element %d, is not on the top level %d", g.enterpoint_node_,
                                 g.maxlevel_));
    }
    if (g.label_lookup_.size() != n) {
      return bad(absl::StrFormat("%d distinct labels for %d elements", g.label_lookup_.size(), n));
    }
    const size_t vector_bytes = catalog_->dim() * sizeof(float);
    for (size_t i = 0; i < n; ++i) {
      const hnswlib::tableint id = static_cast<hnswlib::tableint>(i);
      const hnswlib::labeltype label = g.getExternalLabel(id);
      if (label >= n) return bad(absl::StrFormat("element %d has label %d, outside [0, %d)", i, label, n));
      const auto found = g.label_lookup_.find(label);
      if (found == g.label_lookup_.end() || found->second != id) {
        return bad(absl::StrFormat("label %d is on more than one element", label));
      }
      if (g.isMarkedDeleted(id)) return bad(absl::StrFormat("element %d is marked deleted", i));
      const int levels = g.element_levels_[i];
      if (levels < 0 || levels > g.maxlevel_) {
        return bad(absl::StrFormat("element %d reaches level %d, above the top level %d", i, levels, g.maxlevel_));
      }
      if ((levels > 0) != (g.linkLists_[i] != nullptr)) {
        return bad(absl::StrFormat("element %d: upper link lists do not match its level %d", i, levels));
      }
      for (int level = 0; level <= levels; ++level) {
        hnswlib::linklistsizeint* list = level == 0 ? g.get_linklist0(id) : g.get_linklist(id, level);
        const size_t count = g.getListCount(list);
        const size_t allowed = level == 0 ? g.maxM0_ : g.maxM_;
        if (count > allowed) {
          return bad(absl::StrFormat("element %d has %d links on level %d, more than the %d allowed", i, count,
                                     level, allowed));
        }
        const hnswlib::tableint* links = reinterpret_cast<const hnswlib::tableint*>(list + 1);
        for (size_t k = 0; k < count; ++k) {
          if (links[k] >= n) {
            return bad(absl::StrFormat("element %d links on level %d to element %d, past the last element %d", i,
                                       level, links[k], n - 1));
          }
          if (g.element_levels_[links[k]] < level) {
            return bad(absl::StrFormat("element %d links on level %d to element %d, which has no level %d", i,
                                       level, links[k], level));
          }
        }
      }
      if (std::memcmp(g.getDataByInternalId(id), catalog_->embedding(static_cast<int>(label)), vector_bytes) != 0) {
        return bad(absl::StrFormat(
            "the graph's vector of item %d differs from the catalog's; it was built for another catalog", label));
      }
    }
    return absl::OkStatus();
  }

  const Catalog* catalog_;
  hnswlib::InnerProductSpace space_;
  // Searches hop between level-0 nodes at random; upper levels are small.
  void UseHugePages() {
    AdviseHugePages(graph_->data_level0_memory_, graph_->max_elements_ * graph_->size_data_per_element_);
  }

  std::unique_ptr<hnswlib::HierarchicalNSW<float>> graph_;
  int ef_;
  bool prebuilt_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddingIndex>> BuildEmbeddingIndex(const Catalog* catalog,
                                                                   const EmbeddingIndexOptions& o) {
  if (o.kind.empty() || o.kind == "exact" || o.kind == "exact-fp32") {
    return std::unique_ptr<EmbeddingIndex>(new ExactFp32Index(catalog));
  }
  if (catalog->dim() > 4096) return absl::InvalidArgumentError("embedding index: dim above 4096");
  if (o.kind == "exact-int8") return std::unique_ptr<EmbeddingIndex>(new ExactInt8Index(catalog));
  if (o.kind == "hnsw") {
    if (o.hnsw_m < 2 || o.hnsw_m > 128 || o.hnsw_ef_construction < 1 || o.hnsw_ef_search < 1) {
      return absl::InvalidArgumentError(absl::StrCat("embedding index: bad hnsw parameters M=", o.hnsw_m,
                                                     " ef_construction=", o.hnsw_ef_construction,
                                                     " ef_search=", o.hnsw_ef_search));
    }
    if (!o.hnsw_graph_path.empty()) {
      ASSIGN_OR_RETURN(std::unique_ptr<HnswIndex> loaded, HnswIndex::Load(catalog, o));
      return std::unique_ptr<EmbeddingIndex>(std::move(loaded));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<HnswIndex> built, HnswIndex::Build(catalog, o));
    return std::unique_ptr<EmbeddingIndex>(std::move(built));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("embedding index '", o.kind, "' is not exact, exact-int8 or hnsw"));
}

absl::Status SaveHnswGraph(const Catalog* catalog, const EmbeddingIndexOptions& options, const std::string& path) {
  EmbeddingIndexOptions o = options;
  o.kind = "hnsw";
  o.hnsw_graph_path.clear();
  ASSIGN_OR_RETURN(std::unique_ptr<EmbeddingIndex> index, BuildEmbeddingIndex(catalog, o));
  return static_cast<const HnswIndex&>(*index).Save(path);
}

double MeasureIndexRecall(const Catalog& catalog, const EmbeddingIndex& index, int k, int queries,
                          uint64_t seed) {
  if (queries <= 0) return 1.0;
  const int n = catalog.size(), dim = catalog.dim();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> pick(0, n - 1);
  std::vector<float> q(static_cast<size_t>(queries) * dim, 0.f);  // [queries x dim]
  for (int t = 0; t < queries; ++t) {
    for (int j = 0; j < 5; ++j) {
      const float* e = catalog.embedding(pick(rng));
      for (int d = 0; d < dim; ++d) q[static_cast<size_t>(t) * dim + d] += e[d] / 5;
    }
  }
  // The exact answers for all queries in one pass over the catalog: a block of items
  // against every query is one sgemm, so the catalog is read once, not once per query
  // (50 separate fp32 scans of a 1M-item catalog were a third of its load time).
  constexpr int kBlock = 4096;
  std::vector<float> scores(static_cast<size_t>(queries) * kBlock);
  std::vector<std::vector<ScoredItem>> want(queries);
  std::vector<TopKCollector> exact;
  exact.reserve(queries);
  for (int t = 0; t < queries; ++t) exact.emplace_back(k, &want[t]);
  for (int start = 0; start < n; start += kBlock) {
    const int len = std::min(kBlock, n - start);
    dnnl::sgemm('N', 'T', queries, len, dim, 1.f, q.data(), dim, catalog.embedding(start), dim, 0.f,
                scores.data(), len);
    for (int t = 0; t < queries; ++t) {
      const float* row = &scores[static_cast<size_t>(t) * len];
      float threshold = exact[t].threshold();
      for (int i = 0; i < len; ++i) {
        if (row[i] >= threshold) {
          exact[t].Push(start + i, row[i]);
          threshold = exact[t].threshold();
        }
      }
    }
  }
  std::vector<ScoredItem> got;
  double total = 0;
  for (int t = 0; t < queries; ++t) {
    exact[t].Finish();
    index.TopK(&q[static_cast<size_t>(t) * dim], k, nullptr, &got);
    absl::flat_hash_set<int32_t> truth;
    for (const ScoredItem& s : want[t]) truth.insert(s.item);
    int hits = 0;
    for (const ScoredItem& s : got) hits += truth.contains(s.item);
    total += want[t].empty() ? 1.0 : static_cast<double>(hits) / want[t].size();
  }
  return total / queries;
}

}  // namespace recserve
