#include "server/request_body.h"

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "gtest/gtest.h"
#include "recserve/v1/recommender.pb.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

absl::Status Parse(const std::string& bytes, v1::RecommendRequest* request, int* rereads = nullptr) {
  google::protobuf::io::ArrayInputStream body(bytes.data(), static_cast<int>(bytes.size()));
  return ParseRequestBody(
      &body,
      [&] {
        if (rereads != nullptr) ++*rereads;
        return bytes;
      },
      request);
}

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

// Field 15 (unknown) as a group inside itself, `depth` deep.
std::string NestedGroups(int depth) { return std::string(depth, '\x7b') + std::string(depth, '\x7c'); }

TEST(ParseRequestBodyTest, ValidBodyParsesWithoutRereading) {
  v1::RecommendRequest sent;
  sent.set_user_id("u\xc3\xa9");  // UTF-8
  sent.set_n(7);
  v1::Event* e = sent.add_events();
  e->set_item("85123A");
  e->set_timestamp_ms(1700000000000);
  sent.mutable_options()->add_exclude_item_ids(300);
  sent.mutable_options()->add_exclude_event_types(v1::PURCHASE);
  v1::RecommendRequest got;
  int rereads = 0;
  ASSERT_TRUE(Parse(sent.SerializeAsString(), &got, &rereads).ok());
  EXPECT_EQ(got.SerializeAsString(), sent.SerializeAsString());
  EXPECT_EQ(rereads, 0);
}

TEST(ParseRequestBodyTest, EachWireFormatFaultIsNamedWithItsByteOffset) {
  struct Case {
    std::string name;
    std::string bytes;
    std::string fault;
  };
  const std::vector<Case> cases = {
      {"wire type 7", Bytes({0x20, 0x05, 0x27, 0x01}),
       "byte 2: field recserve.v1.RecommendRequest.n (4): wire type 7 is not a protobuf wire type"},
      {"wire type 6 inside events[0]", Bytes({0x12, 0x02, 0x0e, 0x00}),
       "byte 2: field recserve.v1.Event.item_id (1): wire type 6 is not a protobuf wire type"},
      {"field number 0", Bytes({0x20, 0x05, 0x00}), "byte 2: field number 0"},
      {"truncated varint", Bytes({0x20, 0xff}), "byte 0: field recserve.v1.RecommendRequest.n (4): a truncated"},
      {"overlong varint", Bytes({0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}),
       "byte 0: field recserve.v1.RecommendRequest.n (4): a truncated or overlong varint"},
      {"truncated tag", Bytes({0x20, 0x05, 0x80}), "byte 2: a tag that is a truncated or overlong varint"},
      {"length past the end", Bytes({0x0a, 0x64, 'a', 'b', 'c'}),
       "byte 0: field recserve.v1.RecommendRequest.user_id (1): 100 bytes long, past the end of its message (3 "
       "bytes left)"},
      {"length past the end of events[0]", Bytes({0x12, 0x03, 0x22, 0x05, 'a', 0x20, 0x01}),
       "byte 2: field recserve.v1.Event.item (4): 5 bytes long, past the end of its message (1 bytes left)"},
      {"truncated fixed64", Bytes({0x79, 0x01, 0x02}), "byte 0: field 15: an 8-byte value runs past the end"},
      {"truncated fixed32", Bytes({0x7d, 0x01}), "byte 0: field 15: a 4-byte value runs past the end"},
      {"packed varint cut short", Bytes({0x2a, 0x03, 0x2a, 0x01, 0x80}),
       "byte 4: field recserve.v1.RecommendOptions.exclude_item_ids (5): a packed varint that is truncated"},
      {"end of a group never opened", Bytes({0x20, 0x05, 0x7c}), "byte 2: end of group 15, which is not open"},
      {"group not closed", Bytes({0x7b, 0x20, 0x05}), "byte 3: group 15 is not closed"},
      {"group closed by another", Bytes({0x7b, 0x74}), "byte 1: end of group 14 inside group 15"},
      {"nesting past 100", NestedGroups(101),
       "byte 100: field 15: messages and groups nested deeper than 100"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // Every fault described is one protobuf refuses.
    EXPECT_FALSE(v1::RecommendRequest().ParseFromString(c.bytes));
    EXPECT_THAT(DescribeWireFormatFault(c.bytes, *v1::RecommendRequest::descriptor()), HasSubstr(c.fault));
    v1::RecommendRequest request;
    int rereads = 0;
    const absl::Status status = Parse(c.bytes, &request, &rereads);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(status.message(), HasSubstr("the request body is not a recserve.v1.RecommendRequest: " + c.fault));
    EXPECT_EQ(rereads, 1);
  }
}

TEST(ParseRequestBodyTest, RandomBytesThatProtobufRefusesGetANamedFault) {
  std::mt19937 rng(13);
  int refused = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string bytes(1 + rng() % 64, '\0');
    for (char& b : bytes) b = static_cast<char>(rng() & 0xff);
    v1::RecommendRequest request;
    bool parses;
    {
      google::protobuf::LogSilencer quiet;  // protobuf's own UTF-8 lines, this parse only
      parses = v1::RecommendRequest().ParseFromString(bytes);
    }
    const absl::Status status = Parse(bytes, &request);
    ASSERT_EQ(status.ok(), parses) << status;
    if (parses) continue;
    ++refused;
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    // Either the walker's fault or protobuf's UTF-8 complaint; never the fallback.
    ASSERT_THAT(std::string(status.message()), ::testing::AnyOf(HasSubstr(": byte "), HasSubstr("UTF-8")))
        << status;
  }
  EXPECT_GT(refused, 4000);
}

