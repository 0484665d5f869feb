#include "server/http2_test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace recserve {
namespace testing {
namespace {

std::string HpackLiteral(const std::string& name, const std::string& value) {  // short names and values
  return std::string(1, '\0') + static_cast<char>(name.size()) + name + static_cast<char>(value.size()) + value;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Http2TestConnection>> Http2TestConnection::Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  std::unique_ptr<Http2TestConnection> connection(new Http2TestConnection(fd));
  timeval timeout{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect to port ", port));
  }
  if (!connection->Send("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + Frame(kSettings, 0, 0, ""))) {
    return absl::UnavailableError("send the preface");
  }
  return connection;
}

Http2TestConnection::~Http2TestConnection() { ::close(fd_); }

bool Http2TestConnection::Send(const std::string& bytes) {
  for (size_t sent = 0; sent < bytes.size();) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

bool Http2TestConnection::ReadExactly(char* out, size_t size) {
  for (size_t got = 0; got < size;) {
    const ssize_t n = ::recv(fd_, out + got, size - got, 0);
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

absl::StatusOr<Http2Frame> Http2TestConnection::Read() {
  char head[9];
  if (!ReadExactly(head, sizeof(head))) return absl::UnavailableError("the connection is closed");
  const auto byte = [&head](int i) { return static_cast<uint32_t>(static_cast<uint8_t>(head[i])); };
  Http2Frame frame;
  frame.type = head[3];
  frame.flags = head[4];
  frame.stream = (byte(5) << 24 | byte(6) << 16 | byte(7) << 8 | byte(8)) & 0x7fffffff;
  frame.payload.resize(byte(0) << 16 | byte(1) << 8 | byte(2));
  if (!ReadExactly(frame.payload.data(), frame.payload.size())) {
    return absl::UnavailableError("the connection closed inside a frame");
  }
  if (frame.type == kSettings && !(frame.flags & kAck)) Send(Frame(kSettings, kAck, 0, ""));
  if (frame.type == kPing && !(frame.flags & kAck)) Send(Frame(kPing, kAck, 0, frame.payload));
  return frame;
}

std::string Http2TestConnection::Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  const uint32_t n = static_cast<uint32_t>(payload.size());
  std::string f = {static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n),
                   static_cast<char>(type), static_cast<char>(flags),
                   static_cast<char>((stream >> 24) & 0x7f), static_cast<char>(stream >> 16),
                   static_cast<char>(stream >> 8), static_cast<char>(stream)};
  return f + payload;
}

std::string Http2TestConnection::CallHeaders(uint32_t stream, const std::string& path,
                                             const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string block = HpackLiteral(":method", "POST") + HpackLiteral(":scheme", "http") +
                      HpackLiteral(":path", path) + HpackLiteral(":authority", "localhost") +
                      HpackLiteral("content-type", "application/grpc") + HpackLiteral("te", "trailers");
  for (const auto& [name, value] : extra) block += HpackLiteral(name, value);
  return Frame(kHeaders, kEndHeaders, stream, block);
}

std::string Http2TestConnection::GrpcMessage(const std::string& bytes) {
  const uint32_t m = static_cast<uint32_t>(bytes.size());
  return std::string(1, '\0') + static_cast<char>(m >> 24) + static_cast<char>(m >> 16) + static_cast<char>(m >> 8) +
         static_cast<char>(m) + bytes;
}

}  // namespace testing
}  // namespace recserve
