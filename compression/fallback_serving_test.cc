// The compression fallback chain seen from the server: through the model manager a
// version whose int8 form fails the accuracy gate still serves, in the form status names
// with the reason, or, in strict mode, is refused as before; Prometheus names the form.
#include <memory>
#include <string>

#include "compression/compress.h"
#include "compression/test_models.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics.h"
#include "server/model_manager.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class FallbackServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    // int8 loses ~0.2 AUC on this ranker; the gate allows 0.005.
    ASSERT_TRUE(WriteBundle(testing::SentinelBundle(0.005f, 0.02f), base_ + "/1").ok());
  }
  std::unique_ptr<ModelManager> Start(const PolicyOverrides& overrides) {
    ModelManagerOptions o;
    o.base_path = base_;
    o.poll_interval = absl::ZeroDuration();
    o.warmup_requests = 5;
    o.check = InstallCompression(overrides, &o.model_options);
    auto m = ModelManager::Create(o);
    EXPECT_TRUE(m.ok()) << m.status();
    return *std::move(m);
  }
  v1::VersionStatus StatusOf(const ModelManager& m, int64_t version) {
    for (const v1::VersionStatus& v : m.Versions()) {
      if (v.version() == version) return v;
    }
    return {};
  }
  std::string base_;
};

TEST_F(FallbackServingTest, VersionWhoseInt8FailsTheGateServesMixedPrecisionNamedInStatus) {
  auto m = Start({});
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(60)));
  EXPECT_EQ(m->serving_version(), 1);
  const v1::VersionStatus st = StatusOf(*m, 1);
  EXPECT_EQ(st.state(), v1::SERVING);
  EXPECT_EQ(st.error(), "");
  const v1::ModelFigures& f = st.figures();
  EXPECT_EQ(f.compression(), "mixed(int8, layer 0 fp32)");
  EXPECT_EQ(f.compression_requested(), "int8");
  EXPECT_THAT(f.compression_fallback_reason(), StartsWith("int8: AUC drop "));
  EXPECT_THAT(f.compression_fallback_reason(), HasSubstr("> 0.005"));
  EXPECT_EQ(f.int8_calibration(), "mse");
  EXPECT_GE(f.auc_delta(), -0.005);
  EXPECT_GT(f.fp32_auc(), 0.6);
  EXPECT_EQ(m->Pin()->ranker().kind(), "mixed(int8, layer 0 fp32)");
}

TEST_F(FallbackServingTest, StrictModeRefusesAVersionWhoseInt8FailsTheGate) {
  PolicyOverrides strict;
  strict.fallback = false;
  auto m = Start(strict);
  auto result = m->ReloadNow();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(result.status().message(), HasSubstr("accuracy gate: AUC dropped by"));
  EXPECT_EQ(m->serving_version(), 0);
  const v1::VersionStatus st = StatusOf(*m, 1);
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.error(), HasSubstr("accuracy gate: AUC dropped by"));
  EXPECT_EQ(st.figures().compression(), "int8");
  EXPECT_EQ(st.figures().compression_fallback_reason(), "");
  EXPECT_LT(st.figures().auc_delta(), -0.005);
}

// recserve_model_compression{policy} and recserve_model_compression_fallback.
TEST(FallbackMetricsTest, PrometheusNamesTheServedFormAndWhetherItIsAFallback) {
  auto metrics = Metrics::Create("127.0.0.1:0", MetricsHttpOptions(), [] { return 0; });
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  auto model = Model::Create(testing::TinyBundle(), 3);
  ASSERT_TRUE(model.ok()) << model.status();
  auto gauges = [&] {
    std::map<std::string, double> out;
    for (const prometheus::MetricFamily& family : (*metrics)->registry().Collect()) {
      if (family.name.rfind("recserve_model_compression", 0) != 0) continue;
      for (const prometheus::ClientMetric& metric : family.metric) {
        std::string name = family.name;
        for (const prometheus::ClientMetric::Label& label : metric.label) name += "{" + label.value + "}";
        out[name] = metric.gauge.value;
      }
    }
    return out;
  };
  v1::ModelFigures figures;
  figures.set_compression("mixed(int8, layers 0, 2 fp32)");
  figures.set_compression_requested("int8");
  figures.set_compression_fallback_reason("int8: AUC drop 0.0061 > 0.002");
  (*metrics)->ObserveServing(**model, figures);
  EXPECT_EQ(gauges(), (std::map<std::string, double>{{"recserve_model_compression{int8}", 0},
                                                     {"recserve_model_compression{mixed}", 1},
                                                     {"recserve_model_compression{none}", 0},
                                                     {"recserve_model_compression{prune+int8}", 0},
                                                     {"recserve_model_compression_fallback", 1}}));
  // int8 served as asked (with other ranges than the first: a reason, but no fallback form).
  figures.set_compression("int8");
  figures.set_compression_fallback_reason("int8: AUC drop 0.0031 > 0.002");
  (*metrics)->ObserveServing(**model, figures);
  EXPECT_EQ(gauges()["recserve_model_compression{int8}"], 1);
  EXPECT_EQ(gauges()["recserve_model_compression{mixed}"], 0);
  EXPECT_EQ(gauges()["recserve_model_compression_fallback"], 0);
}

}  // namespace
}  // namespace recserve
