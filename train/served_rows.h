// Ranker training rows from served impressions (train/impression_labels.h), with the
// position an item was shown at as a training-only input.
//
// Features are what the server computed at the time: the user state from the record's
// own events, the record's context, the item's features from the bundle being trained
// (the catalog, co-visitation and embeddings of the new bundle, not of the version that
// served the answer: a bundle does not keep its predecessor's tables). After them come
// `position_columns` inputs, one-hot: column j is 1 for an item shown at position j + 1,
// the last column for every position past it; position 0 (the top) sets none.
//
// Rows without a position (the world's logged slates, whose users looked at every item,
// so that their clicks carry no position effect) get all position columns 0, the same
// as the top position, where the loop's users look at every item too. Serving scores
// every candidate as if shown at the top: DropPositionInputs removes the position
// columns from the trained network's first layer (inputs fixed at 0 add nothing), so
// the served MLP takes exactly the bundle's feature width and the bundle format does
// not change. The position effect stays with the dropped weights: the ranker learns
// what a user would click at the top, not where the previous ranker put an item.
//
// Mixing: the sampled rows (the world's slates, or the real-log trainer's anchor rows)
// and the served rows train one network, row for row (the sampled rows cover the whole
// candidate distribution; served rows only the lists earlier rankers chose, with the
// users' real reactions to them). Each set is split by time, the newest
// `validation_fraction` of the served slates validating with the sampled validation rows.
//
// Items the feature model's catalog does not know (shown items and events alike) are
// left out, as the server leaves out unknown event items; shown ones are counted.
//
// Stateless functions; thread-safe.
#ifndef RECSERVE_TRAIN_SERVED_ROWS_H_
#define RECSERVE_TRAIN_SERVED_ROWS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/mlp.h"
#include "engine/model.h"
#include "train/impression_labels.h"
#include "train/mlp_trainer.h"

namespace recserve {

struct ServedRowsOptions {
  // Positions 1..9 one-hot, 10+ share the last. 0: no position input (the position
  // effect is then learnt as if it were the items'; for comparison).
  int position_columns = 9;
  double validation_fraction = 0.15; // newest share of slates (each set) validating
};

// [count x width] rows and their labels.
struct RowMatrix {
  std::vector<float> rows;
  std::vector<float> labels;
  int count = 0;
  int width = 0;
};

struct ServedRowStats {
  int64_t rows = 0;           // rows built (fit and validation)
  int64_t unknown_items = 0;  // shown items the catalog does not know: left out
  int64_t empty_slates = 0;   // slates none of whose shown items it knows: left out
};

// Rows of `slates` for `model`'s features plus the position columns
// (width = model.features().width() + position_columns), one per labelled item the
// catalog knows. `stats` (may be null) is added to.
RowMatrix BuildServedRows(const Model& model, absl::Span<const ServedSlate> slates, int position_columns,
                          ServedRowStats* stats = nullptr);

// A view of rows without position columns.
struct RowsView {
  absl::Span<const float> rows;
  absl::Span<const float> labels;
  int count = 0;
};

// The rows one network trains on: `fit` and `val` (the feature model's width, no
// position) widened by zero position columns, then the older served slates' rows after
// `fit`'s and the newer ones' after `val`'s.
struct ServedTrainingRows {
  RowMatrix fit, val;
  ServedRowStats stats;
};
absl::StatusOr<ServedTrainingRows> CombineWithServedRows(const Model& feature_model, RowsView fit, RowsView val,
                                                         absl::Span<const ServedSlate> slates,
                                                         const ServedRowsOptions& options);

// Trains one network on `fit` and the older served slates (validating on `val` and the
// newer ones), then drops its position inputs: the returned Mlp takes the bundle's
// feature rows. `report` (may be null) is the training's, with position inputs.
absl::StatusOr<Mlp> TrainWithServedImpressions(const Model& feature_model, RowsView fit, RowsView val,
                                               absl::Span<const ServedSlate> slates,
                                               const ServedRowsOptions& options,
                                               const MlpTrainOptions& mlp_options, MlpTrainReport* report,
                                               ServedRowStats* stats = nullptr);

// The served network: `trained` (input width + k position columns, last) with the
// position columns removed from its first layer. InvalidArgument when `trained` is
// narrower than `width`.
absl::StatusOr<Mlp> DropPositionInputs(const Mlp& trained, int width);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_SERVED_ROWS_H_
