// End to end: the real recserve binary on a loopback port, serving a trainer-made
// bundle, called by a C++ gRPC client, an independent Python client and recserve-cli.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "tests/e2e_util.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

class E2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new std::string(testing::TempDir("e2e_models"));
    auto written = e2e::WriteTinyBundle(*model_dir_, 1);
    ASSERT_TRUE(written.ok()) << written.status();
  }

  void StartServer(std::vector<std::string> flags = {}) {
    flags.push_back("--model_base_path=" + *model_dir_);
    flags.push_back("--warmup_requests=20");
    auto server = e2e::ServerProcess::Start(flags);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_TRUE(e2e::WaitForServing(server_->address(), "recserve.v1.Recommender", absl::Seconds(60)))
        << server_->Log();
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Recommender::NewStub(channel_);
  }

  // A warm user: the first test user's recent events from the tiny world.
  static v1::RecommendRequest WarmRequest(int n = 10) {
    v1::RecommendRequest r;
    r.set_user_id("user-e2e");
    r.set_n(n);
    const World& world = e2e::TinyWorld();
    const uint64_t user = world.train_events.back().user_id;
    const int64_t shift = absl::ToUnixMillis(absl::Now()) - world.train_events.back().timestamp_ms - 60000;
    for (const LoggedEvent& e : world.train_events) {
      if (e.user_id != user) continue;
      v1::Event* ev = r.add_events();
      ev->set_item_id(e.item_id);
      ev->set_type(static_cast<v1::EventType>(e.kind));
      ev->set_timestamp_ms(e.timestamp_ms + shift);  // as if it all happened lately
    }
    r.mutable_context()->set_device(v1::MOBILE);
    r.mutable_context()->set_hour(20);
    return r;
  }

  grpc::Status Call(const v1::RecommendRequest& r, v1::RecommendResponse* out,
                    absl::Duration timeout = absl::Seconds(10)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Recommend(&ctx, r, out);
  }

  static std::string* model_dir_;
  std::unique_ptr<e2e::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Recommender::Stub> stub_;
};
std::string* E2eTest::model_dir_ = nullptr;

TEST_F(E2eTest, CppAndPythonClientsGetTheSameTopItems) {
  StartServer();
  const v1::RecommendRequest request = WarmRequest(15);
  v1::RecommendResponse cpp;
  ASSERT_TRUE(Call(request, &cpp).ok());
  ASSERT_EQ(cpp.items_size(), 15);
  EXPECT_EQ(cpp.model_version(), 1);
  EXPECT_EQ(cpp.model_name(), "default");
  EXPECT_EQ(cpp.unknown_items(), 0);
  EXPECT_FALSE(cpp.request_id().empty());

  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(request, &json).ok());
  const std::string request_file = testing::TempDir("e2e_py") + "/request.json";
  std::ofstream(request_file) << json;
  std::string output;
  const std::string python = absl::StrCat("/usr/bin/python3 ", std::getenv("RECSERVE_PYTHON_CLIENT"),
                                          " --address=", server_->address());
  ASSERT_EQ(e2e::RunCommand(python + " --request=" + request_file, &output), 0) << output;
  v1::RecommendResponse py;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(output, &py).ok()) << output;
  ASSERT_EQ(py.items_size(), cpp.items_size());
  for (int i = 0; i < cpp.items_size(); ++i) {
    EXPECT_EQ(py.items(i).item_id(), cpp.items(i).item_id()) << i;
    EXPECT_EQ(py.items(i).score(), cpp.items(i).score()) << i;
    EXPECT_EQ(py.items(i).sources(), cpp.items(i).sources()) << i;
  }
  EXPECT_EQ(py.model_version(), 1);

  ASSERT_EQ(e2e::RunCommand(python + " --health=recserve.v1.Recommender", &output), 0) << output;
  EXPECT_THAT(output, HasSubstr("SERVING"));
  ASSERT_EQ(e2e::RunCommand(python + " --health=", &output), 0) << output;
  EXPECT_THAT(output, HasSubstr("SERVING"));
}

