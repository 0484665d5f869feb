#include "engine/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/file_util.h"
#include "engine/status_macros.h"

// The data region is little-endian and the getters memcpy it straight into host values.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors.cc assumes a little-endian host");

namespace recserve {
namespace {

constexpr DType kAllDTypes[] = {DType::kF32, DType::kF64, DType::kI8, DType::kU8,
                                DType::kI32, DType::kI64, DType::kU64};

std::optional<DType> ParseDType(const std::string& s) {
  for (DType d : kAllDTypes) {
    if (s == DTypeName(d)) return d;
  }
  return std::nullopt;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Caps text taken from the file (values, parser messages) so an error stays readable.
std::string Truncate(std::string s, size_t max_chars = 200) {
  if (s.size() > max_chars) s = s.substr(0, max_chars - 3) + "...";
  return s;
}

// A short description of a JSON value for error messages. Only flat values are dumped:
// nlohmann's serializer recurses, and a hostile header can nest a million levels deep.
std::string Describe(const nlohmann::json& j) {
  bool flat = true;
  if (j.is_structured()) {
    for (const nlohmann::json& child : j) flat = flat && !child.is_structured();
  }
  if (!flat) {
    return absl::StrFormat("a nested %s of %d values", j.type_name(), j.size());
  }
  return absl::StrCat(
      Truncate(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), 40), " (",
      j.type_name(), ")");
}

uint64_t ReadLittleEndianU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t RoundUp8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// Programmer errors in the writer (the arguments come from our own code, not a file):
// crash loudly rather than emit a file every reader would refuse.
[[noreturn]] void WriterBug(const std::string& msg) {
  std::fprintf(stderr, "SafetensorsWriter: %s\n", msg.c_str());
  std::abort();
}

}  // namespace

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kU64:
      return "U64";
  }
  return "?";
}

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kF64:
      return 8;
    case DType::kI8:
      return 1;
    case DType::kU8:
      return 1;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU64:
      return 8;
  }
  return 0;
}

