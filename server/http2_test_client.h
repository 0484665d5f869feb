// A bare HTTP/2 client over a TCP socket, for tests that need frames gRPC's own client
// never sends: headers it would not write, streams past the server's limit, resets.
// Plain-text (h2c) to 127.0.0.1; header blocks are HPACK literals without indexing.
#ifndef RECSERVE_SERVER_HTTP2_TEST_CLIENT_H_
#define RECSERVE_SERVER_HTTP2_TEST_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace recserve {
namespace testing {

struct Http2Frame {
  uint8_t type = 0;
  uint8_t flags = 0;
  uint32_t stream = 0;
  std::string payload;
};

class Http2TestConnection {
 public:
  static constexpr uint8_t kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7;
  static constexpr uint8_t kEndStream = 1, kAck = 1, kEndHeaders = 4;
  static constexpr uint16_t kSettingsMaxConcurrentStreams = 3;

  // Connects to 127.0.0.1:`port` and sends the client preface with empty SETTINGS.
  // Reads time out after 30 s (a read then fails, it does not hang the test).
  static absl::StatusOr<std::unique_ptr<Http2TestConnection>> Connect(int port);
  ~Http2TestConnection();

  bool Send(const std::string& bytes);
  // The next frame; an error once the server has closed the connection (or the read
  // timed out). The server's SETTINGS and PINGs are acknowledged as they pass by.
  absl::StatusOr<Http2Frame> Read();

  // One frame, ready to Send.
  static std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload);
  // A HEADERS frame (END_HEADERS) opening a gRPC call to `path` on `stream`, with
  // `extra` headers after the required ones.
  static std::string CallHeaders(uint32_t stream, const std::string& path,
                                 const std::vector<std::pair<std::string, std::string>>& extra = {});
  // A gRPC message (uncompressed, length-prefixed), the payload of DATA frames.
  static std::string GrpcMessage(const std::string& bytes);

 private:
  explicit Http2TestConnection(int fd) : fd_(fd) {}
  bool ReadExactly(char* out, size_t size);

  const int fd_;
};

}  // namespace testing
}  // namespace recserve

#endif  // RECSERVE_SERVER_HTTP2_TEST_CLIENT_H_
