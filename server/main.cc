// recserve: the recommendation inference server.
//
//   recserve --model_base_path=models/default --port=8500
//
// Serves the newest READY version under --model_base_path and hot-reloads new ones.
// SIGTERM/SIGINT drain gracefully (health NOT_SERVING, in-flight calls finish, exit 0);
// SIGHUP rescans the model directory at once.
#include <signal.h>

#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "compression/compress.h"
#include "engine/file_util.h"
#include "server/grpc_log.h"
#include "server/rollout.h"
#include "server/server.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address the Recommender service listens on");
ABSL_FLAG(int, port, 8500, "Port of the Recommender service (with health and reflection); 0 = any");
ABSL_FLAG(std::string, admin_host, "127.0.0.1", "Address of the admin service (keep it private)");
ABSL_FLAG(int, admin_port, 8501, "Port of the admin service; -1 = no admin service");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1",
          "Address of the Prometheus /metrics endpoint (0.0.0.0 for scrapes from other hosts, behind a "
          "network policy: the HTTP server holds a thread per connection)");
ABSL_FLAG(int, metrics_port, 9090, "Port of the Prometheus /metrics endpoint; 0 = any, -1 = off");
ABSL_FLAG(int, metrics_threads, 16,
          "HTTP threads of /metrics: connections served at once (an idle client holds one until "
          "--metrics_request_timeout)");
ABSL_FLAG(absl::Duration, metrics_request_timeout, absl::Seconds(2),
          "/metrics: a client must send its request (and read the answer) within this, or is dropped");
ABSL_FLAG(std::string, model_base_path, "models/default",
          "Directory of model versions (<base>/<version>/ with READY)");
ABSL_FLAG(absl::Duration, poll_interval, absl::Seconds(2),
          "How often to rescan --model_base_path for new versions; 0 = only on SIGHUP/admin");
ABSL_FLAG(int64_t, pin_version, 0, "Serve this version instead of the newest (0 = newest)");
ABSL_FLAG(bool, keep_previous, false, "Keep the replaced version loaded for instant rollback");
ABSL_FLAG(int, worker_threads, 0, "Engine worker threads (0 = number of cores)");
ABSL_FLAG(int, max_message_bytes, 1 << 20,
          "Largest request message accepted, in bytes (requests must be uncompressed: gzip and "
          "deflate are refused, since gRPC would inflate them before checking this limit)");
ABSL_FLAG(int, max_events, 1000, "Most events one request may carry");
ABSL_FLAG(int, max_n, 500, "Largest n a request may ask for");
ABSL_FLAG(int, max_exclude_items, 1000,
          "Most entries in each of a request's options.exclude_item_ids and options.exclude_items");
ABSL_FLAG(int, max_inflight, 256, "Queued + running requests before RESOURCE_EXHAUSTED");
ABSL_FLAG(int, shadow_queue, 256,
          "Requests queued for a shadow version's scoring; more are dropped (counted), never waited for");
ABSL_FLAG(double, shadow_cpu, 0.1,
          "Most of one core a shadow version's scoring takes, in (0, 1]; it also starts only when no request "
          "is in flight. Sampled requests it has no time for are dropped (counted)");
ABSL_FLAG(int, max_candidates, 0, "Candidates ranked per request (0 = the manifest's)");
ABSL_FLAG(int, embedding_k, 0, "Candidates from the embedding index (0 = the manifest's)");
ABSL_FLAG(int, covisit_k, 0, "Candidates from co-visitation (0 = the manifest's)");
ABSL_FLAG(int, popularity_k, -1, "Popular candidates for warm users (-1 = the manifest's)");
ABSL_FLAG(std::string, embedding_index, "",
          "Embedding recall index: exact | exact-int8 | hnsw (default: the manifest's)");
ABSL_FLAG(int, hnsw_ef, 300, "hnsw: query-time beam width (300: recall@100 ~0.96 on 1M items)");
ABSL_FLAG(bool, exclude_purchased, true, "Drop items the user purchased unless the request keeps them");
ABSL_FLAG(absl::Duration, max_clock_skew, absl::Hours(1), "How far in the future event times may be");
ABSL_FLAG(absl::Duration, drain_delay, absl::ZeroDuration(),
          "On SIGTERM: time between health NOT_SERVING and closing the listener");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "On SIGTERM: longest wait for in-flight requests");
