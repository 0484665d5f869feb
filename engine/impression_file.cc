#include "engine/impression_file.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/file_util.h"
#include "google/protobuf/io/coded_stream.h"

namespace recserve {

std::string ImpressionFileName(int64_t unix_ms, int64_t sequence, bool active) {
  return absl::StrFormat("%s%016d-%06d%s", kImpressionFilePrefix, unix_ms, sequence,
                         active ? kImpressionActiveSuffix : kImpressionFileSuffix);
}

void AppendImpression(const v1::Impression& record, std::string* out) {
  AppendImpressionBytes(record.SerializeAsString(), out);
}

void AppendImpressionBytes(absl::string_view serialized, std::string* out) {
  uint8_t header[5];  // a varint32 takes at most 5 bytes
  const uint8_t* end =
      google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(serialized.size()), header);
  out->append(reinterpret_cast<const char*>(header), end - header);
  out->append(serialized.data(), serialized.size());
}

absl::StatusOr<ImpressionFileContents> ReadImpressionFile(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  ImpressionFileContents out;
  const auto* data = reinterpret_cast<const uint8_t*>(bytes->data());
  size_t offset = 0;
  while (offset < bytes->size()) {
    google::protobuf::io::CodedInputStream in(data + offset, static_cast<int>(bytes->size() - offset));
    uint32_t size = 0;
    if (!in.ReadVarint32(&size)) {
      out.truncated_tail = true;  // the length itself was cut short
      break;
    }
    const size_t header = static_cast<size_t>(in.CurrentPosition());
    if (size > bytes->size() - offset - header) {
      out.truncated_tail = true;
      break;
    }
    v1::Impression record;
    if (!record.ParseFromArray(data + offset + header, static_cast<int>(size))) {
      return absl::DataLossError(
          absl::StrFormat("%s: the impression record at byte %d (%d bytes) does not parse", path, offset, size));
    }
    out.records.push_back(std::move(record));
    offset += header + size;
  }
  return out;
}

absl::StatusOr<std::vector<ImpressionFileInfo>> ListImpressionFiles(const std::string& dir,
                                                                   bool include_active) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot list the impression log directory ", dir, ": ",
                                            std::strerror(errno)));
  }
  std::vector<ImpressionFileInfo> out;
  while (const dirent* e = readdir(d)) {
    const absl::string_view name = e->d_name;
    if (!absl::StartsWith(name, kImpressionFilePrefix)) continue;
    const bool active = absl::EndsWith(name, kImpressionActiveSuffix);
    if (!active && !absl::EndsWith(name, kImpressionFileSuffix)) continue;
    if (active && !include_active) continue;
    ImpressionFileInfo info;
    info.path = absl::StrCat(dir, "/", name);
    info.active = active;
    struct stat st;
    if (stat(info.path.c_str(), &st) != 0) continue;  // deleted since readdir
    info.bytes = st.st_size;
    out.push_back(std::move(info));
  }
  closedir(d);
  std::sort(out.begin(), out.end(),
            [](const ImpressionFileInfo& a, const ImpressionFileInfo& b) { return a.path < b.path; });
  return out;
}

}  // namespace recserve
