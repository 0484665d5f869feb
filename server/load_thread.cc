#include "server/load_thread.h"

#include <omp.h>
#include <sched.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace recserve {
namespace {

// One scan-and-load cycle on the SCHED_IDLE policy: the load thread runs only on CPU time
// nothing else wants. If the cycle is still running after `patience` (the workers, or
// other processes, leave it no CPU), the watchdog moves it, and every thread it started
// (they inherit the policy: its OpenMP team, HNSW build threads), back to the normal
// policy, so a busy machine delays a reload instead of starving it. Threads moved so are
// recorded in `moved` and made idle again at the next cycle's start. The destructor ends
// the watch and puts the load thread back to the normal policy, where it waits for the
// next scan (a wake-up is never starved, and the next watchdog is not idle either).
// Used only where CanLeaveSchedIdle(); the constructor throws std::system_error when no
// thread can be made.
class IdleCycle {
 public:
  IdleCycle(pid_t tid, absl::Duration patience, std::atomic<int>* escalations, std::vector<pid_t>* moved)
      : tid_(tid) {
    // The watchdog starts first, so it inherits the normal policy, not SCHED_IDLE. Its
    // patience starts once the load thread is idle (armed_): a watchdog that woke before
    // that would find nothing to move and leave the cycle starved.
    watchdog_ = std::thread([this, patience, escalations, moved] {
      MutexLock lock(&mu_);
      mu_.Await(absl::Condition(&armed_));
      if (mu_.AwaitWithTimeout(absl::Condition(&done_), patience)) return;
      int count = 0;
      bool load_thread_moved = false;
      std::error_code ec;
      std::filesystem::directory_iterator it("/proc/self/task", ec), end;
      for (; !ec && it != end; it.increment(ec)) {
        int64_t id = 0;
        if (absl::SimpleAtoi(it->path().filename().string(), &id) &&
            ::sched_getscheduler(static_cast<pid_t>(id)) == SCHED_IDLE && ToNormal(static_cast<pid_t>(id))) {
          if (id != tid_) moved->push_back(static_cast<pid_t>(id));  // read by the load thread after join
          load_thread_moved |= id == tid_;
          ++count;
        }
      }
      if (count == 0) return;
      // Counted only when the load thread itself was moved: that is the cycle escaping.
      if (load_thread_moved) escalations->fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "recserve: a model load was still running after %s at idle priority; "
                           "continuing at normal priority (%d threads)\n",
                   absl::FormatDuration(patience).c_str(), count);
    });
    sched_param idle{};
    ::sched_setscheduler(tid_, SCHED_IDLE, &idle);
    for (pid_t t : *moved) ::sched_setscheduler(t, SCHED_IDLE, &idle);  // always allowed
    moved->clear();
    {
      MutexLock lock(&mu_);
      armed_ = true;
    }
  }
  ~IdleCycle() {
    {
      MutexLock lock(&mu_);
      done_ = true;
    }
    watchdog_.join();
    ToNormal(tid_);
  }

 private:
  static bool ToNormal(pid_t tid) {
    sched_param normal{};
    return ::sched_setscheduler(tid, SCHED_OTHER, &normal) == 0;
  }

  const pid_t tid_;
  // The watchdog holds it from waking until it returns (through its /proc scan); a
  // leaf, and the load thread holds no other lock when it takes it.
  Mutex mu_;
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_;
};

}  // namespace

bool CanLeaveSchedIdle() {
  bool ok = false;
  try {
    std::thread([&ok] {
      const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
      sched_param param{};
      if (::sched_setscheduler(tid, SCHED_IDLE, &param) != 0) return;
      ok = ::sched_setscheduler(tid, SCHED_OTHER, &param) == 0;
    }).join();
  } catch (const std::system_error&) {
    return false;
  }
  return ok;
}

void LoadThread::Start() {
  MutexLock lock(&mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Loop(); });
}

void LoadThread::RequestStop() {
  MutexLock lock(&mu_);
  stop_ = true;
}

void LoadThread::Stop() {
  RequestStop();
  // Joined outside mu_: the load thread takes mu_ on its way out.
  std::thread loader;
  {
    MutexLock lock(&mu_);
    loader = std::move(thread_);
  }
  if (loader.joinable()) loader.join();
}

void LoadThread::RequestScan() {
  MutexLock lock(&mu_);
  ++requested_;
}

absl::Status LoadThread::ScanAndWait(absl::Time deadline) {
  uint64_t ticket;
  {
    MutexLock lock(&mu_);
    ticket = ++requested_;
  }
  return WaitForCycle(ticket, deadline, "the scan asked for runs once it is done");
}

