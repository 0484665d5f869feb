// VersionLoader: builds one model version, ready to serve, or says why it cannot.
//
// The "loader" of the hot-reload core (Source -> Loader -> Manager; server/model_manager.h
// puts the pieces together). Load() does all the expensive work of one version, in order:
// read and verify the bundle (Model::Load: checksums, value limits; compression comes in
// through ModelOptions::ranker_factory), fill the figures, run `check` (the accuracy
// gate), warm up (`warmup_requests` Recommend calls; a candidate scored NaN or infinite
// refuses the version), then `before_publish`. It returns the loaded Model, which nothing
// else holds yet, or the first error; a refused version leaves nothing behind.
// It knows nothing of which version serves and takes no lock of the manager's: the
// manager calls it without holding one, so a load never blocks requests or status calls.
//
// Thread-safety: Load() is const and may run on any thread (the server runs it on the
// load thread only, one version at a time); Cancel() may be called from any thread, at
// any time, and makes a running Load() end early (between warm-up requests) and every
// later one refuse with CANCELLED. Callers: ServingManager::RunCycle (Load),
// ModelManager::RequestStop (Cancel).
#ifndef RECSERVE_SERVER_VERSION_LOADER_H_
#define RECSERVE_SERVER_VERSION_LOADER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "recserve/v1/recommender.pb.h"

namespace recserve {

struct VersionLoaderOptions {
  // How versions are built (ranker factory: fp32 or compressed; recall overrides).
  ModelOptions model_options;
  // Runs after a version is built and before it may serve; may fill figures. A non-OK
  // status refuses the version (e.g. the accuracy gate). Unset: no check.
  std::function<absl::Status(const Model&, v1::ModelFigures*)> check;
  // Recommend calls run on a new version before it serves; one whose ranker scores a
  // candidate NaN or infinite refuses the version.
  int warmup_requests = 64;
  // Runs after warm-up, just before the version is handed back to be published (the
  // server warms every request worker's buffers here). Unset: nothing.
  std::function<void(const Model&)> before_publish;
};

class VersionLoader {
 public:
  explicit VersionLoader(VersionLoaderOptions options) : options_(std::move(options)) {}
  VersionLoader(const VersionLoader&) = delete;
  VersionLoader& operator=(const VersionLoader&) = delete;

  // Builds `version` from the bundle directory `path` (see the file comment); fills
  // `figures` as far as it got, also when the version is refused.
  absl::StatusOr<std::shared_ptr<const Model>> Load(int64_t version, const std::string& path,
                                                    v1::ModelFigures* figures) const;

  // Ends a running Load() early and refuses every later one (shutdown).
  void Cancel() { cancelled_.store(true); }

 private:
  // Constant after construction.
  const VersionLoaderOptions options_;
  std::atomic<bool> cancelled_{false};  // read by a running Load without a lock
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_VERSION_LOADER_H_
