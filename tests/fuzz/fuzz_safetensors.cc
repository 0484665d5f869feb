// Fuzzes the safetensors reader (engine/safetensors.h) on bytes in memory: the header
// length, the JSON header, dtypes, shapes, offsets and the data region. A file the reader
// accepts must let every tensor be read back with its own dtype and shape, and a file
// rewritten by SafetensorsWriter from what was read must read back the same.
#include <cstdint>
#include <string>

#include "engine/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace recserve {
namespace {

// Reads `name` with the getter of its dtype and adds it to `writer`; false when the
// getter refuses it (a float that is not finite) or the dtype has no writer (F64, I8).
bool CopyTensor(const SafetensorsFile& file, const std::string& name, const TensorInfo& info,
                SafetensorsWriter* writer) {
  switch (info.dtype) {
    case DType::kF32: {
      auto v = file.GetF32(name, info.shape);
      if (v.ok()) writer->AddF32(name, info.shape, *v);
      return v.ok();
    }
    case DType::kI32: {
      auto v = file.GetI32(name, info.shape);
      FUZZ_CHECK(v.ok(), v.status().ToString());
      writer->AddI32(name, info.shape, *v);
      return true;
    }
    case DType::kI64: {
      auto v = file.GetI64(name, info.shape);
      FUZZ_CHECK(v.ok(), v.status().ToString());
      writer->AddI64(name, info.shape, *v);
      return true;
    }
    case DType::kU64: {
      auto v = file.GetU64(name, info.shape);
      FUZZ_CHECK(v.ok(), v.status().ToString());
      writer->AddU64(name, info.shape, *v);
      return true;
    }
    case DType::kU8: {
      auto v = file.GetU8(name, info.shape);
      FUZZ_CHECK(v.ok(), v.status().ToString());
      writer->AddU8(name, info.shape, *v);
      return true;
    }
    case DType::kF64:
    case DType::kI8:
      return false;
  }
  return false;
}

}  // namespace
}  // namespace recserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recserve;
  auto file = SafetensorsFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  if (!file.ok()) return 0;
  SafetensorsWriter writer;
  bool copied = true;
  for (const auto& [name, info] : (*file)->tensors()) {
    auto shape = (*file)->Shape(name);
    FUZZ_CHECK(shape.ok() && *shape == info.shape, name);
    FUZZ_CHECK(info.end - info.begin == static_cast<uint64_t>(info.NumElements()) * DTypeSize(info.dtype), name);
    copied = CopyTensor(**file, name, info, &writer) && copied;
  }
  if (!copied) return 0;
  for (const auto& [key, value] : (*file)->metadata()) writer.SetMetadata(key, value);
  auto again = SafetensorsFile::FromBytes(writer.Serialize(), "rewritten.safetensors");
  FUZZ_CHECK(again.ok(), again.status().ToString());
  FUZZ_CHECK((*again)->metadata() == (*file)->metadata(), "metadata differs after a rewrite");
  FUZZ_CHECK((*again)->tensors().size() == (*file)->tensors().size(), "tensor count differs after a rewrite");
  for (const auto& [name, info] : (*file)->tensors()) {
    auto shape = (*again)->Shape(name);
    FUZZ_CHECK(shape.ok() && *shape == info.shape, name);
    if (info.dtype == DType::kF32) {
      FUZZ_CHECK(*(*again)->GetF32(name, info.shape) == *(*file)->GetF32(name, info.shape), name);
    } else if (info.dtype == DType::kU8) {
      FUZZ_CHECK(*(*again)->GetU8(name, info.shape) == *(*file)->GetU8(name, info.shape), name);
    }
  }
  return 0;
}
