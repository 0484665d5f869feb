#include "server/shadow_metrics.h"

#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Text(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

TEST(ShadowMetricsTest, CountsOutcomesAndKeepsPsiOfTheVersionLastScored) {
  prometheus::Registry registry;
  ShadowMetrics metrics(registry);
  metrics.Observe({ShadowJobResult::kDropped, 2});
  metrics.Observe({ShadowJobResult::kDropped, 2});
  metrics.Observe({ShadowJobResult::kFailed, 2});
  metrics.Observe({ShadowJobResult::kScored, 2, 0.5, 0.3});
  std::string text = Text(registry);
  EXPECT_THAT(text, HasSubstr("recserve_shadow_jobs_total{result=\"dropped\"} 2"));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_jobs_total{result=\"failed\"} 1"));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_jobs_total{result=\"scored\"} 1"));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_topk_overlap_bucket{le=\"0.5\"} 1"));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_topk_overlap_bucket{le=\"0.4\"} 0"));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_score_psi{version=\"2\"} 0.3"));

  // Another version in shadow: its PSI replaces the old version's series.
  metrics.Observe({ShadowJobResult::kScored, 3, 1.0, 0.0});
  text = Text(registry);
  EXPECT_THAT(text, HasSubstr("recserve_shadow_score_psi{version=\"3\"} 0"));
  EXPECT_THAT(text, Not(HasSubstr("recserve_shadow_score_psi{version=\"2\"}")));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_topk_overlap_bucket{le=\"0.999\"} 1"));
  EXPECT_THAT(text, HasSubstr("recserve_shadow_topk_overlap_count 2"));
}

}  // namespace
}  // namespace recserve
