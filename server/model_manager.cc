#include "server/model_manager.h"

#include <omp.h>
#include <sched.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/pipeline.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

bool IsPlainPositiveInteger(const std::string& name, int64_t* value) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return false;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(name, value) && *value > 0;
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

int64_t MtimeNs(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

// A few hundred requests from the catalog's own items, so the first real request finds
// pages touched, caches warm and every code path exercised.
absl::Status WarmUp(const Model& model, int requests, const std::atomic<bool>& stopping) {
  PipelineScratch scratch;
  RecommendResult result;
  const std::vector<int32_t>& popular = model.catalog().by_popularity();
  std::vector<QueryEvent> events;
  for (int r = 0; r < requests; ++r) {
    if (stopping.load(std::memory_order_relaxed)) return absl::CancelledError("shutting down");
    events.clear();
    const int count = r % 10;  // includes cold users
    for (int e = 0; e < count; ++e) {
      const int32_t item = popular[(static_cast<size_t>(r) * 7919 + e * 104729) % popular.size()];
      events.push_back({model.catalog().id(item), static_cast<EventType>(1 + (r + e) % 4),
                        1700000000000 + int64_t{e} * 60000});
    }
    RecommendQuery q;
    q.events = events;
    q.n = 10;
    q.context = {r % 4, r % 24};
    RETURN_IF_ERROR(Recommend(model, q, &scratch, &result));
    // Serving would answer these with the lowest score; a version that produces them on
    // its own catalog's items is refused instead.
    if (result.non_finite_scores > 0) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "warm-up request %d (%d events): %d of %d candidate scores are not finite; the ranker's arithmetic "
          "overflows on this version's values",
          r, count, result.non_finite_scores, result.candidates));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::map<int64_t, std::string> ScanVersions(const std::string& base_path,
                                            std::map<std::string, std::string>* refused) {
  std::map<int64_t, std::string> out;
  const std::string base_real = RealPath(base_path);
  if (base_real.empty()) return out;
  std::error_code ec;
  std::filesystem::directory_iterator it(base_path, ec), end;
  for (; !ec && it != end; it.increment(ec)) {  // no exceptions on the load thread
    const std::filesystem::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    int64_t version = 0;
    if (!IsPlainPositiveInteger(name, &version)) {
      if (refused && name[0] != '.') refused->emplace(name, "not a plain positive integer");
      continue;
    }
    const std::string path = entry.path().string();
    const std::string real = RealPath(path);
    if (real.empty() || real.compare(0, base_real.size() + 1, base_real + "/") != 0) {
      if (refused) refused->emplace(name, "resolves outside the model base path");
      continue;
    }
    std::error_code type_ec;
    if (!std::filesystem::is_directory(real, type_ec)) {
      if (refused) refused->emplace(name, "not a directory");
      continue;
    }
    if (!std::filesystem::exists(real + "/READY", type_ec)) continue;  // still being written
    out.emplace(version, real);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<ModelManager>> ModelManager::Create(ModelManagerOptions options) {
  std::error_code ec;
  if (options.base_path.empty() || !std::filesystem::is_directory(options.base_path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model base path '", options.base_path, "' is not a directory"));
  }
  std::unique_ptr<ModelManager> m(new ModelManager(std::move(options)));
  {
    MutexLock lock(&m->mu_);
    m->pinned_ = m->options_.pinned_version;
    m->requested_ = 1;  // the first scan
  }
  if (!m->options_.start_paused) m->Start();
  return m;
}

void ModelManager::Start() {
  MutexLock lock(&mu_);
  if (load_thread_.joinable() || stop_) return;
  load_thread_ = std::thread([this] { LoadLoop(); });
}

ModelManager::~ModelManager() {
  Stop();
  MutexLock lock(&mu_);
  retired_.clear();
}

void ModelManager::RequestStop() {
  stopping_ = true;
  MutexLock lock(&mu_);
  stop_ = true;
}

void ModelManager::Stop() {
  RequestStop();
  // Joined outside mu_: the load thread takes mu_ on its way out.
  std::thread loader;
  {
    MutexLock lock(&mu_);
    loader = std::move(load_thread_);
  }
  if (loader.joinable()) loader.join();
}

std::shared_ptr<const Model> ModelManager::Pin() const {
  ReaderMutexLock lock(&serving_mu_);
  return serving_;
}

int64_t ModelManager::serving_version() const {
  ReaderMutexLock lock(&serving_mu_);
  return serving_ ? serving_->version() : 0;
}

bool ModelManager::WaitUntilServing(absl::Duration timeout) const {
  MutexLock lock(&serving_mu_);
  auto serving = [this]() ABSL_SHARED_LOCKS_REQUIRED(serving_mu_) { return serving_ != nullptr; };
  return serving_mu_.AwaitWithTimeout(absl::Condition(&serving), timeout);
}

int64_t ModelManager::pinned_version() const {
  MutexLock lock(&mu_);
  return pinned_;
}

int ModelManager::loaded_count() const {
  MutexLock lock(&mu_);
  int n = static_cast<int>(retired_.size());
  for (const auto& [v, e] : versions_) n += e.model != nullptr;
  return n;
}

void ModelManager::RequestScan() {
  MutexLock lock(&mu_);
  ++requested_;
}

absl::StatusOr<int64_t> ModelManager::WaitForCycle(uint64_t ticket, absl::Time deadline,
                                                   absl::string_view pending) {
  MutexLock lock(&mu_);
  auto done = [this, ticket]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completed_ >= ticket || stop_; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&done), deadline)) {
    return absl::DeadlineExceededError(absl::StrCat(BusyLocked(), "; ", pending));
  }
  if (completed_ < ticket) return absl::UnavailableError("model manager is stopping");
  absl::Status result = absl::OkStatus();
  auto it = cycle_results_.find(ticket);
  if (it != cycle_results_.end()) {
    result = it->second;
    cycle_results_.erase(it);
  }
  if (!result.ok()) return result;
  return serving_version_;
}

std::string ModelManager::BusyLocked() const {
  for (const auto& [v, e] : versions_) {
    if (e.status.state() == v1::LOADING) {
      return absl::StrFormat("a model load is in progress: version %d has been loading for %s", v,
                             absl::FormatDuration(absl::Trunc(absl::Now() - e.load_started, absl::Milliseconds(100))));
    }
  }
  return "the model load thread is busy (scanning the base path, or not started)";
}

absl::StatusOr<int64_t> ModelManager::ReloadNow(absl::Time deadline) {
  uint64_t ticket;
  {
    MutexLock lock(&mu_);
    ticket = ++requested_;
  }
  return WaitForCycle(ticket, deadline, "the scan asked for runs once it is done");
}

absl::StatusOr<int64_t> ModelManager::SetServingVersion(int64_t version, absl::Time deadline) {
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version: ", version, " is negative"));
  }
  // The pin is not set here: the load thread tries it and sets it only if it serves.
  uint64_t ticket;
  {
    MutexLock lock(&mu_);
    auto turn = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return completed_ >= pin_ticket_ || stop_; };
    if (!mu_.AwaitWithDeadline(absl::Condition(&turn), deadline)) {
      return absl::DeadlineExceededError(absl::StrCat(
          BusyLocked(), "; an earlier pin waits for it, so version ", version, " was not asked for"));
    }
    if (stop_) return absl::UnavailableError("model manager is stopping");
    ticket = pin_ticket_ = ++requested_;
    pin_request_ = PinRequest{version, ticket};
  }
  return WaitForCycle(ticket, deadline,
                      absl::StrCat("the pin to version ", version, " is tried once it is done (see status)"));
}

