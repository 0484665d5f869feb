#include "train/impression_eval.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "engine/quality.h"
#include "engine/status_macros.h"
#include "train/click_truth.h"
#include "train/served_rows.h"

namespace recserve {
namespace {

bool IsHeldOut(int64_t time_ms, int64_t version, const HeldOut& held_out) {
  return time_ms >= held_out.from_ms && version >= held_out.from_version;
}

bool Clicked(const ServedItem& item) { return item.label > 0.5f; }

absl::Status CheckCatalogs(absl::Span<const EvalBundle> bundles, absl::Span<const ServedSlate> slates,
                           const ClickModel* truth) {
  const Catalog& first = bundles[0].model->catalog();
  for (const EvalBundle& b : bundles) {
    const Catalog& catalog = b.model->catalog();
    if (catalog.size() != first.size()) {
      return absl::InvalidArgumentError(absl::StrFormat("bundle %s has another catalog than %s (%d items, not %d)",
                                                        b.label, bundles[0].label, catalog.size(), first.size()));
    }
    for (int32_t i = 0; i < catalog.size(); ++i) {
      if (first.Find(catalog.id(i)) < 0) {
        return absl::InvalidArgumentError(absl::StrFormat("bundle %s has another catalog than %s (item %d is not in it)",
                                                          b.label, bundles[0].label, catalog.id(i)));
      }
      if (truth != nullptr && (catalog.id(i) < 1 || catalog.id(i) > static_cast<uint64_t>(truth->num_items()))) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "bundle %s: item %d is not the world's (items 1..%d)", b.label, catalog.id(i), truth->num_items()));
      }
    }
  }
  // One catalog for all bundles from here on: the first's.
  for (const ServedSlate& slate : slates) {
    for (const ServedItem& item : slate.items) {
      if (first.Find(item.item_id) < 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "item %d shown to user '%s' at %d ms is not in bundle %s's catalog (%d items): the log is of another "
            "catalog", item.item_id, slate.user, slate.time_ms, bundles[0].label, first.size()));
      }
    }
  }
  return absl::OkStatus();
}

// The slate's world user; InvalidArgument when it is not one.
absl::StatusOr<uint64_t> WorldUser(const ServedSlate& slate, const ClickModel& truth) {
  uint64_t user = 0;
  if (!absl::SimpleAtoi(slate.user, &user) || user < 1 || user > static_cast<uint64_t>(truth.num_users())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "user '%s' (answered at %d ms) is not one of the world's users 1..%d: expected clicks need the world the "
        "log came from", slate.user, slate.time_ms, truth.num_users()));
  }
  return user;
}

}  // namespace

absl::StatusOr<HeldOutSlates> LabelHeldOut(const std::vector<v1::Impression>& records,
                                           const std::vector<LoggedEvent>& event_log,
                                           const LabelOptions& label_options, const HeldOut& held_out) {
  HeldOutSlates out;
  out.records = static_cast<int64_t>(records.size());
  if (records.empty()) return absl::InvalidArgumentError("the impression log has no records");
  for (const v1::Impression& r : records) {
    if (!IsHeldOut(r.time_unix_ms(), r.response().model_version(), held_out)) continue;
    ++out.held_out_records;
    out.digest_only += r.events_size() == 0 && r.events_count() > 0;
  }
  if (out.held_out_records == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "none of the log's %d records is held out (answered at or after %d ms by version %d or later)",
        out.records, held_out.from_ms, held_out.from_version));
  }
  if (out.digest_only == out.held_out_records) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "all %d held-out records kept only their events' digest (--impression_events=digest): their requests "
        "cannot be rebuilt to score", out.held_out_records));
  }
  ASSIGN_OR_RETURN(std::vector<ServedSlate> all, LabelImpressions(records, event_log, label_options, &out.labels));
  for (ServedSlate& slate : all) {
    if (IsHeldOut(slate.time_ms, slate.model_version, held_out)) out.slates.push_back(std::move(slate));
  }
  if (out.slates.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "no held-out answer is labelled: every one of the %d held-out records' %s windows is still open (no later "
        "request or event of the same user closes it)",
        out.held_out_records - out.digest_only, absl::FormatDuration(label_options.window)));
  }
  return out;
}

