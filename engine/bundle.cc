#include "engine/bundle.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/escaping.h"
#include "engine/file_util.h"
#include "engine/item_key.h"
#include "engine/onnx_mlp.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"
#include "engine/value_limits.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace recserve {
namespace {

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(kManifestFile, ": ", field, ": ", what));
}

class CollectErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (first.empty()) first = absl::StrFormat("line %d column %d: %s", line + 1, column + 1, message);
  }
  std::string first;
};

std::string Join(const std::string& dir, const std::string& file) {
  return dir.empty() || dir.back() == '/' ? dir + file : dir + "/" + file;
}

std::string Hex(const unsigned char* digest, unsigned int len) {
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

// Opens bundle file `e` of the version directory `dir_fd`: a regular file, not a link
// (RegularFile::Open), whose size is the manifest's, checked before a byte is read. That
// size, within kMaxBundleFileBytes (ValidateManifest), is the bound on what is read.
absl::StatusOr<RegularFile> OpenListedFile(int dir_fd, const std::string& dir, const v1::FileEntry& e) {
  ASSIGN_OR_RETURN(RegularFile file, RegularFile::Open(dir_fd, e.name(), Join(dir, e.name()),
                                                       std::numeric_limits<uint64_t>::max(), Symlinks::kRefuse));
  if (file.size() != e.size()) {
    return absl::DataLossError(absl::StrFormat("%s: size %d but the manifest says %d", e.name(),
                                               file.size(), e.size()));
  }
  return file;
}

absl::Status CheckSha256(const v1::FileEntry& e, absl::string_view bytes) {
  const std::string sha = Sha256Hex(bytes);
  if (sha != e.sha256()) {
    return absl::DataLossError(absl::StrFormat(
        "%s: checksum mismatch: sha256 %s, manifest says %s", e.name(), sha, e.sha256()));
  }
  return absl::OkStatus();
}

// Bundle file `e`, read once into memory and checked against the manifest.
absl::StatusOr<std::string> ReadListedFile(int dir_fd, const std::string& dir, const v1::FileEntry& e) {
  ASSIGN_OR_RETURN(const RegularFile file, OpenListedFile(dir_fd, dir, e));
  std::string bytes(static_cast<size_t>(file.size()), '\0');
  RETURN_IF_ERROR(file.ReadAll(bytes.data()));
  RETURN_IF_ERROR(CheckSha256(e, bytes));
  return bytes;
}

// The same into a sealed in-memory file, for hnswlib, which opens its graph by name.
absl::StatusOr<std::shared_ptr<const MemoryFile>> ReadListedFileToMemoryFile(int dir_fd, const std::string& dir,
                                                                            const v1::FileEntry& e) {
  ASSIGN_OR_RETURN(const RegularFile file, OpenListedFile(dir_fd, dir, e));
  ASSIGN_OR_RETURN(std::unique_ptr<MemoryFile> copy,
                   MemoryFile::Create(Join(dir, e.name()), static_cast<size_t>(file.size())));
  RETURN_IF_ERROR(file.ReadAll(copy->data()));
  RETURN_IF_ERROR(CheckSha256(e, absl::string_view(copy->data(), copy->size())));
  RETURN_IF_ERROR(copy->Seal());
  return std::shared_ptr<const MemoryFile>(std::move(copy));
}

// The optional item keys of items.safetensors (see bundle.h) into items->keys; the ids
// must already be read. Checks every offset before it slices a byte.
absl::Status ReadItemKeys(const SafetensorsFile& file, CatalogData* items) {
  const bool has_offsets = file.tensors().count("key_offsets") > 0;
  const bool has_bytes = file.tensors().count("key_bytes") > 0;
  if (!has_offsets && !has_bytes) return absl::OkStatus();  // numeric catalog
  if (has_offsets != has_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor '%s' without '%s': item keys need both", kItemsFile,
        has_offsets ? "key_offsets" : "key_bytes", has_offsets ? "key_bytes" : "key_offsets"));
  }
  const int64_t n = static_cast<int64_t>(items->ids.size());
  ASSIGN_OR_RETURN(const std::vector<int64_t> offsets, file.GetI64("key_offsets", {n + 1}));
  ASSIGN_OR_RETURN(const std::vector<uint8_t> bytes, file.GetU8("key_bytes", {-1}));
  const int64_t total = static_cast<int64_t>(bytes.size());
  if (offsets[0] != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: 'key_offsets'[0] is %d, want 0", kItemsFile, offsets[0]));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (offsets[i + 1] < offsets[i]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'key_offsets' decreases at %d (%d -> %d)", kItemsFile, i, offsets[i], offsets[i + 1]));
    }
    if (offsets[i + 1] > total) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'key_offsets'[%d] is %d, past the %d bytes of 'key_bytes'", kItemsFile, i + 1,
          offsets[i + 1], total));
    }
  }
  if (offsets[n] != total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: 'key_offsets'[%d] is %d but 'key_bytes' has %d bytes", kItemsFile, n, offsets[n],
        total));
  }
  items->keys.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const absl::string_view key(reinterpret_cast<const char*>(bytes.data()) + offsets[i],
                                static_cast<size_t>(offsets[i + 1] - offsets[i]));
    if (absl::Status s = CheckItemKey(key); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'key_bytes': key of item %d (id %d) %s", kItemsFile, i, items->ids[i], s.message()));
    }
    if (ItemIdFromKey(key) != items->ids[i]) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: 'key_bytes': key '%s' of item %d has id %d, but 'ids' says %d", kItemsFile,
          absl::CHexEscape(key), i, ItemIdFromKey(key), items->ids[i]));
    }
    items->keys[i].assign(key.data(), key.size());
  }
  return absl::OkStatus();
}

}  // namespace

