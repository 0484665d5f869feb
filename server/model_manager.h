// ModelManager: which model version serves, and how a new one takes over.
//
// The TF Serving split in one small class:
//   source  - Scan() lists the version directories under base_path: names that are plain
//             positive integers, holding READY, and (after resolving symlinks) inside
//             base_path. Half-copied versions (no READY yet) do not exist for it.
//   loader  - one dedicated load thread reads, verifies, builds (compression comes in
//             through ModelOptions::ranker_factory), checks (Options::check: the
//             accuracy gate) and warms up a version, off the request threads;
//   manager - publishes the new version atomically. Requests Pin() the serving version
//             (a shared_ptr) and keep it until they finish; a replaced version is kept
//             in a retired list and destroyed by the load thread once no request holds
//             it, never on a request thread.
// Policy: the newest loadable version serves, unless a version is pinned. A pin takes
// force only once its version serves: a refused pin changes nothing. A version that
// fails to load is FAILED (with the reason) and is retried only when its READY file
// changes; it never replaces the serving version.
//
// Thread-safety: every public method may be called from any thread. Pin() takes a
// reader lock for the pointer copy only. The callbacks that run under the manager's
// lock (on_published, on_serving_change) may take locks of their own but call back into
// the manager only through Pin() and serving_version(): see the lock order below.
#ifndef RECSERVE_SERVER_MODEL_MANAGER_H_
#define RECSERVE_SERVER_MODEL_MANAGER_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "engine/model.h"
#include "recserve/v1/recommender.pb.h"
#include "server/sync.h"

namespace recserve {

struct ModelManagerOptions {
  // Directory holding the version directories (models/<name>). Required.
  std::string base_path;
  // How often the source rescans base_path; <= 0 scans only on request.
  absl::Duration poll_interval = absl::Seconds(2);
  // Serve this version instead of the newest; 0 = newest.
  int64_t pinned_version = 0;
  // Keep the version that was replaced loaded (AVAILABLE) for instant rollback.
  bool keep_previous = false;
  // How versions are built (ranker factory: fp32 or compressed; recall overrides).
  ModelOptions model_options;
  // Runs on the load thread after a version is built and before it may serve; may fill
  // figures. A non-OK status refuses the version (e.g. the accuracy gate).
  std::function<absl::Status(const Model&, v1::ModelFigures*)> check;
  // Recommend calls run on a new version before it serves; one whose ranker scores a
  // candidate NaN or infinite refuses the version.
  int warmup_requests = 64;
  // Runs on the load thread after warm-up, just before the version is published (the
  // server warms every request worker's buffers here).
  std::function<void(const Model&)> before_publish;
  // Called on the load thread after every load attempt, and when the serving version
  // changes (version 0 = nothing serves). For metrics and health. on_serving_change runs
  // under the manager's lock, as on_published does.
  std::function<void(int64_t version, const absl::Status& result)> on_load;
  std::function<void(int64_t serving_version)> on_serving_change;
  // Called on the load thread when a version starts serving, with its figures (under the
  // manager's lock: may call back into the manager only through Pin() and
  // serving_version()).
  std::function<void(const Model&, const v1::ModelFigures&)> on_published;
  // Called on the load thread right after a replaced version has been destroyed.
  std::function<void(int64_t version)> on_unloaded;
  // How the load thread yields the CPU to request workers (Linux: per thread). Idle: each
  // scan-and-load cycle runs under SCHED_IDLE, only on CPU time the workers (and every
  // other process) leave, which keeps p99 while reloading near steady; a cycle still
  // running after `idle_load_patience` (a saturated machine) continues at the normal
  // policy. Leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE >= 20; without either,
  // and when not idle, the thread runs at `load_thread_nice` (0 leaves it alone).
  bool load_thread_idle = false;
  absl::Duration idle_load_patience = absl::Seconds(2);
  int load_thread_nice = 10;
  // OpenMP threads the load thread's oneDNN calls (calibration, gate scoring) may use.
  // 1: a load takes one core at most and leaves no OpenMP team spinning beside the
  // request workers; 0 leaves OpenMP's default (OMP_NUM_THREADS, else one per core).
  int load_threads = 1;
  // Create() does not start the load thread; Start() does (so callbacks may refer to
  // objects built after the manager).
  bool start_paused = false;
};

// Whether a thread of this process may go back from SCHED_IDLE to the normal policy, as
// the idle loader's watchdog must: Linux allows it only with CAP_SYS_NICE or an
// RLIMIT_NICE of 20, which root in a default container and non-root users lack. Tried on
// a throwaway thread.
bool CanLeaveSchedIdle();

class ModelManager {
 public:
  // Checks base_path is a directory, starts the load thread and a first scan (unless
  // start_paused). Does not wait for a version to load: see WaitUntilServing.
  static absl::StatusOr<std::unique_ptr<ModelManager>> Create(ModelManagerOptions options);
  // Starts the load thread of a manager created paused. Idempotent.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  ~ModelManager();