TEST_F(E2eTest, BadRequestsGetTheRightCodeAndNameTheField) {
  StartServer({"--max_events=100", "--max_n=100"});
  struct Case {
    std::string name;
    std::function<void(v1::RecommendRequest*)> edit;
    grpc::StatusCode code;
    std::string message;
    absl::Duration timeout = absl::Seconds(10);
  };
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<Case> cases = {
      {"cold start is fine", [](v1::RecommendRequest* r) { r->clear_events(); r->clear_user_id(); },
       grpc::StatusCode::OK, ""},
      {"unknown items are skipped",
       [](v1::RecommendRequest* r) { r->mutable_events(0)->set_item_id(987654321); },
       grpc::StatusCode::OK, ""},
      {"too many events",
       [now_ms](v1::RecommendRequest* r) {
         r->clear_events();
         for (int i = 0; i < 101; ++i) {
           v1::Event* e = r->add_events();
           e->set_item_id(1 + i);
           e->set_type(v1::VIEW);
           e->set_timestamp_ms(now_ms - i);
         }
       },
       grpc::StatusCode::INVALID_ARGUMENT, "events: 101 events, more than the limit of 100"},
      {"n = 0", [](v1::RecommendRequest* r) { r->set_n(0); }, grpc::StatusCode::INVALID_ARGUMENT,
       "n: 0 is outside [1, 100]"},
      {"n huge", [](v1::RecommendRequest* r) { r->set_n(1000000); }, grpc::StatusCode::INVALID_ARGUMENT,
       "n: 1000000 is outside [1, 100]"},
      {"negative timestamp", [](v1::RecommendRequest* r) { r->mutable_events(1)->set_timestamp_ms(-5); },
       grpc::StatusCode::INVALID_ARGUMENT, "events[1].timestamp_ms: -5"},
      {"far-future timestamp",
       [now_ms](v1::RecommendRequest* r) { r->mutable_events(0)->set_timestamp_ms(now_ms + 86400000LL * 365); },
       grpc::StatusCode::INVALID_ARGUMENT, "events[0].timestamp_ms"},
      {"unknown event type",
       [](v1::RecommendRequest* r) { r->mutable_events(2)->set_type(static_cast<v1::EventType>(9)); },
       grpc::StatusCode::INVALID_ARGUMENT, "events[2].type: 9 is not an event type"},
      {"unspecified event type",
       [](v1::RecommendRequest* r) { r->mutable_events(0)->set_type(v1::EVENT_TYPE_UNSPECIFIED); },
       grpc::StatusCode::INVALID_ARGUMENT, "events[0].type: 0"},
      {"hour out of range", [](v1::RecommendRequest* r) { r->mutable_context()->set_hour(25); },
       grpc::StatusCode::INVALID_ARGUMENT, "context.hour: 25"},
      {"negative category cap",
       [](v1::RecommendRequest* r) { r->mutable_options()->set_per_category_cap(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "options.per_category_cap: -1"},
      {"oversize message", [](v1::RecommendRequest* r) { r->set_user_id(std::string(2 << 20, 'x')); },
       grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
      {"already-expired deadline", [](v1::RecommendRequest*) {}, grpc::StatusCode::DEADLINE_EXCEEDED, "",
       absl::Milliseconds(-100)},
  };
  const v1::RecommendRequest good = WarmRequest(5);
  ASSERT_GE(good.events_size(), 3);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::RecommendRequest bad = good;
    c.edit(&bad);
    v1::RecommendResponse response;
    grpc::Status status = Call(bad, &response, c.timeout);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    if (c.name == "unknown items are skipped") {
      EXPECT_EQ(response.unknown_items(), 1);
    }
    // The server is unharmed: a good request right after succeeds.
    v1::RecommendResponse after;
    grpc::Status ok = Call(good, &after);
    EXPECT_TRUE(ok.ok()) << ok.error_message();
    EXPECT_EQ(after.items_size(), 5);
  }
}

// A gzip body of about 1 MiB that inflates to 1 GiB. gRPC 1.51 checks --max_message_bytes
// against the compressed size, inflates the whole message and only then checks again: the
// server refuses compressed requests at their headers instead, before a byte is inflated.
TEST_F(E2eTest, GzipBombIsRefusedWithoutInflating) {
  StartServer();
  const v1::RecommendRequest good = WarmRequest(5);
  v1::RecommendResponse response;
  ASSERT_TRUE(Call(good, &response).ok());
  // 1 GiB of zeros: one 1 MiB buffer referenced 1024 times, so this side compresses it to
  // about 1 MiB (under the 1 MiB default limit) without holding 1 GiB itself.
  static const std::vector<char>* const zeros = new std::vector<char>(1 << 20, 0);
  const std::vector<grpc::Slice> slices(
      1024, grpc::Slice(zeros->data(), zeros->size(), grpc::Slice::STATIC_SLICE));
  const grpc::ByteBuffer bomb(slices.data(), slices.size());
  const int64_t peak_before = e2e::PeakResidentBytes(server_->pid());
  ASSERT_GT(peak_before, 0);
  for (grpc_compression_algorithm algorithm : {GRPC_COMPRESS_GZIP, GRPC_COMPRESS_DEFLATE, GRPC_COMPRESS_GZIP}) {
    const grpc::Status status =
        e2e::CallWithBody(server_->address(), "/recserve.v1.Recommender/Recommend", bomb, algorithm);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("is disabled"));
  }
  const int64_t growth = e2e::PeakResidentBytes(server_->pid()) - peak_before;
  EXPECT_LT(growth, int64_t{200} << 20) << "peak RSS grew by " << (growth >> 20) << " MiB";
  std::printf("gzip bomb x3: server peak RSS %lld -> %lld MiB\n", static_cast<long long>(peak_before >> 20),
              static_cast<long long>((peak_before + growth) >> 20));

  // A small compressed request is refused the same way (clients send requests uncompressed);
  // gRPC's line for each refusal reaches the log at most once a second; the server keeps
  // serving.
  const auto refusal_lines = [this] {
    int n = 0;
    for (absl::string_view line : absl::StrSplit(server_->Log(), '\n')) n += absl::StrContains(line, "is disabled");
    return n;
  };
  const int lines_before = refusal_lines();
  const absl::Time burst_start = absl::Now();
  constexpr int kBurst = 50;
  for (int i = 0; i < kBurst; ++i) {
    grpc::ClientContext compressed;
    compressed.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    compressed.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    const grpc::Status refused = stub_->Recommend(&compressed, good, &response);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNIMPLEMENTED) << refused.error_message();
    EXPECT_THAT(refused.error_message(), HasSubstr("'gzip' is disabled"));
  }
  const int burst_lines = refusal_lines() - lines_before;
  EXPECT_LE(burst_lines, 1 + static_cast<int>(absl::ToDoubleSeconds(absl::Now() - burst_start)) + 1)
      << server_->Log();
  response.Clear();
  const grpc::Status after = Call(good, &response);
  EXPECT_TRUE(after.ok()) << after.error_message();
  EXPECT_EQ(response.items_size(), 5);
}