std::vector<v1::VersionStatus> ModelManager::Versions() const {
  MutexLock lock(&mu_);
  std::vector<v1::VersionStatus> out;
  for (auto it = versions_.rbegin(); it != versions_.rend(); ++it) out.push_back(it->second.status);
  return out;
}

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
  // leaf, and no lock of the manager's is held while the load thread takes it.
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

void ModelManager::LoadLoop() {
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
  while (true) {
    uint64_t target;
    std::optional<PinRequest> pin_request;
    int64_t pinned;
    {
      MutexLock lock(&mu_);
      auto wake = [this, &handled]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || requested_ > handled;
      };
      // Scans on request or every poll interval; retired versions are reaped on a short
      // tick while any wait for their last request.
      absl::Duration wait = polling ? std::max(next_poll - absl::Now(), absl::ZeroDuration())
                                    : absl::Hours(1);
      if (!retired_.empty()) wait = std::min(wait, absl::Milliseconds(20));
      mu_.AwaitWithTimeout(absl::Condition(&wake), wait);
      if (stop_) return;
      ReapRetiredLocked();
      const bool asked = requested_ > handled;
      if (!asked && !(polling && absl::Now() >= next_poll)) continue;
      target = requested_;
      pin_request = std::exchange(pin_request_, std::nullopt);  // its ticket is <= target
      pinned = pinned_;
    }
    next_poll = absl::Now() + options_.poll_interval;
    absl::Status result;
    absl::Status pin_result;  // the answer to pin_request
    {
      std::optional<IdleCycle> idle_cycle;
      if (idle) {
        try {
          idle_cycle.emplace(tid, options_.idle_load_patience, &idle_escalations_, &idle_moved_);
        } catch (const std::system_error&) {
          // No thread for the watchdog (a pids limit): this cycle runs at normal priority.
        }
      }
      // A pin asked for is tried first and takes force only if its version serves (0,
      // the newest-version policy, always does). Refused, it changes nothing, and the
      // cycle runs again under the pin in force for the scans asked for alongside it.
      bool pin_taken = false;
      if (pin_request) {
        pin_result = RunCycle(pin_request->version);
        MutexLock lock(&mu_);
        if (pin_request->version == 0 || serving_version_ == pin_request->version) {
          pinned_ = pinned = pin_request->version;
          pin_taken = true;
        } else if (pin_result.ok()) {
          pin_result = absl::NotFoundError(
              absl::StrCat("version ", pin_request->version, " is not loadable (see status)"));
        }
      }
      result = pin_taken ? pin_result : RunCycle(pinned);
    }
    MutexLock lock(&mu_);
    for (uint64_t t = handled + 1; t <= target; ++t) {
      const absl::Status& answer = pin_request && t == pin_request->ticket ? pin_result : result;
      if (!answer.ok()) cycle_results_[t] = answer;
    }
    // Results nobody waits for any more must not pile up.
    while (cycle_results_.size() > 64) cycle_results_.erase(cycle_results_.begin());
    handled = target;
    completed_ = std::max(completed_, target);
    ReapRetiredLocked();
  }
}

