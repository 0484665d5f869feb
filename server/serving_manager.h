// ServingManager: which loaded versions serve, in which role, and the hand-over.
//
// The "manager" of the hot-reload core (Source -> Loader -> Manager; server/model_manager.h
// puts the pieces together). Each cycle (RunCycle, on the load thread) asks the
// VersionSource what exists, decides what to load, has the VersionLoader build it and
// publishes it. It promises:
//   - policy: the newest loadable version serves, unless a version is pinned. A pin takes
//     force only once its version serves; a refused pin changes nothing (the pin in force
//     and the serving version stay). Pin 0 returns to the newest-version policy;
//   - a version that fails to load is FAILED with the reason, never replaces the serving
//     version, and is retried only when its READY stamp changes;
//   - publishing is atomic: requests Pin() the serving version and keep it until they
//     finish (in-flight requests end on the version they pinned);
//   - every loaded model is owned by exactly one version entry until it is retired; at
//     most the serving and the previous version (keep_previous: AVAILABLE, swapped back
//     without a reload) stay loaded; a retired model is destroyed by ReapRetired on the
//     load thread once no request holds it, never on a request thread;
//   - Versions() reports every version seen (state, error, figures) and never waits for a
//     load.
//
// Roles and the serving set. Each version entry has a role (ServingRole), and what
// serves is published as one immutable ServingSet snapshot built from the roles, not as
// a single pointer. The request path chooses its member from the snapshot it pinned
// (ServingSet::ForUser: the canary by a stable hash of user_id against its share) and
// records what happened into that member's RolloutStats.
//
// Roll-outs (server/rollout.h). A version loaded by the newest-version policy while
// another serves enters in its roll-out mode (options.rollout, laid over by its
// manifest's `rollout`): immediate publishes it as above; canary or shadow puts it in the
// serving set in that role with its share (state SERVING, role ROLE_CANARY/ROLE_SHADOW)
// beside the serving version, and both get fresh RolloutStats. It promises:
//   - at most one roll-out at a time; a newer version published during one waits: it is
//     not loaded until the roll-out ends, then rolls out in turn;
//   - each cycle (RunCycle, first thing) judges the roll-out (JudgeRollout): promoted,
//     the version serves (PublishLocked: the replaced one AVAILABLE or retired); rolled
//     back, it leaves the serving set, is FAILED with "rollout: <rule and figures>" and is
//     not loaded again until its READY stamp changes (as any failed version). Requests
//     that pinned the old set finish on the member they chose: no request fails;
//   - a pin (SetServingVersion) is immediate and ends a roll-out: its version serves at
//     once (the roll-out version itself: promoted), any other roll-out version is
//     unloaded; no roll-out starts while a pin is in force;
//   - SetRollout acts on the roll-out in progress at once, under mu_: its share, canary
//     <-> shadow (a new window), promote, abort (FAILED like a rollback). It starts none:
//     under the newest-version policy every loaded version that does not serve is older
//     than the serving one and would be swapped back out once promoted;
//   - at most serving + previous (keep_previous) + roll-out versions stay loaded.
//
// Thread-safety: every public method may be called from any thread; RunCycle and
// ReapRetired only from the load thread (LoadThread::Work), one at a time. Lock order,
// outer first: mu_ -> RecserveServer::mu_ -> serving_mu_. The load thread holds mu_ while
// it publishes and calls on_published and on_serving_change; those may take locks of
// their own (the server's readiness lock) but call back into the manager only through
// Pin() and serving_version(), which take serving_mu_ alone. serving_mu_ is the request
// path's only lock and nothing is taken under it. No lock is held while a version loads.
#ifndef RECSERVE_SERVER_SERVING_MANAGER_H_
#define RECSERVE_SERVER_SERVING_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "engine/model.h"
#include "recserve/v1/recommender.pb.h"
#include "absl/strings/string_view.h"
#include "server/load_thread.h"
#include "server/rollout.h"
#include "server/rollout_stats.h"
#include "server/sync.h"
#include "server/version_loader.h"
#include "server/version_source.h"