// A number from the exposition: the value of the first line starting with `series`.
double Sample(const std::string& text, const std::string& series) {
  for (size_t at = text.find(series); at != std::string::npos; at = text.find(series, at + 1)) {
    if (at > 0 && text[at - 1] != '\n') continue;
    const size_t space = text.find(' ', at + series.size());
    if (space == std::string::npos || space != at + series.size()) continue;
    return std::stod(text.substr(space + 1, text.find('\n', space) - space - 1));
  }
  return -1;
}

grpc::ByteBuffer BodyOf(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// Bodies that are not a RecommendRequest, built by hand. Each is answered INVALID_ARGUMENT
// naming what is wrong, counted in recserve_requests_total, and a flood of them writes a
// bounded number of log lines (gRPC's own handling answered UNIMPLEMENTED with no message,
// counted nothing, and protobuf logged an ERROR line for each bad string).
TEST_F(E2eTest, MalformedBodiesAreInvalidArgumentAndCounted) {
  StartServer({"--metrics_port=0"});
  std::string random_bytes;
  std::mt19937 rng(13);
  for (int i = 0; i < 256; ++i) random_bytes.push_back(static_cast<char>(rng() & 0xff));
  ASSERT_FALSE(v1::RecommendRequest().ParseFromString(random_bytes));
  std::string nested_groups;  // field 15 as a group inside itself, 101 deep (protobuf allows 100)
  for (int i = 0; i < 101; ++i) nested_groups.push_back('\x7b');
  for (int i = 0; i < 101; ++i) nested_groups.push_back('\x7c');
  struct Case {
    std::string name;
    std::string body;
    std::string fault;  // in the message
  };
  const std::vector<Case> cases = {
      {"random bytes", random_bytes, "byte "},
      {"invalid UTF-8 in user_id", std::string("\x0a\x02\xc3\x28", 4), "recserve.v1.RecommendRequest.user_id"},
      {"invalid UTF-8 in events[0].item", std::string("\x20\x05\x12\x04\x22\x02\xff\xfe", 8),
       "recserve.v1.Event.item"},
      {"wire type 7", std::string("\x20\x05\x27\x01", 4),
       "byte 2: field recserve.v1.RecommendRequest.n (4): wire type 7 is not a protobuf wire type"},
      {"wire type 6 inside events[0]", std::string("\x12\x02\x0e\x00", 4),
       "byte 2: field recserve.v1.Event.item_id (1): wire type 6"},
      {"length past the end", std::string("\x0a\x64\x61\x62\x63", 5), "100 bytes long, past the end"},
      {"truncated varint", std::string("\x20\xff", 2),
       "byte 0: field recserve.v1.RecommendRequest.n (4): a truncated or overlong varint"},
      {"nesting past 100", nested_groups, "deeper than 100"},
  };
  const absl::Time flood_start = absl::Now();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const grpc::Status status =
        e2e::CallWithBody(server_->address(), "/recserve.v1.Recommender/Recommend", BodyOf(c.body));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("not a recserve.v1.RecommendRequest"));
    EXPECT_THAT(status.error_message(), HasSubstr(c.fault));
  }
  const grpc::Status no_message = e2e::CallWithNoMessage(server_->address(), "/recserve.v1.Recommender/Recommend");
  EXPECT_EQ(no_message.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << no_message.error_message();
  EXPECT_THAT(no_message.error_message(), HasSubstr("the call carried no request message"));

  // A flood over more than a second: a second line says how many were not logged.
  int flood = 0;
  while (flood < 300 || absl::Now() - flood_start < absl::Milliseconds(1200)) {
    const grpc::Status status = e2e::CallWithBody(server_->address(), "/recserve.v1.Recommender/Recommend",
                                                  BodyOf(cases[flood++ % cases.size()].body));
    ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - flood_start);

  // Counted like any invalid request.
  auto text = e2e::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(Sample(*text, "recserve_requests_total{code=\"INVALID_ARGUMENT\",method=\"Recommend\",role=\"none\",version=\"\"}"),
            static_cast<double>(cases.size() + 1 + flood));
  EXPECT_EQ(Sample(*text, "recserve_requests_total{code=\"UNIMPLEMENTED\",method=\"Recommend\",role=\"none\",version=\"\"}"), 0);
  // At most one line a second (and the first), none from protobuf itself.
  const std::string log = server_->Log();
  int lines = 0, counted_lines = 0, protobuf_lines = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    lines += absl::StrContains(line, "malformed Recommend request from ipv4:127.0.0.1:");
    counted_lines += absl::StrContains(line, "more since the last such line");
    protobuf_lines += absl::StrContains(line, "libprotobuf");
  }
  EXPECT_GE(lines, 2) << log;
  EXPECT_LE(lines, 1 + static_cast<int>(seconds) + 1) << log;
  EXPECT_GE(counted_lines, 1) << log;
  EXPECT_EQ(protobuf_lines, 0) << log;
  std::printf("%d malformed calls in %.2f s: %d log lines\n", static_cast<int>(cases.size()) + 1 + flood, seconds,
              lines);
  // The server is unharmed.
  v1::RecommendResponse response;
  const grpc::Status ok = Call(WarmRequest(5), &response);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.items_size(), 5);
}

