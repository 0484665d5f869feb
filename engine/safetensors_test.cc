#include "engine/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kName[] = "items.safetensors";

// Hand-assembles a file: 8-byte little-endian header length (json.size() unless
// overridden), the JSON header, then the data region.
std::string Assemble(const std::string& json, const std::string& data = "",
                     std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(json.size());
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + json + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

absl::Status OpenStatus(const std::string& bytes) {
  return SafetensorsFile::FromBytes(bytes, kName).status();
}

// Asserts the code, that the message starts with the file name, and that it mentions
// every one of `parts` (tensor and field names).
void ExpectError(const absl::Status& s, absl::StatusCode code,
                 const std::vector<std::string>& parts) {
  EXPECT_EQ(s.code(), code) << s;
  const std::string msg(s.message());
  EXPECT_THAT(msg, StartsWith(kName));
  for (const std::string& p : parts) EXPECT_THAT(msg, HasSubstr(p));
}

std::unique_ptr<SafetensorsFile> MustOpen(const std::string& bytes) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::FromBytes(bytes, kName);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? std::move(*f) : nullptr;
}

std::string TempPath(const std::string& leaf) {
  return absl::StrCat(::testing::TempDir(), "/safetensors_test_", ::getpid(), "_", leaf);
}

// A valid one-tensor file used by the getter tests: "w" F32 [2, 3].
std::string SmallF32File(const std::vector<float>& values) {
  return Assemble(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})", Bytes(values));
}

TEST(SafetensorsReaderTest, EmptyFileIsDataLoss) {
  ExpectError(OpenStatus(""), absl::StatusCode::kDataLoss, {"header length"});
}

TEST(SafetensorsReaderTest, SevenByteFileIsDataLoss) {
  ExpectError(OpenStatus(std::string(7, '\0')), absl::StatusCode::kDataLoss,
              {"7 bytes", "header length"});
}

TEST(SafetensorsReaderTest, HeaderLengthPastEndOfFileIsDataLoss) {
  const std::string json = R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  ExpectError(OpenStatus(Assemble(json, "x", json.size() + 2)), absl::StatusCode::kDataLoss,
              {"header length", "past the end"});
}

TEST(SafetensorsReaderTest, HeaderLengthOverLimitIsInvalidArgument) {
  ExpectError(OpenStatus(Assemble("{}", "", SafetensorsFile::kMaxHeaderBytes + 1)),
              absl::StatusCode::kInvalidArgument, {"header length", "limit"});
}

TEST(SafetensorsReaderTest, HugeHeaderLengthIsRefusedWithoutOverflow) {
  ExpectError(OpenStatus(Assemble("{}", "", std::numeric_limits<uint64_t>::max())),
              absl::StatusCode::kInvalidArgument, {"header length"});
}

TEST(SafetensorsReaderTest, NonJsonHeaderIsInvalidArgument) {
  ExpectError(OpenStatus(Assemble(R"({"w": {"dtype": "F32", )")),
              absl::StatusCode::kInvalidArgument, {"header", "JSON"});
}

TEST(SafetensorsReaderTest, HeaderThatIsNotAnObjectIsInvalidArgument) {
  ExpectError(OpenStatus(Assemble("[1, 2, 3]")), absl::StatusCode::kInvalidArgument,
              {"header", "array", "object"});
}

TEST(SafetensorsReaderTest, DeeplyNestedHeaderIsRefusedWithoutCrashing) {
  const int depth = 200000;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  ExpectError(OpenStatus(Assemble(absl::StrCat(R"({"w":)", nested, "}"))),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "object"});
  ExpectError(OpenStatus(Assemble(absl::StrCat(R"({"w":{"dtype":"F32","shape":)", nested,
                                               R"(,"data_offsets":[0,0]}})"))),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "shape[0]"});
}