TEST(ParseRequestBodyTest, NestingUpToProtobufsLimitIsSound) {
  v1::RecommendRequest request;
  EXPECT_TRUE(Parse(NestedGroups(100), &request).ok());
  EXPECT_EQ(DescribeWireFormatFault(NestedGroups(100), *v1::RecommendRequest::descriptor()), "");
  EXPECT_FALSE(Parse(NestedGroups(101), &request).ok());
}

TEST(ParseRequestBodyTest, StringThatIsNotUtf8IsNamedAndNotLogged) {
  const std::string user_id = Bytes({0x0a, 0x02, 0xc3, 0x28});
  const std::string event_item = Bytes({0x20, 0x05, 0x12, 0x04, 0x22, 0x02, 0xff, 0xfe});
  ::testing::internal::CaptureStderr();
  v1::RecommendRequest request;
  const absl::Status in_user_id = Parse(user_id, &request);
  const absl::Status in_event = Parse(event_item, &request);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(in_user_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(in_user_id.message(), HasSubstr("'recserve.v1.RecommendRequest.user_id' contains invalid UTF-8"));
  EXPECT_THAT(in_event.message(), HasSubstr("'recserve.v1.Event.item' contains invalid UTF-8"));
  // Protobuf's lines outside a request parse still reach its previous handler.
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(v1::RecommendRequest().ParseFromString(user_id));
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), HasSubstr("invalid UTF-8"));
}

TEST(ParseRequestBodyTest, ConcurrentParsesEachGetTheirOwnComplaint) {
  const std::string bodies[2] = {Bytes({0x0a, 0x02, 0xc3, 0x28}), Bytes({0x12, 0x04, 0x22, 0x02, 0xff, 0xfe})};
  const std::string fields[2] = {"recserve.v1.RecommendRequest.user_id", "recserve.v1.Event.item"};
  int wrong[2] = {0, 0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        v1::RecommendRequest request;
        const absl::Status status = Parse(bodies[t], &request);
        if (status.message().find(fields[t]) == absl::string_view::npos) ++wrong[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong[0], 0);
  EXPECT_EQ(wrong[1], 0);
}

}  // namespace
}  // namespace recserve
