#include "server/serving_manager.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/user_hash.h"

namespace recserve {

const ServingSet::Member* ServingSet::Find(ServingRole role) const {
  for (const Member& m : members) {
    if (m.role == role) return &m;
  }
  return nullptr;
}

const ServingSet::Member* ServingSet::ForUser(absl::string_view user_id) const {
  const Member* canary = Find(ServingRole::kCanary);
  if (canary != nullptr && !user_id.empty() && UserShareFraction(user_id) < canary->share) return canary;
  return Find(ServingRole::kServing);
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
  for (auto it = versions_.rbegin(); it != versions_.rend(); ++it) out.push_back(StatusLocked(it->first, it->second));
  return out;
}

v1::VersionStatus ServingManager::StatusLocked(int64_t version, const Entry& e) const {
  v1::VersionStatus out = e.status;
  out.set_role(ToProto(e.role));
  if (e.role == ServingRole::kCanary || e.role == ServingRole::kShadow) out.set_share(e.share);
  if (version == rollout_.version) {
    // The figures so far (the verdict is the last cycle's).
    const Entry& serving = versions_.at(serving_version_);
    JudgeRollout(rollout_.rules, RoleName(e.role), e.stats->Read(), serving.stats->Read(),
                 absl::Now() - rollout_.started, out.mutable_rollout());
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
  {
    MutexLock lock(&mu_);
    JudgeRolloutLocked();
  }
  CycleResult result;
  if (pin) {
    result.pin = RunCycleUnder(*pin);
    MutexLock lock(&mu_);
    if (*pin == 0 || serving_version_ == *pin) {
      pinned_ = *pin;
      if (pinned_ != 0 && rollout_.version != 0) {  // its version served already
        RemoveRolloutLocked(absl::StrCat("ended: version ", pinned_, " was pinned"), v1::UNLOADED, "");
      }
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
    if (rollout_.version != 0 && !found.count(rollout_.version)) {
      RemoveRolloutLocked("ended: its version directory is gone", v1::UNLOADED, "");
    }
    // During a roll-out the newest-version policy waits: newer versions load once it ends.
    const bool wait_for_rollout = pinned == 0 && rollout_.version != 0;
    for (auto it = found.rbegin(); it != found.rend() && !wait_for_rollout; ++it) {
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
    const absl::Status placed = PlaceLoadedLocked(version, *std::move(model), pinned != 0);
    if (!placed.ok()) {
      if (first_error.ok()) first_error = absl::Status(placed.code(), absl::StrCat("version ", version, ": ", placed.message()));
      continue;
    }
    break;
  }
  return first_error;
}

absl::Status ServingManager::PlaceLoadedLocked(int64_t version, std::shared_ptr<const Model> model, bool pinned) {
  Entry& e = versions_[version];
  absl::StatusOr<RolloutOptions> rollout = ResolveRollout(options_.rollout, model->manifest().rollout());
  if (!rollout.ok()) {
    e.status.set_state(v1::FAILED);
    e.status.set_error(std::string(rollout.status().message()));
    RetireLocked(std::move(model));
    return rollout.status();
  }
  if (pinned || serving_version_ == 0 || rollout->mode == RolloutMode::kImmediate) {
    PublishLocked(version, std::move(model));
    return absl::OkStatus();
  }
  e.model = std::move(model);
  StartRolloutLocked(version, rollout->mode == RolloutMode::kCanary ? ServingRole::kCanary : ServingRole::kShadow,
                     rollout->share, rollout->rules);
  return absl::OkStatus();
}

void ServingManager::StartRolloutLocked(int64_t version, ServingRole role, double share, const RolloutRules& rules) {
  Entry& e = versions_[version];
  e.role = role;
  e.share = share;
  e.status.set_state(v1::SERVING);
  e.status.clear_error();
  e.stats = std::make_shared<RolloutStats>();
  versions_[serving_version_].stats = std::make_shared<RolloutStats>();  // the same window
  rollout_ = {version, rules, absl::Now()};
  v1::RolloutStatus* status = e.status.mutable_rollout();
  status->Clear();
  status->set_mode(ToProto(role));
  status->set_share(share);
  status->set_started_unix_ms(absl::ToUnixMillis(rollout_.started));
  status->set_window_seconds(absl::ToDoubleSeconds(rules.window));
  status->set_min_requests(rules.min_requests);
  status->set_rules(rules.Describe());
  status->mutable_canary()->set_version(version);
  status->mutable_serving()->set_version(serving_version_);
  status->set_verdict("observing: just started");
  PublishServingSetLocked();
}

void ServingManager::JudgeRolloutLocked() {
  if (rollout_.version == 0) return;
  Entry& e = versions_[rollout_.version];
  const RolloutVerdict verdict =
      JudgeRollout(rollout_.rules, RoleName(e.role), e.stats->Read(), versions_[serving_version_].stats->Read(),
                   absl::Now() - rollout_.started, e.status.mutable_rollout());
  switch (verdict.kind) {
    case RolloutVerdict::Kind::kObserving:
      e.status.mutable_rollout()->set_verdict(verdict.reason);
      return;
    case RolloutVerdict::Kind::kPromote: {
      const int64_t version = rollout_.version;
      EndRolloutLocked(absl::StrCat("promoted: ", verdict.reason));
      PublishLocked(version, e.model);
      return;
    }
    case RolloutVerdict::Kind::kRollBack:
      RemoveRolloutLocked(absl::StrCat("rolled back: ", verdict.reason), v1::FAILED, verdict.reason);
      return;
  }
}

void ServingManager::EndRolloutLocked(const std::string& verdict) {
  const int64_t version = rollout_.version;
  Entry& e = versions_[version];
  // The final figures, then the verdict.
  JudgeRollout(rollout_.rules, RoleName(e.role), e.stats->Read(), versions_[serving_version_].stats->Read(),
               absl::Now() - rollout_.started, e.status.mutable_rollout());
  e.status.mutable_rollout()->set_verdict(verdict);
  rollout_ = Rollout();
  if (options_.on_rollout_end) options_.on_rollout_end(version, verdict);
}

void ServingManager::RemoveRolloutLocked(const std::string& verdict, v1::VersionState state, const std::string& why) {
  Entry& e = versions_[rollout_.version];
  EndRolloutLocked(verdict);
  e.role = ServingRole::kNone;
  e.share = 1.0;
  e.stats.reset();
  e.status.set_state(state);
  if (state == v1::FAILED) e.status.set_error(absl::StrCat("rollout: ", why));
  RetireLocked(std::move(e.model));
  PublishServingSetLocked();
  ReapRetiredLocked();
}

absl::StatusOr<v1::VersionStatus> ServingManager::SetRollout(int64_t version, v1::RolloutAction action,
                                                             double share) {
  if (action != v1::ROLLOUT_CANARY && action != v1::ROLLOUT_SHADOW && action != v1::ROLLOUT_PROMOTE &&
      action != v1::ROLLOUT_ABORT) {
    return absl::InvalidArgumentError(absl::StrCat(
        "action: ", static_cast<int>(action), " is not a roll-out action (CANARY, SHADOW, PROMOTE or ABORT)"));
  }
  if (version <= 0) return absl::InvalidArgumentError(absl::StrCat("version: ", version, " is not a version (> 0)"));
  if (!(share >= 0 && share <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("share: ", share, " is outside [0, 1] (0: keep the current share)"));
  }
  MutexLock lock(&mu_);
  auto it = versions_.find(version);
  if (it == versions_.end()) {
    return absl::NotFoundError(absl::StrCat("version ", version, " has not been seen under ", source_->base_path(),
                                            " (status lists the versions seen)"));
  }
  Entry& e = it->second;
  if (rollout_.version != version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version ", version, " is not rolling out (",
        rollout_.version == 0 ? "none is" : absl::StrCat("version ", rollout_.version, " is"),
        "); a version starts its roll-out when it loads, by --rollout or its manifest's rollout"));
  }
  switch (action) {
    case v1::ROLLOUT_PROMOTE:
      EndRolloutLocked("promoted by SetRollout");
      PublishLocked(version, e.model);
      break;
    case v1::ROLLOUT_ABORT:
      RemoveRolloutLocked("aborted by SetRollout", v1::FAILED, "aborted by SetRollout");
      break;
    default: {  // CANARY, SHADOW
      const ServingRole role = action == v1::ROLLOUT_CANARY ? ServingRole::kCanary : ServingRole::kShadow;
      if (share == 0) share = e.share;
      absl::Status valid =
          CheckShare(role == ServingRole::kCanary ? RolloutMode::kCanary : RolloutMode::kShadow, share, "share");
      if (!valid.ok()) return valid;
      if (role != e.role) {
        const RolloutRules rules = rollout_.rules;
        StartRolloutLocked(version, role, share, rules);  // a new role: a new window
      } else {
        e.share = share;
        e.status.mutable_rollout()->set_share(share);
        PublishServingSetLocked();
      }
    }
  }
  return StatusLocked(version, e);
}

void ServingManager::PublishLocked(int64_t version, std::shared_ptr<const Model> model) {
  if (rollout_.version == version) {
    EndRolloutLocked("promoted: made to serve (pin)");
  } else if (rollout_.version != 0) {
    RemoveRolloutLocked(absl::StrCat("ended: version ", version, " was made to serve"), v1::UNLOADED, "");
  }
  const int64_t previous = serving_version_;
  serving_version_ = version;
  Entry& e = versions_[version];
  e.status.set_state(v1::SERVING);
  e.status.clear_error();
  e.role = ServingRole::kServing;
  e.share = 1.0;
  e.stats = std::make_shared<RolloutStats>();
  e.model = std::move(model);
  if (previous != 0 && previous != version) {
    Entry& p = versions_[previous];
    p.role = ServingRole::kNone;
    p.stats.reset();
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
    if (e.role == ServingRole::kNone) continue;
    if (options_.before_role) options_.before_role(v, e.role);
    set->members.push_back({v, e.role, e.model, e.share, e.stats});
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
