// Rankers judged on served traffic: the held-out part of a server's impression log,
// labelled by what the users did next (train/impression_labels.h), re-scored by one or
// more bundles side by side (recserve-eval --impressions).
//
// Held out: the slates answered at or after a time, or by a model version or later (a
// bundle trained from the log before that version served cannot have seen them), or a
// whole log no bundle trained on. Labels come from the whole log, so a held-out
// answer's clicks are read from the same user's later requests.
//
// Each bundle scores every shown item as it serves: the features the server computes
// for the record's events and context (train/served_rows.h, no position columns), its
// ranker in the form its compression policy serves. Position never enters a score. Then:
//   auc, logloss  over every shown item (label 1: clicked within the window);
//   ndcg          per slate with a click, the slate re-ranked by the bundle's scores
//                 (gain 1 per clicked item, log2 discount, whole slate), averaged;
//   hit1          share of the slates with a click whose re-ranked first item was clicked;
//   clicks_top    share of the clicks the re-ranking puts in its first top_k places.
// Ties within a slate rank the unclicked items first: a constant score earns nothing,
// and the logged order (which carries the position) never breaks a tie.
// With a world's click model, each bundle also answers each slate's request itself
// (recall and ranking, n = the slate's length) and that answer is scored by its expected
// clicks under the world's truth (train/click_truth.h), beside the logged answer's.
//
// Stateless functions; thread-safe (models are only read).
#ifndef RECSERVE_TRAIN_IMPRESSION_EVAL_H_
#define RECSERVE_TRAIN_IMPRESSION_EVAL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model.h"
#include "recserve/v1/impression.pb.h"
#include "train/datagen.h"
#include "train/impression_labels.h"
#include "train/world.h"

namespace recserve {

struct HeldOut {
  int64_t from_ms = 0;       // answers made at or after this time (0: from the first)
  int64_t from_version = 0;  // answers of this model version or a later one (0: any)
};

struct HeldOutSlates {
  std::vector<ServedSlate> slates;  // labelled held-out answers, by time
  int64_t records = 0;              // records in the log
  int64_t held_out_records = 0;     // of them, held out
  int64_t digest_only = 0;          // held-out records without their events: left out
  LabelStats labels;                // of the whole log's labelling
};

// Labels every record of `records` with `event_log` and keeps the held-out slates.
// InvalidArgument, by name: no records; no record held out; every held-out record kept
// only its events' digest; no held-out answer labelled (every window still open).
absl::StatusOr<HeldOutSlates> LabelHeldOut(const std::vector<v1::Impression>& records,
                                           const std::vector<LoggedEvent>& event_log,
                                           const LabelOptions& label_options, const HeldOut& held_out);

struct RankingMetrics {
  double auc = 0, logloss = 0, ndcg = 0, hit1 = 0, clicks_top = 0;
  double expected_clicks = 0;  // per answer, with a click model
};

// The metrics above for `scores` (one per shown item: slates in order, items in
// logged order). `scores` must hold exactly that many values (checked by the caller).
RankingMetrics MeasureRanking(absl::Span<const ServedSlate> slates, absl::Span<const float> scores, int top_k);

struct EvalBundle {
  std::string label;  // names the bundle in errors and tables (e.g. its directory)
  const Model* model = nullptr;
};

struct ImpressionEvalOptions {
  int top_k = 3;                       // clicks_top's places; >= 1
  const ClickModel* truth = nullptr;   // expected clicks when set (the world the log came from)
  double position_decay = 1.0;         // examination 1 / (1 + k)^decay of the expected clicks
};

struct ImpressionEvalReport {
  std::vector<RankingMetrics> bundles;  // in the order given
  // scores[b]: bundle b's score of each shown item (MeasureRanking's order).
  std::vector<std::vector<float>> scores;
  int64_t slates = 0, shown = 0, clicks = 0, slates_with_click = 0;
  double logged_expected_clicks = 0;    // the logged answers', with a click model
};

// InvalidArgument naming the bundle, item or user: no bundle or slate; no click or no
// unclicked item; a shown item outside a bundle's catalog; a bundle whose catalog is not
// the first bundle's; top_k < 1; with a truth, a catalog item or a slate's user that
// is not the world's.
absl::StatusOr<ImpressionEvalReport> EvaluateOnImpressions(absl::Span<const EvalBundle> bundles,
                                                           absl::Span<const ServedSlate> slates,
                                                           const ImpressionEvalOptions& options);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_IMPRESSION_EVAL_H_
