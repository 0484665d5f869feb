#include "server/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#ifndef RECSERVE_VERSION
#define RECSERVE_VERSION "dev"
#endif
#ifndef RECSERVE_GIT_SHA
#define RECSERVE_GIT_SHA "unknown"
#endif

namespace recserve {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// The policy label values of recserve_model_compression (Metrics::kForms).
constexpr const char* kCompressionForms[] = {"none", "int8", "prune+int8", "mixed"};

// Index in kCompressionForms of a figures' compression ("mixed(int8, layer 0 fp32)" is
// "mixed"), or -1.
int CompressionFormIndex(const std::string& form) {
  if (absl::StartsWith(form, "mixed")) return 3;
  if (form == "fp32") return 0;  // a ranker built without compression (Ranker::kind)
  for (int f = 0; f < 3; ++f) {
    if (form == kCompressionForms[f]) return f;
  }
  return -1;
}

// ~50 us to ~1 s, roughly x2 per bucket.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0};
}

// recserve_score: served probabilities in 20 equal bins over [0, 1].
const Histogram::BucketBoundaries& ScoreBuckets() {
  static const Histogram::BucketBoundaries* const buckets = [] {
    auto* b = new Histogram::BucketBoundaries;
    for (int i = 1; i <= 20; ++i) b->push_back(i / 20.0);
    return b;
  }();
  return *buckets;
}

// The index of `score`'s bucket among ScoreBuckets()'s bounds and +Inf: the first bound
// at or above it (Prometheus's `le`, as Histogram::Observe chooses). floor(score * 20) is
// that bin or, for a score on a bound (0.25: bin 5, bound 0.25 is bin 4's), one above;
// never below, since a float above a bound exceeds it by more than the bound's rounding.
int ScoreBin(float score) {
  const Histogram::BucketBoundaries& bounds = ScoreBuckets();
  const double s = score;
  int bin = s > 0 ? static_cast<int>(std::min(s, 1.0) * static_cast<double>(bounds.size())) : 0;
  while (bin > 0 && bounds[bin - 1] >= s) --bin;
  return bin;
}

// The request path's key of a (version, role).
int64_t SlotKey(int64_t version, ServingRole role) { return version * 4 + static_cast<int64_t>(role); }

// The standard process_* metrics, read from /proc when scraped.
class ProcessCollector : public prometheus::Collectable {
 public:
  ProcessCollector() : start_seconds_(StartTime()) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    auto family = [&](const char* name, const char* help, prometheus::MetricType type, double v) {
      prometheus::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = type;
      prometheus::ClientMetric m;
      if (type == prometheus::MetricType::Counter) m.counter.value = v;
      else m.gauge.value = v;
      f.metric.push_back(m);
      out.push_back(std::move(f));
    };
    family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
           prometheus::MetricType::Counter, CpuSeconds());
    family("process_resident_memory_bytes", "Resident memory size in bytes.", prometheus::MetricType::Gauge,
           ResidentBytes());
    family("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
           prometheus::MetricType::Gauge, start_seconds_);
    return out;
  }

 private:
  static std::vector<std::string> StatFields() {
    std::ifstream in("/proc/self/stat");
    std::string line;
    std::getline(in, line);
    std::vector<std::string> fields;
    const size_t close = line.rfind(')');
    if (close == std::string::npos) return fields;
    std::istringstream rest(line.substr(close + 2));
    std::string f;
    while (rest >> f) fields.push_back(f);
    return fields;  // fields[0] is field 3 (state)
  }
  static double CpuSeconds() {
    const auto f = StatFields();
    if (f.size() < 13) return 0;
    return (std::stod(f[11]) + std::stod(f[12])) / ::sysconf(_SC_CLK_TCK);  // utime, stime
  }
  static double ResidentBytes() {
    std::ifstream in("/proc/self/statm");
    double pages = 0, resident = 0;
    in >> pages >> resident;
    return resident * ::sysconf(_SC_PAGESIZE);
  }
  static double StartTime() {
    const auto f = StatFields();
    std::ifstream uptime_in("/proc/uptime");
    double uptime = 0;
    uptime_in >> uptime;
    if (f.size() < 20) return 0;
    const double started_after_boot = std::stod(f[19]) / ::sysconf(_SC_CLK_TCK);
    const double boot = static_cast<double>(::time(nullptr)) - uptime;
    return boot + started_after_boot;
  }
  double start_seconds_;
};