namespace recserve {

// The part a loaded version plays in what serves.
enum class ServingRole {
  kNone,     // not serving: loading, kept as the previous version, failed or unloaded
  kServing,  // answers every request not routed to a canary
  kCanary,   // answers the requests whose stable user_id hash falls in its share
  kShadow,   // scores a sampled share of requests off the critical path, never answers
};

// The proto's name for a role (v1::ServingRole), for responses and status.
v1::ServingRole ToProto(ServingRole role);
// "serving", "canary", "shadow", "none": the `role` label of metrics.
const char* RoleName(ServingRole role);

struct ServingManagerOptions {
  // Serve this version instead of the newest; 0 = newest.
  int64_t pinned_version = 0;
  // Keep the version that was replaced loaded (AVAILABLE) for instant rollback.
  bool keep_previous = false;
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
  // Called on the load thread, under the manager's lock, for every member of a serving
  // set about to be published (so possibly again for a role already announced), before
  // any request can see it in that role: the metrics create its series here.
  std::function<void(int64_t version, ServingRole role)> before_role;
  // How a version arriving while another serves comes to serve; a version's manifest
  // `rollout` is laid over it (server/rollout.h). Default: immediate.
  RolloutOptions rollout;
  // Called when a roll-out ends (promoted, rolled back, aborted, ended by a pin) with
  // the version and the verdict; under the manager's lock, as on_published.
  std::function<void(int64_t version, const std::string& verdict)> on_rollout_end;
};

// What serves, published as one immutable snapshot: readers see either the whole old set
// or the whole new one.
struct ServingSet {
  struct Member {
    int64_t version;
    ServingRole role;
    std::shared_ptr<const Model> model;
    // kCanary: share of users it answers; kShadow: share of requests it scores; 1 for
    // kServing.
    double share = 1.0;
    // What this member did in its current window; never null. Recorded into by the
    // requests it answers, read by the load thread.
    std::shared_ptr<RolloutStats> stats;
  };
  std::vector<Member> members;  // at most one per role; kServing is there whenever any is

  // The member in `role`, or null.
  const Member* Find(ServingRole role) const;
  // The member that answers `user_id`: the canary when the user's UserShareFraction is
  // below its share (an empty user_id never is), else the serving version. Null only
  // for an empty set.
  const Member* ForUser(absl::string_view user_id) const;
};

class ServingManager : public LoadThread::Work {
 public:
  // `source` and `loader` must outlive the manager. Nothing serves until a cycle runs.
  ServingManager(ServingManagerOptions options, const VersionSource* source, const VersionLoader* loader);
  ServingManager(const ServingManager&) = delete;
  ServingManager& operator=(const ServingManager&) = delete;

  // The serving version, or null while none serves. Hold it for one request only.
  std::shared_ptr<const Model> Pin() const ABSL_LOCKS_EXCLUDED(serving_mu_);
  int64_t serving_version() const ABSL_LOCKS_EXCLUDED(serving_mu_);
  // The whole serving set (every role), or null while none serves. Hold it for one
  // request only: a request chooses its member from the set it pinned.
  std::shared_ptr<const ServingSet> PinSet() const ABSL_LOCKS_EXCLUDED(serving_mu_);
  bool WaitUntilServing(absl::Duration timeout) const ABSL_LOCKS_EXCLUDED(serving_mu_);

  // Every version seen, newest first.
  std::vector<v1::VersionStatus> Versions() const ABSL_LOCKS_EXCLUDED(mu_);
  // The pin in force (0: the newest loadable version serves).
  int64_t pinned_version() const ABSL_LOCKS_EXCLUDED(mu_);
  // Versions loaded right now (serving, previous, retired but still in use).
  int loaded_count() const ABSL_LOCKS_EXCLUDED(mu_);

  // The admin call (recommender.proto, SetRollout): changes, promotes or aborts the
  // roll-out at once and returns `version`'s status after it. INVALID_ARGUMENT: bad
  // action or share; NOT_FOUND: a version never seen; FAILED_PRECONDITION: the version
  // is not in a state the action allows (the message says which and what to do).
  absl::StatusOr<v1::VersionStatus> SetRollout(int64_t version, v1::RolloutAction action, double share)
      ABSL_LOCKS_EXCLUDED(mu_);

