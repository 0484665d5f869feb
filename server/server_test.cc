// RecserveServer in-process, spoken to frame by frame (Http2TestConnection): what the
// server promises a single client connection.
#include "server/server.h"

#include <prometheus/text_serializer.h>

#include <functional>
#include <optional>
#include <vector>

#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http2_test_client.h"
#include "server/sync.h"

namespace recserve {
namespace {

using testing::Http2TestConnection;
using Http2 = Http2TestConnection;

// A server on loopback serving the tiny bundle; `configure` adjusts its options.
std::unique_ptr<RecserveServer> StartServer(const std::string& name,
                                            const std::function<void(ServerOptions&)>& configure) {
  const std::string dir = testing::TempDir(name);
  EXPECT_TRUE(WriteBundle(testing::TinyBundle(), dir + "/1").ok());
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.admin_address = "";
  options.worker_threads = 1;
  configure(options);
  options.manager.base_path = dir;
  options.manager.warmup_requests = 1;
  absl::StatusOr<std::unique_ptr<RecserveServer>> server = RecserveServer::Create(std::move(options));
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  EXPECT_TRUE((*server)->manager().WaitUntilServing(absl::Seconds(60)));
  return std::move(*server);
}

// SETTINGS_MAX_CONCURRENT_STREAMS in the server's first SETTINGS frame, if it sent one.
std::optional<uint32_t> AdvertisedMaxConcurrentStreams(Http2TestConnection& connection) {
  while (true) {
    absl::StatusOr<testing::Http2Frame> frame = connection.Read();
    if (!frame.ok()) return std::nullopt;
    if (frame->type != Http2::kSettings || (frame->flags & Http2::kAck)) continue;
    const std::string& p = frame->payload;
    for (size_t i = 0; i + 6 <= p.size(); i += 6) {
      const auto byte = [&p](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(p[k])); };
      if ((byte(i) << 8 | byte(i + 1)) == Http2::kSettingsMaxConcurrentStreams) {
        return byte(i + 2) << 24 | byte(i + 3) << 16 | byte(i + 4) << 8 | byte(i + 5);
      }
    }
    return std::nullopt;
  }
}

// Opens a Recommend call on `stream` and sends the start of a 100-byte message that
// never comes: the call cannot run and the stream stays open.
std::string OpenCall(uint32_t stream) {
  return Http2::CallHeaders(stream, "/recserve.v1.Recommender/Recommend") +
         Http2::Frame(Http2::kData, 0, stream, Http2::GrpcMessage(std::string(100, 'x')).substr(0, 10));
}

enum class Fate { kAlive, kClosed, kStreamRefused };

// Pings, and reads until the answer: kAlive when the PING comes back, kClosed when the
// server sent GOAWAY or closed the connection first, kStreamRefused for a
// RST_STREAM(REFUSED_STREAM) on `watched` (HTTP/2's stream-level refusal).
Fate PingAndWatch(Http2TestConnection& connection, uint32_t watched) {
  const std::string ping = "recserve";
  if (!connection.Send(Http2::Frame(Http2::kPing, 0, 0, ping))) return Fate::kClosed;
  while (true) {
    absl::StatusOr<testing::Http2Frame> frame = connection.Read();
    if (!frame.ok() || frame->type == Http2::kGoaway) return Fate::kClosed;
    if (frame->type == Http2::kRstStream && frame->stream == watched && frame->payload == std::string("\0\0\0\7", 4)) {
      return Fate::kStreamRefused;
    }
    if (frame->type == Http2::kPing && (frame->flags & Http2::kAck) && frame->payload == ping) return Fate::kAlive;
  }
}

// A client connection may hold at most --max_concurrent_streams calls open: the server
// says so in its SETTINGS, and the stream past it is refused (gRPC 1.51 closes the
// connection) instead of holding one more call's memory. Unbounded, one connection held
// 20,000 open calls (+182 MiB RSS; docs/benchmarks.md).
TEST(ServerTest, ConnectionIsHeldToMaxConcurrentStreams) {
  std::unique_ptr<RecserveServer> server =
      StartServer("max_streams", [](ServerOptions& options) { options.max_concurrent_streams = 4; });
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<Http2TestConnection>> connection = Http2::Connect(server->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  Http2TestConnection& c = **connection;
  EXPECT_EQ(AdvertisedMaxConcurrentStreams(c), std::optional<uint32_t>(4));  // (and acknowledged)

  // Four open calls: within the bound, the connection serves on.
  std::string four;
  for (uint32_t stream : {1, 3, 5, 7}) four += OpenCall(stream);
  ASSERT_TRUE(c.Send(four));
  ASSERT_EQ(PingAndWatch(c, 7), Fate::kAlive);

  // A fifth is refused.
  c.Send(OpenCall(9));
  EXPECT_NE(PingAndWatch(c, 9), Fate::kAlive) << "the server took a fifth open stream on one connection";
}

// A version's request series exist once it serves and go when it is unloaded (here at
// the next publish: keep_previous is off), so /metrics holds only loaded versions.
TEST(ServerTest, MetricsSeriesFollowTheLoadedVersions) {
  const std::string dir = testing::TempDir("metrics_versions");
  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), dir + "/1").ok());
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.admin_address = "";
  options.metrics_address = "127.0.0.1:0";
  options.worker_threads = 1;
  options.manager.base_path = dir;
  options.manager.warmup_requests = 1;
  Notification unloaded;  // called after the server's own on_unloaded work
  options.manager.on_unloaded = [&unloaded](int64_t version) {
    if (version == 1) unloaded.Notify();
  };
  absl::StatusOr<std::unique_ptr<RecserveServer>> server = RecserveServer::Create(std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->manager().WaitUntilServing(absl::Seconds(60)));
  const auto scrape = [&server] {
    return prometheus::TextSerializer().Serialize((*server)->metrics()->registry().Collect());
  };
  EXPECT_THAT(scrape(), ::testing::HasSubstr("recserve_score_count{role=\"serving\",version=\"1\"} 0"));

  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), dir + "/2").ok());
  absl::StatusOr<int64_t> serving = (*server)->manager().ReloadNow();
  ASSERT_TRUE(serving.ok()) << serving.status();
  ASSERT_EQ(*serving, 2);
  ASSERT_TRUE(unloaded.WaitForNotificationWithTimeout(absl::Minutes(1)));
  const std::string text = scrape();
  EXPECT_THAT(text, ::testing::HasSubstr("recserve_score_count{role=\"serving\",version=\"2\"} 0"));
  EXPECT_THAT(text, ::testing::Not(::testing::HasSubstr("version=\"1\""))) << text;
}

