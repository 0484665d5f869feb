// From a user's recent events to ranker input rows: the one piece of code the trainer
// and the server share, so that what the model was trained on is what it is served.
//
// BuildUserState turns events (already mapped to catalog indices) into the user's
// vector and co-visitation scores; FeatureBuilder writes one row per candidate in the
// block order of the manifest's FeatureSpec. UserState is per-request working memory,
// owned by one thread and reused across requests (Reset keeps its capacity).
#ifndef RECSERVE_ENGINE_FEATURES_H_
#define RECSERVE_ENGINE_FEATURES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/catalog.h"
#include "recserve/v1/model.pb.h"

namespace recserve {

// Event types, numbered as recserve.v1.EventType.
enum class EventType : int32_t { kView = 1, kClick = 2, kCart = 3, kPurchase = 4 };

// Sets of event types as bit masks: bit (1 << type). Used to say which items count as
// consumed (and are dropped from answers): an item with an event of a type in the set.
constexpr uint32_t EventTypeBit(EventType type) { return 1u << static_cast<int>(type); }
inline constexpr uint32_t kAllEventTypes = 0x1E;
inline constexpr uint32_t kPurchasesOnly = 1u << 4;
// The mask of a manifest's recall.exclude_event_types (names as there; empty: purchases).
absl::StatusOr<uint32_t> ConsumedTypesMask(const v1::RecallSpec& recall);

struct UserEvent {
  int32_t item;  // catalog index
  EventType type;
  int64_t timestamp_ms;
};

// Request context, numbered as recserve.v1.Device / hour of day.
struct RequestContext {
  int32_t device = 0;  // 0 unknown, 1 mobile, 2 desktop, 3 tablet
  int32_t hour = -1;   // 0..23, or -1 unknown
};

// Defaults the trainer writes into new manifests.
v1::UserModelSpec DefaultUserModel();
v1::FeatureSpec DefaultFeatureSpec(int embedding_dim, int item_dense_dim);

// Working memory for one user's state. Sized for one catalog; Prepare re-sizes it when
// the catalog changes (a new model version), otherwise no allocation per request.
class UserState {
 public:
  void Prepare(const Catalog& catalog);
  // Forgets the previous user; O(previous user's touched items).
  void Reset();

  bool has_vector() const { return has_vector_; }
  const std::vector<float>& vector() const { return vector_; }
  // Weighted mean of the dense features of the user's items.
  const std::vector<float>& dense_mean() const { return dense_mean_; }
  // Share of the user's event weight in `category`, in [0, 1].
  float category_share(int32_t category) const { return category_weight_[category]; }
  // The user's categories, largest share first.
  const std::vector<int32_t>& categories() const { return categories_; }
  // Items co-visited with the user's events, with accumulated weights (unordered).
  const std::vector<int32_t>& covisited() const { return covisited_; }
  float covisit_score(int32_t item) const { return covisit_score_[item]; }
  // With spec.covisit_detail: the part of covisit_score from the newest basket, the
  // number of the user's items linking to `item`, the largest score over all items.
  float recent_covisit_score(int32_t item) const { return recent_score_.empty() ? 0.f : recent_score_[item]; }
  float covisit_links(int32_t item) const { return links_.empty() ? 0.f : links_[item]; }
  float max_covisit_score() const { return max_covisit_score_; }
  float max_recent_covisit_score() const { return max_recent_score_; }
  float max_covisit_links() const { return max_links_; }
  // With covisit_detail and co-visitation counts: the raw counts summed over the newest
  // kCountScoreItems distinct items of the history (the classic co-visitation score).
  static constexpr size_t kCountScoreItems = 20;
  float count_score(int32_t item) const { return count_score_.empty() ? 0.f : count_score_[item]; }
  float max_count_score() const { return max_count_score_; }
  // With item-kNN lists in the bundle: the cosines to the candidate summed over the
  // newest kKnnItems distinct items of the history, and the largest such sum.
  static constexpr size_t kKnnItems = 50;
  float knn_score(int32_t item) const { return knn_score_.empty() ? 0.f : knn_score_[item]; }
  float max_knn_score() const { return max_knn_score_; }
  const float* covisit_scores() const { return covisit_score_.data(); }  // [catalog size]
  bool purchased(int32_t item) const { return flags_[item] & EventTypeBit(EventType::kPurchase); }
  bool in_history(int32_t item) const { return flags_[item] & kHistory; }
  // Whether the user has an event of a type in `types` (EventTypeBit mask) on `item`.
  bool consumed(int32_t item, uint32_t types) const { return flags_[item] & types; }
  // Distinct items of every event: those of the used (newest max_events) events first,
  // newest first, then those of older events.
  const std::vector<int32_t>& history() const { return history_; }
  // How many of history() come from the used events.
  int used_items() const { return used_items_; }

