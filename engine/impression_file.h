// The impression log's file format (proto/recserve/v1/impression.proto): records of
// v1::Impression, each a varint byte length then the serialized message, appended to
// files named impressions-<first record's unix ms, 16 digits>-<sequence, 6 digits>.pb.
// The file being written ends in ".pb.part" and is renamed to ".pb" when it is closed
// (rotation or shutdown), so a reader that takes only ".pb" files never sees a record
// half written. Shared by the server's writer (server/impression_log.h) and the training
// tools that read the log. Stateless functions; thread-safe.
#ifndef RECSERVE_ENGINE_IMPRESSION_FILE_H_
#define RECSERVE_ENGINE_IMPRESSION_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "recserve/v1/impression.pb.h"

namespace recserve {

inline constexpr char kImpressionFilePrefix[] = "impressions-";
inline constexpr char kImpressionFileSuffix[] = ".pb";
inline constexpr char kImpressionActiveSuffix[] = ".pb.part";

// The name of the `sequence`th file of a log whose first record is at `unix_ms`.
std::string ImpressionFileName(int64_t unix_ms, int64_t sequence, bool active);

// Appends `record` to `out` as one length-delimited record ...
void AppendImpression(const v1::Impression& record, std::string* out);
// ... or a record already serialized.
void AppendImpressionBytes(absl::string_view serialized, std::string* out);

struct ImpressionFileContents {
  std::vector<v1::Impression> records;
  // The file ended inside a record (a writer stopped mid-record, e.g. a full disk): the
  // records before it are returned, the partial one is not.
  bool truncated_tail = false;
};

// Reads every record of one file. A record whose bytes do not parse is DATA_LOSS naming
// the file and the record's byte offset; a missing file is NOT_FOUND.
absl::StatusOr<ImpressionFileContents> ReadImpressionFile(const std::string& path);

struct ImpressionFileInfo {
  std::string path;
  int64_t bytes = 0;
  bool active = false;  // ".pb.part": being written (or left by a writer that died)
};

// The impression files in `dir`, oldest first (by name), complete ones and, with
// `include_active`, ".pb.part" ones. Other files are ignored. A missing or unreadable
// directory is an error naming it.
absl::StatusOr<std::vector<ImpressionFileInfo>> ListImpressionFiles(const std::string& dir,
                                                                   bool include_active);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_IMPRESSION_FILE_H_
