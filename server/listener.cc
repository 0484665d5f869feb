#include "server/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace recserve {
namespace {

// `address` as host (brackets of an IPv6 literal removed), port as written and port number.
absl::Status SplitHostPort(const std::string& address, std::string* host, std::string* port, int* port_number) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", address, "' is not host:port"));
  }
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  if (!absl::SimpleAtoi(*port, port_number) || *port_number < 0 || *port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", address, "' has no port 0..65535"));
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// A bound, listening socket for `a`, or -1 with `error` set.
int BindAndListen(int family, const sockaddr* addr, socklen_t len, bool dual_stack, std::string* error) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *error = std::strerror(errno);
    return -1;
  }
  const int one = 1, zero = 0;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (dual_stack) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (::bind(fd, addr, len) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    *error = std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  return ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                           : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Listener>> Listener::Open(const std::string& address) {
  std::string host, port;
  int port_number = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port, &port_number); !s.ok()) return s;
  std::string error = "no address";
  // Wildcards listen on both families, as gRPC's own listener does: one IPv6 socket with
  // IPV6_V6ONLY off (IPv4 arrives mapped), or IPv4 alone where IPv6 is unavailable.
  if (host.empty() || host == "0.0.0.0" || host == "::") {
    sockaddr_in6 any6{};
    any6.sin6_family = AF_INET6;
    any6.sin6_addr = in6addr_any;
    any6.sin6_port = htons(static_cast<uint16_t>(port_number));
    int fd = BindAndListen(AF_INET6, reinterpret_cast<sockaddr*>(&any6), sizeof(any6), /*dual_stack=*/true, &error);
    if (fd < 0 && host != "::") {
      sockaddr_in any4{};
      any4.sin_family = AF_INET;
      any4.sin_addr.s_addr = htonl(INADDR_ANY);
      any4.sin_port = htons(static_cast<uint16_t>(port_number));
      fd = BindAndListen(AF_INET, reinterpret_cast<sockaddr*>(&any4), sizeof(any4), false, &error);
    }
    if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", error));
    return std::unique_ptr<Listener>(new Listener(fd, BoundPort(fd)));
  }
  // A specific address or name: the first address it resolves to that we can bind.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve listen address '", address, "': ", gai_strerror(rc)));
  }
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = BindAndListen(a->ai_family, a->ai_addr, a->ai_addrlen, false, &error);
    if (fd < 0) continue;
    ::freeaddrinfo(found);
    return std::unique_ptr<Listener>(new Listener(fd, BoundPort(fd)));
  }
  ::freeaddrinfo(found);
  return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", error));
}

Listener::Listener(int fd, int port) : fd_(fd), port_(port), wake_fd_(::eventfd(0, EFD_CLOEXEC)) {}

Listener::~Listener() { Close(); }

void Listener::Serve(std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> acceptor) {
  MutexLock lock(&mu_);
  if (stop_.load() || thread_.joinable()) return;  // closed already, or serving
  acceptor_ = std::move(acceptor);
  thread_ = std::thread([this] { AcceptLoop(); });
}

void Listener::AcceptLoop() {
  pollfd p[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (!stop_.load(std::memory_order_acquire)) {
    if (::poll(p, 2, wake_fd_ >= 0 ? -1 : 50) <= 0) continue;  // no eventfd: poll the stop flag
    if (!AcceptAll()) ::usleep(100 * 1000);  // out of descriptors: back off, do not spin
  }
  // Closing. Hand over what the kernel has queued (those clients have sent their calls),
  // then stop listening: from here on a connect is refused at once, which a balancer
  // retries elsewhere, instead of being queued and then reset.
  AcceptAll();
  ::shutdown(fd_, SHUT_RD);
  ::close(fd_);
}

bool Listener::AcceptAll() {
  while (true) {
    const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      // Out of descriptors or memory: the connection stays queued and poll would wake at
      // once. Say so (once a second) and let the caller back off.
      const absl::Time now = absl::Now();
      if (now - last_error_log_ > absl::Seconds(1)) {
        std::fprintf(stderr, "recserve: accept failed: %s; backing off\n", std::strerror(errno));
        last_error_log_ = now;
      }
      return false;
    }
    const int one = 1;
    ::setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters params;
    params.listener_fd = fd_;
    params.fd = conn;  // gRPC owns it from here
    acceptor_->HandleNewConnection(&params);
    accepted_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Listener::Close() {
  MutexLock lock(&mu_);
  if (stop_.exchange(true)) return;
  if (thread_.joinable()) {
    const uint64_t one = 1;
    ::write(wake_fd_, &one, sizeof(one));  // wake the accept thread's poll
    thread_.join();                        // it closes fd_
  } else {
    ::close(fd_);
  }
  ::close(wake_fd_);
}

}  // namespace recserve
