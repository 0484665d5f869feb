// Reader and writer for the safetensors format (8-byte little-endian header length N,
// N bytes of JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
// "__metadata__": {"k": "v"}}, then the raw little-endian data region).
//
// The reader distrusts its input: header length within the file and a byte limit, JSON
// well formed, every dtype known, every shape non-negative with an overflow-checked
// element count, data_offsets inside the data region, end - begin == count * dtype size,
// no two tensors overlapping. Every error is an InvalidArgument (DataLoss for a short
// file) whose message starts with the file name and names the tensor and the field.
//
// SafetensorsFile owns a copy of the file in memory; tensors are copied out with the
// typed getters. Immutable after Open: safe to read from many threads.
#ifndef RECSERVE_ENGINE_SAFETENSORS_H_
#define RECSERVE_ENGINE_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace recserve {

enum class DType { kF32, kF64, kI8, kU8, kI32, kI64, kU64 };

// "F32", "F64", "I8", "U8", "I32", "I64", "U64".
const char* DTypeName(DType dtype);
int DTypeSize(DType dtype);

struct TensorInfo {
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data region
  uint64_t end = 0;
  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  // Largest JSON header accepted (the format's own readers use 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  // Reads `path` (ReadFileToString) and validates it. NotFound if missing.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Validates bytes held in memory; `name` is used in error messages.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::string bytes,
                                                                    std::string name);

  const std::string& name() const { return name_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Copies tensor `tensor` out. Fails (naming file, tensor and field) when it is absent,
  // has another dtype, or its shape differs from `shape` (-1 in `shape` matches any size
  // of that dimension; the rank must match). Float tensors must be all finite.
  absl::StatusOr<std::vector<float>> GetF32(const std::string& tensor,
                                            const std::vector<int64_t>& shape) const;
  absl::StatusOr<std::vector<int32_t>> GetI32(const std::string& tensor,
                                              const std::vector<int64_t>& shape) const;
  absl::StatusOr<std::vector<int64_t>> GetI64(const std::string& tensor,
                                              const std::vector<int64_t>& shape) const;
  absl::StatusOr<std::vector<uint64_t>> GetU64(const std::string& tensor,
                                               const std::vector<int64_t>& shape) const;
  absl::StatusOr<std::vector<uint8_t>> GetU8(const std::string& tensor,
                                             const std::vector<int64_t>& shape) const;
  // The shape of `tensor`, or NotFound naming it.
  absl::StatusOr<std::vector<int64_t>> Shape(const std::string& tensor) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse();
  absl::StatusOr<const TensorInfo*> Find(const std::string& tensor, DType dtype,
                                         const std::vector<int64_t>& shape) const;

  std::string name_;
  std::string owned_;             // the whole file
  const uint8_t* base_ = nullptr; // owned_.data()
  uint64_t size_ = 0;
  const uint8_t* data_ = nullptr; // data region
  uint64_t data_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Builds a safetensors file. Tensors are written in the order added, each data offset
// aligned to 8 bytes (header padded with spaces, as the format allows).
class SafetensorsWriter {
 public:
  void AddF32(const std::string& name, std::vector<int64_t> shape, absl::Span<const float> v);
  void AddI32(const std::string& name, std::vector<int64_t> shape, absl::Span<const int32_t> v);
  void AddI64(const std::string& name, std::vector<int64_t> shape, absl::Span<const int64_t> v);
  void AddU64(const std::string& name, std::vector<int64_t> shape, absl::Span<const uint64_t> v);
  void AddU8(const std::string& name, std::vector<int64_t> shape, absl::Span<const uint8_t> v);
  void SetMetadata(const std::string& key, const std::string& value);

  std::string Serialize() const;
  // Writes to `path` + ".tmp", fsyncs, renames onto `path`.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  void Add(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
           size_t nbytes);
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace recserve

#endif  // RECSERVE_ENGINE_SAFETENSORS_H_
