#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "server/listener.h"

namespace recserve {
namespace {

// Requests must come uncompressed. gRPC 1.51 checks a compressed message against the
// receive limit (--max_message_bytes) at its compressed size, then inflates all of it
// before the decompressed size is checked: a 1 MiB gzip body became 1 GiB of server
// memory per call. With only identity enabled, a call whose grpc-encoding is gzip or
// deflate is cancelled when its headers arrive (UNIMPLEMENTED, "Compression algorithm
// 'gzip' is disabled"), before any of its message is read. Responses stay uncompressed
// (no default compression level is set).
void AcceptOnlyUncompressedRequests(grpc::ServerBuilder* builder) {
  builder->SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder->SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RecserveServer>> RecserveServer::Create(ServerOptions options) {
  std::unique_ptr<RecserveServer> s(new RecserveServer());
  s->options_ = std::move(options);
  RecserveServer* self = s.get();
  ModelManagerOptions manager_options = s->options_.manager;
  auto user_callback = manager_options.on_serving_change;
  manager_options.before_publish = [self](const Model& model) {
    self->recommender_->WarmWorkers(model);
    // Before the version can answer: its requests find their series (metrics.h).
    if (self->metrics_) self->metrics_->ObserveRole(model.version(), ServingRole::kServing);
  };
  manager_options.before_role = [self](int64_t version, ServingRole role) {
    if (self->metrics_) self->metrics_->ObserveRole(version, role);
  };
  manager_options.start_paused = true;
  auto user_on_load = manager_options.on_load;
  manager_options.on_load = [self, user_on_load](int64_t version, const absl::Status& result) {
    if (self->metrics_) self->metrics_->ObserveLoad(version, result);
    if (user_on_load) user_on_load(version, result);
  };
  manager_options.on_published = [self](const Model& model, const v1::ModelFigures& figures) {
    if (self->metrics_) self->metrics_->ObserveServing(model, figures);
  };
  auto user_on_unloaded = manager_options.on_unloaded;
  manager_options.on_unloaded = [self, user_on_unloaded](int64_t version) {
    if (self->metrics_) self->metrics_->ObserveUnloaded(version);
    if (user_on_unloaded) user_on_unloaded(version);
  };
  manager_options.on_serving_change = [self, user_callback](int64_t version) {
    self->UpdateReadiness();
    if (user_callback) user_callback(version);
  };

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  s->pool_ = std::make_unique<WorkerPool>(s->options_.worker_threads);
  // The manager starts loading only once the services exist (its callbacks use them);
  // UpdateReadiness tolerates a gRPC server that is not built yet, and readiness is set again
  // below.
  ASSIGN_OR_RETURN(s->manager_, ModelManager::Create(std::move(manager_options)));
  if (!s->options_.impressions.dir.empty()) {
    ASSIGN_OR_RETURN(s->impressions_, ImpressionLog::Create(s->options_.impressions));
  }
  ShadowScorerOptions shadow_options;
  shadow_options.queue_size = s->options_.shadow_queue;
  shadow_options.max_cpu_share = s->options_.shadow_cpu;
  shadow_options.on_job = [self](const ShadowJobResult& job) {
    if (self->shadow_metrics_) self->shadow_metrics_->Observe(job);
  };
  // Asked only with a job in hand: a job is queued by a request, after recommender_ is set.
  shadow_options.requests_in_flight = [self] { return self->recommender_->inflight(); };
  ASSIGN_OR_RETURN(s->shadow_, ShadowScorer::Create(std::move(shadow_options)));
  auto user_observer = s->options_.observer;
  s->recommender_ = std::make_unique<RecommenderService>(
      s->manager_.get(), s->pool_.get(), s->options_.limits,
      [self, user_observer](const RequestOutcome& outcome) {
        if (self->metrics_) self->metrics_->ObserveRequest(outcome);
        if (user_observer) user_observer(outcome);
      },
      s->shadow_.get(), s->impressions_.get());
  // Everything the manager's and workers' callbacks read is set before their threads
  // start (the manager's below, gRPC's at BuildAndStart).
  if (!s->options_.metrics_address.empty()) {
    ASSIGN_OR_RETURN(s->metrics_, Metrics::Create(s->options_.metrics_address, s->options_.metrics_http,
                                                  [self] { return self->recommender_->inflight(); }));
    if (s->impressions_) s->metrics_->Expose(s->impressions_->registry());
    s->shadow_metrics_ = std::make_unique<ShadowMetrics>(s->metrics_->registry());
  }
  s->manager_->Start();

  ASSIGN_OR_RETURN(s->listener_, Listener::Open(s->options_.listen_address));
  s->port_ = s->listener_->port();
  grpc::ServerBuilder builder;
  auto acceptor = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD, grpc::InsecureServerCredentials());
  builder.RegisterService(s->recommender_.get());
  if (s->options_.max_connection_age > absl::ZeroDuration()) {
    // A graceful GOAWAY (calls in flight finish; the server keeps serving), so clients
    // that hold one connection move to a fresh one and re-balance over the replicas.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(s->options_.max_connection_age)));
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, 30000);
  }
  // Unset, gRPC 1.51 advertises no limit: 20,000 streams opened and never finished on
  // one connection held 182 MiB of calls. Past the limit the client's next stream ends
  // the connection (gRPC 1.51 treats it as a connection error, not REFUSED_STREAM).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, s->options_.max_concurrent_streams);
  builder.SetMaxReceiveMessageSize(s->options_.max_message_bytes);
  AcceptOnlyUncompressedRequests(&builder);
  builder.SetMaxSendMessageSize(static_cast<int>(
      std::min<int64_t>(int64_t{4} * s->options_.max_message_bytes, std::numeric_limits<int>::max())));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return absl::UnavailableError(absl::StrCat("cannot start the gRPC server on ", s->options_.listen_address));
  {
    MutexLock lock(&s->mu_);
    s->server_ = std::move(server);
  }
  s->listener_->Serve(std::move(acceptor));
  if (!s->options_.admin_address.empty()) {
    s->admin_ = std::make_unique<AdminService>(s->manager_.get(), s->shadow_.get());
    grpc::ServerBuilder admin;
    admin.AddListeningPort(s->options_.admin_address, grpc::InsecureServerCredentials(),
                           &s->admin_port_);
    admin.RegisterService(s->admin_.get());
    AcceptOnlyUncompressedRequests(&admin);
    s->admin_server_ = admin.BuildAndStart();
    if (!s->admin_server_ || s->admin_port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", s->options_.admin_address));
    }
  }
  s->UpdateReadiness();
  return s;
}

RecserveServer::~RecserveServer() {
  Drain(absl::ZeroDuration(), absl::Seconds(1));
  // The workers have stopped offering; the shadow's jobs end before the manager's models.
  if (shadow_) shadow_->Stop();
  // Wake admin calls waiting on a load before waiting for them; then join the loader.
  if (manager_) manager_->RequestStop();
  if (admin_server_) admin_server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  if (manager_) manager_->Stop();
}

int RecserveServer::metrics_port() const { return metrics_ ? metrics_->port() : 0; }

void RecserveServer::UpdateReadiness() {
  MutexLock lock(&mu_);
  if (!server_ || draining_ || !manager_) return;
  // Read the truth under mu_ rather than trusting a caller's value: start-up and the
  // load thread may both call this, in either order.
  const bool ready = manager_->serving_version() != 0;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health) health->SetServingStatus(kReadinessService, ready);
}