std::string Sha256Hex(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  return Hex(digest, len);
}

absl::Status ValidateManifest(const v1::Manifest& m) {
  if (m.schema_version() != kBundleSchemaVersion) {
    return Bad("schema_version", absl::StrFormat("is %d, this server reads %d",
                                                 m.schema_version(), kBundleSchemaVersion));
  }
  const v1::FeatureSpec& f = m.features();
  if (f.embedding_dim() <= 0 || f.embedding_dim() > 4096) {
    return Bad("features.embedding_dim", absl::StrCat("is ", f.embedding_dim()));
  }
  if (f.item_dense_dim() < 0 || f.item_dense_dim() > 4096) {
    return Bad("features.item_dense_dim", absl::StrCat("is ", f.item_dense_dim()));
  }
  int width = 0;
  for (const v1::FeatureBlock& b : f.blocks()) {
    if (b.width() <= 0) return Bad("features.blocks.width", absl::StrCat("is ", b.width()));
    if (b.kind() == v1::CANDIDATE_SIGNALS && !m.user_model().covisit_detail()) {
      return Bad("user_model.covisit_detail", "must be true when a CANDIDATE_SIGNALS block is used");
    }
    width += b.width();
  }
  if (m.layer_sizes_size() < 2) return Bad("layer_sizes", "needs input and output sizes");
  if (m.layer_sizes(0) != width) {
    return Bad("layer_sizes", absl::StrFormat("input size %d but feature blocks add up to %d",
                                              m.layer_sizes(0), width));
  }
  if (m.layer_sizes(m.layer_sizes_size() - 1) != 1) {
    return Bad("layer_sizes", "the last size must be 1 (one logit)");
  }
  for (int s : m.layer_sizes()) {
    if (s <= 0 || s > 65536) return Bad("layer_sizes", absl::StrCat("bad size ", s));
  }
  const v1::UserModelSpec& u = m.user_model();
  // Bounded so that sums over a user's events stay finite (value_limits.h).
  for (float w : {u.view_weight(), u.click_weight(), u.cart_weight(), u.purchase_weight()}) {
    if (!(w >= 0 && w <= kMaxEventWeight)) {
      return Bad("user_model", absl::StrFormat("event weight %g is outside [0, %g]", w, kMaxEventWeight));
    }
  }
  if (!(u.half_life_seconds() > 0) || !std::isfinite(u.half_life_seconds())) {
    return Bad("user_model.half_life_seconds", absl::StrCat("is ", u.half_life_seconds()));
  }
  if (u.max_events() <= 0 || u.max_events() > kMaxUserEvents) {
    return Bad("user_model.max_events", absl::StrFormat("is %d, outside [1, %d]", u.max_events(), kMaxUserEvents));
  }
  const v1::RecallSpec& r = m.recall();
  for (int k : {r.embedding_k(), r.covisit_k(), r.popularity_k()}) {
    if (k < 0 || k > 100000) return Bad("recall", absl::StrCat("bad quota ", k));
  }
  if (r.max_candidates() <= 0 || r.max_candidates() > 100000) {
    return Bad("recall.max_candidates", absl::StrCat("is ", r.max_candidates()));
  }
  if (!(m.answer().recent_share() >= 0 && m.answer().recent_share() <= 0.5f)) {
    return Bad("answer.recent_share", absl::StrCat("is ", m.answer().recent_share(), ", outside [0, 0.5]"));
  }
  const v1::CompressionPolicy& c = m.compression();
  if (!(c.unstructured_sparsity() >= 0 && c.unstructured_sparsity() < 1)) {
    return Bad("compression.unstructured_sparsity", absl::StrCat("is ", c.unstructured_sparsity()));
  }
  if (!(c.structured_ratio() >= 0 && c.structured_ratio() < 1)) {
    return Bad("compression.structured_ratio", absl::StrCat("is ", c.structured_ratio()));
  }
  if (!(m.gate().max_auc_drop() >= 0) || !(m.gate().max_logloss_rise() >= 0)) {
    return Bad("gate", "thresholds must be >= 0");
  }
  std::set<std::string> names;
  for (const v1::FileEntry& e : m.files()) {
    if (e.name().empty() || e.name().find('/') != std::string::npos || e.name() == "." ||
        e.name() == "..") {
      return Bad("files.name", absl::StrCat("'", e.name(), "' is not a plain file name"));
    }
    if (!names.insert(e.name()).second) {
      return Bad("files.name", absl::StrCat("'", e.name(), "' listed twice"));
    }
    if (e.size() > kMaxBundleFileBytes) {
      return Bad("files.size", absl::StrFormat("of '%s' is %d bytes, above the limit of %d", e.name(), e.size(),
                                               kMaxBundleFileBytes));
    }
    // As Sha256Hex writes it and ReadBundle compares it: 64 lowercase hex digits.
    if (e.sha256().size() != 64 ||
        e.sha256().find_first_not_of("0123456789abcdef") != std::string::npos) {
      return Bad("files.sha256", absl::StrCat("of '", e.name(), "' is not 64 lowercase hex digits"));
    }
  }
  for (const char* required : {kRankerFile, kItemsFile, kCovisitFile, kCalibrationFile}) {
    if (!names.count(required)) return Bad("files", absl::StrCat("does not list ", required));
  }
  if (!m.recall().hnsw_graph().empty() && !names.count(m.recall().hnsw_graph())) {
    return Bad("recall.hnsw_graph", absl::StrCat("names '", m.recall().hnsw_graph(), "', which files does not list"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Manifest> ParseManifest(const std::string& text) {
  v1::Manifest manifest;
  google::protobuf::TextFormat::Parser parser;
  CollectErrors errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &manifest)) {
    return absl::InvalidArgumentError(absl::StrCat(kManifestFile, ": ", errors.first));
  }
  RETURN_IF_ERROR(ValidateManifest(manifest));
  return manifest;
}

absl::StatusOr<BundleContents> ReadBundle(const std::string& dir) {
  // Every file is opened relative to this one descriptor: the directory may be reached
  // through a symlink that is swapped meanwhile, yet all files come from one directory.
  const UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot open the version directory"));
  }
  struct stat ready;
  if (::fstatat(dir_fd.get(), kReadyFile, &ready, 0) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, ": no ", kReadyFile, " file; the version is incomplete"));
  }
  BundleContents b;
  std::string text;
  {
    ASSIGN_OR_RETURN(const RegularFile manifest, RegularFile::Open(dir_fd.get(), kManifestFile,
                                                                   Join(dir, kManifestFile), kMaxManifestBytes,
                                                                   Symlinks::kRefuse));
    text.resize(static_cast<size_t>(manifest.size()));
    RETURN_IF_ERROR(manifest.ReadAll(text.data()));
  }
  ASSIGN_OR_RETURN(b.manifest, ParseManifest(text));

  // Sizes and checksums before anything parses a byte of the data files. Each file is
  // read once: the parsers below get the bytes checked here, not the files on disk.
  const v1::Manifest& m = b.manifest;
  std::map<std::string, std::string> files;  // the ones parsed here
  for (const v1::FileEntry& e : m.files()) {
    if (e.name() == m.recall().hnsw_graph()) {
      ASSIGN_OR_RETURN(b.hnsw_graph, ReadListedFileToMemoryFile(dir_fd.get(), dir, e));
      continue;
    }
    ASSIGN_OR_RETURN(std::string bytes, ReadListedFile(dir_fd.get(), dir, e));
    if (e.name() == kRankerFile || e.name() == kItemsFile || e.name() == kCovisitFile ||
        e.name() == kCalibrationFile) {
      files[e.name()] = std::move(bytes);
    }
  }
  // Hands over a checked file's bytes (ValidateManifest made sure each is listed).
  auto take = [&files](const char* name) { return std::exchange(files[name], std::string()); };

  const int d = m.features().embedding_dim(), f = m.features().item_dense_dim();
  ASSIGN_OR_RETURN(b.mlp, ParseOnnxMlp(take(kRankerFile), Join(dir, kRankerFile)));
  const std::vector<int> sizes = b.mlp.LayerSizes();
  if (sizes != std::vector<int>(m.layer_sizes().begin(), m.layer_sizes().end())) {
    return absl::InvalidArgumentError(absl::StrCat(
        kRankerFile, ": layer sizes [", absl::StrJoin(sizes, ", "), "] but ", kManifestFile,
        " says [", absl::StrJoin(m.layer_sizes(), ", "), "]"));
  }

  {
    ASSIGN_OR_RETURN(auto items, SafetensorsFile::FromBytes(take(kItemsFile), Join(dir, kItemsFile)));
    ASSIGN_OR_RETURN(b.items.ids, items->GetU64("ids", {-1}));
    const int64_t n = static_cast<int64_t>(b.items.ids.size());
    ASSIGN_OR_RETURN(b.items.embeddings, items->GetF32("embeddings", {n, d}));
    ASSIGN_OR_RETURN(b.items.dense, items->GetF32("dense", {n, f}));
    ASSIGN_OR_RETURN(b.items.category, items->GetI32("category", {n}));
    ASSIGN_OR_RETURN(b.items.popularity, items->GetF32("popularity", {n}));
    if (items->tensors().count("recent_popularity") > 0) {  // optional
      ASSIGN_OR_RETURN(b.items.recent_popularity, items->GetF32("recent_popularity", {n}));
    }
    RETURN_IF_ERROR(ReadItemKeys(*items, &b.items));
    b.items.dim = d;
    b.items.dense_dim = f;
  }
  {
    ASSIGN_OR_RETURN(auto cov, SafetensorsFile::FromBytes(take(kCovisitFile), Join(dir, kCovisitFile)));
    const int64_t n = static_cast<int64_t>(b.items.ids.size());
    ASSIGN_OR_RETURN(b.covisit.offsets, cov->GetI64("offsets", {n + 1}));
    ASSIGN_OR_RETURN(b.covisit.neighbors, cov->GetI32("neighbors", {-1}));
    ASSIGN_OR_RETURN(b.covisit.weights,
                     cov->GetF32("weights", {static_cast<int64_t>(b.covisit.neighbors.size())}));
    if (cov->tensors().count("counts") > 0) {  // optional
      ASSIGN_OR_RETURN(b.covisit.counts,
                       cov->GetF32("counts", {static_cast<int64_t>(b.covisit.neighbors.size())}));
    }
    if (cov->tensors().count("knn_offsets") > 0) {  // optional: the item-kNN lists
      ASSIGN_OR_RETURN(b.covisit.knn_offsets, cov->GetI64("knn_offsets", {n + 1}));
      ASSIGN_OR_RETURN(b.covisit.knn_neighbors, cov->GetI32("knn_neighbors", {-1}));
      ASSIGN_OR_RETURN(b.covisit.knn_weights,
                       cov->GetF32("knn_weights", {static_cast<int64_t>(b.covisit.knn_neighbors.size())}));
    }
  }
  {
    ASSIGN_OR_RETURN(auto cal, SafetensorsFile::FromBytes(take(kCalibrationFile), Join(dir, kCalibrationFile)));
    const int64_t width = m.layer_sizes(0);
    ASSIGN_OR_RETURN(b.calibration.features, cal->GetF32("features", {-1, width}));
    const int64_t rows = static_cast<int64_t>(b.calibration.features.size()) / width;
    ASSIGN_OR_RETURN(b.calibration.labels, cal->GetF32("labels", {rows}));
    ASSIGN_OR_RETURN(b.calibration.groups, cal->GetI64("groups", {rows}));
    const std::vector<float>& features = b.calibration.features;
    for (size_t k = 0; k < features.size(); ++k) {
      if (!(std::abs(features[k]) <= kMaxBundleValue)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: 'features'[%d] is %g (row %d, column %d); bundle values must be within +-%g", kCalibrationFile, k,
            features[k], k / width, k % width, kMaxBundleValue));
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float l = b.calibration.labels[i];
      if (l != 0.f && l != 1.f) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: tensor 'labels': value %g at row %d is not 0 or 1", kCalibrationFile, l, i));
      }
    }
    b.calibration.rows = static_cast<int>(rows);
    b.calibration.width = static_cast<int>(width);
  }
  return b;
}

