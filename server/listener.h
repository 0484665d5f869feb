// The Recommender port's listening socket, owned by recserve rather than by gRPC.
//
// gRPC 1.51 can only stop listening as part of Server::Shutdown, and a call that reaches
// a connection after Shutdown began is cancelled, not served. Proxies that open a
// connection per call (nginx's grpc_pass) hit that window whenever a replica stops. So
// recserve accepts connections itself and hands each one to gRPC
// (ExternalConnectionAcceptor); draining closes this socket first - new connections are
// refused, which nginx and gRPC clients retry elsewhere - while calls on connections
// already accepted are still served, and only then shuts gRPC down.
#ifndef RECSERVE_SERVER_LISTENER_H_
#define RECSERVE_SERVER_LISTENER_H_

#include <grpcpp/server_builder.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace recserve {

class Listener {
 public:
  // Binds and listens on "host:port" ("[v6]:port" for IPv6; port 0 = any free port).
  static absl::StatusOr<std::unique_ptr<Listener>> Open(const std::string& address);
  ~Listener();  // Close()

  int port() const { return port_; }
  // Accepts on a thread of its own and passes every connection to `acceptor`.
  void Serve(std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor);
  // Stops accepting and closes the socket: connections not yet accepted are refused.
  // Connections already handed to gRPC are not touched. Idempotent.
  void Close();
  // Connections handed to gRPC so far.
  int64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }

 private:
  Listener(int fd, int port) : fd_(fd), port_(port) {}
  void AcceptLoop();

  int fd_;
  const int port_;
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> accepted_{0};
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_LISTENER_H_