  // LoadThread::Work, on the load thread. RunCycle tries `pin` first (a
  // SetServingVersion): it takes force only if its version then serves; refused (the
  // answer says why: NOT_FOUND, FAILED_PRECONDITION, the load error), the cycle runs
  // again under the pin in force, for the scans asked for alongside it.
  CycleResult RunCycle(std::optional<int64_t> pin) override ABSL_LOCKS_EXCLUDED(mu_);
  bool ReapRetired() override ABSL_LOCKS_EXCLUDED(mu_);
  std::string DescribeBusy() const override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    v1::VersionStatus status;
    ServingRole role = ServingRole::kNone;
    int64_t ready_stamp = 0;             // FAILED versions are retried when this changes
    absl::Time load_started;             // of the last load, for admin calls that time out on it
    std::shared_ptr<const Model> model;  // set while AVAILABLE or SERVING
    double share = 1.0;                  // the member's share while kCanary or kShadow
    std::shared_ptr<RolloutStats> stats;  // set while in the serving set
  };

  // The roll-out in progress.
  struct Rollout {
    int64_t version = 0;  // 0: none
    RolloutRules rules;
    absl::Time started;
  };

  // One scan-and-load cycle under `pinned` (0: the newest loadable version); returns the
  // first load error of this cycle, or why `pinned` cannot serve.
  absl::Status RunCycleUnder(int64_t pinned) ABSL_LOCKS_EXCLUDED(mu_);
  // Makes `version` serve (role kServing) and the replaced one AVAILABLE or retired,
  // publishes the new serving set and calls on_published and on_serving_change. Ends a
  // roll-out in progress: its version promoted when it is `version`, else unloaded.
  void PublishLocked(int64_t version, std::shared_ptr<const Model> model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Places a version just loaded: published at once (a pin, nothing serving yet, mode
  // immediate) or started as a canary or shadow. Returns the error of a manifest
  // roll-out spec that cannot be used (the version is then FAILED).
  absl::Status PlaceLoadedLocked(int64_t version, std::shared_ptr<const Model> model, bool pinned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts `version` (loaded, not serving) in the serving set in `role` with `share` and
  // opens the observation window (fresh stats for it and the serving version).
  void StartRolloutLocked(int64_t version, ServingRole role, double share, const RolloutRules& rules)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The roll-out judged on the load thread (start of every cycle).
  void JudgeRolloutLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the roll-out: freezes its figures and `verdict` into the version's status and
  // calls on_rollout_end. The caller decides what becomes of the version.
  void EndRolloutLocked(const std::string& verdict) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the roll-out and takes its version out of the serving set: `state` FAILED (with
  // error "rollout: <why>"; not loaded again until READY changes) or UNLOADED.
  void RemoveRolloutLocked(const std::string& verdict, v1::VersionState state, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `version`'s status as Versions() reports it (role, share, the roll-out's figures).
  v1::VersionStatus StatusLocked(int64_t version, const Entry& e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Builds the serving set from the entries' roles and swaps it in under serving_mu_.
  void PublishServingSetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_LOCKS_EXCLUDED(serving_mu_);
  // Hands a version's model to the retired list.
  void RetireLocked(std::shared_ptr<const Model> model) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ReapRetiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const ServingManagerOptions options_;
  const VersionSource* const source_;
  const VersionLoader* const loader_;

  // The version table, the pin in force, the retired list.
  mutable Mutex mu_;
  std::map<int64_t, Entry> versions_ ABSL_GUARDED_BY(mu_);
  int64_t serving_version_ ABSL_GUARDED_BY(mu_) = 0;
  // The pin in force: set only by RunCycle, after the cycle that tried a pin made its
  // version serve (or for 0), never to a refused version.
  int64_t pinned_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::shared_ptr<const Model>> retired_ ABSL_GUARDED_BY(mu_);
  Rollout rollout_ ABSL_GUARDED_BY(mu_);

  // The request path's only lock (Pin). Last in the order: taken under mu_ by
  // PublishServingSetLocked, and nothing is taken under it.
  mutable Mutex serving_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::shared_ptr<const ServingSet> serving_set_ ABSL_GUARDED_BY(serving_mu_);
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_SERVING_MANAGER_H_