int64_t TensorInfo::NumElements() const {
  // The reader has already proven this product fits; TensorInfo values built elsewhere
  // are expected to be just as sane.
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  // Read into memory, not mapped: a mapped file truncated by someone else while in use
  // would be a SIGBUS on the next access.
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path, std::numeric_limits<size_t>::max()));
  return FromBytes(std::move(bytes), path);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes,
                                                                            std::string name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->name_ = std::move(name);
  file->owned_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_.data());
  file->size_ = file->owned_.size();
  RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::Status SafetensorsFile::Parse() {
  if (size_ < 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: file is %d bytes, shorter than the 8-byte header length", name_, size_));
  }
  const uint64_t header_len = ReadLittleEndianU64(base_);
  // The limit is checked first: a length this large is garbage, not a truncated file.
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: header length %d exceeds the limit of %d bytes", name_, header_len, kMaxHeaderBytes));
  }
  if (header_len > size_ - 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: header length %d runs past the end of the file (%d bytes after the length)", name_,
        header_len, size_ - 8));
  }
  data_ = base_ + 8 + header_len;
  data_size_ = size_ - 8 - header_len;

  const char* header_begin = reinterpret_cast<const char*>(base_ + 8);
  const char* header_end = header_begin + header_len;
  nlohmann::json root;
  // Duplicate top-level keys would silently drop a tensor (the parser keeps one), so
  // they are caught while parsing.
  std::string duplicate_key;
  std::set<std::string> seen_keys;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 &&
        !seen_keys.insert(parsed.get<std::string>()).second && duplicate_key.empty()) {
      duplicate_key = parsed.get<std::string>();
    }
    return true;
  };
  try {
    root = nlohmann::json::parse(header_begin, header_end, on_event);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": header is not valid JSON: ", Truncate(e.what())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": header cannot be parsed: ", Truncate(e.what())));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: header is a JSON %s, want an object", name_, root.type_name()));
  }
  if (!duplicate_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor '%s': name appears twice in the header", name_, duplicate_key));
  }

  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: __metadata__ is %s, want an object of strings", name_, Describe(value)));
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s: __metadata__ key '%s' is %s, want a string", name_, mkey, Describe(mvalue)));
        }
        metadata_[mkey] = mvalue.get<std::string>();
      }
      continue;
    }

    const std::string where = absl::StrFormat("%s: tensor '%s'", name_, key);
    if (!value.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: entry is %s, want an object", where, Describe(value)));
    }
    for (const auto& [field, unused] : value.items()) {
      if (field != "dtype" && field != "shape" && field != "data_offsets") {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: unexpected field '%s' (want dtype, shape, data_offsets)", where, field));
      }
    }
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(field)) {
        return absl::InvalidArgumentError(absl::StrFormat("%s: missing field '%s'", where, field));
      }
    }

    TensorInfo info;
    const nlohmann::json& dtype = value["dtype"];
    if (!dtype.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: dtype is %s, want a string", where, Describe(dtype)));
    }
    const std::optional<DType> parsed_dtype = ParseDType(dtype.get<std::string>());
    if (!parsed_dtype) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: dtype '%s' is not supported (want one of F32, F64, I8, U8, I32, I64, U64)", where,
          dtype.get<std::string>()));
    }
    info.dtype = *parsed_dtype;

    const nlohmann::json& shape = value["shape"];
    if (!shape.is_array()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: shape is %s, want an array", where, Describe(shape)));
    }
    uint64_t count = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
      const nlohmann::json& d = shape[i];
      // nlohmann stores non-negative integers as unsigned and negative ones as signed.
      if (!d.is_number_unsigned()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: shape[%d] is %s, want a non-negative integer", where, i, Describe(d)));
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(count, dim, &count) ||
          count > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: shape %s has more elements than fit in 63 bits", where, shape.dump()));
      }
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(DTypeSize(info.dtype)), &nbytes)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: shape %s of %s needs more bytes than fit in 64 bits", where,
                          ShapeString(info.shape), DTypeName(info.dtype)));
    }

    const nlohmann::json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: data_offsets is %s, want [begin, end] of non-negative integers",
                          where, Describe(offsets)));
    }
    info.begin = offsets[0].get<uint64_t>();
    info.end = offsets[1].get<uint64_t>();
    if (info.begin > info.end) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: data_offsets [%d, %d] begin after end",
                                                        where, info.begin, info.end));
    }
    if (info.end > data_size_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: data_offsets [%d, %d] end past the data region of %d bytes", where,
                          info.begin, info.end, data_size_));
    }
    if (info.end - info.begin != nbytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: data_offsets [%d, %d] but dtype %s shape %s needs %d bytes", where, info.begin,
          info.end, DTypeName(info.dtype), ShapeString(info.shape), nbytes));
    }
    tensors_.emplace(key, std::move(info));
  }

  // Overlap check: sorted by begin, a tensor overlaps an earlier one exactly when it
  // starts before the furthest end seen so far. Empty tensors occupy no bytes.
  std::vector<std::pair<const std::string*, const TensorInfo*>> by_begin;
  for (const auto& [tname, info] : tensors_) {
    if (info.end > info.begin) by_begin.emplace_back(&tname, &info);
  }
  std::sort(by_begin.begin(), by_begin.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second->begin, a.second->end) < std::tie(b.second->begin, b.second->end);
  });
  const std::pair<const std::string*, const TensorInfo*>* furthest = nullptr;
  for (const auto& entry : by_begin) {
    if (furthest != nullptr && entry.second->begin < furthest->second->end) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s': data_offsets [%d, %d] overlap tensor '%s' [%d, %d]",
                          name_, *entry.first, entry.second->begin, entry.second->end,
                          *furthest->first, furthest->second->begin, furthest->second->end));
    }
    if (furthest == nullptr || entry.second->end > furthest->second->end) furthest = &entry;
  }
  return absl::OkStatus();
}

absl::StatusOr<const TensorInfo*> SafetensorsFile::Find(const std::string& tensor, DType dtype,
                                                        const std::vector<int64_t>& shape) const {
  auto it = tensors_.find(tensor);
  if (it == tensors_.end()) {
    std::vector<std::string> names;
    for (const auto& [n, unused] : tensors_) names.push_back(n);
    return absl::NotFoundError(absl::StrFormat("%s: tensor '%s': not found (file has: %s)", name_,
                                               tensor, absl::StrJoin(names, ", ")));
  }
  const TensorInfo& info = it->second;
  if (info.dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: tensor '%s': dtype is %s, want %s",
                                                      name_, tensor, DTypeName(info.dtype),
                                                      DTypeName(dtype)));
  }
  bool shape_ok = info.shape.size() == shape.size();
  for (size_t i = 0; shape_ok && i < shape.size(); ++i) {
    shape_ok = shape[i] == -1 || shape[i] == info.shape[i];
  }
  if (!shape_ok) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: tensor '%s': shape is %s, want %s",
                                                      name_, tensor, ShapeString(info.shape),
                                                      ShapeString(shape)));
  }
  return &info;
}

namespace {

template <typename T>
std::vector<T> CopyOut(const uint8_t* data, const TensorInfo& info) {
  std::vector<T> out(static_cast<size_t>((info.end - info.begin) / sizeof(T)));
  // memcpy because the data region gives no alignment guarantee.
  if (!out.empty()) std::memcpy(out.data(), data + info.begin, info.end - info.begin);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<float>> SafetensorsFile::GetF32(
    const std::string& tensor, const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* info, Find(tensor, DType::kF32, shape));
  std::vector<float> out = CopyOut<float>(data_, *info);
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s': value at index %d is %f, want finite", name_, tensor, i, out[i]));
    }
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> SafetensorsFile::GetI32(
    const std::string& tensor, const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* info, Find(tensor, DType::kI32, shape));
  return CopyOut<int32_t>(data_, *info);
}

