// HnswIndex::Build when hnswlib throws on a build thread. hnswlib reports its errors by
// throwing (std::runtime_error, std::bad_alloc); one that left a build thread would end
// the process. This binary replaces the global operator new (a replacement the standard
// allows) so that the next allocation on a thread other than the test's fails, as it
// would when memory runs out in the middle of a build.
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "engine/embedding_index.h"
#include "engine/model.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace {

std::atomic<bool> fail_next_allocation_elsewhere{false};
std::atomic<std::thread::id> test_thread{};

// Until the next allocation on another thread than this one, which throws std::bad_alloc.
void FailNextAllocationOnAnotherThread() {
  test_thread.store(std::this_thread::get_id());
  fail_next_allocation_elsewhere.store(true);
}

}  // namespace

// GCC cannot see that these deletes free what the new above mallocs.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  if (fail_next_allocation_elsewhere.load(std::memory_order_relaxed) &&
      std::this_thread::get_id() != test_thread.load() && fail_next_allocation_elsewhere.exchange(false)) {
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The nothrow forms too (std::get_temporary_buffer uses them), so that every new and
// delete pair is this file's (AddressSanitizer stops at new from one, free from another).
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return operator new(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace recserve {
namespace {

TEST(HnswBuildTest, HnswBuildErrorsBecomeStatus) {
  auto catalog = Catalog::Create(testing::TinyBundle(2000, 16, 2).items);
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  EmbeddingIndexOptions o;
  o.kind = "hnsw";
  for (int threads : {1, 3}) {
    o.build_threads = threads;
    FailNextAllocationOnAnotherThread();
    auto index = BuildEmbeddingIndex(catalog->get(), o);
    fail_next_allocation_elsewhere.store(false);
    EXPECT_EQ(index.status().code(), absl::StatusCode::kResourceExhausted) << threads << " threads";
    EXPECT_THAT(std::string(index.status().message()), ::testing::HasSubstr("hnsw build: adding item"))
        << threads << " threads";
  }
  // With memory again, the same build succeeds: nothing was left broken.
  o.build_threads = 2;
  auto index = BuildEmbeddingIndex(catalog->get(), o);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_GE(MeasureIndexRecall(**catalog, **index, 10, 20), 0.9);
}

TEST(HnswBuildTest, AFailedBuildRefusesTheVersion) {
  ModelOptions o;
  o.index.kind = "hnsw";
  o.index.build_threads = 2;
  FailNextAllocationOnAnotherThread();
  auto model = Model::Create(testing::TinyBundle(2000, 16, 2), 1, o);
  fail_next_allocation_elsewhere.store(false);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(model.status().message()), ::testing::HasSubstr("hnsw build"));
}

}  // namespace
}  // namespace recserve