class CallbackGauge : public prometheus::Collectable {
 public:
  CallbackGauge(std::string name, std::string help, std::function<int()> fn)
      : name_(std::move(name)), help_(std::move(help)), fn_(std::move(fn)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily f;
    f.name = name_;
    f.help = help_;
    f.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric m;
    m.gauge.value = fn_ ? fn_() : 0;
    f.metric.push_back(m);
    return {f};
  }

 private:
  std::string name_, help_;
  std::function<int()> fn_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& bind_address,
                                                        const MetricsHttpOptions& http,
                                                        std::function<int()> inflight) {
  std::unique_ptr<Metrics> m(new Metrics());
  m->registry_ = std::make_shared<prometheus::Registry>();
  auto& reg = *m->registry_;
  m->request_seconds_ = &BuildHistogram().Name("recserve_request_duration_seconds")
                              .Help("Recommend latency from arrival to answer, by gRPC status code, model "
                                    "version and role (version \"\", role none: no version answered).")
                              .Register(reg);
  m->requests_ = &BuildCounter().Name("recserve_requests_total")
                      .Help("Recommend calls by gRPC status code, model version and role (version \"\", "
                            "role none: refused before a version was chosen).")
                      .Register(reg);
  m->stages_ = &BuildHistogram().Name("recserve_stage_duration_seconds")
                    .Help("Time per request in each engine stage, by model version and role.").Register(reg);
  m->candidates_ = &BuildHistogram().Name("recserve_candidates")
                        .Help("Candidates per request proposed by each recall source, by model version and role.")
                        .Register(reg);
  m->unknown_items_ = &BuildCounter().Name("recserve_unknown_items_total")
                           .Help("Request events skipped because their item id is not in the version's catalog.")
                           .Register(reg);
  m->non_finite_scores_ = &BuildCounter().Name("recserve_non_finite_scores_total")
                               .Help("Candidates the ranker scored NaN or infinite (its arithmetic overflowed), "
                                     "answered with the lowest score, 0.")
                               .Register(reg);
  m->degraded_ = &BuildCounter().Name("recserve_degraded_total")
                      .Help("Answers the deadline left no time for the full pipeline, by the stage they "
                            "stopped at: fewer_candidates, recall_order, popularity.")
                      .Register(reg);
  m->score_ = &BuildHistogram().Name("recserve_score")
                   .Help("Scores (click probabilities) of the items ranked answers returned, one per item, by "
                         "model version and role.")
                   .Register(reg);
  m->unattributed_ = m->AddSeries("", RoleName(ServingRole::kNone), /*answered=*/false);
  m->shed_ = &BuildCounter().Name("recserve_shed_requests_total")
                  .Help("Requests answered RESOURCE_EXHAUSTED at the in-flight cap.").Register(reg).Add({});
  auto& reloads = BuildCounter().Name("recserve_model_reloads_total").Help("Model version load attempts by result.").Register(reg);
  m->reload_success_ = &reloads.Add({{"result", "success"}});
  m->reload_failure_ = &reloads.Add({{"result", "failure"}});
  m->model_version_ = &BuildGauge().Name("recserve_model_version").Help("Serving model version, by model name.").Register(reg);
  m->sparsity_ = &BuildGauge().Name("recserve_model_sparsity").Help("Fraction of zero ranker weights as served.").Register(reg).Add({});
  auto& size = BuildGauge().Name("recserve_model_size_bytes").Help("Ranker weight bytes, fp32 and as served.").Register(reg);
  m->size_fp32_ = &size.Add({{"form", "fp32"}});
  m->size_served_ = &size.Add({{"form", "served"}});
  m->auc_delta_ = &BuildGauge().Name("recserve_model_auc_delta")
                       .Help("Served minus fp32 AUC on the calibration rows at load.").Register(reg).Add({});
  auto& compression = BuildGauge().Name("recserve_model_compression")
                          .Help("1 on the ranker form the serving version runs (none, int8, prune+int8, mixed "
                                "precision), 0 on the others.")
                          .Register(reg);
  static_assert(sizeof(kCompressionForms) / sizeof(kCompressionForms[0]) == kForms);
  for (int f = 0; f < kForms; ++f) m->compression_[f] = &compression.Add({{"policy", kCompressionForms[f]}});
  m->compression_fallback_ = &BuildGauge().Name("recserve_model_compression_fallback")
                                  .Help("1 when the serving version runs another ranker form than its "
                                        "compression policy asked for, because the accuracy gate refused that "
                                        "one (recserve-cli status: the reason).")
                                  .Register(reg).Add({});
  BuildGauge().Name("recserve_build_info").Help("recserve build.").Register(reg)
      .Add({{"version", RECSERVE_VERSION}, {"git_sha", RECSERVE_GIT_SHA}}).Set(1);
  try {
    // civetweb's options: request_timeout_ms bounds each read and write of a request, so
    // an idle or slow client gives its thread back; keep-alive stays off (one request per
    // connection).
    m->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", bind_address, "num_threads", absl::StrCat(http.threads), "request_timeout_ms",
        absl::StrCat(absl::ToInt64Milliseconds(http.request_timeout))});
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", bind_address, ": ", e.what()));
  }
  // The exposer holds weak pointers: this object keeps the collectables alive.
  m->exposer_->RegisterCollectable(m->registry_);
  m->process_ = std::make_shared<ProcessCollector>();
  m->exposer_->RegisterCollectable(m->process_);
  m->inflight_ = std::make_shared<CallbackGauge>("recserve_inflight_requests",
                                                 "Recommend calls queued or running.", std::move(inflight));
  m->exposer_->RegisterCollectable(m->inflight_);
  return m;
}