absl::Status ModelManager::RunCycle(int64_t pinned) {
  std::map<std::string, std::string> refused;
  const std::map<int64_t, std::string> found = ScanVersions(options_.base_path, &refused);
  int64_t serving;
  std::vector<std::pair<int64_t, std::string>> to_try;  // newest first
  {
    MutexLock lock(&mu_);
    serving = serving_version_;
    for (const auto& [name, why] : refused) {
      int64_t v = 0;
      if (!IsPlainPositiveInteger(name, &v)) continue;  // not a version name: ignored
      Entry& e = versions_[v];
      e.status.set_version(v);
      e.status.set_state(v1::FAILED);
      e.status.set_path(absl::StrCat(options_.base_path, "/", name));
      e.status.set_error(why);
    }
    for (auto& [v, e] : versions_) {
      if (!found.count(v) && e.status.state() == v1::AVAILABLE) {
        RetireLocked(std::move(e.model));
        e.status.set_state(v1::UNLOADED);
      }
    }
    for (auto it = found.rbegin(); it != found.rend(); ++it) {
      const int64_t v = it->first;
      if (pinned != 0 && v != pinned) continue;
      if (pinned == 0 && v < serving) break;  // older than what serves: nothing to do
      if (v == serving) break;
      auto existing = versions_.find(v);
      if (existing != versions_.end() && existing->second.model) {
        if (!to_try.empty()) break;  // a newer version is to be loaded first
        // Still loaded (kept as the previous version): swap it in without a reload.
        PublishLocked(v, existing->second.model);
        return absl::OkStatus();
      }
      if (existing != versions_.end() && existing->second.status.state() == v1::FAILED &&
          existing->second.ready_mtime_ns == MtimeNs(it->second + "/READY")) {
        continue;  // failed before and unchanged since
      }
      to_try.push_back(*it);
    }
  }
  if (pinned != 0 && pinned != serving && to_try.empty()) {
    MutexLock lock(&mu_);
    auto it = versions_.find(pinned);
    if (it != versions_.end() && it->second.model) {  // kept previous: instant swap
      PublishLocked(pinned, it->second.model);
      return absl::OkStatus();
    }
    if (it != versions_.end() && it->second.status.state() == v1::FAILED) {
      return absl::FailedPreconditionError(
          absl::StrCat("version ", pinned, " failed to load: ", it->second.status.error()));
    }
    if (!found.count(pinned)) {
      return absl::NotFoundError(absl::StrCat("version ", pinned, " not found under ", options_.base_path));
    }
  }

  absl::Status first_error = absl::OkStatus();
  for (const auto& [version, path] : to_try) {
    {
      MutexLock lock(&mu_);
      Entry& e = versions_[version];
      e.status.Clear();
      e.status.set_version(version);
      e.status.set_path(path);
      e.status.set_state(v1::LOADING);
      e.ready_mtime_ns = MtimeNs(path + "/READY");
      e.load_started = absl::Now();
    }
    const absl::Time start = absl::Now();
    v1::ModelFigures figures;
    absl::StatusOr<std::shared_ptr<const Model>> model = LoadVersion(version, path, &figures);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (options_.on_load) options_.on_load(version, model.status());
    MutexLock lock(&mu_);
    Entry& e = versions_[version];
    e.status.set_load_seconds(seconds);
    *e.status.mutable_figures() = figures;
    if (!model.ok()) {
      RetireLocked(std::move(e.model));
      e.status.set_state(v1::FAILED);
      e.status.set_error(std::string(model.status().message()));
      if (first_error.ok()) {
        first_error = absl::Status(model.status().code(),
                                   absl::StrCat("version ", version, ": ", model.status().message()));
      }
      continue;
    }
    e.status.set_loaded_unix_ms(absl::ToUnixMillis(absl::Now()));
    PublishLocked(version, *std::move(model));
    break;
  }
  return first_error;
}