TEST(SafetensorsReaderTest, LongUnterminatedStringGivesAShortMessage) {
  const absl::Status s = OpenStatus(Assemble(R"({"w":")" + std::string(100000, 'a')));
  ExpectError(s, absl::StatusCode::kInvalidArgument, {"JSON"});
  EXPECT_LT(s.message().size(), 400u);
}

TEST(SafetensorsReaderTest, EntryThatIsNotAnObjectIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w": 5})")), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "object"});
}

TEST(SafetensorsReaderTest, UnknownDtypeIsRefused) {
  ExpectError(
      OpenStatus(Assemble(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", "abcd")),
      absl::StatusCode::kInvalidArgument, {"tensor 'w'", "dtype", "BF16"});
}

TEST(SafetensorsReaderTest, DtypeThatIsNotAStringIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd")),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "dtype"});
}

TEST(SafetensorsReaderTest, NegativeShapeIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})",
                                  std::string(8, '\0'))),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "shape[1]", "-1"});
}

TEST(SafetensorsReaderTest, NonIntegerShapeIsRefused) {
  ExpectError(
      OpenStatus(Assemble(R"({"w":{"dtype":"U8","shape":[2.5],"data_offsets":[0,2]}})", "ab")),
      absl::StatusCode::kInvalidArgument, {"tensor 'w'", "shape[0]"});
}

TEST(SafetensorsReaderTest, ShapeThatIsNotAnArrayIsRefused) {
  ExpectError(
      OpenStatus(Assemble(R"({"w":{"dtype":"U8","shape":"2","data_offsets":[0,2]}})", "ab")),
      absl::StatusCode::kInvalidArgument, {"tensor 'w'", "shape"});
}

TEST(SafetensorsReaderTest, ShapeProductOverflowIsRefused) {
  // 2^40 * 2^40 overflows 64 bits; a naive product would wrap to 0 and match [0, 0].
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
                                  R"("data_offsets":[0,0]}})")),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "shape"});
}

TEST(SafetensorsReaderTest, ShapeByteSizeOverflowIsRefused) {
  // 2^62 elements fit in 63 bits, but 2^62 * 8 bytes does not fit in 64.
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"F64","shape":[4611686018427387904],)"
                                  R"("data_offsets":[0,0]}})")),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "shape", "bytes"});
}

TEST(SafetensorsReaderTest, DataOffsetsEndPastDataRegionIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                  std::string(12, '\0'))),
              absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "data_offsets [0, 16]", "data region of 12 bytes"});
}

TEST(SafetensorsReaderTest, DataOffsetsBeginAfterEndIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})",
                                  std::string(8, '\0'))),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "data_offsets [8, 4]"});
}

TEST(SafetensorsReaderTest, DataOffsetsOfWrongFormAreRefused) {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-4,4]", "\"0,4\"", "[0,4.0]"}) {
    ExpectError(
        OpenStatus(Assemble(
            absl::StrCat(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)", offsets, "}}"),
            std::string(8, '\0'))),
        absl::StatusCode::kInvalidArgument, {"tensor 'w'", "data_offsets"});
  }
}

TEST(SafetensorsReaderTest, ByteSizeNotMatchingShapeIsRefused) {
  const absl::Status s =
      OpenStatus(Assemble(R"({"embeddings":{"dtype":"F32","shape":[4,8],"data_offsets":[0,96]}})",
                          std::string(128, '\0')));
  ExpectError(s, absl::StatusCode::kInvalidArgument, {});
  EXPECT_EQ(s.message(),
            "items.safetensors: tensor 'embeddings': data_offsets [0, 96] but dtype F32 "
            "shape [4, 8] needs 128 bytes");
}

TEST(SafetensorsReaderTest, OverlappingTensorsAreRefused) {
  ExpectError(OpenStatus(Assemble(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                  std::string(16, '\0'))),
              absl::StatusCode::kInvalidArgument, {"tensor 'b'", "overlap", "tensor 'a'"});
}