absl::Status LoadThread::PinAndWait(int64_t version, absl::Time deadline) {
  std::optional<uint64_t> ticket;
  {
    MutexLock lock(&mu_);
    auto turn = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completed_ >= pin_ticket_ || stop_; };
    if (mu_.AwaitWithDeadline(absl::Condition(&turn), deadline)) {
      if (stop_) return absl::UnavailableError("model manager is stopping");
      ticket = pin_ticket_ = ++requested_;
      pin_request_ = PinRequest{version, *ticket};
    }
  }
  if (!ticket) {  // described outside mu_, which is a leaf
    return absl::DeadlineExceededError(absl::StrCat(
        work_->DescribeBusy(), "; an earlier pin waits for it, so version ", version, " was not asked for"));
  }
  return WaitForCycle(*ticket, deadline,
                      absl::StrCat("the pin to version ", version, " is tried once it is done (see status)"));
}

absl::Status LoadThread::WaitForCycle(uint64_t ticket, absl::Time deadline, absl::string_view pending) {
  {
    MutexLock lock(&mu_);
    auto done = [this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completed_ >= ticket || stop_; };
    if (mu_.AwaitWithDeadline(absl::Condition(&done), deadline)) {
      if (completed_ < ticket) return absl::UnavailableError("model manager is stopping");
      auto it = cycle_results_.find(ticket);
      if (it == cycle_results_.end()) return absl::OkStatus();
      absl::Status result = std::move(it->second);
      cycle_results_.erase(it);
      return result;
    }
  }
  // Described outside mu_, which is a leaf.
  return absl::DeadlineExceededError(absl::StrCat(work_->DescribeBusy(), "; ", pending));
}

void LoadThread::Loop() {
  // Loading competes with request workers for the same cores: on Linux a thread has its
  // own scheduling policy and nice value, so the loader yields to them (p99 during
  // reloads on the 2-core VM: 1.4x steady with SCHED_IDLE, 1.4-1.6x with nice 10 and one
  // OpenMP thread, 2.0x with nice 10 and an OpenMP team per core; docs/benchmarks.md).
  // With load_thread_idle each cycle runs under SCHED_IDLE, and a watchdog moves a
  // starved cycle back to the normal policy (IdleCycle); otherwise the thread runs at
  // load_thread_nice.
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  // Idle cycles only where the watchdog can undo SCHED_IDLE; otherwise a starved load
  // could never finish, so fall back to the nice value.
  const bool idle = options_.load_thread_idle && CanLeaveSchedIdle();
  if (options_.load_thread_idle && !idle) {
    std::fprintf(stderr, "recserve: the idle loader needs CAP_SYS_NICE or RLIMIT_NICE >= 20 to recover a "
                         "starved load; loading at nice %d instead\n", options_.load_thread_nice);
  }
  if (!idle && options_.load_thread_nice != 0) {
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), options_.load_thread_nice);
  }
  if (options_.load_threads > 0) omp_set_num_threads(options_.load_threads);
  uint64_t handled = 0;
  const bool polling = options_.poll_interval > absl::ZeroDuration();
  absl::Time next_poll = absl::Now() + options_.poll_interval;
  bool retired_held = false;  // versions retired and still held by a request
  while (true) {
    {
      MutexLock lock(&mu_);
      auto wake = [this, &handled]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || requested_ > handled; };
      // Scans on request or every poll interval; retired versions are reaped on a short
      // tick while any wait for their last request.
      absl::Duration wait = polling ? std::max(next_poll - absl::Now(), absl::ZeroDuration()) : absl::Hours(1);
      if (retired_held) wait = std::min(wait, absl::Milliseconds(20));
      mu_.AwaitWithTimeout(absl::Condition(&wake), wait);
      if (stop_) return;
    }
    retired_held = work_->ReapRetired();
    uint64_t target;
    std::optional<PinRequest> pin_request;
    {
      MutexLock lock(&mu_);
      const bool asked = requested_ > handled;
      if (!asked && !(polling && absl::Now() >= next_poll)) continue;
      target = requested_;
      pin_request = std::exchange(pin_request_, std::nullopt);  // its ticket is <= target
    }
    next_poll = absl::Now() + options_.poll_interval;
    const Work::CycleResult result =
        RunCycle(idle, tid, pin_request ? std::optional<int64_t>(pin_request->version) : std::nullopt);
    {
      MutexLock lock(&mu_);
      for (uint64_t t = handled + 1; t <= target; ++t) {
        const absl::Status& answer = pin_request && t == pin_request->ticket ? result.pin : result.scans;
        if (!answer.ok()) cycle_results_[t] = answer;
      }
      // Results nobody waits for any more must not pile up.
      while (cycle_results_.size() > 64) cycle_results_.erase(cycle_results_.begin());
      handled = target;
      completed_ = std::max(completed_, target);
    }
    retired_held = work_->ReapRetired();
  }
}

LoadThread::Work::CycleResult LoadThread::RunCycle(bool idle, pid_t tid, std::optional<int64_t> pin) {
  std::optional<IdleCycle> idle_cycle;
  if (idle) {
    try {
      idle_cycle.emplace(tid, options_.idle_load_patience, &idle_escalations_, &idle_moved_);
    } catch (const std::system_error&) {
      // No thread for the watchdog (a pids limit): this cycle runs at normal priority.
    }
  }
  return work_->RunCycle(pin);
}

}  // namespace recserve