TEST_F(E2eTest, MetricsCountWhatClientsSentAndDescribeTheModel) {
  StartServer({"--metrics_port=0", "--max_n=100"});
  ASSERT_GT(server_->metrics_port(), 0);
  const v1::RecommendRequest good = WarmRequest(5);
  v1::RecommendRequest bad = good;
  bad.set_n(0);
  v1::RecommendRequest unknown = good;
  unknown.mutable_events(0)->set_item_id(987654321);
  v1::RecommendResponse r;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(Call(good, &r).ok());
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Call(bad, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Call(unknown, &r).ok());
  auto text = e2e::HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(Sample(*text, "recserve_requests_total{code=\"OK\",method=\"Recommend\",role=\"serving\",version=\"1\"}"), 8) << *text;
  EXPECT_EQ(Sample(*text, "recserve_requests_total{code=\"INVALID_ARGUMENT\",method=\"Recommend\",role=\"none\",version=\"\"}"), 3);
  EXPECT_EQ(Sample(*text, "recserve_request_duration_seconds_count{code=\"OK\",method=\"Recommend\",role=\"serving\",version=\"1\"}"), 8);
  EXPECT_EQ(Sample(*text, "recserve_stage_duration_seconds_count{role=\"serving\",stage=\"rank\",version=\"1\"}"), 8);
  // One score per item answered: 8 answers of 5 items.
  EXPECT_EQ(Sample(*text, "recserve_score_count{role=\"serving\",version=\"1\"}"), 40);
  EXPECT_EQ(Sample(*text, "recserve_unknown_items_total{role=\"serving\",version=\"1\"}"), 1);
  EXPECT_EQ(Sample(*text, "recserve_model_version{model=\"default\"}"), 1);
  EXPECT_EQ(Sample(*text, "recserve_model_reloads_total{result=\"success\"}"), 1);
  EXPECT_GT(Sample(*text, "recserve_model_size_bytes{form=\"fp32\"}"), Sample(*text, "recserve_model_size_bytes{form=\"served\"}"));
  EXPECT_GT(Sample(*text, "recserve_candidates_count{role=\"serving\",source=\"popularity\",version=\"1\"}"), 0);
  EXPECT_GT(Sample(*text, "process_cpu_seconds_total"), 0);
  EXPECT_GT(Sample(*text, "process_resident_memory_bytes"), 1e6);
  EXPECT_GT(Sample(*text, "process_start_time_seconds"), 1.7e9);
  EXPECT_EQ(Sample(*text, "recserve_inflight_requests"), 0);
  EXPECT_NE(text->find("recserve_build_info{git_sha="), std::string::npos);
  EXPECT_NE(text->find("# TYPE recserve_request_duration_seconds histogram"), std::string::npos);
}