ABSL_FLAG(absl::Duration, max_connection_age, absl::ZeroDuration(),
          "Send GOAWAY to a client connection this old (0 = never), so clients that hold "
          "one connection re-resolve and reach replicas added since");
ABSL_FLAG(int, max_concurrent_streams, 100,
          "Streams (calls) one client connection may hold open at once; one more closes the "
          "connection. HTTP/2 rapid reset needs a front proxy too (docs/operations.md)");
ABSL_FLAG(bool, idle_loader, false,
          "Load new versions on CPU time nothing else wants (SCHED_IDLE: p99 during reloads nearer "
          "steady); a load still running after 2 s continues at normal priority. Needs CAP_SYS_NICE "
          "or RLIMIT_NICE >= 20, else nice 10. Default: nice 10");
ABSL_FLAG(int, load_threads, 1,
          "OpenMP threads a model load may use (calibration and gate scoring on oneDNN); 1 keeps a "
          "load to one core and no spinning OpenMP team beside the request workers; 0 = OpenMP's own "
          "default (OMP_NUM_THREADS, else one per core)");
ABSL_FLAG(int, warmup_requests, 64, "Requests run on a new version before it serves");
ABSL_FLAG(bool, compression_fallback, true,
          "When a version's compression fails the accuracy gate, serve the next form (int8 with other "
          "ranges, mixed precision, fp32) instead of refusing the version; false: refuse it");
ABSL_FLAG(std::string, compression, "",
          "Ranker compression at load: none | int8 | prune+int8 (default: the manifest's, int8 "
          "for trainer-made bundles)");
ABSL_FLAG(double, sparsity, -1, "prune+int8: unstructured sparsity of hidden layers (-1: manifest's)");
ABSL_FLAG(double, structured_ratio, -1, "prune+int8: share of hidden neurons removed (-1: manifest's)");
ABSL_FLAG(double, max_auc_drop, -1, "Accuracy gate: largest AUC drop vs fp32 (-1: manifest's)");
ABSL_FLAG(double, max_logloss_rise, -1, "Accuracy gate: largest logloss rise vs fp32 (-1: manifest's)");
ABSL_FLAG(std::string, impression_log_dir, "",
          "Write served answers (a sampled share) here as impression records; empty = off");
ABSL_FLAG(double, impression_log_share, 0.01, "Share of answered calls written to the impression log, (0, 1]");
ABSL_FLAG(int, impression_log_queue, 4096, "Impression records waiting for the writer before new ones are dropped");
ABSL_FLAG(int64_t, impression_log_file_mb, 64, "An impression log file is closed at this size (MiB) ...");
ABSL_FLAG(absl::Duration, impression_log_file_age, absl::Minutes(10), "... or this age");
ABSL_FLAG(int64_t, impression_log_budget_mb, 1024,
          "The impression log directory's files at most (MiB): the oldest are deleted past it");
ABSL_FLAG(bool, impression_hash_users, false,
          "Store user ids in the impression log as salted SHA-256 prefixes (needs --impression_user_salt)");
ABSL_FLAG(std::string, impression_user_salt, "", "Salt of --impression_hash_users");
ABSL_FLAG(std::string, impression_events, "full",
          "Events kept in impression records: full (as sent) or digest (count and hash only)");
ABSL_FLAG(std::string, rollout, "immediate",
          "How a new version comes to serve while another serves: immediate (all traffic once loaded), "
          "canary (--canary_share of users by user_id hash, promoted or rolled back by the --rollout_* "
          "rules) or shadow (scores --canary_share of requests off the critical path). A manifest's "
          "rollout overrides it per version");
ABSL_FLAG(double, canary_share, 0.05, "Share of users a canary answers, in (0, 1) (shadow: of requests, in (0, 1])");
ABSL_FLAG(double, rollout_max_error_ratio, 2.0,
          "Roll back a canary whose error rate is above this times max(serving's, --rollout_error_floor); 0: off");
