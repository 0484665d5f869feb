#include "engine/model.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

std::atomic<uint64_t> next_model_id{1};

int Pick(int override_value, int manifest_value, int fallback) {
  if (override_value > 0) return override_value;
  if (manifest_value > 0) return manifest_value;
  return fallback;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> Model::Create(BundleContents contents,
                                                          int64_t version,
                                                          const ModelOptions& options) {
  std::shared_ptr<Model> m(new Model());
  m->id_ = next_model_id.fetch_add(1);
  m->version_ = version;
  m->manifest_ = std::move(contents.manifest);
  m->mlp_ = std::move(contents.mlp);
  m->calibration_ = std::move(contents.calibration);
  ASSIGN_OR_RETURN(m->catalog_, Catalog::Create(std::move(contents.items), kItemsFile));
  ASSIGN_OR_RETURN(m->covisit_, CovisitIndex::Create(std::move(contents.covisit),
                                                     m->catalog_->size(), kCovisitFile));
  ASSIGN_OR_RETURN(m->features_, FeatureBuilder::Create(m->manifest_.features(),
                                                        m->catalog_->dim(),
                                                        m->catalog_->dense_dim()));
  if (m->features_.width() != m->mlp_.input_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kRankerFile, ": takes ", m->mlp_.input_dim(), " inputs but the feature spec builds ",
        m->features_.width()));
  }
  EmbeddingIndexOptions index_options = options.index;
  if (index_options.kind.empty()) index_options.kind = m->manifest_.recall().embedding_index();
  if (index_options.kind == "hnsw" && index_options.hnsw_graph_path.empty() && contents.hnsw_graph) {
    // The bundle's prebuilt graph: the checked bytes ReadBundle holds in memory.
    index_options.hnsw_graph_path = contents.hnsw_graph->path();
    index_options.hnsw_graph_name = contents.hnsw_graph->name();
  }
  ASSIGN_OR_RETURN(m->index_, BuildEmbeddingIndex(m->catalog_.get(), index_options));
  contents.hnsw_graph.reset();  // hnswlib has its own copy now
  if (m->index_->name() != "exact-fp32" && options.index_recall_queries > 0) {
    m->index_recall_ = MeasureIndexRecall(*m->catalog_, *m->index_, 100, options.index_recall_queries);
  }
  m->recaller_ = std::make_unique<Recaller>(m->catalog_.get(), m->index_.get());
  if (options.ranker_factory) {
    ASSIGN_OR_RETURN(m->ranker_, options.ranker_factory(m->manifest_, m->mlp_, m->calibration_));
  } else {
    ASSIGN_OR_RETURN(m->ranker_, CreateFp32Ranker(m->mlp_));
  }
  const v1::RecallSpec& r = m->manifest_.recall();
  const RecallOptions& o = options.recall;
  m->recall_.embedding_k = Pick(o.embedding_k, r.embedding_k(), 200);
  m->recall_.covisit_k = Pick(o.covisit_k, r.covisit_k(), 200);
  m->recall_.popularity_k = o.popularity_k >= 0 ? o.popularity_k
                            : r.popularity_k() > 0 ? r.popularity_k() : 50;
  m->recall_.max_candidates = Pick(o.max_candidates, r.max_candidates(), 500);
  ASSIGN_OR_RETURN(m->recall_.exclude_types, ConsumedTypesMask(r));
  return std::shared_ptr<const Model>(std::move(m));
}

absl::StatusOr<std::shared_ptr<const Model>> Model::Load(const std::string& version_dir,
                                                        int64_t version,
                                                        const ModelOptions& options) {
  ASSIGN_OR_RETURN(BundleContents contents, ReadBundle(version_dir));
  return Create(std::move(contents), version, options);
}

}  // namespace recserve
