// Fuzzes the Recommend request path without gRPC's transport: the body parsed as the
// server parses it (ParseRequestBody, server/request_body.h), then RecommenderService::
// Submit (server/recommender_service.h), which validates it (ValidateRequest) and, when
// it is valid, runs the engine pipeline on a worker over FuzzBundle, built and served
// once at start-up. A valid request must be answered with at most n distinct catalog
// items whose scores are probabilities; an invalid one with INVALID_ARGUMENT.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/model_manager.h"
#include "server/recommender_service.h"
#include "server/request_body.h"
#include "server/sync.h"
#include "tests/fuzz/fuzz_bundle.h"
#include "tests/fuzz/fuzz_util.h"

namespace recserve {
namespace {

struct Served {
  std::unique_ptr<WorkerPool> pool;
  std::unique_ptr<ModelManager> manager;
  std::unique_ptr<RecommenderService> service;
};

// The bundle is written to a temporary directory, served, and the directory removed
// (the loaded model no longer needs it).
Served& Serve() {
  static Served* const served = [] {
    auto* s = new Served;
    const std::string dir = testing::TempDir("fuzz_request");
    fuzz::CheckStartup(WriteBundle(fuzz::FuzzBundle(), dir + "/1"), "writing the bundle");
    ModelManagerOptions options;
    options.base_path = dir;
    options.poll_interval = absl::ZeroDuration();  // scans only on request: no reloads
    options.warmup_requests = 1;
    auto manager = ModelManager::Create(options);
    fuzz::CheckStartup(manager.status(), "model manager");
    s->manager = std::move(*manager);
    if (!s->manager->WaitUntilServing(absl::Minutes(5))) {
      fuzz::CheckStartup(absl::InternalError("the bundle did not start serving"), "model manager");
    }
    std::filesystem::remove_all(dir);
    s->pool = std::make_unique<WorkerPool>(1);
    s->service = std::make_unique<RecommenderService>(s->manager.get(), s->pool.get(), RequestLimits());
    return s;
  }();
  return *served;
}

}  // namespace
}  // namespace recserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  Served& served = Serve();
  v1::RecommendRequest request;
  google::protobuf::io::ArrayInputStream body(data, static_cast<int>(size));
  const absl::Status parsed = ParseRequestBody(
      &body, [&] { return std::string(reinterpret_cast<const char*>(data), size); }, &request);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.code() == absl::StatusCode::kInvalidArgument, parsed.ToString());
    return 0;
  }
  v1::RecommendResponse response;
  absl::Status status;
  Notification done;
  RecommendCall call;
  call.request = &request;
  call.response = &response;
  served.service->Submit(std::move(call), [&](const absl::Status& s) {
    status = s;
    done.Notify();
  });
  done.WaitForNotification();
  if (!status.ok()) {
    FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
    return 0;
  }
  FUZZ_CHECK(response.items_size() <= request.n(), "more items than asked for");
  const Catalog& catalog = served.manager->Pin()->catalog();
  std::set<uint64_t> ids;
  for (const v1::RecommendedItem& item : response.items()) {
    const int32_t index = catalog.Find(item.item_id());
    FUZZ_CHECK(index >= 0, absl::StrCat("item ", item.item_id(), " is not in the catalog"));
    FUZZ_CHECK(item.item() == catalog.key(index), "an item's key is not the catalog's");
    FUZZ_CHECK(ids.insert(item.item_id()).second, "an item answered twice");
    FUZZ_CHECK(item.score() >= 0 && item.score() <= 1, absl::StrCat("score ", item.score()));
  }
  return 0;
}
