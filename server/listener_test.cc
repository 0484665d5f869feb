#include "server/listener.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

// 0 when a TCP connect to `ip`:`port` succeeds, else the errno.
int Connect(int family, const char* ip, int port) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int rc;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, ip, &a.sin_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET6, ip, &a.sin6_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  const int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

bool HaveIpv6Loopback() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

TEST(ListenerTest, WildcardListensOnBothFamiliesAndCloseRefusesNewConnections) {
  auto listener = Listener::Open("0.0.0.0:0");
  ASSERT_TRUE(listener.ok()) << listener.status();
  const int port = (*listener)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ(Connect(AF_INET, "127.0.0.1", port), 0);
  if (HaveIpv6Loopback()) {
    EXPECT_EQ(Connect(AF_INET6, "::1", port), 0);
  }
  (*listener)->Close();  // never served: closes without an accept thread
  EXPECT_EQ(Connect(AF_INET, "127.0.0.1", port), ECONNREFUSED);
  (*listener)->Close();  // idempotent
}

TEST(ListenerTest, SpecificAddressAndBadAddressesAreNamed) {
  auto listener = Listener::Open("127.0.0.1:0");
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_EQ(Connect(AF_INET, "127.0.0.1", (*listener)->port()), 0);
  EXPECT_THAT(Listener::Open("localhost").status().message(), HasSubstr("'localhost' is not host:port"));
  EXPECT_THAT(Listener::Open("127.0.0.1:70000").status().message(), HasSubstr("has no port 0..65535"));
  EXPECT_THAT(Listener::Open("no.such.host.invalid:1").status().message(), HasSubstr("cannot resolve"));
}

}  // namespace
}  // namespace recserve