absl::Status WriteBundle(BundleContents c, const std::string& dir) {
  RETURN_IF_ERROR(ValidateMlp(c.mlp));
  RETURN_IF_ERROR(MakeDirs(dir));
  if (FileExists(Join(dir, kReadyFile))) {
    return absl::AlreadyExistsError(absl::StrCat(dir, ": already holds a READY version"));
  }
  v1::Manifest& m = c.manifest;
  m.set_schema_version(kBundleSchemaVersion);
  m.clear_layer_sizes();
  for (int s : c.mlp.LayerSizes()) m.add_layer_sizes(s);
  m.clear_files();

  const int64_t n = static_cast<int64_t>(c.items.ids.size());
  if (!c.items.keys.empty() && c.items.keys.size() != c.items.ids.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d keys for %d items", kItemsFile, c.items.keys.size(), c.items.ids.size()));
  }
  RETURN_IF_ERROR(WriteOnnxMlp(c.mlp, Join(dir, kRankerFile)));
  {
    SafetensorsWriter w;
    w.AddU64("ids", {n}, c.items.ids);
    w.AddF32("embeddings", {n, c.items.dim}, c.items.embeddings);
    w.AddF32("dense", {n, c.items.dense_dim}, c.items.dense);
    w.AddI32("category", {n}, c.items.category);
    w.AddF32("popularity", {n}, c.items.popularity);
    if (!c.items.recent_popularity.empty()) w.AddF32("recent_popularity", {n}, c.items.recent_popularity);
    if (!c.items.keys.empty()) {
      std::vector<int64_t> offsets = {0};
      std::string bytes;
      for (const std::string& key : c.items.keys) {
        bytes += key;
        offsets.push_back(static_cast<int64_t>(bytes.size()));
      }
      w.AddI64("key_offsets", {n + 1}, offsets);
      w.AddU8("key_bytes", {static_cast<int64_t>(bytes.size())},
              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    }
    RETURN_IF_ERROR(w.WriteFile(Join(dir, kItemsFile)));
  }
  {
    SafetensorsWriter w;
    w.AddI64("offsets", {static_cast<int64_t>(c.covisit.offsets.size())}, c.covisit.offsets);
    w.AddI32("neighbors", {static_cast<int64_t>(c.covisit.neighbors.size())}, c.covisit.neighbors);
    w.AddF32("weights", {static_cast<int64_t>(c.covisit.weights.size())}, c.covisit.weights);
    if (!c.covisit.counts.empty()) {
      w.AddF32("counts", {static_cast<int64_t>(c.covisit.counts.size())}, c.covisit.counts);
    }
    if (!c.covisit.knn_offsets.empty()) {
      w.AddI64("knn_offsets", {static_cast<int64_t>(c.covisit.knn_offsets.size())}, c.covisit.knn_offsets);
      w.AddI32("knn_neighbors", {static_cast<int64_t>(c.covisit.knn_neighbors.size())}, c.covisit.knn_neighbors);
      w.AddF32("knn_weights", {static_cast<int64_t>(c.covisit.knn_weights.size())}, c.covisit.knn_weights);
    }
    RETURN_IF_ERROR(w.WriteFile(Join(dir, kCovisitFile)));
  }
  {
    const CalibrationSet& cal = c.calibration;
    SafetensorsWriter w;
    w.AddF32("features", {cal.rows, cal.width}, cal.features);
    w.AddF32("labels", {cal.rows}, cal.labels);
    w.AddI64("groups", {cal.rows}, cal.groups);
    RETURN_IF_ERROR(w.WriteFile(Join(dir, kCalibrationFile)));
  }
  std::vector<std::string> listed = {kRankerFile, kItemsFile, kCovisitFile, kCalibrationFile};
  if (!m.recall().hnsw_graph().empty()) listed.push_back(m.recall().hnsw_graph());
  for (const std::string& name : listed) {
    ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(Join(dir, name)));
    v1::FileEntry* e = m.add_files();
    e->set_name(name);
    e->set_size(bytes.size());
    e->set_sha256(Sha256Hex(bytes));
  }
  RETURN_IF_ERROR(ValidateManifest(m));
  std::string text;
  google::protobuf::TextFormat::PrintToString(m, &text);
  RETURN_IF_ERROR(WriteFileAtomically(
      Join(dir, kManifestFile),
      absl::StrCat("# recserve model bundle manifest (recserve.v1.Manifest)\n", text)));
  // Last: from here on the version exists for every reader.
  return WriteFileAtomically(Join(dir, kReadyFile), "");
}

}  // namespace recserve