absl::StatusOr<std::vector<int64_t>> SafetensorsFile::GetI64(
    const std::string& tensor, const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* info, Find(tensor, DType::kI64, shape));
  return CopyOut<int64_t>(data_, *info);
}

absl::StatusOr<std::vector<uint64_t>> SafetensorsFile::GetU64(
    const std::string& tensor, const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* info, Find(tensor, DType::kU64, shape));
  return CopyOut<uint64_t>(data_, *info);
}

absl::StatusOr<std::vector<uint8_t>> SafetensorsFile::GetU8(
    const std::string& tensor, const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* info, Find(tensor, DType::kU8, shape));
  return CopyOut<uint8_t>(data_, *info);
}

absl::StatusOr<std::vector<int64_t>> SafetensorsFile::Shape(const std::string& tensor) const {
  auto it = tensors_.find(tensor);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrFormat("%s: tensor '%s': not found", name_, tensor));
  }
  return it->second.shape;
}

// ---------------------------------------------------------------------------------------
// SafetensorsWriter

void SafetensorsWriter::Add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            const void* data, size_t nbytes) {
  if (name == "__metadata__") WriterBug("'__metadata__' is reserved, not a tensor name");
  for (const Entry& e : entries_) {
    if (e.name == name) WriterBug(absl::StrCat("tensor '", name, "' added twice"));
  }
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(d), &count)) {
      WriterBug(absl::StrCat("tensor '", name, "': bad shape ", ShapeString(shape)));
    }
  }
  uint64_t want = 0;
  if (__builtin_mul_overflow(count, static_cast<uint64_t>(DTypeSize(dtype)), &want) ||
      want != nbytes) {
    WriterBug(absl::StrCat("tensor '", name, "': shape ", ShapeString(shape), " needs ", count,
                           " values, got ", nbytes / DTypeSize(dtype)));
  }
  Entry e;
  e.name = name;
  e.dtype = dtype;
  e.shape = std::move(shape);
  e.bytes.assign(static_cast<const char*>(data), nbytes);
  entries_.push_back(std::move(e));
}

void SafetensorsWriter::AddF32(const std::string& name, std::vector<int64_t> shape,
                               absl::Span<const float> v) {
  Add(name, DType::kF32, std::move(shape), v.data(), v.size() * sizeof(float));
}

void SafetensorsWriter::AddI32(const std::string& name, std::vector<int64_t> shape,
                               absl::Span<const int32_t> v) {
  Add(name, DType::kI32, std::move(shape), v.data(), v.size() * sizeof(int32_t));
}

void SafetensorsWriter::AddI64(const std::string& name, std::vector<int64_t> shape,
                               absl::Span<const int64_t> v) {
  Add(name, DType::kI64, std::move(shape), v.data(), v.size() * sizeof(int64_t));
}

void SafetensorsWriter::AddU64(const std::string& name, std::vector<int64_t> shape,
                               absl::Span<const uint64_t> v) {
  Add(name, DType::kU64, std::move(shape), v.data(), v.size() * sizeof(uint64_t));
}

void SafetensorsWriter::AddU8(const std::string& name, std::vector<int64_t> shape,
                              absl::Span<const uint8_t> v) {
  Add(name, DType::kU8, std::move(shape), v.data(), v.size());
}

void SafetensorsWriter::SetMetadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

std::string SafetensorsWriter::Serialize() const {
  // ordered_json keeps the header in the order tensors were added, matching the data.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::vector<uint64_t> begins;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    offset = RoundUp8(offset);
    begins.push_back(offset);
    nlohmann::ordered_json t = nlohmann::ordered_json::object();
    t["dtype"] = DTypeName(e.dtype);
    t["shape"] = e.shape;
    t["data_offsets"] = {offset, offset + e.bytes.size()};
    header[e.name] = std::move(t);
    offset += e.bytes.size();
  }
  // `replace` instead of the default `strict`: invalid UTF-8 in a name must not throw
  // out of a function that cannot report errors.
  std::string json = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  // Pad with spaces (valid trailing JSON whitespace) so the data region, and with it
  // every 8-aligned data offset, is 8-byte aligned in the file.
  json.resize(RoundUp8(8 + json.size()) - 8, ' ');

  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  const size_t data_start = out.size();
  for (size_t i = 0; i < entries_.size(); ++i) {
    out.resize(data_start + begins[i], '\0');
    out += entries_[i].bytes;
  }
  return out;
}

absl::Status SafetensorsWriter::WriteFile(const std::string& path) const {
  return WriteFileAtomically(path, Serialize());
}

}  // namespace recserve
