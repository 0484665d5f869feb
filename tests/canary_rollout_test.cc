// Roll-outs end to end: the real recserve binary with --rollout=canary under steady
// traffic from real gRPC clients (random users, random histories), while a new version
// is published. A canary broken on purpose is rolled back by the rule it breaks, a good
// one is promoted, an operator aborts one with recserve-cli; no request fails.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "engine/bundle.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "recserve/v1/recommender.grpc.pb.h"
#include "tests/e2e_util.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Version 1 as trained; `edit` makes version 2 from it.
struct Versions {
  std::string models;
  std::string staged;  // version 2, written here and published into `models` later
};

absl::StatusOr<Versions> Prepare(const std::string& name, void (*edit)(BundleContents*)) {
  Versions v{testing::TempDir(name), testing::TempDir(name + "_staged")};
  if (auto written = e2e::WriteTinyBundle(v.models, 1); !written.ok()) return written.status();
  absl::StatusOr<BundleContents> bundle = ReadBundle(v.models + "/1");
  if (!bundle.ok()) return bundle.status();
  edit(&*bundle);
  if (absl::Status s = WriteBundle(*std::move(bundle), v.staged + "/2"); !s.ok()) return s;
  return v;
}

// The ranker's weights shuffled within each layer: the same architecture and
// magnitudes, a meaningless model. Its accuracy gate compares its own fp32 with its own
// int8, which agree, so it loads.
void ShuffleWeights(BundleContents* b) {
  std::mt19937_64 rng(7);
  for (DenseLayer& layer : b->mlp.layers) std::shuffle(layer.weight.begin(), layer.weight.end(), rng);
}

// The same function, much slower: every hidden layer padded with zero-weight units to
// 1024 wide (fp32 computes the zeros all the same; the scores are unchanged).
void PadHiddenLayers(BundleContents* b) {
  constexpr int kWide = 1024;
  std::vector<DenseLayer>& layers = b->mlp.layers;
  for (size_t l = 0; l < layers.size(); ++l) {
    DenseLayer& layer = layers[l];
    const int in = l == 0 ? layer.in : kWide;
    const int out = l + 1 == layers.size() ? layer.out : kWide;
    std::vector<float> weight(static_cast<size_t>(out) * in, 0.f), bias(out, 0.f);
    for (int o = 0; o < layer.out; ++o) {
      for (int i = 0; i < layer.in; ++i) weight[static_cast<size_t>(o) * in + i] = layer.weight[o * layer.in + i];
      bias[o] = layer.bias[o];
    }
    layer.in = in;
    layer.out = out;
    layer.weight = std::move(weight);
    layer.bias = std::move(bias);
  }
  b->manifest.clear_layer_sizes();  // WriteBundle fills them from the layers
}

void SameWeights(BundleContents*) {}

class RolloutTest : public ::testing::Test {
 protected:
  // Starts the server on version 1 with `flags` (a canary roll-out of half the users
  // by default) and clients calling it until Finish().
  void Start(const Versions& versions, std::vector<std::string> flags) {
    versions_ = versions;
    std::vector<std::string> all = {"--model_base_path=" + versions.models, "--poll_interval=50ms",
                                    "--warmup_requests=20", "--rollout=canary", "--canary_share=0.5",
                                    "--rollout_min_requests=300"};
    all.insert(all.end(), flags.begin(), flags.end());
    auto server = e2e::ServerProcess::Start(all);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_TRUE(e2e::WaitForServing(server_->address(), "recserve.v1.Recommender", absl::Seconds(60)));
    admin_ = v1::Admin::NewStub(grpc::CreateChannel(server_->admin_address(), grpc::InsecureChannelCredentials()));
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    for (int t = 0; t < 4; ++t) {
      clients_.emplace_back([this, channel, t] {
        auto stub = v1::Recommender::NewStub(channel);
        const World& world = e2e::TinyWorld();
        std::mt19937_64 rng(100 + t);
        while (!stop_.load()) {
          v1::RecommendRequest request;
          request.set_n(10);
          request.set_user_id(absl::StrCat("user-", rng() % 1000000));
          const int64_t now_ms = absl::ToUnixMillis(absl::Now());
          for (int i = 0; i < 5; ++i) {
            v1::Event* e = request.add_events();
            e->set_item_id(world.train_events[rng() % world.train_events.size()].item_id);
            e->set_type(v1::CLICK);
            e->set_timestamp_ms(now_ms - 60000 + i);
          }
          if (pause_ > absl::ZeroDuration()) absl::SleepFor(pause_);
          grpc::ClientContext ctx;
          ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
          v1::RecommendResponse response;
          const grpc::Status s = stub->Recommend(&ctx, request, &response);
          std::lock_guard<std::mutex> lock(mu_);
          if (s.ok() && response.model_version() == 2) ++version2_answers_;
          if (!s.ok()) {
            ++failed_;
            if (first_failure_.empty()) first_failure_ = s.error_message();
          } else if (response.model_role() == v1::ROLE_CANARY) {
            ++canary_answers_;
            if (response.model_version() != 2) ++mislabelled_;
          } else if (response.model_role() != v1::ROLE_SERVING) {
            ++mislabelled_;
          }
        }
      });
    }
  }

