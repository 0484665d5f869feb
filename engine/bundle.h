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
// WriteBundle fills in the file entries of the manifest and writes READY last.
#ifndef RECSERVE_ENGINE_BUNDLE_H_
#define RECSERVE_ENGINE_BUNDLE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/catalog.h"
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
  // Path of the checked hnsw graph file when the manifest names one (recall.hnsw_graph).
  // WriteBundle expects the file already in the version directory under that name.
  std::string hnsw_graph_path;
};

// Checks the manifest on its own: schema version, feature spec, layer sizes, user model
// (event weights in [0, kMaxEventWeight], max_events in [1, kMaxUserEvents]), policy and
// gate ranges, file entries (plain names, no duplicates).
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
