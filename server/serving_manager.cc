#include "server/serving_manager.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace recserve {

const ServingSet::Member* ServingSet::Find(ServingRole role) const {
  for (const Member& m : members) {
    if (m.role == role) return &m;
  }
  return nullptr;
}

v1::ServingRole ToProto(ServingRole role) {
  switch (role) {
    case ServingRole::kServing:
      return v1::ROLE_SERVING;
    case ServingRole::kCanary:
      return v1::ROLE_CANARY;
    case ServingRole::kShadow:
      return v1::ROLE_SHADOW;
    case ServingRole::kNone:
      break;
  }
  return v1::ROLE_NONE;
}

const char* RoleName(ServingRole role) {
  switch (role) {
    case ServingRole::kServing:
      return "serving";
    case ServingRole::kCanary:
      return "canary";
    case ServingRole::kShadow:
      return "shadow";
    case ServingRole::kNone:
      break;
  }
  return "none";
}

ServingManager::ServingManager(ServingManagerOptions options, const VersionSource* source,
                               const VersionLoader* loader)
    : options_(std::move(options)), source_(source), loader_(loader), pinned_(options_.pinned_version) {}

std::shared_ptr<const Model> ServingManager::Pin() const {
  ReaderMutexLock lock(&serving_mu_);
  const ServingSet::Member* serving = serving_set_ ? serving_set_->Find(ServingRole::kServing) : nullptr;
  return serving ? serving->model : nullptr;
}

std::shared_ptr<const ServingSet> ServingManager::PinSet() const {
  ReaderMutexLock lock(&serving_mu_);
  return serving_set_;
}

int64_t ServingManager::serving_version() const {
  ReaderMutexLock lock(&serving_mu_);
  const ServingSet::Member* serving = serving_set_ ? serving_set_->Find(ServingRole::kServing) : nullptr;
  return serving ? serving->version : 0;
}

bool ServingManager::WaitUntilServing(absl::Duration timeout) const {
  MutexLock lock(&serving_mu_);
  auto serving = [this]() ABSL_SHARED_LOCKS_REQUIRED(serving_mu_) {
    return serving_set_ && serving_set_->Find(ServingRole::kServing) != nullptr;
  };
  return serving_mu_.AwaitWithTimeout(absl::Condition(&serving), timeout);
}

std::vector<v1::VersionStatus> ServingManager::Versions() const {
  MutexLock lock(&mu_);
  std::vector<v1::VersionStatus> out;
  for (auto it = versions_.rbegin(); it != versions_.rend(); ++it) {
    out.push_back(it->second.status);
    out.back().set_role(ToProto(it->second.role));
  }
  return out;
}

int64_t ServingManager::pinned_version() const {
  MutexLock lock(&mu_);
  return pinned_;
}

int ServingManager::loaded_count() const {
  MutexLock lock(&mu_);
  int n = static_cast<int>(retired_.size());
  for (const auto& [v, e] : versions_) n += e.model != nullptr;
  return n;
}

std::string ServingManager::DescribeBusy() const {
  MutexLock lock(&mu_);
  for (const auto& [v, e] : versions_) {
    if (e.status.state() == v1::LOADING) {
      return absl::StrFormat("a model load is in progress: version %d has been loading for %s", v,
                             absl::FormatDuration(absl::Trunc(absl::Now() - e.load_started, absl::Milliseconds(100))));
    }
  }
  return "the model load thread is busy (scanning the base path, or not started)";
}

LoadThread::Work::CycleResult ServingManager::RunCycle(std::optional<int64_t> pin) {
  // A pin asked for is tried first and takes force only if its version serves (0, the
  // newest-version policy, always does). Refused, it changes nothing, and the cycle runs
  // again under the pin in force for the scans asked for alongside it.
  CycleResult result;
  if (pin) {
    result.pin = RunCycleUnder(*pin);
    MutexLock lock(&mu_);
    if (*pin == 0 || serving_version_ == *pin) {
      pinned_ = *pin;
      result.scans = result.pin;
      return result;
    }
    if (result.pin.ok()) {
      result.pin = absl::NotFoundError(absl::StrCat("version ", *pin, " is not loadable (see status)"));
    }
  }
  int64_t pinned;
  {
    MutexLock lock(&mu_);
    pinned = pinned_;
  }
  result.scans = RunCycleUnder(pinned);
  return result;
}

absl::Status ServingManager::RunCycleUnder(int64_t pinned) {
  const VersionScan scan = source_->Scan();
  const std::map<int64_t, ReadyVersion>& found = scan.ready;
  int64_t serving;
  std::vector<std::pair<int64_t, ReadyVersion>> to_try;  // newest first
  {
    MutexLock lock(&mu_);
    serving = serving_version_;
    for (const auto& [v, why] : scan.refused) {
      Entry& e = versions_[v];
      e.status.set_version(v);
      e.status.set_state(v1::FAILED);
      e.status.set_path(absl::StrCat(source_->base_path(), "/", v));
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
          existing->second.ready_stamp == it->second.ready_stamp) {
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
      return absl::NotFoundError(absl::StrCat("version ", pinned, " not found under ", source_->base_path()));
    }
  }

  absl::Status first_error = absl::OkStatus();
  for (const auto& [version, ready] : to_try) {
    {
      MutexLock lock(&mu_);
      Entry& e = versions_[version];
      e.status.Clear();
      e.status.set_version(version);
      e.status.set_path(ready.path);
      e.status.set_state(v1::LOADING);
      e.ready_stamp = ready.ready_stamp;
      e.load_started = absl::Now();
    }
    const absl::Time start = absl::Now();
    v1::ModelFigures figures;
    absl::StatusOr<std::shared_ptr<const Model>> model = loader_->Load(version, ready.path, &figures);
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

void ServingManager::PublishLocked(int64_t version, std::shared_ptr<const Model> model) {
  const int64_t previous = serving_version_;
  serving_version_ = version;
  Entry& e = versions_[version];
  e.status.set_state(v1::SERVING);
  e.status.clear_error();
  e.role = ServingRole::kServing;
  e.model = std::move(model);
  if (previous != 0 && previous != version) {
    Entry& p = versions_[previous];
    p.role = ServingRole::kNone;
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
  PublishServingSetLocked();
  ReapRetiredLocked();
  if (options_.on_published) options_.on_published(*e.model, e.status.figures());
  if (options_.on_serving_change) options_.on_serving_change(version);
}

void ServingManager::PublishServingSetLocked() {
  auto set = std::make_shared<ServingSet>();
  for (const auto& [v, e] : versions_) {
    if (e.role != ServingRole::kNone) set->members.push_back({v, e.role, e.model});
  }
  std::shared_ptr<const ServingSet> replaced = std::move(set);
  {
    MutexLock lock(&serving_mu_);
    serving_set_.swap(replaced);
  }
  // `replaced`, the old set, is dropped here, outside serving_mu_; its models are still
  // held by their entries or the retired list, so none is destroyed by it.
}

void ServingManager::RetireLocked(std::shared_ptr<const Model> model) {
  if (model) retired_.push_back(std::move(model));
}

bool ServingManager::ReapRetired() {
  MutexLock lock(&mu_);
  return ReapRetiredLocked();
}

bool ServingManager::ReapRetiredLocked() {
  // use_count() == 1: only this list holds it (no request, no entry, no serving set).
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
  return !retired_.empty();
}

}  // namespace recserve