  // Publishes version 2 and waits until its roll-out has ended (or 180 s); its status.
  v1::VersionStatus PublishAndWaitForVerdict() {
    EXPECT_TRUE(e2e::PublishCopy(versions_.staged + "/2", versions_.models, 2).ok());
    const absl::Time deadline = absl::Now() + absl::Seconds(180);
    v1::VersionStatus last;
    while (absl::Now() < deadline) {
      last = Status(2);
      if (last.state() == v1::FAILED || last.role() == v1::ROLE_SERVING) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return last;
  }

  v1::VersionStatus Status(int64_t version) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::GetModelStatusResponse status;
    if (!admin_->GetModelStatus(&ctx, {}, &status).ok()) return {};
    serving_version_ = status.serving_version();
    for (const v1::VersionStatus& v : status.versions()) {
      if (v.version() == version) return v;
    }
    return {};
  }

  // Stops the clients and the server; checks that no request failed.
  void Finish() {
    stop_ = true;
    for (auto& c : clients_) c.join();
    clients_.clear();
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(failed_, 0) << first_failure_;
    EXPECT_EQ(mislabelled_, 0);
    if (shadow_) {
      EXPECT_EQ(canary_answers_, 0);
    } else {
      EXPECT_GT(canary_answers_, 0);
    }
    server_->Signal(SIGTERM);
    EXPECT_EQ(server_->WaitExit(absl::Seconds(30)), 0);
  }

  void TearDown() override {
    stop_ = true;
    for (auto& c : clients_) c.join();
  }

  Versions versions_;
  std::unique_ptr<e2e::ServerProcess> server_;
  std::unique_ptr<v1::Admin::Stub> admin_;
  int64_t serving_version_ = 0;
  std::vector<std::thread> clients_;
  std::atomic<bool> stop_{false};
  // Shadow tests: no canary answers; clients pause between calls so the idle-priority
  // shadow thread gets CPU on a 2-core machine.
  bool shadow_ = false;
  absl::Duration pause_;
  std::mutex mu_;
  int64_t failed_ = 0, canary_answers_ = 0, mislabelled_ = 0, version2_answers_ = 0;
  std::string first_failure_;
};

TEST_F(RolloutTest, ShuffledWeightsPassTheirGateAndAreRolledBackOnScoreDrift) {
  auto versions = Prepare("rollout_shuffled", ShuffleWeights);
  ASSERT_TRUE(versions.ok()) << versions.status();
  // p99 off: both versions are as fast, and this test is about the drift rule alone.
  Start(*versions, {"--rollout_max_p99_ratio=0", "--rollout_window=10m"});
  const v1::VersionStatus v2 = PublishAndWaitForVerdict();
  EXPECT_EQ(v2.state(), v1::FAILED) << server_->Log();
  EXPECT_THAT(v2.error(), HasSubstr("rollout: score drift PSI"));
  EXPECT_THAT(v2.rollout().verdict(), HasSubstr("rolled back: score drift PSI"));
  EXPECT_GT(v2.rollout().score_psi(), 0.2);
  EXPECT_EQ(serving_version_, 1);
  std::printf("shuffled canary: %s\n", v2.error().c_str());
  Finish();
}

TEST_F(RolloutTest, SlowVersionIsRolledBackOnP99) {
  auto versions = Prepare("rollout_slow", PadHiddenLayers);
  ASSERT_TRUE(versions.ok()) << versions.status();
  // fp32 everywhere, so the padding costs what it computes; 1024-wide layers make
  // ranking tens of times slower, far above the 5x allowed. One worker: on this 2-core
  // machine a second one would run serving's calls beside the slow ones, and the rule
  // would compare contention, not versions (serving's p99 rose to 7 ms that way).
  Start(*versions, {"--compression=none", "--worker_threads=1", "--rollout_max_p99_ratio=5", "--rollout_window=10m"});
  const v1::VersionStatus v2 = PublishAndWaitForVerdict();
  EXPECT_EQ(v2.state(), v1::FAILED) << server_->Log();
  EXPECT_THAT(v2.error(), HasSubstr("rollout: p99 latency"));
  EXPECT_GT(v2.rollout().p99_ratio(), 5);
  EXPECT_LT(v2.rollout().score_psi(), 0.2);  // the same scores: only latency broke
  EXPECT_EQ(serving_version_, 1);
  std::printf("slow canary: %s\n", v2.error().c_str());
  Finish();
}