TEST(SafetensorsReaderTest, TensorNestedInsideAnotherIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                                  R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]},)"
                                  R"("c":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})",
                                  std::string(16, '\0'))),
              absl::StatusCode::kInvalidArgument, {"overlap", "tensor 'a'"});
}

TEST(SafetensorsReaderTest, EmptyTensorsDoNotOverlapAnything) {
  auto f = MustOpen(Assemble(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}})",
                             std::string(8, '\0')));
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::vector<float>> e = f->GetF32("e", {0, 3});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->empty());
}

TEST(SafetensorsReaderTest, MissingFieldIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd")),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "missing", "data_offsets"});
}

TEST(SafetensorsReaderTest, UnexpectedFieldIsRefused) {
  ExpectError(OpenStatus(Assemble(
                  R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"scale":2}})", "abcd")),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "scale"});
}

TEST(SafetensorsReaderTest, DuplicateTensorNameIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                  R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                  "ab")),
              absl::StatusCode::kInvalidArgument, {"tensor 'w'", "twice"});
}

TEST(SafetensorsReaderTest, MetadataThatIsNotAnObjectIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"__metadata__":["v1"]})")),
              absl::StatusCode::kInvalidArgument, {"__metadata__", "object"});
}

TEST(SafetensorsReaderTest, MetadataWithNonStringValueIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"__metadata__":{"version":"3","rows":7}})")),
              absl::StatusCode::kInvalidArgument, {"__metadata__", "'rows'", "string"});
}

TEST(SafetensorsReaderTest, MetadataIsExposed) {
  auto f = MustOpen(Assemble(R"({"__metadata__":{"format":"pt","version":"3"}})"));
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("version"), "3");
  EXPECT_TRUE(f->tensors().empty());
}

TEST(SafetensorsReaderTest, GetWithWrongDtypeIsRefused) {
  auto f = MustOpen(SmallF32File({1, 2, 3, 4, 5, 6}));
  ASSERT_NE(f, nullptr);
  ExpectError(f->GetI32("w", {2, 3}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "dtype is F32, want I32"});
  ExpectError(f->GetI64("w", {2, 3}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "dtype"});
  ExpectError(f->GetU64("w", {2, 3}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "dtype"});
  ExpectError(f->GetU8("w", {2, 3}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "dtype is F32, want U8"});
}

