#include "train/served_rows.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/features.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

// Appends `view`'s rows widened by `extra` zero columns to `out`.
void AppendWithoutPosition(RowsView view, int width, int extra, RowMatrix* out) {
  for (int r = 0; r < view.count; ++r) {
    const float* row = view.rows.data() + static_cast<size_t>(r) * width;
    out->rows.insert(out->rows.end(), row, row + width);
    out->rows.insert(out->rows.end(), extra, 0.f);
    out->labels.push_back(view.labels[r]);
  }
  out->count += view.count;
}

void Append(const RowMatrix& from, RowMatrix* out) {
  out->rows.insert(out->rows.end(), from.rows.begin(), from.rows.end());
  out->labels.insert(out->labels.end(), from.labels.begin(), from.labels.end());
  out->count += from.count;
}

}  // namespace

RowMatrix BuildServedRows(const Model& model, absl::Span<const ServedSlate> slates, int position_columns,
                          ServedRowStats* stats) {
  ServedRowStats local;
  ServedRowStats& st = stats != nullptr ? *stats : local;
  const Catalog& catalog = model.catalog();
  const int width = model.features().width();
  RowMatrix out;
  out.width = width + position_columns;
  UserState state;
  std::vector<UserEvent> events;
  std::vector<int32_t> items;
  std::vector<int32_t> positions;
  std::vector<float> rows;
  for (const ServedSlate& slate : slates) {
    // The server's mapping (engine/pipeline.cc): unknown items skipped, any order.
    events.clear();
    for (const QueryEvent& e : slate.events) {
      const int32_t item = catalog.Find(e.item_id);
      if (item >= 0) events.push_back({item, e.type, e.timestamp_ms});
    }
    BuildUserState(catalog, model.covisit(), model.manifest().user_model(), events, &state);
    items.clear();
    positions.clear();
    for (const ServedItem& shown : slate.items) {
      const int32_t item = catalog.Find(shown.item_id);
      if (item < 0) {
        ++st.unknown_items;
        continue;
      }
      items.push_back(item);
      positions.push_back(shown.position);
      out.labels.push_back(shown.label);
    }
    rows.resize(items.size() * width);
    model.features().Build(catalog, state, slate.context, items, rows.data());
    for (size_t i = 0; i < items.size(); ++i) {
      out.rows.insert(out.rows.end(), rows.begin() + i * width, rows.begin() + (i + 1) * width);
      const size_t first = out.rows.size();
      out.rows.resize(first + position_columns, 0.f);
      if (positions[i] > 0 && position_columns > 0) out.rows[first + std::min(positions[i], position_columns) - 1] = 1.f;
    }
    out.count += static_cast<int>(items.size());
    if (items.empty()) ++st.empty_slates;
  }
  st.rows += out.count;
  return out;
}

absl::StatusOr<Mlp> DropPositionInputs(const Mlp& trained, int width) {
  if (trained.layers.empty() || trained.input_dim() < width) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ranker takes %d inputs, fewer than the %d features", trained.input_dim(), width));
  }
  Mlp served = trained;
  DenseLayer& first = served.layers.front();
  const int in = first.in;
  std::vector<float> weight(static_cast<size_t>(first.out) * width);
  for (int o = 0; o < first.out; ++o) {
    std::copy_n(first.weight.begin() + static_cast<size_t>(o) * in, width,
                weight.begin() + static_cast<size_t>(o) * width);
  }
  first.weight = std::move(weight);
  first.in = width;
  return served;
}

absl::StatusOr<ServedTrainingRows> CombineWithServedRows(const Model& feature_model, RowsView fit, RowsView val,
                                                         absl::Span<const ServedSlate> slates,
                                                         const ServedRowsOptions& options) {
  if (options.position_columns < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("position_columns is %d, want at least 0", options.position_columns));
  }
  const int width = feature_model.features().width();
  const size_t split = static_cast<size_t>(slates.size() * (1.0 - options.validation_fraction));
  ServedTrainingRows out;
  const RowMatrix served_fit =
      BuildServedRows(feature_model, slates.subspan(0, split), options.position_columns, &out.stats);
  const RowMatrix served_val =
      BuildServedRows(feature_model, slates.subspan(split), options.position_columns, &out.stats);
  out.fit.width = out.val.width = width + options.position_columns;
  AppendWithoutPosition(fit, width, options.position_columns, &out.fit);
  Append(served_fit, &out.fit);
  AppendWithoutPosition(val, width, options.position_columns, &out.val);
  Append(served_val, &out.val);
  return out;
}

absl::StatusOr<Mlp> TrainWithServedImpressions(const Model& feature_model, RowsView fit, RowsView val,
                                               absl::Span<const ServedSlate> slates,
                                               const ServedRowsOptions& options,
                                               const MlpTrainOptions& mlp_options, MlpTrainReport* report,
                                               ServedRowStats* stats) {
  ASSIGN_OR_RETURN(ServedTrainingRows rows, CombineWithServedRows(feature_model, fit, val, slates, options));
  if (stats != nullptr) *stats = rows.stats;
  if (mlp_options.verbose) {
    std::fprintf(stderr, "[train] served impressions: %d fit and %d validation rows (%d position columns)\n",
                 rows.fit.count - fit.count, rows.val.count - val.count, options.position_columns);
  }
  ASSIGN_OR_RETURN(Mlp trained, TrainMlp(rows.fit.rows, rows.fit.labels, rows.fit.count, rows.fit.width,
                                         rows.val.rows, rows.val.labels, rows.val.count, mlp_options, report));
  return DropPositionInputs(trained, feature_model.features().width());
}

}  // namespace recserve
