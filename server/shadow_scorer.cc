#include "server/shadow_scorer.h"

#include <omp.h>
#include <sched.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace recserve {
namespace {

// Whether `request_id` falls in the first `share` of [0, 1) by a hash that is the same
// in every process (FNV-1a, then splitmix64's finalizer to spread the low bits).
bool InShare(absl::string_view request_id, double share) {
  if (share >= 1.0) return true;
  if (!(share > 0.0)) return false;
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : request_id) h = (h ^ c) * 0x100000001b3ull;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  h ^= h >> 31;
  return static_cast<double>(h >> 11) * 0x1.0p-53 < share;
}

// Keeps a per-version map at kMaxShadowVersions: erases its oldest version but `keep`.
template <typename Map>
void EraseOldestOtherThan(int64_t keep, Map* map) {
  auto oldest = map->begin();
  if (oldest->first == keep) ++oldest;
  map->erase(oldest);
}

// Where the shadow's pipeline copies a request before queueing it: one per offering
// thread, its buffers kept (swapped with a slot's, so both keep capacity).
struct Staging {
  std::vector<QueryEvent> events;
  std::vector<uint64_t> exclude_items;
  std::vector<RecommendedItem> served;
};

int ScoreBin(float score) {
  if (!(score > 0.f)) return 0;
  return std::min(static_cast<int>(score * kScoreBins), kScoreBins - 1);
}

double ThreadCpuSeconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Nearest-rank quantile `q` of `v` (reordered); 0 when empty.
double Quantile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  const size_t i = std::min(v.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

// The shadow thread yields the CPU to everything else: SCHED_IDLE (any thread may enter
// it), else the lowest nice value. Per thread on Linux.
void LowerThisThreadsPriority() {
  sched_param idle{};
  if (::sched_setscheduler(0, SCHED_IDLE, &idle) == 0) return;
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
}

}  // namespace

double PopulationStabilityIndex(const std::array<int64_t, kScoreBins>& expected,
                                const std::array<int64_t, kScoreBins>& actual) {
  int64_t total_expected = 0, total_actual = 0;
  for (int i = 0; i < kScoreBins; ++i) {
    total_expected += expected[i];
    total_actual += actual[i];
  }
  if (total_expected == 0 || total_actual == 0) return 0;
  constexpr double kFloor = 1e-4;
  double psi = 0;
  for (int i = 0; i < kScoreBins; ++i) {
    const double p = std::max(kFloor, static_cast<double>(expected[i]) / static_cast<double>(total_expected));
    const double q = std::max(kFloor, static_cast<double>(actual[i]) / static_cast<double>(total_actual));
    psi += (q - p) * std::log(q / p);
  }
  return psi;
}

void ShadowComparison::ToProto(v1::ShadowComparison* out) const {
  out->set_serving_version(serving_version);
  out->set_sampled(sampled);
  out->set_scored(scored);
  out->set_dropped(dropped);
  out->set_failed(failed);
  out->set_topk_overlap_mean(topk_overlap_mean);
  out->set_score_psi(score_psi);
  for (int64_t c : served_score_bins) out->add_served_score_bins(c);
  for (int64_t c : shadow_score_bins) out->add_shadow_score_bins(c);
  out->set_latency_samples(latency_samples);
  out->set_served_p50_seconds(served_p50_seconds);
  out->set_served_p99_seconds(served_p99_seconds);
  out->set_shadow_p50_seconds(shadow_p50_seconds);
  out->set_shadow_p99_seconds(shadow_p99_seconds);
  out->set_latency_ratio_p99(latency_ratio_p99);
}

