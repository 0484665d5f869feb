#include "server/version_source.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>

#include "engine/file_util.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Key;
namespace fs = std::filesystem;

class VersionSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  // A version directory `name` under `dir`, with READY unless `ready` is false.
  static void MakeVersion(const std::string& dir, const std::string& name, bool ready = true) {
    ASSERT_TRUE(fs::create_directories(dir + "/" + name));
    if (ready) {
      ASSERT_TRUE(WriteFileAtomically(dir + "/" + name + "/READY", "").ok());
    }
  }
  VersionSource Source() const {
    absl::StatusOr<VersionSource> source = VersionSource::Create(base_);
    EXPECT_TRUE(source.ok()) << source.status();
    return *std::move(source);
  }
  std::string base_;
};

TEST_F(VersionSourceTest, OnlyPlainPositiveIntegerNamesAreVersions) {
  for (const char* name : {"3", "07", "0", "-4", "5a", "latest", ".6", "1e3", "+8"}) MakeVersion(base_, name);
  const VersionScan scan = Source().Scan();
  EXPECT_THAT(scan.ready, ElementsAre(Key(3)));
  EXPECT_THAT(scan.refused, IsEmpty());  // other names are no versions, not refused ones
  EXPECT_EQ(scan.ready.at(3).path, fs::canonical(base_ + "/3").string());
}

TEST_F(VersionSourceTest, AVersionCountsOnlyOnceItHoldsReady) {
  MakeVersion(base_, "1");
  MakeVersion(base_, "2", /*ready=*/false);  // still being copied
  const VersionSource source = Source();
  EXPECT_THAT(source.Scan().ready, ElementsAre(Key(1)));
  ASSERT_TRUE(WriteFileAtomically(base_ + "/2/READY", "").ok());
  EXPECT_THAT(source.Scan().ready, ElementsAre(Key(1), Key(2)));
}

TEST_F(VersionSourceTest, ASymlinkOutsideTheBasePathIsRefusedAndOneInsideIsFollowed) {
  const std::string outside = testing::TempDir("VersionSourceTest_outside");
  MakeVersion(outside, "9");
  MakeVersion(base_, "shelf");  // not a version itself
  MakeVersion(base_ + "/shelf", "4");
  fs::create_directory_symlink(outside + "/9", base_ + "/9");
  fs::create_directory_symlink(base_ + "/shelf/4", base_ + "/4");
  fs::create_directory_symlink("..", base_ + "/5");  // the parent of the base path
  const VersionScan scan = Source().Scan();
  EXPECT_THAT(scan.ready, ElementsAre(Key(4)));
  EXPECT_EQ(scan.ready.at(4).path, fs::canonical(base_ + "/shelf/4").string());
  EXPECT_THAT(scan.refused, ElementsAre(std::pair<const int64_t, std::string>(5, "resolves outside the model base path"),
                                        std::pair<const int64_t, std::string>(9, "resolves outside the model base path")));
}

TEST_F(VersionSourceTest, AFileNamedAsAVersionIsRefused) {
  ASSERT_TRUE(WriteFileAtomically(base_ + "/6", "not a directory").ok());
  const VersionScan scan = Source().Scan();
  EXPECT_THAT(scan.ready, IsEmpty());
  EXPECT_THAT(scan.refused, ElementsAre(std::pair<const int64_t, std::string>(6, "not a directory")));
}

TEST_F(VersionSourceTest, TheReadyStampChangesWhenReadyIsTouched) {
  MakeVersion(base_, "1");
  const std::string ready = base_ + "/1/READY";
  auto set_mtime = [&ready](int64_t seconds, long nanos) {
    const timespec times[2] = {{seconds, nanos}, {seconds, nanos}};
    ASSERT_EQ(::utimensat(AT_FDCWD, ready.c_str(), times, 0), 0);
  };
  const VersionSource source = Source();
  set_mtime(1700000000, 5);
  EXPECT_EQ(source.Scan().ready.at(1).ready_stamp, 1700000000000000005);
  EXPECT_EQ(source.Scan().ready.at(1).ready_stamp, 1700000000000000005);  // unchanged: same stamp
  set_mtime(1700000000, 6);  // touched a nanosecond later
  EXPECT_EQ(source.Scan().ready.at(1).ready_stamp, 1700000000000000006);
  EXPECT_EQ(VersionSource::ReadyStamp(base_ + "/1"), 1700000000000000006);
  fs::remove(ready);
  EXPECT_EQ(VersionSource::ReadyStamp(base_ + "/1"), -1);
}

TEST_F(VersionSourceTest, CreateRefusesABasePathThatIsNoDirectory) {
  for (const std::string& path : {std::string(), base_ + "/missing"}) {
    absl::StatusOr<VersionSource> source = VersionSource::Create(path);
    EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument) << path;
    EXPECT_THAT(source.status().message(), ::testing::HasSubstr("'" + path + "' is not a directory"));
  }
}

TEST_F(VersionSourceTest, ABasePathRemovedAfterCreateScansEmpty) {
  MakeVersion(base_, "1");
  const VersionSource source = Source();
  fs::remove_all(base_);
  const VersionScan scan = source.Scan();
  EXPECT_THAT(scan.ready, IsEmpty());
  EXPECT_THAT(scan.refused, IsEmpty());
}

}  // namespace
}  // namespace recserve