TEST_F(RolloutTest, GoodCanaryIsPromotedAndTheCliShowsTheRollout) {
  auto versions = Prepare("rollout_good", SameWeights);
  ASSERT_TRUE(versions.ok()) << versions.status();
  // p99 on, with room for a loaded machine's spikes on tiny requests.
  Start(*versions, {"--rollout_max_p99_ratio=10", "--rollout_window=3s"});
  const v1::VersionStatus v2 = PublishAndWaitForVerdict();
  EXPECT_EQ(v2.role(), v1::ROLE_SERVING) << v2.error() << "\n" << server_->Log();
  EXPECT_THAT(v2.rollout().verdict(), HasSubstr("promoted: every rule held for 3s"));
  EXPECT_GE(v2.rollout().canary().calls(), 300);
  EXPECT_EQ(serving_version_, 2);
  std::string output;
  ASSERT_EQ(e2e::RunCommand(absl::StrCat(e2e::BinaryPath("server/recserve-cli"),
                                         " status --admin_address=", server_->admin_address()),
                            &output),
            0)
      << output;
  EXPECT_THAT(output, HasSubstr("rollout: canary 0.5 of users"));
  EXPECT_THAT(output, HasSubstr("verdict: promoted: every rule held"));
  Finish();
}

TEST_F(RolloutTest, OperatorAbortsACanaryWithTheCli) {
  auto versions = Prepare("rollout_abort", SameWeights);
  ASSERT_TRUE(versions.ok()) << versions.status();
  Start(*versions, {"--rollout_window=10m", "--canary_share=0.2"});
  ASSERT_TRUE(e2e::PublishCopy(versions_.staged + "/2", versions_.models, 2).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (Status(2).role() != v1::ROLE_CANARY && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  ASSERT_EQ(Status(2).role(), v1::ROLE_CANARY) << server_->Log();
  const std::string cli = absl::StrCat(e2e::BinaryPath("server/recserve-cli"), " rollout --admin_address=",
                                       server_->admin_address());
  std::string output;
  ASSERT_EQ(e2e::RunCommand(cli + " --version=2 --action=canary --share=0.5", &output), 0) << output;
  EXPECT_THAT(output, HasSubstr("version 2: SERVING (canary)"));
  EXPECT_EQ(Status(2).share(), 0.5);
  EXPECT_EQ(e2e::RunCommand(cli + " --version=1 --action=promote", &output), 1);
  EXPECT_THAT(output, HasSubstr("FAILED_PRECONDITION: version 1 is not rolling out (version 2 is)"));
  ASSERT_EQ(e2e::RunCommand(cli + " --version=2 --action=abort", &output), 0) << output;
  EXPECT_THAT(output, HasSubstr("version 2: FAILED, serving version 1"));
  EXPECT_THAT(output, HasSubstr("verdict: aborted by SetRollout"));
  EXPECT_EQ(Status(2).error(), "rollout: aborted by SetRollout");
  Finish();
}

TEST_F(RolloutTest, ShuffledShadowNeverAnswersAndIsRolledBackWithItsComparison) {
  auto versions = Prepare("rollout_shadow_shuffled", ShuffleWeights);
  ASSERT_TRUE(versions.ok()) << versions.status();
  shadow_ = true;
  pause_ = absl::Milliseconds(2);
  // Every request sampled for the shadow; p99 off (the shadow's is its thread's CPU time).
  Start(*versions, {"--rollout=shadow", "--canary_share=1", "--rollout_max_p99_ratio=0", "--rollout_window=10m"});
  const v1::VersionStatus v2 = PublishAndWaitForVerdict();
  EXPECT_EQ(v2.state(), v1::FAILED) << server_->Log();
  EXPECT_THAT(v2.error(), HasSubstr("rollout: "));
  EXPECT_THAT(v2.error(), HasSubstr("(shadow "));  // the verdict names the role it judged
  EXPECT_THAT(v2.error(), Not(HasSubstr("canary")));
  EXPECT_EQ(v2.rollout().mode(), v1::ROLE_SHADOW);
  EXPECT_GE(v2.rollout().canary().calls(), 300);     // shadow jobs, judged as calls
  EXPECT_GT(v2.rollout().overlap_samples(), 0);     // the shadow comparison fed the rules
  EXPECT_LT(v2.rollout().topk_overlap(), 0.5);
  EXPECT_GT(v2.shadow().scored(), 0);
  EXPECT_GT(v2.shadow().score_psi(), 0.2);
  EXPECT_EQ(serving_version_, 1);
  std::printf("shuffled shadow: %s\n", v2.error().c_str());
  Finish();
  EXPECT_EQ(version2_answers_, 0);  // a shadow never answers
}

TEST_F(RolloutTest, GoodShadowIsPromotedOnItsComparison) {
  auto versions = Prepare("rollout_shadow_good", SameWeights);
  ASSERT_TRUE(versions.ok()) << versions.status();
  shadow_ = true;
  pause_ = absl::Milliseconds(2);
  Start(*versions, {"--rollout=shadow", "--canary_share=1", "--rollout_max_p99_ratio=0", "--rollout_window=3s"});
  const v1::VersionStatus v2 = PublishAndWaitForVerdict();
  EXPECT_EQ(v2.role(), v1::ROLE_SERVING) << v2.error() << "\n" << server_->Log();
  EXPECT_THAT(v2.rollout().verdict(), HasSubstr("promoted"));
  EXPECT_GT(v2.rollout().overlap_samples(), 0);
  EXPECT_GT(v2.rollout().topk_overlap(), 0.99);  // the same model: the same answers
  EXPECT_EQ(serving_version_, 2);
  Finish();
}

}  // namespace
}  // namespace recserve