// The status codes of the Recommend calls a server has finished (its observer, which
// recserve_requests_total counts).
class Outcomes {
 public:
  std::function<void(const RequestOutcome&)> Observer() {
    return [this](const RequestOutcome& outcome) {
      MutexLock lock(&mu_);
      codes_.push_back(outcome.code);
    };
  }
  // The codes once there are `n` (fewer if that takes a minute).
  std::vector<absl::StatusCode> WaitFor(size_t n) {
    MutexLock lock(&mu_);
    const auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return codes_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Minutes(1));
    return codes_;
  }

 private:
  Mutex mu_;
  std::vector<absl::StatusCode> codes_ ABSL_GUARDED_BY(mu_);
};

// A call the client resets before its message arrives was cancelled, not malformed:
// under rapid reset such calls were counted INVALID_ARGUMENT ("carried no request
// message"), which fed the error-ratio alert and the malformed-request log. A call the
// client ends without a message (END_STREAM, no reset) is still INVALID_ARGUMENT.
TEST(ServerTest, CallResetBeforeItsMessageCountsAsCancelled) {
  Outcomes outcomes;
  std::unique_ptr<RecserveServer> server =
      StartServer("reset_before_message", [&outcomes](ServerOptions& options) { options.observer = outcomes.Observer(); });
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<Http2TestConnection>> connection = Http2::Connect(server->port());
  ASSERT_TRUE(connection.ok()) << connection.status();
  const std::string kCancel("\0\0\0\x08", 4);
  ASSERT_TRUE((*connection)->Send(Http2::CallHeaders(1, "/recserve.v1.Recommender/Recommend") +
                                  Http2::Frame(Http2::kRstStream, 0, 1, kCancel)));
  EXPECT_EQ(outcomes.WaitFor(1), std::vector<absl::StatusCode>{absl::StatusCode::kCancelled});

  ASSERT_TRUE((*connection)->Send(Http2::CallHeaders(3, "/recserve.v1.Recommender/Recommend") +
                                  Http2::Frame(Http2::kData, Http2::kEndStream, 3, "")));
  EXPECT_EQ(outcomes.WaitFor(2),
            (std::vector<absl::StatusCode>{absl::StatusCode::kCancelled, absl::StatusCode::kInvalidArgument}));
}

}  // namespace
}  // namespace recserve
