// Helpers for end-to-end tests: trainer-made bundles, and the real recserve binary run
// as a child process on loopback ports.
#ifndef RECSERVE_TESTS_E2E_UTIL_H_
#define RECSERVE_TESTS_E2E_UTIL_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <grpc/compression.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "train/world.h"

namespace recserve::e2e {

// The tiny synthetic world (seed 42), generated once per process.
const World& TinyWorld();

// Trains a small ranker on the tiny world and writes it as <model_dir>/<version>.
// The trained bundle is cached per process; later calls only write it.
absl::StatusOr<std::string> WriteTinyBundle(const std::string& model_dir, int64_t version);

// Publishes a copy of version directory `from` as <model_dir>/<version> the way ops
// should: copy under a hidden name, then rename into place (READY comes with it).
absl::Status PublishCopy(const std::string& from, const std::string& model_dir, int64_t version);

// Path of a built binary, from RECSERVE_BINARY_DIR (set by ctest).
std::string BinaryPath(const std::string& relative);

class ServerProcess {
 public:
  // Starts build/server/recserve with `flags` plus --port=0 --admin_port=0 and a port
  // file; waits until it listens (not until it is ready).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(std::vector<std::string> flags);
  ~ServerProcess();  // SIGKILL if still running

  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string admin_address() const { return "127.0.0.1:" + std::to_string(admin_port_); }
  pid_t pid() const { return pid_; }

  void Signal(int signal);
  // Exit code, or -1 when it did not exit within `timeout` (or died by a signal).
  int WaitExit(absl::Duration timeout);
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int admin_port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
  bool exited_ = false;
};

// Any other program run as a child (e.g. Debian's prometheus); killed on destruction.
class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(std::vector<std::string> argv,
                                                             const std::string& log_path);
  ~ChildProcess();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
int FreePort();

// Percent-encodes a URL query value.
std::string UrlEncode(const std::string& s);

// Polls grpc.health.v1 Check(service) until SERVING or the timeout passes.
bool WaitForServing(const std::string& address, const std::string& service, absl::Duration timeout);

// Asks the server's reflection service (grpc.reflection.v1alpha) which services it
// has, with a generic stub and hand-decoded wire format (Debian ships no reflection
// client).
absl::StatusOr<std::vector<std::string>> ListServicesByReflection(const std::string& address);

// GET http://127.0.0.1:<port><path>; returns the body (NotFound-style errors as Status;
// DeadlineExceeded when the answer has not come within `timeout`).
absl::StatusOr<std::string> HttpGet(int port, const std::string& path, absl::Duration timeout = absl::Minutes(2));

// Opens a TCP connection to 127.0.0.1:<port> and writes `prefix` (may be empty); returns the
// socket, which the caller closes. For clients that connect and then stall.
absl::StatusOr<int> ConnectAndStall(int port, const std::string& prefix);

// Runs a command, returns its exit code; stdout+stderr go to `output`.
int RunCommand(const std::string& command, std::string* output);

// Calls the unary `method` ("/package.Service/Method") at `address` with `body` as the
// request's bytes exactly (no protobuf on this side: malformed bodies are the point),
// compressed on the wire with `compression`. The response's bytes go to `response` if set.
grpc::Status CallWithBody(const std::string& address, const std::string& method, const grpc::ByteBuffer& body,
                          grpc_compression_algorithm compression = GRPC_COMPRESS_NONE,
                          std::string* response = nullptr, absl::Duration timeout = absl::Seconds(30));

// Calls `method` as a stream that half-closes without sending a message.
grpc::Status CallWithNoMessage(const std::string& address, const std::string& method);

// Peak resident memory of process `pid` so far (VmHWM of /proc/<pid>/status), in bytes;
// -1 if it cannot be read.
int64_t PeakResidentBytes(pid_t pid);

}  // namespace recserve::e2e

#endif  // RECSERVE_TESTS_E2E_UTIL_H_