ABSL_FLAG(double, rollout_error_floor, 0.01, "Error rate below which serving's rate counts as this, in [0, 1]");
ABSL_FLAG(double, rollout_max_p99_ratio, 2.0, "Roll back a canary whose p99 latency is above this times serving's; 0: off");
ABSL_FLAG(double, rollout_max_score_psi, 0.2,
          "Roll back a canary whose served scores drift from serving's by a PSI above this; 0: off");
ABSL_FLAG(double, rollout_min_topk_overlap, 0.5,
          "Roll back a version whose mean top-k overlap with serving is below this (only with shadow "
          "samples); 0: off");
ABSL_FLAG(int64_t, rollout_min_requests, 1000, "Calls the canary and serving must each have before rules are judged");
ABSL_FLAG(absl::Duration, rollout_window, absl::Minutes(5),
          "A canary that holds every rule this long (and has --rollout_min_requests) is promoted");
ABSL_FLAG(std::string, port_file, "",
          "If set, write \"<port> <admin_port> <metrics_port>\" here once listening (scripts, tests)");

namespace {

int Run() {
  // Signals go to one thread that waits for them; every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  recserve::ServerOptions options;
  options.listen_address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  options.admin_address = absl::GetFlag(FLAGS_admin_port) < 0
                              ? ""
                              : absl::StrCat(absl::GetFlag(FLAGS_admin_host), ":",
                                             absl::GetFlag(FLAGS_admin_port));
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    options.metrics_address =
        absl::StrCat(absl::GetFlag(FLAGS_metrics_host), ":", absl::GetFlag(FLAGS_metrics_port));
  }
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  options.worker_threads =
      absl::GetFlag(FLAGS_worker_threads) > 0 ? absl::GetFlag(FLAGS_worker_threads) : std::max(1, cores);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.metrics_http.threads = absl::GetFlag(FLAGS_metrics_threads);
  options.metrics_http.request_timeout = absl::GetFlag(FLAGS_metrics_request_timeout);
  options.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.limits.max_events = absl::GetFlag(FLAGS_max_events);
  options.limits.max_n = absl::GetFlag(FLAGS_max_n);
  options.limits.max_exclude_items = absl::GetFlag(FLAGS_max_exclude_items);
  options.limits.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  options.limits.max_clock_skew = absl::GetFlag(FLAGS_max_clock_skew);
  options.limits.exclude_purchased = absl::GetFlag(FLAGS_exclude_purchased);
  options.shadow_queue = absl::GetFlag(FLAGS_shadow_queue);
  options.shadow_cpu = absl::GetFlag(FLAGS_shadow_cpu);
  recserve::ModelManagerOptions& m = options.manager;
  m.base_path = absl::GetFlag(FLAGS_model_base_path);
  m.poll_interval = absl::GetFlag(FLAGS_poll_interval);
  m.pinned_version = absl::GetFlag(FLAGS_pin_version);
  m.keep_previous = absl::GetFlag(FLAGS_keep_previous);
  m.warmup_requests = absl::GetFlag(FLAGS_warmup_requests);
  m.load_thread_idle = absl::GetFlag(FLAGS_idle_loader);
  m.load_threads = absl::GetFlag(FLAGS_load_threads);
  m.model_options.recall.max_candidates = absl::GetFlag(FLAGS_max_candidates);
  m.model_options.recall.embedding_k = absl::GetFlag(FLAGS_embedding_k);
  m.model_options.recall.covisit_k = absl::GetFlag(FLAGS_covisit_k);
  m.model_options.recall.popularity_k = absl::GetFlag(FLAGS_popularity_k);
  m.model_options.index.kind = absl::GetFlag(FLAGS_embedding_index);
  m.model_options.index.hnsw_ef_search = absl::GetFlag(FLAGS_hnsw_ef);
  m.model_options.index.build_threads = options.worker_threads;
  recserve::PolicyOverrides compression;
  if (!absl::GetFlag(FLAGS_compression).empty()) compression.mode = absl::GetFlag(FLAGS_compression);
  compression.fallback = absl::GetFlag(FLAGS_compression_fallback);
  if (absl::GetFlag(FLAGS_sparsity) >= 0) compression.unstructured_sparsity = absl::GetFlag(FLAGS_sparsity);
  if (absl::GetFlag(FLAGS_structured_ratio) >= 0) {
    compression.structured_ratio = absl::GetFlag(FLAGS_structured_ratio);
  }
  if (absl::GetFlag(FLAGS_max_auc_drop) >= 0) compression.max_auc_drop = absl::GetFlag(FLAGS_max_auc_drop);
  if (absl::GetFlag(FLAGS_max_logloss_rise) >= 0) {
    compression.max_logloss_rise = absl::GetFlag(FLAGS_max_logloss_rise);
  }
  {
    // Refuse bad flag values at start-up rather than at every load.
    absl::StatusOr<recserve::CompressionPolicy> policy =
        recserve::ResolvePolicy(recserve::v1::Manifest(), compression);
    if (!policy.ok()) {
      std::fprintf(stderr, "recserve: %s\n", policy.status().ToString().c_str());
      return 2;
    }
  }
  {
    absl::StatusOr<recserve::RolloutMode> mode = recserve::ParseRolloutMode(absl::GetFlag(FLAGS_rollout));
    if (!mode.ok()) {
      std::fprintf(stderr, "recserve: --rollout: %s\n", std::string(mode.status().message()).c_str());
      return 2;
    }
    recserve::RolloutOptions& r = m.rollout;
    r.mode = *mode;
    r.share = absl::GetFlag(FLAGS_canary_share);
    r.rules.max_error_ratio = absl::GetFlag(FLAGS_rollout_max_error_ratio);
    r.rules.error_floor = absl::GetFlag(FLAGS_rollout_error_floor);
    r.rules.max_p99_ratio = absl::GetFlag(FLAGS_rollout_max_p99_ratio);
    r.rules.max_score_psi = absl::GetFlag(FLAGS_rollout_max_score_psi);
    r.rules.min_topk_overlap = absl::GetFlag(FLAGS_rollout_min_topk_overlap);
    r.rules.min_requests = absl::GetFlag(FLAGS_rollout_min_requests);
    r.rules.window = absl::GetFlag(FLAGS_rollout_window);
    if (absl::Status valid = recserve::ValidateRolloutOptions(r); !valid.ok()) {
      std::fprintf(stderr, "recserve: %s\n", std::string(valid.message()).c_str());
      return 2;
    }
  }
  m.on_rollout_end = [](int64_t version, const std::string& verdict) {
    std::fprintf(stderr, "recserve: roll-out of version %lld %s\n", static_cast<long long>(version), verdict.c_str());
  };
  m.check = recserve::InstallCompression(compression, &m.model_options);
  m.on_load = [](int64_t version, const absl::Status& result) {
    if (result.ok()) {
      std::fprintf(stderr, "recserve: version %lld loaded\n", static_cast<long long>(version));
    } else {
      std::fprintf(stderr, "recserve: version %lld refused: %s\n", static_cast<long long>(version),
                   result.ToString().c_str());
    }
  };
  m.on_serving_change = [](int64_t version) {
    std::fprintf(stderr, "recserve: now serving version %lld\n", static_cast<long long>(version));
  };
  if (options.limits.max_n < 1 || options.limits.max_events < 0 || options.limits.max_inflight < 1 ||
      options.limits.max_exclude_items < 0 || options.limits.max_exclude_items > 1000000 ||
      options.max_message_bytes < 1024) {
    // (Each worker reserves room for 2 x --max_exclude_items ids up front.)
    std::fprintf(stderr, "recserve: limits must be positive (--max_n, --max_inflight, "
                         "--max_message_bytes >= 1024; --max_events >= 0; "
                         "--max_exclude_items in [0, 1000000])\n");
    return 2;
  }
  {
    recserve::ImpressionLogOptions& log = options.impressions;
    log.dir = absl::GetFlag(FLAGS_impression_log_dir);
    log.share = absl::GetFlag(FLAGS_impression_log_share);
    log.queue_records = absl::GetFlag(FLAGS_impression_log_queue);
    log.max_file_bytes = absl::GetFlag(FLAGS_impression_log_file_mb) << 20;
    log.max_file_age = absl::GetFlag(FLAGS_impression_log_file_age);
    log.max_total_bytes = absl::GetFlag(FLAGS_impression_log_budget_mb) << 20;
    log.hash_users = absl::GetFlag(FLAGS_impression_hash_users);
    log.user_salt = absl::GetFlag(FLAGS_impression_user_salt);
    const std::string events = absl::GetFlag(FLAGS_impression_events);
    if (events != "full" && events != "digest") {
      std::fprintf(stderr, "recserve: --impression_events must be full or digest, not \"%s\"\n", events.c_str());
      return 2;
    }
    log.full_events = events == "full";
  }
  if (options.shadow_queue < 1 || options.shadow_queue > 65536) {
    // (Each queued job keeps buffers for a whole request: events, exclusions, answer.)
    std::fprintf(stderr, "recserve: --shadow_queue must be between 1 and 65536, not %d\n", options.shadow_queue);
    return 2;
  }
  if (!(options.shadow_cpu > 0 && options.shadow_cpu <= 1)) {
    std::fprintf(stderr, "recserve: --shadow_cpu must be a share of one core in (0, 1], not %g\n", options.shadow_cpu);
    return 2;
  }
  if (m.load_threads < 0 || m.load_threads > 1024) {
    std::fprintf(stderr, "recserve: --load_threads must be between 0 (one per core) and 1024, not %d\n",
                 m.load_threads);
    return 2;
  }
  if (options.metrics_http.threads < 1 || options.metrics_http.threads > 1024 ||
      options.metrics_http.request_timeout < absl::Milliseconds(1) ||
      options.metrics_http.request_timeout > absl::Minutes(10)) {
    std::fprintf(stderr, "recserve: --metrics_threads must be in [1, 1024] and --metrics_request_timeout in "
                         "[1ms, 10m]\n");
    return 2;
  }
  if (options.max_connection_age < absl::ZeroDuration() || options.max_connection_age > absl::Hours(24 * 20)) {
    std::fprintf(stderr, "recserve: --max_connection_age must be between 0 (never) and 480h\n");
    return 2;
  }