absl::StatusOr<std::unique_ptr<ShadowScorer>> ShadowScorer::Create(ShadowScorerOptions options) {
  if (options.queue_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow queue_size: ", options.queue_size, " is not a positive number of jobs"));
  }
  if (!(options.max_cpu_share > 0 && options.max_cpu_share <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow max_cpu_share: ", options.max_cpu_share, " is not a share of one core in (0, 1]"));
  }
  return std::unique_ptr<ShadowScorer>(new ShadowScorer(std::move(options)));
}

ShadowScorer::ShadowScorer(ShadowScorerOptions options)
    : options_(std::move(options)), capacity_(options_.queue_size) {
  slots_.resize(static_cast<size_t>(capacity_));
  thread_ = std::thread([this] { Run(); });
}

ShadowScorer::Offered ShadowScorer::Offer(const ServingSet& set, absl::string_view request_id,
                                          const RecommendQuery& query, int64_t served_version,
                                          const RecommendResult& served) {
  const ServingSet::Member* shadow = set.Find(ServingRole::kShadow);
  const ServingSet::Member* serving = set.Find(ServingRole::kServing);
  if (shadow == nullptr || serving == nullptr || serving->version != served_version ||
      served.degraded != Degraded::kNone || stopped_.load(std::memory_order_relaxed) ||
      !InShare(request_id, shadow->share)) {
    return Offered::kNotOffered;
  }
  // Copied before the lock, so the lock is held only for a swap.
  thread_local Staging staging;
  const bool room = queued_hint_.load(std::memory_order_relaxed) < queue_size();
  if (room) {
    staging.events.assign(query.events.begin(), query.events.end());
    staging.exclude_items.assign(query.exclude_items.begin(), query.exclude_items.end());
    staging.served.assign(served.items.begin(), served.items.end());
  }
  if (!mu_.TryLock()) {
    busy_drop_version_.store(shadow->version, std::memory_order_relaxed);
    busy_drops_.fetch_add(1, std::memory_order_release);
    Dropped(shadow->version);
    return Offered::kDropped;
  }
  if (stop_) {
    mu_.Unlock();
    return Offered::kNotOffered;
  }
  OfferCounts& counts = CountsLocked(shadow->version);
  ++counts.sampled;
  if (!room || queued_ == queue_size()) {
    ++counts.dropped;
    mu_.Unlock();
    Dropped(shadow->version);
    return Offered::kDropped;
  }
  Job& slot = slots_[static_cast<size_t>((head_ + queued_) % queue_size())];
  slot.model = shadow->model;  // an empty slot holds none: no reference is dropped here
  slot.rollout_stats = shadow->stats;
  slot.shadow_version = shadow->version;
  slot.served_version = served_version;
  slot.events.swap(staging.events);
  slot.exclude_items.swap(staging.exclude_items);
  slot.served.swap(staging.served);
  slot.context = query.context;
  slot.n = query.n;
  slot.exclude_types = query.exclude_types;
  slot.per_category_cap = query.per_category_cap;
  slot.served_seconds = served.seconds.total;
  ++queued_;
  queued_hint_.store(queued_, std::memory_order_relaxed);
  mu_.Unlock();
  return Offered::kQueued;
}

ShadowScorer::OfferCounts& ShadowScorer::CountsLocked(int64_t version) {
  auto [it, added] = offers_.try_emplace(version);
  if (added && offers_.size() > kMaxShadowVersions) EraseOldestOtherThan(version, &offers_);
  return it->second;
}

void ShadowScorer::FoldBusyDropsLocked() {
  const int64_t busy = busy_drops_.exchange(0, std::memory_order_acquire);
  if (busy == 0) return;
  OfferCounts& counts = CountsLocked(busy_drop_version_.load(std::memory_order_relaxed));
  counts.sampled += busy;
  counts.dropped += busy;
}

void ShadowScorer::Dropped(int64_t version) const {
  if (options_.on_job) options_.on_job({ShadowJobResult::kDropped, version});
}

void ShadowScorer::Run() {
  if (options_.idle_priority) LowerThisThreadsPriority();
  omp_set_num_threads(1);  // as the workers: one oneDNN/OpenMP thread
  PipelineScratch scratch;
  RecommendResult result;
  Job job;
  while (true) {
    {
      MutexLock lock(&mu_);
      FoldBusyDropsLocked();
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || queued_ > 0; };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      std::swap(job, slots_[static_cast<size_t>(head_)]);  // the slot gets this thread's empty job
      head_ = (head_ + 1) % queue_size();
      --queued_;
      queued_hint_.store(queued_, std::memory_order_relaxed);
      running_job_ = true;
    }
    if (!WaitForIdleRequestPath()) {  // stopping: the job in hand counts as dropped
      {
        MutexLock lock(&mu_);
        ++CountsLocked(job.shadow_version).dropped;
        running_job_ = false;
      }
      Dropped(job.shadow_version);
      return;
    }
    if (options_.before_job) options_.before_job();
    const double cpu_seconds = Score(job, &scratch, &result);
    job.model.reset();  // see the file comment: never the last reference in the server
    job.rollout_stats.reset();
    MutexLock lock(&mu_);
    running_job_ = false;
    const double share = options_.max_cpu_share;
    if (share < 1) mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(cpu_seconds * (1 - share) / share));
  }
}

bool ShadowScorer::WaitForIdleRequestPath() {
  if (!options_.requests_in_flight) return true;
  while (options_.requests_in_flight() > 0) {
    if (stopped_.load(std::memory_order_relaxed)) return false;
    absl::SleepFor(options_.idle_poll);
  }
  return true;
}