TEST(SafetensorsReaderTest, U8TensorFromHandBuiltBytesIsCopiedOut) {
  auto f = MustOpen(Assemble(R"({"b":{"dtype":"U8","shape":[5],"data_offsets":[0,5]}})",
                             std::string("\x00\x01\x7f\x80\xff", 5)));
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::vector<uint8_t>> v = f->GetU8("b", {5});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, (std::vector<uint8_t>{0, 1, 0x7f, 0x80, 0xff}));
  ExpectError(f->GetU8("b", {4}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'b'", "shape is [5], want [4]"});
  ExpectError(f->GetI64("b", {5}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'b'", "dtype is U8, want I64"});
}

TEST(SafetensorsReaderTest, U8ByteSizeNotMatchingShapeIsRefused) {
  ExpectError(OpenStatus(Assemble(R"({"b":{"dtype":"U8","shape":[5],"data_offsets":[0,4]}})",
                                  std::string(4, 'x'))),
              absl::StatusCode::kInvalidArgument, {"'b'", "data_offsets"});
}

TEST(SafetensorsReaderTest, GetWithWrongShapeIsRefused) {
  auto f = MustOpen(SmallF32File({1, 2, 3, 4, 5, 6}));
  ASSERT_NE(f, nullptr);
  ExpectError(f->GetF32("w", {3, 2}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "shape is [2, 3], want [3, 2]"});
  ExpectError(f->GetF32("w", {6}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "shape"});
  ExpectError(f->GetF32("w", {-1}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "shape"});
}

TEST(SafetensorsReaderTest, WildcardDimensionMatchesAnySize) {
  auto f = MustOpen(SmallF32File({1, 2, 3, 4, 5, 6}));
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::vector<float>> v = f->GetF32("w", {-1, 3});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(f->GetF32("w", {-1, -1}).ok());
}

TEST(SafetensorsReaderTest, MissingTensorIsNotFound) {
  auto f = MustOpen(SmallF32File({1, 2, 3, 4, 5, 6}));
  ASSERT_NE(f, nullptr);
  ExpectError(f->GetF32("bias", {3}).status(), absl::StatusCode::kNotFound, {"'bias'"});
  ExpectError(f->Shape("bias").status(), absl::StatusCode::kNotFound, {"'bias'"});
  absl::StatusOr<std::vector<int64_t>> shape = f->Shape("w");
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ(*shape, (std::vector<int64_t>{2, 3}));
}

TEST(SafetensorsReaderTest, GetF32RefusesNaN) {
  auto f = MustOpen(SmallF32File({1, 2, 3, 4, std::nanf(""), 6}));
  ASSERT_NE(f, nullptr);
  ExpectError(f->GetF32("w", {2, 3}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "index 4", "nan"});
}

TEST(SafetensorsReaderTest, GetF32RefusesInfinity) {
  auto f = MustOpen(SmallF32File({1, -std::numeric_limits<float>::infinity(), 3, 4, 5, 6}));
  ASSERT_NE(f, nullptr);
  ExpectError(f->GetF32("w", {2, 3}).status(), absl::StatusCode::kInvalidArgument,
              {"tensor 'w'", "index 1", "inf"});
}

TEST(SafetensorsReaderTest, UnalignedDataIsCopiedCorrectly) {
  // One U8 byte first puts the I64 at data offset 1: not aligned for a direct load.
  const std::vector<int64_t> values = {-1, 0x0102030405060708, 42};
  auto f = MustOpen(Assemble(R"({"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("v":{"dtype":"I64","shape":[3],"data_offsets":[1,25]}})",
                             "\x7f" + Bytes(values)));
  ASSERT_NE(f, nullptr);
  absl::StatusOr<std::vector<int64_t>> v = f->GetI64("v", {3});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, values);
}

TEST(SafetensorsRoundTripTest, WriterThenReaderIsBitExactForEveryDtype) {
  const std::vector<float> f32 = {0.0f,
                                  -0.0f,
                                  1.5f,
                                  std::numeric_limits<float>::denorm_min(),
                                  std::numeric_limits<float>::max(),
                                  std::numeric_limits<float>::lowest(),
                                  3.14159274f};
  const std::vector<int32_t> i32 = {std::numeric_limits<int32_t>::min(), -1, 0, 7,
                                    std::numeric_limits<int32_t>::max()};
  const std::vector<int64_t> i64 = {std::numeric_limits<int64_t>::min(), -3, 0, 1, 2,
                                    std::numeric_limits<int64_t>::max()};
  const std::vector<uint64_t> u64 = {0, 1, 0xdeadbeefcafef00dull,
                                     std::numeric_limits<uint64_t>::max()};
  const std::vector<uint8_t> u8 = {0, 1, 0x7f, 0x80, 0xfe, 0xff, 42};  // 7: pads the next tensor
  SafetensorsWriter w;
  w.AddF32("f32", {7}, f32);
  w.AddI32("i32", {5, 1}, i32);
  w.AddI64("i64", {2, 3}, i64);
  w.AddU64("u64", {2, 2}, u64);
  w.AddU8("u8", {7}, u8);
  w.AddU8("empty_u8", {0}, {});
  w.AddF32("empty", {0, 4}, {});
  w.SetMetadata("version", "12");
  auto f = MustOpen(w.Serialize());
  ASSERT_NE(f, nullptr);

  absl::StatusOr<std::vector<float>> rf = f->GetF32("f32", {7});
  ASSERT_TRUE(rf.ok()) << rf.status();
  ASSERT_EQ(rf->size(), f32.size());
  EXPECT_EQ(std::memcmp(rf->data(), f32.data(), f32.size() * sizeof(float)), 0);
  absl::StatusOr<std::vector<int32_t>> ri = f->GetI32("i32", {5, 1});
  ASSERT_TRUE(ri.ok()) << ri.status();
  EXPECT_EQ(*ri, i32);
  absl::StatusOr<std::vector<int64_t>> rl = f->GetI64("i64", {2, 3});
  ASSERT_TRUE(rl.ok()) << rl.status();
  EXPECT_EQ(*rl, i64);
  absl::StatusOr<std::vector<uint64_t>> ru = f->GetU64("u64", {2, 2});
  ASSERT_TRUE(ru.ok()) << ru.status();
  EXPECT_EQ(*ru, u64);
  absl::StatusOr<std::vector<uint8_t>> rb = f->GetU8("u8", {7});
  ASSERT_TRUE(rb.ok()) << rb.status();
  EXPECT_EQ(*rb, u8);
  absl::StatusOr<std::vector<uint8_t>> reb = f->GetU8("empty_u8", {0});
  ASSERT_TRUE(reb.ok()) << reb.status();
  EXPECT_TRUE(reb->empty());
  absl::StatusOr<std::vector<float>> re = f->GetF32("empty", {0, 4});
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_TRUE(re->empty());
  EXPECT_EQ(f->metadata().at("version"), "12");
  EXPECT_EQ(f->tensors().at("i64").dtype, DType::kI64);
  EXPECT_EQ(f->tensors().at("u64").NumElements(), 4);
}

TEST(SafetensorsRoundTripTest, WriterAlignsDataRegionAndEveryTensorTo8Bytes) {
  SafetensorsWriter w;
  w.AddI32("three", {3}, std::vector<int32_t>{1, 2, 3});  // 12 bytes: next needs padding
  w.AddI64("one", {1}, std::vector<int64_t>{9});
  w.AddF32("x", {1}, std::vector<float>{0.5f});
  const std::string bytes = w.Serialize();
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  auto f = MustOpen(bytes);
  ASSERT_NE(f, nullptr);
  for (const auto& [name, info] : f->tensors()) {
    EXPECT_EQ(info.begin % 8, 0u) << name;
  }
  // Written in the order added.
  EXPECT_LT(f->tensors().at("three").begin, f->tensors().at("one").begin);
  EXPECT_LT(f->tensors().at("one").begin, f->tensors().at("x").begin);
}

TEST(SafetensorsFileTest, WriteFileThenOpenReadsTheFile) {
  const std::string path = TempPath("roundtrip.safetensors");
  SafetensorsWriter w;
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  w.AddF32("w", {2, 3}, values);
  ASSERT_TRUE(w.WriteFile(path).ok());
  EXPECT_NE(::access((path + ".tmp").c_str(), F_OK), 0) << "temporary file left behind";

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->name(), path);
  absl::StatusOr<std::vector<float>> v = (*f)->GetF32("w", {2, 3});
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, values);
  std::remove(path.c_str());
}

TEST(SafetensorsFileTest, OpenTruncatedFileIsDataLoss) {
  const std::string path = TempPath("truncated.safetensors");
  SafetensorsWriter w;
  w.AddF32("w", {2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  const std::string full = w.Serialize();
  std::ofstream(path, std::ios::binary) << full.substr(0, 20);
  const absl::Status s = SafetensorsFile::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), StartsWith(path));
  std::remove(path.c_str());
}

TEST(SafetensorsFileTest, OpenEmptyFileIsDataLoss) {
  const std::string path = TempPath("empty.safetensors");
  std::ofstream(path, std::ios::binary).flush();
  const absl::Status s = SafetensorsFile::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  std::remove(path.c_str());
}

TEST(SafetensorsFileTest, OpenMissingFileIsNotFound) {
  const std::string path = TempPath("does_not_exist.safetensors");
  const absl::Status s = SafetensorsFile::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(path));
}

}  // namespace
}  // namespace recserve