void RecserveServer::Drain(absl::Duration drain_delay, absl::Duration grace) {
  grpc::Server* server;  // server_ is set only by Create, before anyone can call Drain
  {
    MutexLock lock(&mu_);
    if (draining_) return;
    draining_ = true;
    server = server_.get();
    if (server_ && server_->GetHealthCheckService()) {
      // Every service, "" included, reports NOT_SERVING from now on.
      server_->GetHealthCheckService()->Shutdown();
    }
  }
  absl::SleepFor(drain_delay);
  const absl::Time deadline = absl::Now() + grace;
  // 1. Refuse new connections: nginx retries a refused connect on another replica, a
  // gRPC channel reconnects elsewhere.
  if (listener_) listener_->Close();
  // 2. Keep serving the connections already accepted until no call has arrived for a
  // short while: a balancer that was refused a new connection has moved its traffic by
  // then (nginx marks the replica failed and retries elsewhere).
  // Bounded, because a client holding a long-lived connection may never go quiet; it
  // leaves at step 3.
  if (recommender_) {
    constexpr absl::Duration kQuiet = absl::Milliseconds(50), kMaxLinger = absl::Seconds(1);
    const absl::Time linger_end = std::min(deadline, absl::Now() + kMaxLinger);
    uint64_t seen = recommender_->arrivals();
    absl::Time quiet_since = absl::Now();
    while (absl::Now() < linger_end && absl::Now() - quiet_since < kQuiet) {
      absl::SleepFor(absl::Milliseconds(5));
      const uint64_t arrivals = recommender_->arrivals();
      if (arrivals != seen || recommender_->inflight() > 0) {
        seen = arrivals;
        quiet_since = absl::Now();
      }
    }
  }
  // 3. GOAWAY on every connection; accepted calls run to the end, stragglers are
  // cancelled at the deadline.
  if (server) server->Shutdown(absl::ToChronoTime(deadline));
  if (pool_) pool_->Stop();  // runs what is queued; every call has finished by now
  MutexLock lock(&mu_);
  drained_ = true;
}

void RecserveServer::Wait() {
  MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&drained_));
}

}  // namespace recserve
