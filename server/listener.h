// The Recommender port's listening socket, owned by recserve rather than by gRPC.
//
// gRPC 1.51 can only stop listening as part of Server::Shutdown, and a call that reaches
// a connection after Shutdown began is cancelled, not served. A balancer that keeps
// sending new calls to a stopping replica (nginx's grpc_pass, which also opens new
// upstream connections as its pool needs them) hit that window on every replica stop.
// So recserve accepts connections itself and hands each one to gRPC
// (ExternalConnectionAcceptor); draining closes this socket first - new connections are
// refused, which nginx and gRPC clients retry elsewhere - while calls on connections
// already accepted are still served, and only then shuts gRPC down.
//
// Order matters: Serve() only after the gRPC server has started, Close() before it shuts
// down (gRPC 1.51 neither serves nor closes a connection handed over outside that window).
// Wildcard hosts (0.0.0.0, ::) listen on IPv6 and IPv4 alike, as gRPC's listener does.
#ifndef RECSERVE_SERVER_LISTENER_H_
#define RECSERVE_SERVER_LISTENER_H_

#include <grpcpp/server_builder.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/sync.h"

namespace recserve {

class Listener {
 public:
  // Binds and listens on "host:port" ("[v6]:port" for IPv6; port 0 = any free port).
  static absl::StatusOr<std::unique_ptr<Listener>> Open(const std::string& address);
  ~Listener();  // Close()

  int port() const { return port_; }
  // Accepts on a thread of its own and passes every connection to `acceptor`. Does
  // nothing after Close().
  void Serve(std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor) ABSL_LOCKS_EXCLUDED(mu_);
  // Stops accepting: hands over the connections the kernel already queued, then closes
  // the socket, so later connects are refused. Connections already handed to gRPC are not
  // touched. Idempotent.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);
  // Connections handed to gRPC so far.
  int64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }

 private:
  Listener(int fd, int port);
  void AcceptLoop();
  // Accepts every queued connection; false when accept failed for lack of resources.
  bool AcceptAll();

  // Closed by the accept thread once it has started, else by Close().
  const int fd_;
  const int port_;
  const int wake_fd_;  // eventfd: Close() wakes the accept thread
  // Serve and Close, which may come from different threads. A leaf: nothing else is
  // taken under it.
  Mutex mu_;
  absl::Time last_error_log_;  // accept thread only
  // Set by Serve (under mu_) before the accept thread starts, then read by that thread
  // alone: the thread's start orders the two, so the thread reads it without the lock.
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  // Set under mu_ (Close), read without it by the accept thread (its loop condition).
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> accepted_{0};
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_LISTENER_H_
