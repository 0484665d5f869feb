// Scale-out end to end: three recserve replicas on loopback ports behind Debian's nginx,
// configured by deploy/nginx/recserve-grpc.conf itself (only the replica and listen
// lines are replaced with this test's ports). Checks that
//   - nginx spreads calls over every replica,
//   - SIGTERM to one replica during traffic loses no call (nginx retries elsewhere),
//   - a new version dropped into the shared model directory ends up served by all three
//     (the stopped replica is started again first, as a rolling restart would).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/test_util.h"
#include "gtest/gtest.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "tests/e2e_util.h"

namespace recserve {
namespace {

constexpr int kReplicas = 3;

// Count of Recommend calls answered OK, from a replica's own /metrics (summed over the
// versions and roles that answered).
int64_t ServedOk(int metrics_port) {
  auto text = e2e::HttpGet(metrics_port, "/metrics");
  if (!text.ok()) return -1;
  int64_t served = -1;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::StartsWith(line, "recserve_requests_total{") || !absl::StrContains(line, "code=\"OK\"")) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) served = std::max<int64_t>(served, 0) + static_cast<int64_t>(value);
  }
  return served;
}

int64_t ServingVersion(const std::string& admin_address) {
  auto admin = v1::Admin::NewStub(grpc::CreateChannel(admin_address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::GetModelStatusResponse status;
  return admin->GetModelStatus(&ctx, {}, &status).ok() ? status.serving_version() : -1;
}

// The committed nginx snippet with this test's upstream ports and listen port.
std::string BalancerConfig(const std::array<int, kReplicas>& ports, int listen_port) {
  std::ifstream in(absl::StrCat(std::getenv("RECSERVE_SOURCE_DIR"), "/deploy/nginx/recserve-grpc.conf"));
  std::stringstream out;
  std::string line;
  bool replicas_written = false;
  while (std::getline(in, line)) {
    const absl::string_view code = absl::StripLeadingAsciiWhitespace(line);
    if (absl::StartsWith(code, "server ") && absl::EndsWith(line, "# replica")) {
      if (!replicas_written) {
        for (int port : ports) out << "    server 127.0.0.1:" << port << " max_fails=1 fail_timeout=5s;\n";
        replicas_written = true;
      }
    } else if (absl::StartsWith(code, "listen ") && absl::EndsWith(line, "# listen")) {
      out << "    listen 127.0.0.1:" << listen_port << " http2;\n";
    } else {
      out << line << "\n";
    }
  }
  return replicas_written ? out.str() : "";
}

class BalancerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    models_ = testing::TempDir("balancer_models");
    ASSERT_TRUE(e2e::WriteTinyBundle(models_, 1).ok());
    for (int i = 0; i < kReplicas; ++i) ASSERT_NO_FATAL_FAILURE(StartReplica(i, 0));
    for (int i = 0; i < kReplicas; ++i) ports_[i] = replicas_[i]->port();
    for (auto& r : replicas_) {
      ASSERT_TRUE(e2e::WaitForServing(r->address(), "recserve.v1.Recommender", absl::Seconds(60))) << r->Log();
    }

    const std::string dir = testing::TempDir("balancer_nginx");
    const std::string snippet = BalancerConfig(ports_, nginx_port_ = e2e::FreePort());
    ASSERT_FALSE(snippet.empty()) << "no '# replica' lines in deploy/nginx/recserve-grpc.conf";
    std::ofstream(dir + "/recserve-grpc.conf") << snippet;
    std::ofstream conf(dir + "/nginx.conf");
    // One process (no master): the test's kill at the end leaves no orphaned worker.
    conf << "master_process off;\n"
         << "pid " << dir << "/nginx.pid;\n"
         << "error_log " << dir << "/error.log info;\n"
         << "events { worker_connections 1024; }\n"
         << "http {\n"
         << "  access_log " << dir << "/access.log;\n";
    for (const char* temp : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
      conf << "  " << temp << "_temp_path " << dir << "/" << temp << ";\n";
    }
    conf << "  include " << dir << "/recserve-grpc.conf;\n}\n";
    conf.close();
    nginx_log_ = dir + "/error.log";
    auto nginx = e2e::ChildProcess::Start(
        {"/usr/sbin/nginx", "-p", dir, "-c", dir + "/nginx.conf", "-e", nginx_log_, "-g", "daemon off;"},
        dir + "/stderr.log");
    ASSERT_TRUE(nginx.ok()) << nginx.status();
    nginx_ = std::move(*nginx);
    ASSERT_TRUE(e2e::WaitForServing(nginx_address(), "recserve.v1.Recommender", absl::Seconds(30)))
        << NginxLog();
    channel_ = grpc::CreateChannel(nginx_address(), grpc::InsecureChannelCredentials());
  }

  void StartReplica(int i, int port) {
    std::vector<std::string> flags = {"--model_base_path=" + models_, "--poll_interval=100ms",
                                      "--metrics_port=0", "--warmup_requests=8", "--worker_threads=1",
                                      "--drain_delay=200ms", "--shutdown_grace=10s"};
    if (port != 0) flags.push_back(absl::StrCat("--port=", port));  // the last --port wins
    auto server = e2e::ServerProcess::Start(flags);
    ASSERT_TRUE(server.ok()) << server.status();
    replicas_[i] = std::move(*server);
  }

  std::string nginx_address() const { return absl::StrCat("127.0.0.1:", nginx_port_); }
  std::string NginxLog() const {
    std::ifstream in(nginx_log_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  v1::RecommendRequest Request() const {
    v1::RecommendRequest request;
    request.set_n(10);
    const World& world = e2e::TinyWorld();
    const int64_t now_ms = absl::ToUnixMillis(absl::Now());
    for (int i = 0; i < 10; ++i) {
      v1::Event* e = request.add_events();
      e->set_item_id(world.train_events[i * 31].item_id);
      e->set_type(v1::CLICK);
      e->set_timestamp_ms(now_ms - 60000 + i);
    }
    return request;
  }

  // Sends `count` calls through nginx from `threads` clients; returns the failures and
  // records the versions that answered.
  struct Tally {
    std::atomic<int64_t> ok{0}, failed{0};
    std::atomic<int64_t> min_version{INT64_MAX}, max_version{0};
    std::mutex mu;
    std::string first_failure;
    void Record(const grpc::Status& s, const v1::RecommendResponse& response) {
      if (s.ok() && response.items_size() == 10) {
        ++ok;
        int64_t v = response.model_version();
        for (int64_t m = min_version.load(); v < m && !min_version.compare_exchange_weak(m, v);) {}
        for (int64_t m = max_version.load(); v > m && !max_version.compare_exchange_weak(m, v);) {}
        return;
      }
      ++failed;
      std::lock_guard<std::mutex> lock(mu);
      if (first_failure.empty()) {
        first_failure = s.ok() ? "a response without 10 items" : absl::StrCat(s.error_code(), " ", s.error_message());
      }
    }
  };
  void Send(int count, Tally* tally) {
    const v1::RecommendRequest request = Request();
    std::vector<std::thread> clients;
    std::atomic<int> left{count};
    for (int t = 0; t < 3; ++t) {
      clients.emplace_back([&] {
        auto stub = v1::Recommender::NewStub(channel_);
        while (left.fetch_sub(1) > 0) {
          grpc::ClientContext ctx;
          ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
          v1::RecommendResponse response;
          tally->Record(stub->Recommend(&ctx, request, &response), response);
        }
      });
    }
    for (auto& c : clients) c.join();
  }

  std::string models_;
  std::array<std::unique_ptr<e2e::ServerProcess>, kReplicas> replicas_;
  std::array<int, kReplicas> ports_{};
  std::unique_ptr<e2e::ChildProcess> nginx_;
  int nginx_port_ = 0;
  std::string nginx_log_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(BalancerTest, SpreadsLoadSurvivesSigtermAndRollsOutNewVersionToEveryReplica) {
  // 1. Every replica takes a share of the calls sent to nginx.
  {
    Tally tally;
    Send(300, &tally);
    EXPECT_EQ(tally.failed.load(), 0) << tally.first_failure;
    for (int i = 0; i < kReplicas; ++i) {
      EXPECT_GT(ServedOk(replicas_[i]->metrics_port()), 0) << "replica " << i << " served nothing";
    }
  }

  // 2. SIGTERM one replica while calls flow; nginx retries what it could not place.
  {
    Tally tally;
    std::atomic<bool> stop{false};
    const v1::RecommendRequest request = Request();
    std::vector<std::thread> clients;
    for (int t = 0; t < 3; ++t) {
      clients.emplace_back([&] {
        auto stub = v1::Recommender::NewStub(channel_);
        while (!stop.load()) {
          grpc::ClientContext ctx;
          ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
          v1::RecommendResponse response;
          tally.Record(stub->Recommend(&ctx, request, &response), response);
        }
      });
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (tally.ok.load() < 100 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    replicas_[1]->Signal(SIGTERM);
    const int exit_code = replicas_[1]->WaitExit(absl::Seconds(30));
    const int64_t ok_at_exit = tally.ok.load();
    // Keep sending until well after the exit, so nginx meets the closed port many times.
    while (tally.ok.load() < ok_at_exit + 300 && absl::Now() < deadline + absl::Seconds(60)) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    stop = true;
    for (auto& c : clients) c.join();
    EXPECT_EQ(exit_code, 0) << replicas_[1]->Log();
    EXPECT_EQ(tally.failed.load(), 0) << tally.first_failure << "\n" << NginxLog();
    std::printf("SIGTERM during traffic: %lld calls ok, %lld failed\n",
                static_cast<long long>(tally.ok.load()), static_cast<long long>(tally.failed.load()));
  }

  // 3. Start the stopped replica again on its port, then publish version 2 into the
  // shared directory: every replica picks it up by polling.
  ASSERT_NO_FATAL_FAILURE(StartReplica(1, ports_[1]));
  ASSERT_EQ(replicas_[1]->port(), ports_[1]);
  ASSERT_TRUE(e2e::WaitForServing(replicas_[1]->address(), "recserve.v1.Recommender", absl::Seconds(60)));
  std::array<int64_t, kReplicas> served_before{};
  for (int i = 0; i < kReplicas; ++i) served_before[i] = ServedOk(replicas_[i]->metrics_port());

  ASSERT_TRUE(e2e::PublishCopy(models_ + "/1", models_, 2).ok());
  for (int i = 0; i < kReplicas; ++i) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (ServingVersion(replicas_[i]->admin_address()) != 2 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_EQ(ServingVersion(replicas_[i]->admin_address()), 2) << "replica " << i << "\n" << replicas_[i]->Log();
  }
  // Calls through nginx now see only version 2, from every replica. nginx may skip the
  // restarted replica for its fail_timeout (5 s), so keep sending until all have served.
  Tally tally;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  auto all_served = [&] {
    for (int i = 0; i < kReplicas; ++i) {
      if (ServedOk(replicas_[i]->metrics_port()) <= served_before[i]) return false;
    }
    return true;
  };
  while (!all_served() && absl::Now() < deadline) Send(60, &tally);
  EXPECT_TRUE(all_served()) << "a replica served no call after version 2 was published";
  EXPECT_EQ(tally.failed.load(), 0) << tally.first_failure;
  EXPECT_GT(tally.ok.load(), 0);
  EXPECT_EQ(tally.min_version.load(), 2);
  EXPECT_EQ(tally.max_version.load(), 2);

  for (auto& r : replicas_) r->Signal(SIGTERM);
  for (auto& r : replicas_) EXPECT_EQ(r->WaitExit(absl::Seconds(30)), 0);
}

}  // namespace
}  // namespace recserve