// Prometheus-cpp's HTTP server holds a thread per connection; with the library's
// defaults (2 threads, 30 s read timeout) two clients that connect and send nothing
// blocked every scrape for 30 s, sixteen for four minutes. The scrape must come back
// within Prometheus's default scrape timeout (10 s) while sixteen such clients hold on.
TEST_F(E2eTest, MetricsAnswerScrapesWhileSixteenIdleClientsHoldConnections) {
  StartServer({"--metrics_port=0"});
  ASSERT_GT(server_->metrics_port(), 0);
  std::vector<int> idle;
  for (int i = 0; i < 16; ++i) {
    // Half send nothing, half the first line of a request and then stall.
    auto fd = e2e::ConnectAndStall(server_->metrics_port(), i % 2 ? "GET /metrics HTTP/1.1\r\n" : "");
    ASSERT_TRUE(fd.ok()) << fd.status();
    idle.push_back(*fd);
  }
  absl::SleepFor(absl::Milliseconds(200));  // let the server take them all first
  auto text = e2e::HttpGet(server_->metrics_port(), "/metrics", absl::Seconds(10));
  for (int fd : idle) ::close(fd);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_NE(text->find("recserve_build_info"), std::string::npos);
  // And the Recommender was never affected.
  v1::RecommendResponse r;
  EXPECT_TRUE(Call(WarmRequest(5), &r).ok());
}