  // The serving version, or null while none serves. Hold it for one request only.
  std::shared_ptr<const Model> Pin() const ABSL_LOCKS_EXCLUDED(serving_mu_);
  int64_t serving_version() const ABSL_LOCKS_EXCLUDED(serving_mu_);
  bool WaitUntilServing(absl::Duration timeout) const ABSL_LOCKS_EXCLUDED(serving_mu_);

  // Scans now and waits for the resulting loads. Returns the serving version, or the
  // error of a version that failed in this scan (the serving version is unchanged).
  // Waits until `deadline` at most: then DEADLINE_EXCEEDED saying which load is in
  // progress; the scan asked for still runs after it.
  absl::StatusOr<int64_t> ReloadNow(absl::Time deadline = absl::InfiniteFuture()) ABSL_LOCKS_EXCLUDED(mu_);
  // Asks for a scan without waiting (SIGHUP).
  void RequestScan() ABSL_LOCKS_EXCLUDED(mu_);
  // Pins `version` (rollback or roll forward) and waits until it serves or is refused;
  // 0 returns to the newest-version policy (never refused; the error of a newest version
  // that fails to load is returned, as by ReloadNow). A refused pin (NOT_FOUND: no such
  // version; FAILED_PRECONDITION: it failed before and its READY is unchanged; a load or
  // check error) changes nothing: the pin in force before and the serving version stay.
  // Calls are tried one at a time, in turn. Waits until `deadline` at most, then
  // DEADLINE_EXCEEDED saying which load is in progress: if the call was still waiting for
  // its turn, nothing was asked for; if its pin was handed to the load thread, that pin
  // is still tried after the load in progress (GetModelStatus tells how it went).
  absl::StatusOr<int64_t> SetServingVersion(int64_t version, absl::Time deadline = absl::InfiniteFuture())
      ABSL_LOCKS_EXCLUDED(mu_);

  // Every version seen, newest first.
  std::vector<v1::VersionStatus> Versions() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& base_path() const { return options_.base_path; }
  // The pin in force (0: the newest loadable version serves).
  int64_t pinned_version() const ABSL_LOCKS_EXCLUDED(mu_);
  // Versions loaded right now (serving, previous, retired but still in use).
  int loaded_count() const ABSL_LOCKS_EXCLUDED(mu_);
  // Loads the idle-loader watchdog moved to the normal policy (starved loads).
  int idle_escalations() const { return idle_escalations_.load(std::memory_order_relaxed); }

  // Stops the load thread; the serving version stays pinnable. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  // Asks the load thread to stop (an ongoing load ends early) and wakes every waiter,
  // without joining. Stop() joins.
  void RequestStop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    v1::VersionStatus status;
    int64_t ready_mtime_ns = 0;  // FAILED versions are retried when this changes
    absl::Time load_started;     // of the last load, for admin calls that time out on it
    std::shared_ptr<const Model> model;  // set while AVAILABLE or SERVING
  };
  explicit ModelManager(ModelManagerOptions options) : options_(std::move(options)) {}

