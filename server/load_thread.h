// LoadThread: when the hot-reload core runs, and how it yields the CPU to requests.
//
// The load-thread policy of the hot-reload core (server/model_manager.h puts the pieces
// together). It owns the one thread that scans and loads, and promises:
//   - a scan-and-load cycle (Work::RunCycle) runs every `poll_interval`, on RequestScan()
//     (SIGHUP) and for every admin call (ScanAndWait, PinAndWait), one cycle at a time;
//     scans asked for while a cycle runs are served together by the next one;
//   - an admin call gets the answer of the cycle that handled its ticket, or at its
//     deadline DEADLINE_EXCEEDED saying what keeps the thread (Work::DescribeBusy) and
//     what becomes of its request. No lock is held through a load: waits are conditions
//     on tickets, which can end at a deadline;
//   - pins take turns: a pin is handed to the thread only once the cycle that tried the
//     previous one has completed, and is tried first by the next cycle;
//   - the thread yields to request workers: nice `load_thread_nice` and `load_threads`
//     OpenMP threads, or with `load_thread_idle` each cycle under SCHED_IDLE with a
//     watchdog that moves a cycle starved for `idle_load_patience` back to the normal
//     policy (only where the process may leave SCHED_IDLE: CanLeaveSchedIdle);
//   - versions the manager retired are reaped (Work::ReapRetired) on the load thread:
//     after every wake-up, and on a 20 ms tick while some are still held by requests.
// It knows nothing of versions: what a cycle does is the Work's business.
//
// Thread-safety: every public method may be called from any thread. Its lock mu_ is a
// leaf: Work is only ever called with mu_ released (RunCycle and ReapRetired on the load
// thread; DescribeBusy on the thread of the admin call that timed out). Callers:
// ModelManager (the facade), which forwards the admin RPCs, SIGHUP and shutdown.
#ifndef RECSERVE_SERVER_LOAD_THREAD_H_
#define RECSERVE_SERVER_LOAD_THREAD_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/sync.h"

namespace recserve {

struct LoadThreadOptions {
  // How often a cycle rescans the base path; <= 0 scans only on request.
  absl::Duration poll_interval = absl::Seconds(2);
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
};

// Whether a thread of this process may go back from SCHED_IDLE to the normal policy, as
// the idle loader's watchdog must: Linux allows it only with CAP_SYS_NICE or an
// RLIMIT_NICE of 20, which root in a default container and non-root users lack. Tried on
// a throwaway thread.
bool CanLeaveSchedIdle();

class LoadThread {
 public:
  // What the thread runs (ServingManager implements it). Called with no lock of the
  // LoadThread held.
  class Work {
   public:
    struct CycleResult {
      absl::Status scans;  // the answer to the scans this cycle handled
      absl::Status pin;    // the answer to the pin it tried, if it was given one
    };
    virtual ~Work() = default;
    // One scan-and-load cycle. `pin`: the version a PinAndWait asked for, to be tried
    // first. On the load thread.
    virtual CycleResult RunCycle(std::optional<int64_t> pin) = 0;
    // Frees the retired versions no request holds any more; returns whether some are
    // still held (the thread then comes back on a short tick). On the load thread.
    virtual bool ReapRetired() = 0;
    // What keeps the load thread, for an admin call that timed out waiting on it.
    virtual std::string DescribeBusy() const = 0;
  };

  // Does not start the thread (Start does); a first scan is already asked for. `work`
  // must outlive the thread (Stop joins it).
  LoadThread(LoadThreadOptions options, Work* work) : options_(options), work_(work) {}
  LoadThread(const LoadThread&) = delete;
  LoadThread& operator=(const LoadThread&) = delete;
  ~LoadThread() { Stop(); }

  // Starts the thread. Idempotent; does nothing once stopped.
  void Start() ABSL_LOCKS_EXCLUDED(mu_);
  // Asks the thread to stop after the cycle in progress and wakes every waiting admin
  // call (UNAVAILABLE), without joining. Stop() joins. Both idempotent.
  void RequestStop() ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Asks for a cycle without waiting (SIGHUP).
  void RequestScan() ABSL_LOCKS_EXCLUDED(mu_);
  // Asks for a cycle and waits until it has run, or until `deadline`: then
  // DEADLINE_EXCEEDED, and the cycle asked for still runs after the one in progress.
  absl::Status ScanAndWait(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits for the turn of a pin (the previous pin's cycle completed), hands `version` to
  // the next cycle and waits until that cycle has run. Past `deadline`,
  // DEADLINE_EXCEEDED: while still waiting for its turn nothing was asked for;
  // otherwise the pin is still tried after the cycle in progress.
  absl::Status PinAndWait(int64_t version, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

  // Cycles the idle watchdog moved to the normal policy (starved loads).
  int idle_escalations() const { return idle_escalations_.load(std::memory_order_relaxed); }

 private:
  // A pin waiting for the load thread: the version asked for and the scan ticket its
  // answer is filed under.
  struct PinRequest {
    int64_t version;
    uint64_t ticket;
  };

  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // Runs one cycle in the policy the options ask for (SCHED_IDLE with its watchdog).
  LoadThread::Work::CycleResult RunCycle(bool idle, pid_t tid, std::optional<int64_t> pin)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Waits for the cycle that handles `ticket` until `deadline`; past it,
  // DEADLINE_EXCEEDED: Work::DescribeBusy() and then `pending` (what becomes of the call).
  absl::Status WaitForCycle(uint64_t ticket, absl::Time deadline, absl::string_view pending)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction.
  const LoadThreadOptions options_;
  Work* const work_;

  // Scan and pin tickets and their answers, the stop flag, the thread's handle. A leaf:
  // nothing is taken under it.
  mutable Mutex mu_;
  uint64_t requested_ ABSL_GUARDED_BY(mu_) = 1;  // scan tickets handed out (1: the first scan)
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;  // tickets whose cycle finished
  // Errors by ticket (no entry: OK), until the caller waiting on it takes its own.
  std::map<uint64_t, absl::Status> cycle_results_ ABSL_GUARDED_BY(mu_);
  // Taken by the next cycle, together with the scan tickets up to its own.
  std::optional<PinRequest> pin_request_ ABSL_GUARDED_BY(mu_);
  // The ticket of the last pin asked for: the next waits until its cycle has completed
  // (one pin is tried at a time). A wait on this, unlike one on a lock held through the
  // load, can end at the caller's deadline.
  uint64_t pin_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(mu_);  // Start and Stop may race

  std::atomic<int> idle_escalations_{0};
  // The load thread's alone (and its idle watchdog's, which the load thread joins before
  // reading): threads the watchdog moved to the normal policy, made idle again at the
  // next cycle's start.
  std::vector<pid_t> idle_moved_;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_LOAD_THREAD_H_