TEST_F(E2eTest, ReflectionListsOurService) {
  StartServer();
  auto services = e2e::ListServicesByReflection(server_->address());
  ASSERT_TRUE(services.ok()) << services.status();
  EXPECT_THAT(*services, ::testing::Contains("recserve.v1.Recommender"));
  EXPECT_THAT(*services, ::testing::Contains("grpc.health.v1.Health"));
}

TEST_F(E2eTest, CliRecommendsAndReportsStatusAndErrorsClearly) {
  StartServer();
  const std::string cli = e2e::BinaryPath("server/recserve-cli");
  const v1::RecommendRequest warm = WarmRequest();
  const std::string events = absl::StrCat(warm.events(0).item_id(), ":click,", warm.events(1).item_id(), ":view");
  std::string out;
  ASSERT_EQ(e2e::RunCommand(absl::StrCat(cli, " recommend --address=", server_->address(),
                                         " --events=", events, " --n=5"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("model default version 1"));
  EXPECT_THAT(out, HasSubstr("rank"));
  ASSERT_EQ(e2e::RunCommand(absl::StrCat(cli, " status --admin_address=", server_->admin_address()), &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("serving version 1"));
  EXPECT_THAT(out, HasSubstr("SERVING"));
  ASSERT_EQ(e2e::RunCommand(absl::StrCat(cli, " health --address=", server_->address()), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("SERVING"));
  EXPECT_EQ(e2e::RunCommand(absl::StrCat(cli, " recommend --address=", server_->address(),
                                         " --events=12:buy"), &out), 2);
  EXPECT_THAT(out, HasSubstr("type 'buy' is not view, click, cart or purchase"));
  EXPECT_EQ(e2e::RunCommand(absl::StrCat(cli, " recommend --address=127.0.0.1:1 --timeout_ms=500"), &out), 1);
  EXPECT_THAT(out, HasSubstr("cannot reach recserve at 127.0.0.1:1"));
}

TEST_F(E2eTest, CliReloadsAndPinsVersionsThroughTheAdminService) {
  const std::string models = testing::TempDir("cli_models");
  ASSERT_TRUE(e2e::WriteTinyBundle(models, 1).ok());
  // No polling to speak of: only `reload` finds version 2.
  auto server = e2e::ServerProcess::Start({"--model_base_path=" + models, "--poll_interval=1h",
                                           "--warmup_requests=4"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE(e2e::WaitForServing((*server)->address(), "recserve.v1.Recommender", absl::Seconds(60)));
  const std::string cli = absl::StrCat(e2e::BinaryPath("server/recserve-cli"),
                                       " --admin_address=", (*server)->admin_address(), " ");
  ASSERT_TRUE(e2e::PublishCopy(models + "/1", models, 2).ok());
  std::string out;
  ASSERT_EQ(e2e::RunCommand(cli + "reload", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 2"));
  ASSERT_EQ(e2e::RunCommand(cli + "status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 2 (newest; no pin)"));
  ASSERT_EQ(e2e::RunCommand(cli + "pin --version=1", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 1 (pinned)"));
  ASSERT_EQ(e2e::RunCommand(cli + "status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 1 (pinned to version 1)"));
  // A refused pin leaves the pin in force, and reloads keep working.
  EXPECT_EQ(e2e::RunCommand(cli + "pin --version=7", &out), 1);
  EXPECT_THAT(out, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(out, HasSubstr("7"));
  ASSERT_EQ(e2e::RunCommand(cli + "status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 1 (pinned to version 1)"));
  ASSERT_EQ(e2e::RunCommand(cli + "reload", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 1"));
  ASSERT_EQ(e2e::RunCommand(cli + "pin --version=0", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 2 (newest)"));
  EXPECT_EQ(e2e::RunCommand(cli + "pin --version=7", &out), 1);
  ASSERT_EQ(e2e::RunCommand(cli + "status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 2 (newest; no pin)"));
  ASSERT_TRUE(e2e::PublishCopy(models + "/1", models, 3).ok());
  ASSERT_EQ(e2e::RunCommand(cli + "reload", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("serving version 3"));
  EXPECT_EQ(e2e::RunCommand(cli + "pin", &out), 2);
  EXPECT_THAT(out, HasSubstr("give --version=N"));
}

TEST_F(E2eTest, SigtermDuringTrafficFailsNoInflightRequestAndExitsZero) {
  StartServer({"--drain_delay=300ms", "--shutdown_grace=10s"});
  const v1::RecommendRequest request = WarmRequest(10);
  std::atomic<bool> sent_sigterm{false};
  std::atomic<bool> stop{false};
  std::atomic<int> ok_before{0}, ok_after{0}, failed_before{0}, unavailable_after{0}, other_after{0};
  std::vector<std::thread> clients;
  absl::Notification traffic_flowing;
  std::atomic<int> started{0};
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&] {
      auto stub = v1::Recommender::NewStub(channel_);
      bool counted = false;
      while (!stop.load()) {
        const bool before = !sent_sigterm.load();
        grpc::ClientContext ctx;
        ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
        v1::RecommendResponse response;
        grpc::Status s = stub->Recommend(&ctx, request, &response);
        if (before) {
          (s.ok() ? ok_before : failed_before)++;
          if (s.ok() && !counted && ++started == 4) traffic_flowing.Notify();
          counted = true;
        } else if (s.ok()) {
          ok_after++;
        } else if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                   s.error_code() == grpc::StatusCode::CANCELLED) {
          // Sent after SIGTERM and refused: UNAVAILABLE once the listener is closed and
          // the channel cannot reconnect, or CANCELLED from gRPC for a call that reached
          // a connection as gRPC shut it down and was never handed to the service. The
          // server waits for every call it accepted, so neither is an accepted call cut off.
          unavailable_after++;
          break;
        } else {
          other_after++;
          std::fprintf(stderr, "after SIGTERM: %d %s\n", s.error_code(), s.error_message().c_str());
        }
      }
    });
  }
  traffic_flowing.WaitForNotification();
  sent_sigterm = true;
  server_->Signal(SIGTERM);
  const int exit_code = server_->WaitExit(absl::Seconds(30));
  stop = true;
  for (auto& c : clients) c.join();
  EXPECT_EQ(exit_code, 0) << server_->Log();
  EXPECT_GT(ok_before.load(), 0);
  EXPECT_EQ(failed_before.load(), 0) << "a request sent before SIGTERM failed";
  EXPECT_EQ(other_after.load(), 0) << "a request failed with something other than a refusal";
  EXPECT_GT(ok_after.load(), 0) << "in-flight and drain-window requests should have been served";
  EXPECT_THAT(server_->Log(), HasSubstr("SIGTERM, draining"));
}

TEST_F(E2eTest, MaxConnectionAgeRecyclesConnectionsWithoutFailingCalls) {
  // Each connection gets a graceful GOAWAY after 200 ms; the channel reconnects while
  // calls keep flowing, and none of them fails.
  StartServer({"--max_connection_age=200ms"});
  const v1::RecommendRequest request = WarmRequest(10);
  auto stub = v1::Recommender::NewStub(channel_);
  int ok = 0, failed = 0;
  std::string first_failure;
  const absl::Time end = absl::Now() + absl::Seconds(2);
  while (absl::Now() < end) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::RecommendResponse response;
    grpc::Status s = stub->Recommend(&ctx, request, &response);
    if (s.ok()) {
      ++ok;
    } else if (failed++ == 0) {
      first_failure = s.error_message();
    }
  }
  EXPECT_EQ(failed, 0) << first_failure;
  EXPECT_GT(ok, 0);
}

}  // namespace
}  // namespace recserve
