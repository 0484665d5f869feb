// Small file helpers with Status errors that name the path.
#ifndef RECSERVE_ENGINE_FILE_UTIL_H_
#define RECSERVE_ENGINE_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace recserve {

// NotFound when missing; refuses files over `max_bytes`.
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             size_t max_bytes = size_t{1} << 32);
// Writes path + ".tmp", fsyncs, renames onto `path`.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);
bool FileExists(const std::string& path);
absl::Status MakeDirs(const std::string& path);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_FILE_UTIL_H_
