#include "server/version_source.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace recserve {
namespace {

bool IsPlainPositiveInteger(const std::string& name, int64_t* value) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return false;
  for (char c : name) {
    if (c < '0' || c > '9') return false;
  }
  return absl::SimpleAtoi(name, value) && *value > 0;
}

std::string RealPath(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

}  // namespace

absl::StatusOr<VersionSource> VersionSource::Create(std::string base_path) {
  std::error_code ec;
  if (base_path.empty() || !std::filesystem::is_directory(base_path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("model base path '", base_path, "' is not a directory"));
  }
  return VersionSource(std::move(base_path));
}

int64_t VersionSource::ReadyStamp(const std::string& version_path) {
  struct stat st;
  if (::stat((version_path + "/READY").c_str(), &st) != 0) return -1;
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

VersionScan VersionSource::Scan() const {
  VersionScan out;
  const std::string base_real = RealPath(base_path_);
  if (base_real.empty()) return out;
  std::error_code ec;
  std::filesystem::directory_iterator it(base_path_, ec), end;
  for (; !ec && it != end; it.increment(ec)) {  // no exceptions on the load thread
    const std::filesystem::directory_entry& entry = *it;
    int64_t version = 0;
    if (!IsPlainPositiveInteger(entry.path().filename().string(), &version)) continue;
    const std::string real = RealPath(entry.path().string());
    if (real.empty() || real.compare(0, base_real.size() + 1, base_real + "/") != 0) {
      out.refused.emplace(version, "resolves outside the model base path");
      continue;
    }
    std::error_code type_ec;
    if (!std::filesystem::is_directory(real, type_ec)) {
      out.refused.emplace(version, "not a directory");
      continue;
    }
    const int64_t ready_stamp = ReadyStamp(real);
    if (ready_stamp < 0) continue;  // still being written
    out.ready.emplace(version, ReadyVersion{real, ready_stamp});
  }
  return out;
}

}  // namespace recserve
