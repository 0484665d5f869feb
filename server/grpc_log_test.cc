#include "server/grpc_log.h"

#include <grpc/support/log.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

int LinesWith(const std::string& text, const std::string& needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) n += absl::StrContains(line, needle);
  return n;
}

TEST(GrpcLogTest, ErrorLinesFromOnePlacePassAtMostOnceASecond) {
  InstallRateLimitedGrpcLog();
  gpr_log_verbosity_init();  // grpc_init does this in the server; gpr_log writes nothing before
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 500; ++i) {
    gpr_log("src/core/lib/surface/call.cc", 1211, GPR_LOG_SEVERITY_ERROR, "Compression algorithm '%s' is disabled.",
            "gzip");
  }
  // Another place has its own budget.
  gpr_log("src/core/lib/other.cc", 7, GPR_LOG_SEVERITY_ERROR, "something else");
  const std::string written = ::testing::internal::GetCapturedStderr();
  // 500 lines in well under a second, or at worst one more per second of a slow run.
  EXPECT_GE(LinesWith(written, "call.cc:1211] Compression algorithm 'gzip' is disabled."), 1) << written;
  EXPECT_LE(LinesWith(written, "call.cc:1211]"), 3) << written;
  EXPECT_EQ(LinesWith(written, "other.cc:7] something else"), 1) << written;
  EXPECT_THAT(written, ::testing::StartsWith("E "));
}

}  // namespace
}  // namespace recserve