absl::StatusOr<std::shared_ptr<const Model>> ModelManager::LoadVersion(int64_t version,
                                                                      const std::string& path,
                                                                      v1::ModelFigures* figures) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> model, Model::Load(path, version, options_.model_options));
  figures->set_parameters(model->fp32_mlp().ParameterCount());
  figures->set_fp32_bytes(model->fp32_mlp().ParameterCount() * 4);
  figures->set_served_bytes(model->ranker().weight_bytes());
  figures->set_compression(model->ranker().kind());
  figures->set_items(model->catalog().size());
  figures->set_embedding_index(model->index().name());
  figures->set_index_recall(model->index_recall());
  if (options_.check) RETURN_IF_ERROR(options_.check(*model, figures));
  if (!figures->compression_fallback_reason().empty()) {
    // The accuracy gate refused the asked compression (or its first int8 ranges) and the
    // fallback chain found another form: say so where operators look first.
    std::fprintf(stderr, "recserve: version %lld: compression %s (%s ranges), asked %s; refused: %s\n",
                 static_cast<long long>(version), figures->compression().c_str(),
                 figures->int8_calibration().empty() ? "no int8" : figures->int8_calibration().c_str(),
                 figures->compression_requested().c_str(), figures->compression_fallback_reason().c_str());
  }
  if (stopping_.load()) return absl::CancelledError("shutting down");
  RETURN_IF_ERROR(WarmUp(*model, options_.warmup_requests, stopping_));
  if (options_.before_publish) options_.before_publish(*model);
  return model;
}

void ModelManager::PublishLocked(int64_t version, std::shared_ptr<const Model> model) {
  const int64_t previous = serving_version_;
  {
    MutexLock lock(&serving_mu_);
    serving_ = model;
  }
  serving_version_ = version;
  Entry& e = versions_[version];
  e.status.set_state(v1::SERVING);
  e.status.clear_error();
  e.model = std::move(model);
  if (previous != 0 && previous != version) {
    Entry& p = versions_[previous];
    if (options_.keep_previous) {
      p.status.set_state(v1::AVAILABLE);
    } else {
      p.status.set_state(v1::UNLOADED);
      RetireLocked(std::move(p.model));
    }
    // At most serving + previous stay loaded.
    for (auto& [v, other] : versions_) {
      if (v != version && v != previous && other.model) {
        RetireLocked(std::move(other.model));
        other.status.set_state(v1::UNLOADED);
      }
    }
  }
  ReapRetiredLocked();
  if (options_.on_published) options_.on_published(*e.model, e.status.figures());
  if (options_.on_serving_change) options_.on_serving_change(version);
}

void ModelManager::RetireLocked(std::shared_ptr<const Model> model) {
  if (model) retired_.push_back(std::move(model));
}

void ModelManager::ReapRetiredLocked() {
  // use_count() == 1: only this list holds it (no request, no versions_ entry).
  for (size_t i = 0; i < retired_.size();) {
    if (retired_[i].use_count() == 1) {
      // use_count() only picks the moment; dropping the last reference below is the
      // shared_ptr's own acquiring release, which orders every earlier holder's accesses
      // before the destructor.
      const int64_t version = retired_[i]->version();
      retired_[i] = std::move(retired_.back());
      retired_.pop_back();  // destroys the model, on this (the load) thread
      if (options_.on_unloaded) options_.on_unloaded(version);
    } else {
      ++i;
    }
  }
}

}  // namespace recserve
