// The impression log's file format: records round-trip, a cut tail is reported and
// skipped, a record that does not parse is DATA_LOSS naming its offset.
#include "engine/impression_file.h"

#include <fstream>

#include "engine/file_util.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

v1::Impression Record(int i) {
  v1::Impression r;
  r.set_time_unix_ms(1000 + i);
  r.set_user("u" + std::to_string(i));
  r.mutable_response()->set_request_id("req" + std::to_string(i));
  for (int k = 0; k < i; ++k) r.mutable_response()->add_items()->set_item_id(k);
  return r;
}

TEST(ImpressionFileTest, RecordsRoundTripAndACutTailIsReportedNotRead) {
  const std::string dir = testing::TempDir("impression_file");
  std::string bytes;
  for (int i = 0; i < 3; ++i) AppendImpression(Record(i), &bytes);
  const std::string whole = dir + "/" + ImpressionFileName(5, 0, false);
  ASSERT_TRUE(WriteFileAtomically(whole, bytes).ok());
  absl::StatusOr<ImpressionFileContents> read = ReadImpressionFile(whole);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->records.size(), 3u);
  EXPECT_FALSE(read->truncated_tail);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(read->records[i].SerializeAsString(), Record(i).SerializeAsString());

  const std::string cut = dir + "/" + ImpressionFileName(6, 0, true);
  ASSERT_TRUE(WriteFileAtomically(cut, bytes.substr(0, bytes.size() - 2)).ok());
  read = ReadImpressionFile(cut);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->records.size(), 2u);
  EXPECT_TRUE(read->truncated_tail);

  absl::StatusOr<std::vector<ImpressionFileInfo>> complete = ListImpressionFiles(dir, false);
  ASSERT_TRUE(complete.ok());
  ASSERT_EQ(complete->size(), 1u);
  EXPECT_EQ(complete->front().path, whole);
  EXPECT_EQ(ListImpressionFiles(dir, true).value().size(), 2u);
  EXPECT_EQ(ListImpressionFiles(dir + "/missing", true).status().code(), absl::StatusCode::kNotFound);
}

TEST(ImpressionFileTest, ARecordThatDoesNotParseIsDataLossAtItsOffset) {
  const std::string dir = testing::TempDir("impression_file_bad");
  std::string bytes;
  AppendImpression(Record(1), &bytes);
  const size_t offset = bytes.size();
  bytes += std::string("\x03\xff\xff\xff", 4);  // a 3-byte record that is not a message
  const std::string path = dir + "/bad.pb";
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  absl::StatusOr<ImpressionFileContents> read = ReadImpressionFile(path);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(read.status().message(), ::testing::HasSubstr("byte " + std::to_string(offset)));
}

}  // namespace
}  // namespace recserve