void Metrics::Expose(const std::shared_ptr<prometheus::Collectable>& collectable) {
  exposer_->RegisterCollectable(collectable);
}

Metrics::~Metrics() {
  for (Slot& slot : slots_) delete slot.series;  // the registry owns the children
}

int Metrics::port() const {
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

std::unique_ptr<Metrics::Series> Metrics::AddSeries(const std::string& version, const char* role, bool answered) {
  auto series = std::make_unique<Series>();
  for (int code = 0; code < kCodes; ++code) {
    const std::map<std::string, std::string> labels = {
        {"method", "Recommend"},
        {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))},
        {"version", version},
        {"role", role}};
    series->request_seconds[code] = &request_seconds_->Add(labels, LatencyBuckets());
    series->requests[code] = &requests_->Add(labels);
  }
  if (!answered) return series;
  auto with = [&](const char* name, const char* value) -> std::map<std::string, std::string> {
    return {{name, value}, {"version", version}, {"role", role}};
  };
  series->stage_recall = &stages_->Add(with("stage", "recall"), LatencyBuckets());
  series->stage_features = &stages_->Add(with("stage", "features"), LatencyBuckets());
  series->stage_rank = &stages_->Add(with("stage", "rank"), LatencyBuckets());
  series->stage_total = &stages_->Add(with("stage", "total"), LatencyBuckets());
  const Histogram::BucketBoundaries counts = {0, 10, 25, 50, 100, 200, 400, 800, 1600};
  series->candidates[0] = &candidates_->Add(with("source", "embedding"), counts);
  series->candidates[1] = &candidates_->Add(with("source", "covisit"), counts);
  series->candidates[2] = &candidates_->Add(with("source", "popularity"), counts);
  const std::map<std::string, std::string> labels = {{"version", version}, {"role", role}};
  series->unknown_items = &unknown_items_->Add(labels);
  series->non_finite_scores = &non_finite_scores_->Add(labels);
  for (Degraded d : {Degraded::kFewerCandidates, Degraded::kRecallOrder, Degraded::kPopularity}) {
    series->degraded[static_cast<int>(d)] = &degraded_->Add(with("stage", DegradedName(d)));
  }
  series->score = &score_->Add(labels, ScoreBuckets());
  return series;
}

void Metrics::RemoveSeries(const Series& s) {
  for (int code = 0; code < kCodes; ++code) {
    request_seconds_->Remove(s.request_seconds[code]);
    requests_->Remove(s.requests[code]);
  }
  for (Histogram* h : {s.stage_recall, s.stage_features, s.stage_rank, s.stage_total}) stages_->Remove(h);
  for (Histogram* h : s.candidates) candidates_->Remove(h);
  unknown_items_->Remove(s.unknown_items);
  non_finite_scores_->Remove(s.non_finite_scores);
  for (prometheus::Counter* c : s.degraded) {
    if (c != nullptr) degraded_->Remove(c);
  }
  score_->Remove(s.score);
}

void Metrics::ObserveRole(int64_t version, ServingRole role) {
  if (role == ServingRole::kNone) return;
  const int64_t key = SlotKey(version, role);
  MutexLock lock(&roles_mu_);
  Slot* free = nullptr;
  for (Slot& slot : slots_) {
    const int64_t k = slot.key.load(std::memory_order_relaxed);  // only writers store, under roles_mu_
    if (k == key) return;
    if (k == kFreeSlot && free == nullptr) free = &slot;
  }
  if (free == nullptr) {
    std::fprintf(stderr, "recserve: metrics: %d (version, role) pairs have series already; version %lld as %s "
                 "is counted as answered by no version\n", kSlots, static_cast<long long>(version), RoleName(role));
    return;
  }
  // A freed slot's series were deleted when it was freed: nothing reads this one.
  free->series = AddSeries(absl::StrCat(version), RoleName(role), /*answered=*/true).release();
  free->key.store(key, std::memory_order_seq_cst);
}