  // A SetServingVersion waiting for the load thread: the version asked for and the scan
  // ticket its answer is filed under.
  struct PinRequest {
    int64_t version;
    uint64_t ticket;
  };

  void LoadLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // One scan-and-load cycle under `pinned` (0: the newest loadable version); returns the
  // first load error of this cycle, or why `pinned` cannot serve.
  absl::Status RunCycle(int64_t pinned) ABSL_LOCKS_EXCLUDED(mu_);
  // Slow (reads, builds, checks and warms a version): never under a lock.
  absl::StatusOr<std::shared_ptr<const Model>> LoadVersion(int64_t version, const std::string& path,
                                                          v1::ModelFigures* figures) ABSL_LOCKS_EXCLUDED(mu_);
  // Makes `version` serve; takes serving_mu_ for the swap and calls on_published and
  // on_serving_change (still under mu_).
  void PublishLocked(int64_t version, std::shared_ptr<const Model> model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReapRetiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Hands a version's model to the retired list (destroyed by the load thread once no
  // request holds it). Every loaded model is owned by exactly one versions_ entry until
  // it is retired.
  void RetireLocked(std::shared_ptr<const Model> model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for the cycle that handles `ticket` until `deadline`; past it,
  // DEADLINE_EXCEEDED: BusyLocked() and then `pending` (what becomes of the request).
  absl::StatusOr<int64_t> WaitForCycle(uint64_t ticket, absl::Time deadline, absl::string_view pending)
      ABSL_LOCKS_EXCLUDED(mu_);
  // What keeps the load thread, for an admin call that timed out waiting on it.
  std::string BusyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const ModelManagerOptions options_;

  // Lock order: mu_ -> serving_mu_ (docs/architecture.md, "Concurrency").

  // The request path's only lock (Pin). Last in the order: taken under mu_ by
  // PublishLocked, and nothing is taken under it.
  mutable Mutex serving_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::shared_ptr<const Model> serving_ ABSL_GUARDED_BY(serving_mu_);

  // Everything else the load thread shares: the version table, scan and pin tickets, the
  // pin in force, the load thread itself.
  mutable Mutex mu_;
  std::map<int64_t, Entry> versions_ ABSL_GUARDED_BY(mu_);
  int64_t serving_version_ ABSL_GUARDED_BY(mu_) = 0;
  // The pin in force. After Create, set only by the load thread, after the cycle that
  // tried a PinRequest made its version serve (or for 0): never to a refused version.
  int64_t pinned_ ABSL_GUARDED_BY(mu_) = 0;
  // Taken by the next cycle, together with the scan tickets up to its own.
  std::optional<PinRequest> pin_request_ ABSL_GUARDED_BY(mu_);
  // The ticket of the last pin asked for: the next waits until its cycle has completed
  // (one pin is tried at a time). A wait on this, unlike one on a lock held through the
  // load, can end at the caller's deadline.
  uint64_t pin_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::shared_ptr<const Model>> retired_ ABSL_GUARDED_BY(mu_);
  uint64_t requested_ ABSL_GUARDED_BY(mu_) = 0;  // scan tickets handed out
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;  // tickets whose cycle finished
  std::map<uint64_t, absl::Status> cycle_results_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<bool> stopping_{false};  // read by long loads without the lock
  std::atomic<int> idle_escalations_{0};
  // The load thread's alone (and its IdleCycle watchdog's, which the load thread joins
  // before reading): no lock.
  std::vector<pid_t> idle_moved_;
  std::thread load_thread_ ABSL_GUARDED_BY(mu_);  // Start and Stop may race
};

// Lists the loadable version directories of `base_path` (see the class comment);
// exposed for tests. Values are paths; entries refused for safety are returned in
// `refused` with the reason.
std::map<int64_t, std::string> ScanVersions(const std::string& base_path,
                                            std::map<std::string, std::string>* refused = nullptr);

}  // namespace recserve

#endif  // RECSERVE_SERVER_MODEL_MANAGER_H_