  if (options.max_concurrent_streams < 1 || options.max_concurrent_streams > 100000) {
    std::fprintf(stderr, "recserve: --max_concurrent_streams must be between 1 and 100000, not %d\n",
                 options.max_concurrent_streams);
    return 2;
  }

  absl::StatusOr<std::unique_ptr<recserve::RecserveServer>> server =
      recserve::RecserveServer::Create(std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "recserve: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "recserve: listening on port %d (admin %d, metrics %d), models from %s\n",
               (*server)->port(), (*server)->admin_port(), (*server)->metrics_port(),
               absl::GetFlag(FLAGS_model_base_path).c_str());
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    absl::Status written = recserve::WriteFileAtomically(
        absl::GetFlag(FLAGS_port_file),
        absl::StrCat((*server)->port(), " ", (*server)->admin_port(), " ", (*server)->metrics_port(), "\n"));
    if (!written.ok()) {
      std::fprintf(stderr, "recserve: --port_file: %s\n", written.ToString().c_str());
      return 1;
    }
  }

  while (true) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGHUP) {
      std::fprintf(stderr, "recserve: SIGHUP, rescanning models\n");
      (*server)->manager().RequestScan();
      continue;
    }
    std::fprintf(stderr, "recserve: %s, draining\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    const absl::Time start = absl::Now();
    (*server)->Drain(absl::GetFlag(FLAGS_drain_delay), absl::GetFlag(FLAGS_shutdown_grace));
    std::fprintf(stderr, "recserve: drained in %.3f s\n", absl::ToDoubleSeconds(absl::Now() - start));
    break;
  }
  server->reset();
  std::fprintf(stderr, "recserve: stopped\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  recserve::InstallRateLimitedGrpcLog();  // before gRPC can write a line
  absl::SetProgramUsageMessage(
      "recserve: recommendation inference server.\n"
      "  recserve --model_base_path=models/default [--port=8500] [--admin_port=8501]\n"
      "Flags below; see README.md for the model bundle layout.");
  absl::ParseCommandLine(argc, argv);
  return Run();
}