void Metrics::ObserveUnloaded(int64_t version) {
  MutexLock lock(&roles_mu_);
  for (Slot& slot : slots_) {
    const int64_t k = slot.key.load(std::memory_order_relaxed);
    if (k == kFreeSlot || k / 4 != version) continue;
    slot.key.store(kFreeSlot, std::memory_order_seq_cst);
    // Requests that matched the key before it went: they record for microseconds.
    while (slot.recording.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
    std::unique_ptr<Series> series(slot.series);
    slot.series = nullptr;
    RemoveSeries(*series);
  }
}

void Metrics::ObserveRequest(const RequestOutcome& o) {
  if (o.role != ServingRole::kNone) {
    const int64_t key = SlotKey(o.version, o.role);
    for (Slot& slot : slots_) {
      if (slot.key.load(std::memory_order_acquire) != key) continue;
      slot.recording.fetch_add(1, std::memory_order_seq_cst);
      const bool held = slot.key.load(std::memory_order_seq_cst) == key;
      if (held) Record(o, *slot.series);
      slot.recording.fetch_sub(1, std::memory_order_release);
      if (held) return;
      break;  // removed meanwhile
    }
  }
  Record(o, *unattributed_);
}

void Metrics::Record(const RequestOutcome& o, const Series& s) {
  const int code = static_cast<int>(o.code);
  if (code >= 0 && code < kCodes) {
    s.request_seconds[code]->Observe(o.seconds);
    s.requests[code]->Increment();
  }
  if (o.code == absl::StatusCode::kResourceExhausted) shed_->Increment();
  if (o.result == nullptr || s.score == nullptr) return;
  const RecommendResult& r = *o.result;
  if (r.degraded != Degraded::kNone) s.degraded[static_cast<int>(r.degraded)]->Increment();
  // Stages a degraded answer skipped are not observed as taking no time.
  if (r.degraded != Degraded::kPopularity) s.stage_recall->Observe(r.seconds.recall);
  if (r.ranked > 0) {
    s.stage_features->Observe(r.seconds.features);
    s.stage_rank->Observe(r.seconds.rank);
  }
  s.stage_total->Observe(r.seconds.total);
  for (int i = 0; i < 3; ++i) s.candidates[i]->Observe(r.candidates_by_source[i]);
  if (r.unknown_items > 0) s.unknown_items->Increment(r.unknown_items);
  if (r.non_finite_scores > 0) s.non_finite_scores->Increment(r.non_finite_scores);
  // Unranked answers (recall order, popularity) carry no scores (all 0), not a drift.
  if (r.ranked > 0 && !r.items.empty()) {
    // Binned here and added in one call: Histogram::Observe takes the histogram's lock
    // per value, and an answer can hold 500 items.
    thread_local std::vector<double> bins;
    bins.assign(ScoreBuckets().size() + 1, 0.0);
    double sum = 0;
    for (const RecommendedItem& item : r.items) {
      ++bins[ScoreBin(item.score)];
      sum += item.score;
    }
    s.score->ObserveMultiple(bins, sum);
  }
}

void Metrics::ObserveLoad(int64_t, const absl::Status& result) {
  (result.ok() ? reload_success_ : reload_failure_)->Increment();
}

void Metrics::ObserveServing(const Model& model, const v1::ModelFigures& figures) {
  ObserveRole(model.version(), ServingRole::kServing);
  model_version_->Add({{"model", model.name()}}).Set(static_cast<double>(model.version()));
  sparsity_->Set(figures.sparsity());
  size_fp32_->Set(static_cast<double>(figures.fp32_bytes()));
  size_served_->Set(static_cast<double>(figures.served_bytes()));
  auc_delta_->Set(figures.auc_delta());
  const int form = CompressionFormIndex(figures.compression());
  for (int f = 0; f < kForms; ++f) compression_[f]->Set(f == form ? 1 : 0);
  const bool fallback = !figures.compression_requested().empty() &&
                        figures.compression() != figures.compression_requested();
  compression_fallback_->Set(fallback ? 1 : 0);
}

}  // namespace recserve