RankingMetrics MeasureRanking(absl::Span<const ServedSlate> slates, absl::Span<const float> scores, int top_k) {
  // Rows slate by slate, each slate's unclicked items first: MeanGroupNdcg and the
  // re-ranking below break score ties by row order.
  std::vector<float> row_scores, row_labels;
  std::vector<int64_t> groups;
  std::vector<size_t> order;
  int64_t clicked_slates = 0, clicks = 0, clicks_top = 0, first_clicked = 0;
  size_t max_length = 0, at = 0;
  for (size_t s = 0; s < slates.size(); ++s) {
    const std::vector<ServedItem>& items = slates[s].items;
    max_length = std::max(max_length, items.size());
    order.resize(items.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return Clicked(items[a]) < Clicked(items[b]); });
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[at + a] > scores[at + b]; });
    int64_t slate_clicks = 0;
    for (size_t r = 0; r < order.size(); ++r) {
      const ServedItem& item = items[order[r]];
      row_scores.push_back(scores[at + order[r]]);
      row_labels.push_back(item.label);
      groups.push_back(static_cast<int64_t>(s));
      if (Clicked(item)) {
        ++slate_clicks;
        clicks_top += static_cast<int>(r) < top_k;
        first_clicked += r == 0;
      }
    }
    clicks += slate_clicks;
    clicked_slates += slate_clicks > 0;
    at += items.size();
  }
  RankingMetrics m;
  m.auc = Auc(row_scores, row_labels);
  m.logloss = LogLoss(row_scores, row_labels);
  m.ndcg = MeanGroupNdcg(row_scores, row_labels, groups, static_cast<int>(max_length));
  m.hit1 = clicked_slates > 0 ? static_cast<double>(first_clicked) / clicked_slates : 0;
  m.clicks_top = clicks > 0 ? static_cast<double>(clicks_top) / clicks : 0;
  return m;
}

absl::StatusOr<ImpressionEvalReport> EvaluateOnImpressions(absl::Span<const EvalBundle> bundles,
                                                           absl::Span<const ServedSlate> slates,
                                                           const ImpressionEvalOptions& options) {
  if (bundles.empty()) return absl::InvalidArgumentError("no bundle to evaluate");
  if (slates.empty()) return absl::InvalidArgumentError("no labelled slate to evaluate on");
  if (options.top_k < 1) return absl::InvalidArgumentError(absl::StrFormat("top_k is %d, want >= 1", options.top_k));
  ImpressionEvalReport report;
  size_t max_length = 0;
  for (const ServedSlate& slate : slates) {
    report.shown += static_cast<int64_t>(slate.items.size());
    const int64_t clicks = std::count_if(slate.items.begin(), slate.items.end(), Clicked);
    report.clicks += clicks;
    report.slates_with_click += clicks > 0;
    max_length = std::max(max_length, slate.items.size());
  }
  report.slates = static_cast<int64_t>(slates.size());
  if (report.clicks == 0 || report.clicks == report.shown) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the %d shown items are all %s: AUC and the ranking metrics need clicked and unclicked items",
        report.shown, report.clicks == 0 ? "unclicked" : "clicked"));
  }
  RETURN_IF_ERROR(CheckCatalogs(bundles, slates, options.truth));

  std::vector<uint64_t> users;
  const std::vector<double> examination = ExaminationCurve(static_cast<int>(max_length), options.position_decay);
  if (options.truth != nullptr) {
    for (const ServedSlate& slate : slates) {
      ASSIGN_OR_RETURN(uint64_t user, WorldUser(slate, *options.truth));
      users.push_back(user);
      std::vector<uint64_t> logged;
      for (const ServedItem& item : slate.items) logged.push_back(item.item_id);
      report.logged_expected_clicks += ScoreList(*options.truth, examination, user, logged, slate.context).expected_clicks;
    }
    report.logged_expected_clicks /= report.slates;
  }
  PipelineScratch scratch;
  for (const EvalBundle& b : bundles) {
    const RowMatrix rows = BuildServedRows(*b.model, slates, /*position_columns=*/0);
    ASSIGN_OR_RETURN(std::vector<float> scores, ScoreAll(b.model->ranker(), rows.rows, rows.count));
    if (static_cast<int64_t>(scores.size()) != report.shown) {  // CheckCatalogs makes every item known
      return absl::InternalError(absl::StrFormat("bundle %s scored %d of %d shown items", b.label, scores.size(),
                                                 report.shown));
    }
    RankingMetrics m = MeasureRanking(slates, scores, options.top_k);
    if (options.truth != nullptr) {
      for (size_t s = 0; s < slates.size(); ++s) {
        const ServedSlate& slate = slates[s];
        ASSIGN_OR_RETURN(std::vector<uint64_t> answer,
                         AnswerItems(*b.model, slate.events, slate.context, static_cast<int>(slate.items.size()), &scratch));
        m.expected_clicks += ScoreList(*options.truth, examination, users[s], answer, slate.context).expected_clicks;
      }
      m.expected_clicks /= report.slates;
    }
    report.bundles.push_back(m);
    report.scores.push_back(std::move(scores));
  }
  return report;
}

}  // namespace recserve
