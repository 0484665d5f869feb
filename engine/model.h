// One loaded model version: catalog, co-visitation, embedding index, feature builder and
// ranker, built from a bundle and then immutable.
//
// A Model is shared (std::shared_ptr<const Model>) by every request that pinned it and
// by the manager that serves it; it is destroyed when the last holder lets go. All of
// its methods are const and thread-safe. Each Model has a process-unique id() so
// per-thread scratch can tell when it must re-size for a new version.
#ifndef RECSERVE_ENGINE_MODEL_H_
#define RECSERVE_ENGINE_MODEL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/bundle.h"
#include "engine/catalog.h"
#include "engine/embedding_index.h"
#include "engine/features.h"
#include "engine/ranker.h"
#include "engine/recall.h"
#include "engine/stage_costs.h"

namespace recserve {

struct ModelOptions {
  // Builds the ranker that serves from the bundle's manifest (compression policy), fp32
  // MLP and calibration rows. Default (empty): CreateFp32Ranker with default buckets.
  std::function<absl::StatusOr<std::unique_ptr<Ranker>>(const v1::Manifest&, const Mlp&,
                                                       const CalibrationSet&)>
      ranker_factory;
  // Recall sizes; fields <= 0 take the manifest's values (then built-in defaults).
  // exclude_types always comes from the manifest (requests may override it).
  RecallOptions recall = {0, 0, -1, 0, kPurchasesOnly};
  // Embedding index; an empty kind takes the manifest's recall.embedding_index.
  EmbeddingIndexOptions index = [] {
    EmbeddingIndexOptions o;
    o.kind = "";
    return o;
  }();
  // Queries used to measure the index's recall@100 against the exact scan at load
  // (0 = skip; the exact fp32 index is not measured).
  int index_recall_queries = 50;
};

class Model {
 public:
  // Takes the contents of a bundle (from ReadBundle or the trainer).
  static absl::StatusOr<std::shared_ptr<const Model>> Create(BundleContents contents,
                                                            int64_t version,
                                                            const ModelOptions& options = {});
  // ReadBundle(version_dir) then Create.
  static absl::StatusOr<std::shared_ptr<const Model>> Load(const std::string& version_dir,
                                                          int64_t version,
                                                          const ModelOptions& options = {});

  uint64_t id() const { return id_; }
  const std::string& name() const { return manifest_.model_name(); }
  int64_t version() const { return version_; }
  const v1::Manifest& manifest() const { return manifest_; }
  const Catalog& catalog() const { return *catalog_; }
  const CovisitIndex& covisit() const { return *covisit_; }
  const EmbeddingIndex& index() const { return *index_; }
  const Recaller& recaller() const { return *recaller_; }
  const FeatureBuilder& features() const { return features_; }
  const Ranker& ranker() const { return *ranker_; }
  const Mlp& fp32_mlp() const { return mlp_; }
  const CalibrationSet& calibration() const { return calibration_; }
  const RecallOptions& recall_options() const { return recall_; }
  // recall@100 of the embedding index against the exact fp32 scan, measured at load.
  double index_recall() const { return index_recall_; }
  // What this version's request stages cost, measured by its own requests (the
  // warm-up's first); the one part of a Model that changes while it serves (lock-free).
  StageCosts& stage_costs() const { return stage_costs_; }

 private:
  Model() = default;
  uint64_t id_ = 0;
  int64_t version_ = 0;
  v1::Manifest manifest_;
  Mlp mlp_;
  CalibrationSet calibration_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<CovisitIndex> covisit_;
  std::unique_ptr<EmbeddingIndex> index_;
  std::unique_ptr<Recaller> recaller_;
  FeatureBuilder features_;
  std::unique_ptr<Ranker> ranker_;
  RecallOptions recall_;
  double index_recall_ = 1.0;
  mutable StageCosts stage_costs_;
};

}  // namespace recserve

#endif  // RECSERVE_ENGINE_MODEL_H_