double ShadowScorer::Score(const Job& job, PipelineScratch* scratch, RecommendResult* result) {
  RecommendQuery query;
  query.events = job.events;
  query.context = job.context;
  query.n = job.n;
  query.exclude_types = job.exclude_types;
  query.exclude_items = job.exclude_items;
  query.per_category_cap = job.per_category_cap;
  query.record_stage_costs = false;
  const double start = ThreadCpuSeconds();
  const absl::Status status = Recommend(*job.model, query, scratch, result);
  const double shadow_seconds = ThreadCpuSeconds() - start;

  ShadowJobResult outcome{status.ok() ? ShadowJobResult::kScored : ShadowJobResult::kFailed, job.shadow_version};
  if (status.ok()) {
    const size_t k = std::max(job.served.size(), result->items.size());
    size_t common = 0;
    for (const RecommendedItem& s : job.served) {
      for (const RecommendedItem& r : result->items) {
        if (r.item_id == s.item_id) {
          ++common;
          break;
        }
      }
    }
    outcome.topk_overlap = k == 0 ? 1.0 : static_cast<double>(common) / static_cast<double>(k);
  }
  {
    MutexLock lock(&stats_mu_);
    auto [it, added] = stats_.try_emplace(job.shadow_version);
    if (added && stats_.size() > kMaxShadowVersions) EraseOldestOtherThan(job.shadow_version, &stats_);
    Stats& stats = it->second;
    if (!status.ok()) {
      ++stats.failed;
    } else {
      stats.serving_version = job.served_version;
      ++stats.scored;
      stats.overlap_sum += outcome.topk_overlap;
      for (const RecommendedItem& item : job.served) ++stats.served_bins[ScoreBin(item.score)];
      for (const RecommendedItem& item : result->items) ++stats.shadow_bins[ScoreBin(item.score)];
      if (static_cast<int>(stats.served_seconds.size()) < kLatencyWindow) {
        stats.served_seconds.push_back(job.served_seconds);
        stats.shadow_seconds.push_back(shadow_seconds);
      } else {
        stats.served_seconds[stats.next] = job.served_seconds;
        stats.shadow_seconds[stats.next] = shadow_seconds;
        stats.next = (stats.next + 1) % kLatencyWindow;
      }
      outcome.score_psi = PopulationStabilityIndex(stats.served_bins, stats.shadow_bins);
    }
  }
  if (job.rollout_stats) {
    job.rollout_stats->RecordCall(status.code(), absl::Seconds(shadow_seconds), status.ok() ? result : nullptr);
    if (status.ok()) job.rollout_stats->RecordOverlap(outcome.topk_overlap);
  }
  if (options_.on_job) options_.on_job(outcome);
  return shadow_seconds;
}

std::optional<ShadowComparison> ShadowScorer::Comparison(int64_t version) const {
  ShadowComparison c;
  c.shadow_version = version;
  bool found = false;
  {
    MutexLock lock(&mu_);
    auto it = offers_.find(version);
    if (it != offers_.end()) {
      found = true;
      c.sampled = it->second.sampled;
      c.dropped = it->second.dropped;
    }
    // Busy drops not folded in yet (the shadow thread folds them when it next wakes).
    if (busy_drop_version_.load(std::memory_order_relaxed) == version) {
      const int64_t busy = busy_drops_.load(std::memory_order_acquire);
      found |= busy > 0;
      c.sampled += busy;
      c.dropped += busy;
    }
  }
  std::vector<double> served_seconds, shadow_seconds;
  {
    MutexLock lock(&stats_mu_);
    auto it = stats_.find(version);
    if (it != stats_.end()) {
      found = true;
      const Stats& s = it->second;
      c.serving_version = s.serving_version;
      c.scored = s.scored;
      c.failed = s.failed;
      c.topk_overlap_mean = s.scored > 0 ? s.overlap_sum / static_cast<double>(s.scored) : 0;
      c.served_score_bins = s.served_bins;
      c.shadow_score_bins = s.shadow_bins;
      served_seconds = s.served_seconds;
      shadow_seconds = s.shadow_seconds;
    }
  }
  if (!found) return std::nullopt;
  c.score_psi = PopulationStabilityIndex(c.served_score_bins, c.shadow_score_bins);
  c.latency_samples = static_cast<int>(served_seconds.size());
  c.served_p50_seconds = Quantile(served_seconds, 0.5);
  c.served_p99_seconds = Quantile(served_seconds, 0.99);
  c.shadow_p50_seconds = Quantile(shadow_seconds, 0.5);
  c.shadow_p99_seconds = Quantile(shadow_seconds, 0.99);
  c.latency_ratio_p99 = c.served_p99_seconds > 0 ? c.shadow_p99_seconds / c.served_p99_seconds : 0;
  return c;
}

bool ShadowScorer::WaitUntilIdle(absl::Time deadline) const {
  MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || (queued_ == 0 && !running_job_); };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void ShadowScorer::RequestStop() {
  MutexLock lock(&mu_);
  stop_ = true;
  stopped_.store(true, std::memory_order_relaxed);
}

void ShadowScorer::Stop() {
  MutexLock stop_lock(&stop_mu_);
  RequestStop();
  if (thread_.joinable()) thread_.join();
  // The queued jobs' models are released here, after the lock.
  std::vector<std::shared_ptr<const Model>> discarded;
  std::vector<int64_t> discarded_versions;
  {
    MutexLock lock(&mu_);
    for (; queued_ > 0; --queued_) {
      Job& job = slots_[static_cast<size_t>(head_)];
      ++CountsLocked(job.shadow_version).dropped;
      discarded.push_back(std::move(job.model));
      discarded_versions.push_back(job.shadow_version);
      head_ = (head_ + 1) % queue_size();
    }
    queued_hint_.store(0, std::memory_order_relaxed);
  }
  discarded.clear();
  for (int64_t version : discarded_versions) Dropped(version);
}

}  // namespace recserve
