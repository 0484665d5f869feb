#include "tests/e2e_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "engine/file_util.h"
#include "engine/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "train/datagen.h"
#include "train/trainer.h"

namespace recserve::e2e {

const World& TinyWorld() {
  static const World* world = new World(GenerateWorld(recserve::TinyWorld()));
  return *world;
}

absl::StatusOr<std::string> WriteTinyBundle(const std::string& model_dir, int64_t version) {
  static std::mutex mu;
  static BundleContents* cached = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (cached == nullptr) {
    TrainerOptions options;
    options.verbose = false;
    options.item2vec.threads = 1;
    options.mlp.hidden = {64, 32};
    options.mlp.max_epochs = 3;
    options.eval_clicks = 200;
    ASSIGN_OR_RETURN(TrainOutput out, TrainModel(TinyWorld(), options));
    cached = new BundleContents(std::move(out.bundle));
  }
  return WriteVersion(*cached, model_dir, version);
}

absl::Status PublishCopy(const std::string& from, const std::string& model_dir, int64_t version) {
  const std::string tmp = absl::StrCat(model_dir, "/.incoming-", version);
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  std::filesystem::copy(from, tmp, std::filesystem::copy_options::recursive, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("copy ", from, ": ", ec.message()));
  std::filesystem::rename(tmp, absl::StrCat(model_dir, "/", version), ec);
  if (ec) return absl::UnavailableError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

std::string BinaryPath(const std::string& relative) {
  const char* dir = std::getenv("RECSERVE_BINARY_DIR");
  return std::string(dir ? dir : ".") + "/" + relative;
}

namespace {

// fork + execv with stdout and stderr going to `log_path`.
absl::StatusOr<pid_t> Spawn(std::vector<std::string> args, const std::string& log_path) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    FILE* log = std::fopen(log_path.c_str(), "w");
    if (log) {
      ::dup2(::fileno(log), 1);
      ::dup2(::fileno(log), 2);
    }
    ::execv(argv[0], argv.data());
    std::perror("execv");
    ::_exit(127);
  }
  return pid;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(std::vector<std::string> flags) {
  auto p = std::unique_ptr<ServerProcess>(new ServerProcess());
  char tmpl[] = "/tmp/recserve_e2e_XXXXXX";
  if (!::mkdtemp(tmpl)) return absl::InternalError("mkdtemp failed");
  const std::string dir = tmpl;
  const std::string port_file = dir + "/ports";
  p->log_path_ = dir + "/server.log";
  flags.insert(flags.begin(), {BinaryPath("server/recserve"), "--port=0", "--admin_port=0",
                               "--host=127.0.0.1", "--metrics_port=-1", "--port_file=" + port_file});
  ASSIGN_OR_RETURN(const pid_t pid, Spawn(std::move(flags), p->log_path_));
  p->pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    std::ifstream in(port_file);
    if (in >> p->port_ >> p->admin_port_ >> p->metrics_port_) return p;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      p->exited_ = true;
      return absl::InternalError(absl::StrCat("recserve exited at start: ", p->Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat("recserve did not start listening: ", p->Log()));
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

void ServerProcess::Signal(int signal) { ::kill(pid_, signal); }

int ServerProcess::WaitExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return -1;
}

std::string ServerProcess::Log() const {
  auto text = ReadFileToString(log_path_);
  return text.ok() ? *text : std::string();
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(std::vector<std::string> args,
                                                                  const std::string& log_path) {
  ASSIGN_OR_RETURN(const pid_t pid, Spawn(std::move(args), log_path));
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->pid_ = pid;
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

bool WaitForServing(const std::string& address, const std::string& service, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    if (stub->Check(&ctx, request, &response).ok() &&
        response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return true;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

namespace {

// Reads the length-delimited fields numbered `field` at the top level of `bytes`.
std::vector<std::string> Fields(const std::string& bytes, uint32_t field) {
  std::vector<std::string> out;
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  while (uint32_t tag = in.ReadTag()) {
    const uint32_t number = tag >> 3, wire = tag & 7;
    if (wire == 2) {
      uint32_t len;
      std::string value;
      if (!in.ReadVarint32(&len) || !in.ReadString(&value, static_cast<int>(len))) break;
      if (number == field) out.push_back(std::move(value));
    } else if (wire == 0) {
      uint64_t v;
      if (!in.ReadVarint64(&v)) break;
    } else {
      break;  // reflection responses use no other wire types at these levels
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListServicesByReflection(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok = false;
  auto step = [&](intptr_t want) { return cq.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == want; };
  call->StartCall(reinterpret_cast<void*>(1));
  if (!step(1)) return absl::UnavailableError("reflection: cannot start the call");
  // ServerReflectionRequest { list_services (7): "*" }
  const std::string request = std::string("\x3a\x01*", 3);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  if (!step(2)) return absl::UnavailableError("reflection: write failed");
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  if (!step(3)) return absl::UnavailableError("reflection: no response");
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok()) return absl::InternalError("reflection: bad response buffer");
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  // ServerReflectionResponse { list_services_response (6) { service (1) { name (1) } } }
  std::vector<std::string> names;
  for (const std::string& list : Fields(bytes, 6)) {
    for (const std::string& service : Fields(list, 1)) {
      for (std::string& name : Fields(service, 1)) names.push_back(std::move(name));
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return names;
}

absl::StatusOr<int> ConnectAndStall(int port, const std::string& prefix) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to port ", port));
  }
  if (!prefix.empty() && ::write(fd, prefix.data(), prefix.size()) != static_cast<ssize_t>(prefix.size())) {
    ::close(fd);
    return absl::UnavailableError("write failed");
  }
  return fd;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path, absl::Duration timeout) {
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  absl::StatusOr<int> connected = ConnectAndStall(port, request);
  if (!connected.ok()) return connected.status();
  const int fd = *connected;
  const absl::Time deadline = absl::Now() + timeout;
  std::string response;
  char buf[8192];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0 || ::poll(&p, 1, static_cast<int>(left_ms)) <= 0) {
      ::close(fd);
      return absl::DeadlineExceededError(
          absl::StrCat("GET ", path, " on port ", port, ": no complete answer within ", absl::FormatDuration(timeout)));
    }
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || body == std::string::npos) {
    return absl::InternalError(absl::StrCat("bad HTTP response: ", response.substr(0, 200)));
  }
  if (response.find(" 200 ") == std::string::npos) {
    return absl::NotFoundError(response.substr(0, response.find("\r\n")));
  }
  return response.substr(body + 4);
}

int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) output->append(buf, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

grpc::Status CallWithBody(const std::string& address, const std::string& method, const grpc::ByteBuffer& body,
                          grpc_compression_algorithm compression, std::string* response,
                          absl::Duration timeout) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);  // whatever the server accepts is its business
  args.SetMaxReceiveMessageSize(-1);
  grpc::GenericStub stub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  ctx.set_compression_algorithm(compression);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, method, body, &cq);
  call->StartCall();
  grpc::ByteBuffer out;
  grpc::Status status;
  call->Finish(&out, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok = false;
  cq.Next(&tag, &ok);
  if (response != nullptr) {
    response->clear();
    std::vector<grpc::Slice> slices;
    if (status.ok() && out.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) response->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

grpc::Status CallWithNoMessage(const std::string& address, const std::string& method) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, method, &cq);
  void* tag;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

int64_t PeakResidentBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtoll(line.c_str() + 6, nullptr, 10) * 1024;  // "... kB"
  }
  return -1;
}

}  // namespace recserve::e2e
