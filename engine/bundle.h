// The model bundle: one immutable version directory models/<name>/<version>/ holding
//   manifest.textproto        recserve.v1.Manifest (text format), with a SHA-256 per file
//   ranker.onnx               the MLP
//   items.safetensors         ids U64 [N], embeddings F32 [N x d], dense F32 [N x f],
//                             category I32 [N], popularity F32 [N]; string item keys
//                             (engine/item_key.h) optionally as key_offsets I64 [N + 1]
//                             and key_bytes U8 [total]: key i is
//                             key_bytes[key_offsets[i] .. key_offsets[i + 1]). Both
//                             absent: a numeric catalog
//   covisit.safetensors       offsets I64 [N + 1], neighbors I32 [E], weights F32 [E],
//                             optional counts F32 [E] (raw pair counts behind weights),
//                             optional item-kNN lists knn_offsets I64 [N + 1],
//                             knn_neighbors I32 [K], knn_weights F32 [K]
//   calibration.safetensors   features F32 [M x K], labels F32 [M], groups I64 [M]
//                             (rows held out from training; groups = impression slates)
//   READY                     written last; a version without it does not exist yet
//
// ReadBundle distrusts every byte: READY present, manifest parsed and checked, every
// listed file present with the listed size and SHA-256, every tensor's dtype and shape
// consistent with the manifest, all floats finite (and the calibration features and
// ranker weights within +-kMaxBundleValue; Model::Create checks the catalog's and the
// co-visitation's: engine/value_limits.h). Errors name the file and field.
// It reads every file once, into memory, and parses the very bytes it checked: files are
// opened relative to one descriptor of the version directory (which may be reached
// through a symlink), must be regular files and not symlinks themselves (a FIFO would
// block the open, /dev/zero would never end the read), and must have the manifest's
// size before a byte is read. A file changed on disk meanwhile changes nothing read.
// WriteBundle fills in the file entries of the manifest and writes READY last.
#ifndef RECSERVE_ENGINE_BUNDLE_H_
#define RECSERVE_ENGINE_BUNDLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/catalog.h"
#include "engine/file_util.h"
#include "engine/mlp.h"
#include "recserve/v1/model.pb.h"

namespace recserve {

inline constexpr int kBundleSchemaVersion = 1;
inline constexpr char kManifestFile[] = "manifest.textproto";
inline constexpr char kRankerFile[] = "ranker.onnx";
inline constexpr char kItemsFile[] = "items.safetensors";
inline constexpr char kCovisitFile[] = "covisit.safetensors";
inline constexpr char kCalibrationFile[] = "calibration.safetensors";
inline constexpr char kReadyFile[] = "READY";
// The largest bundle file a manifest may list (files.size): a bound on what a reader
// allocates, far above the few GB of a 10M-item catalog's files.
inline constexpr uint64_t kMaxBundleFileBytes = uint64_t{64} << 30;
// The largest manifest.textproto read.
inline constexpr uint64_t kMaxManifestBytes = uint64_t{16} << 20;

struct CalibrationSet {
  std::vector<float> features;  // [rows x width]
  std::vector<float> labels;    // [rows], 0 or 1
  std::vector<int64_t> groups;  // [rows]
  int rows = 0;
  int width = 0;
};

struct BundleContents {
  v1::Manifest manifest;
  Mlp mlp;
  CatalogData items;
  CovisitData covisit;
  CalibrationSet calibration;
  // The checked hnsw graph when the manifest names one (recall.hnsw_graph): the bytes
  // whose checksum matched, in a sealed in-memory file, since hnswlib reads a file by name
  // (MemoryFile::path). Null without one. WriteBundle ignores it: it expects the graph
  // file already in the version directory under the manifest's name.
  std::shared_ptr<const MemoryFile> hnsw_graph;
};

// Checks the manifest on its own: schema version, feature spec, layer sizes, user model
// (event weights in [0, kMaxEventWeight], max_events in [1, kMaxUserEvents]), policy and
// gate ranges, file entries (plain names, no duplicates, sizes within kMaxBundleFileBytes).
absl::Status ValidateManifest(const v1::Manifest& manifest);
// manifest.textproto's text parsed (errors name the line and column) and validated.
absl::StatusOr<v1::Manifest> ParseManifest(const std::string& text);

absl::StatusOr<BundleContents> ReadBundle(const std::string& version_dir);

// Writes a complete version directory (created if needed; must not hold READY yet).
// Fills manifest.files and layer_sizes from the contents.
absl::Status WriteBundle(BundleContents contents, const std::string& version_dir);

// Lowercase hex SHA-256 of `bytes`.
std::string Sha256Hex(absl::string_view bytes);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_BUNDLE_H_