 private:
  friend void BuildUserState(const Catalog&, const CovisitIndex&, const v1::UserModelSpec&,
                             absl::Span<const UserEvent>, UserState*);
  // flags_ bits: kHistory, and EventTypeBit(type) for every type the item was seen with.
  static constexpr uint8_t kHistory = 1;
  const Catalog* catalog_ = nullptr;
  bool has_vector_ = false;
  std::vector<float> vector_;
  std::vector<float> dense_mean_;
  std::vector<float> category_weight_;  // [num categories], zero except at categories_
  std::vector<int32_t> categories_;
  std::vector<float> covisit_score_;  // [N], zero except at covisited_
  std::vector<float> recent_score_;   // [N] with covisit_detail (else empty), zero except at covisited_
  std::vector<float> links_;          // [N] likewise
  std::vector<float> count_score_;    // [N] likewise
  std::vector<float> knn_score_;      // [N] with item-kNN lists (else empty), zero except at knn_reached_
  std::vector<int32_t> knn_reached_;
  float max_covisit_score_ = 0, max_count_score_ = 0, max_recent_score_ = 0, max_links_ = 0, max_knn_score_ = 0;
  int used_items_ = 0;
  std::vector<UserEvent> older_;      // scratch: events past max_events
  std::vector<uint8_t> flags_;        // [N], zero except at history_
  std::vector<int32_t> covisited_;
  std::vector<int32_t> history_;
  std::vector<UserEvent> sorted_;     // scratch
};

// Fills `state` (Prepare'd for `catalog`) from `events` (any order). Uses the newest
// spec.max_events events; each weighs type_weight * 0.5^(age / half_life), age measured
// from the newest event (so the same events always give the same state). The user
// vector (and the dense-feature mean) is the weighted mean over the items; category
// shares are the normalised weight per category; co-visitation scores are the weighted
// sums of the items' neighbour weights.
void BuildUserState(const Catalog& catalog, const CovisitIndex& covisit,
                    const v1::UserModelSpec& spec, absl::Span<const UserEvent> events,
                    UserState* state);

// Columns of a feature row that are the same in every row of one request (the user's and
// the context's blocks), ascending. The int8 ranker takes them in fp32, once per request.
std::vector<int> RequestConstantColumns(const v1::FeatureSpec& spec);

class FeatureBuilder {
 public:
  // Checks the spec against the catalog (block widths, known kinds, no repeats).
  static absl::StatusOr<FeatureBuilder> Create(const v1::FeatureSpec& spec, int embedding_dim,
                                               int item_dense_dim);
  int width() const { return width_; }

  // Writes rows [items.size() x width()] into `rows`.
  void Build(const Catalog& catalog, const UserState& user, const RequestContext& context,
             absl::Span<const int32_t> items, float* rows) const;

 private:
  std::vector<v1::FeatureBlockKind> blocks_;
  int width_ = 0;
  int dim_ = 0;
  int dense_dim_ = 0;
};

}  // namespace recserve

#endif  // RECSERVE_ENGINE_FEATURES_H_
