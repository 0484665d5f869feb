// VersionSource: which model versions exist under the model base path.
//
// The "source" of the hot-reload core (Source -> Loader -> Manager, TF Serving's split;
// server/model_manager.h puts the pieces together). It promises:
//   - a version is a directory entry whose name is a plain positive integer ("7"; not
//     "07", "-7", "7a", "latest"): anything else is no version and is skipped;
//   - a version counts only once it holds READY: a half-copied version (READY not yet
//     written) does not exist for it;
//   - a version that resolves (through symlinks) outside the base path, or is not a
//     directory, is refused with the reason, never listed as loadable;
//   - each loadable version comes with its READY stamp, so the manager can retry a
//     version that failed only when its READY changes.
// It reads the file system and nothing else: no model is read, no state is kept between
// scans, so it is tested on a temporary directory without a server.
//
// Thread-safety: constant after Create; Scan() and ReadyStamp() may be called from any
// thread. The load thread is the only caller in the server (ServingManager::RunCycle).
#ifndef RECSERVE_SERVER_VERSION_SOURCE_H_
#define RECSERVE_SERVER_VERSION_SOURCE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace recserve {

// A version directory that holds READY.
struct ReadyVersion {
  std::string path;  // the directory with symlinks resolved
  // READY's modification time in nanoseconds (ReadyStamp): a new READY, or the same one
  // touched, changes it.
  int64_t ready_stamp = 0;
};

// One scan of the base path.
struct VersionScan {
  std::map<int64_t, ReadyVersion> ready;     // loadable versions, by number
  std::map<int64_t, std::string> refused;    // version -> why it may not be loaded
};

class VersionSource {
 public:
  // Fails (INVALID_ARGUMENT) unless `base_path` names a directory.
  static absl::StatusOr<VersionSource> Create(std::string base_path);

  // Lists the versions of the base path now (see the file comment). A base path that has
  // gone away scans as empty; no file-system error escapes as an exception.
  VersionScan Scan() const;

  // READY's modification time in nanoseconds under `version_path`, -1 without READY.
  static int64_t ReadyStamp(const std::string& version_path);

  const std::string& base_path() const { return base_path_; }

 private:
  explicit VersionSource(std::string base_path) : base_path_(std::move(base_path)) {}

  std::string base_path_;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_VERSION_SOURCE_H_
