// ModelManager: which model version serves, and how a new one takes over.
//
// The hot-reload core, TF Serving's Source -> Loader -> Manager split, in four pieces
// that this facade owns and wires together:
//   VersionSource  (version_source.h)  - finds the versions under base_path: plain
//                                        positive-integer names, READY, inside base_path;
//   VersionLoader  (version_loader.h)  - builds one version: read, verify, compress
//                                        (ModelOptions::ranker_factory), check (the
//                                        accuracy gate), warm up, before_publish;
//   ServingManager (serving_manager.h) - decides which versions serve (newest or pinned)
//                                        and in which role (roll-outs: canary, shadow,
//                                        promotion and rollback by rules), publishes
//                                        atomically, Pin(), frees retired versions off
//                                        the request threads, version states;
//   LoadThread     (load_thread.h)     - the one thread that runs the scan-and-load cycles:
//                                        poll interval, SCHED_IDLE or nice, admin tickets
//                                        and deadlines.
// Each header states its own promises; this one only forwards. The server, the admin
// service and the request path use this class alone.
//
// Thread-safety: every public method may be called from any thread. Lock order, outer
// first: ServingManager::mu_ -> RecserveServer::mu_ -> ServingManager::serving_mu_
// (serving_manager.h); LoadThread::mu_ is a leaf. The callbacks that run under the
// manager's lock (on_published, on_serving_change) may take locks of their own but call
// back into the manager only through Pin() and serving_version().
#ifndef RECSERVE_SERVER_MODEL_MANAGER_H_
#define RECSERVE_SERVER_MODEL_MANAGER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/model.h"
#include "recserve/v1/recommender.pb.h"
#include "server/load_thread.h"
#include "server/serving_manager.h"
#include "server/version_loader.h"
#include "server/version_source.h"

namespace recserve {

// Every piece's options in one struct, so callers set `o.check`, `o.keep_previous` or
// `o.poll_interval` without knowing which piece reads it; each field is documented in
// its piece's header.
struct ModelManagerOptions : VersionLoaderOptions, ServingManagerOptions, LoadThreadOptions {
  // Directory holding the version directories (models/<name>). Required.
  std::string base_path;
  // Create() does not start the load thread; Start() does (so callbacks may refer to
  // objects built after the manager).
  bool start_paused = false;
};

class ModelManager {
 public:
  // Checks base_path is a directory, starts the load thread and a first scan (unless
  // start_paused). Does not wait for a version to load: see WaitUntilServing.
  static absl::StatusOr<std::unique_ptr<ModelManager>> Create(ModelManagerOptions options);
  // Starts the load thread of a manager created paused. Idempotent.
  void Start() { load_thread_.Start(); }
  ~ModelManager() { Stop(); }

  // The serving version, or null while none serves. Hold it for one request only.
  std::shared_ptr<const Model> Pin() const { return serving_.Pin(); }
  int64_t serving_version() const { return serving_.serving_version(); }
  // Every serving member (serving, canary, shadow), or null while none serves.
  std::shared_ptr<const ServingSet> PinSet() const { return serving_.PinSet(); }
  bool WaitUntilServing(absl::Duration timeout) const { return serving_.WaitUntilServing(timeout); }

  // Scans now and waits for the resulting loads. Returns the serving version, or the
  // error of a version that failed in this scan (the serving version is unchanged).
  // Waits until `deadline` at most: then DEADLINE_EXCEEDED saying which load is in
  // progress; the scan asked for still runs after it.
  absl::StatusOr<int64_t> ReloadNow(absl::Time deadline = absl::InfiniteFuture());
  // Asks for a scan without waiting (SIGHUP).
  void RequestScan() { load_thread_.RequestScan(); }
  // Pins `version` (rollback or roll forward) and waits until it serves or is refused;
  // 0 returns to the newest-version policy (never refused; the error of a newest version
  // that fails to load is returned, as by ReloadNow). A refused pin (NOT_FOUND: no such
  // version; FAILED_PRECONDITION: it failed before and its READY is unchanged; a load or
  // check error) changes nothing: the pin in force before and the serving version stay.
  // Calls are tried one at a time, in turn. Waits until `deadline` at most, then
  // DEADLINE_EXCEEDED saying which load is in progress: if the call was still waiting for
  // its turn, nothing was asked for; if its pin was handed to the load thread, that pin
  // is still tried after the load in progress (GetModelStatus tells how it went).
  absl::StatusOr<int64_t> SetServingVersion(int64_t version, absl::Time deadline = absl::InfiniteFuture());

  // Changes, promotes or aborts the roll-out in progress at once (no load; see
  // ServingManager::SetRollout).
  absl::StatusOr<v1::VersionStatus> SetRollout(int64_t version, v1::RolloutAction action, double share) {
    return serving_.SetRollout(version, action, share);
  }

  // Every version seen, newest first.
  std::vector<v1::VersionStatus> Versions() const { return serving_.Versions(); }
  const std::string& base_path() const { return source_.base_path(); }
  // The pin in force (0: the newest loadable version serves).
  int64_t pinned_version() const { return serving_.pinned_version(); }
  // Versions loaded right now (serving, previous, retired but still in use).
  int loaded_count() const { return serving_.loaded_count(); }
  // Loads the idle-loader watchdog moved to the normal policy (starved loads).
  int idle_escalations() const { return load_thread_.idle_escalations(); }

  // Stops the load thread; the serving version stays pinnable. Idempotent.
  void Stop();
  // Asks the load thread to stop (an ongoing load ends early) and wakes every waiter,
  // without joining. Stop() joins.
  void RequestStop();

 private:
  ModelManager(ModelManagerOptions options, VersionSource source);

  // Declared in the order they are built: each refers only to those above it, and the
  // load thread, which uses them all, is destroyed (joined) first.
  const VersionSource source_;
  VersionLoader loader_;
  ServingManager serving_;
  LoadThread load_thread_;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_MODEL_MANAGER_H_
