#include "engine/features.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_format.h"
#include "engine/huge_pages.h"

namespace recserve {
namespace {

constexpr int kSignalWidth = 4;
constexpr int kContextWidth = 6;
constexpr int kAffinityWidth = 2;
constexpr int kCandidateSignalsWidth = 10;
constexpr int kKnnSignalsWidth = 3;
constexpr float kPi = 3.14159265358979f;

float TypeWeight(const v1::UserModelSpec& spec, EventType type) {
  switch (type) {
    case EventType::kView: return spec.view_weight();
    case EventType::kClick: return spec.click_weight();
    case EventType::kCart: return spec.cart_weight();
    case EventType::kPurchase: return spec.purchase_weight();
  }
  return 0;
}

int BlockWidth(v1::FeatureBlockKind kind, int dim, int dense_dim) {
  switch (kind) {
    case v1::USER_VECTOR:
    case v1::ITEM_EMBEDDING:
    case v1::USER_ITEM_PRODUCT: return dim;
    case v1::ITEM_DENSE:
    case v1::USER_DENSE:
    case v1::USER_ITEM_DENSE_PRODUCT: return dense_dim;
    case v1::CATEGORY_AFFINITY: return kAffinityWidth;
    case v1::RECALL_SIGNALS: return kSignalWidth;
    case v1::CANDIDATE_SIGNALS: return kCandidateSignalsWidth;
    case v1::ITEM_KNN_SIGNALS: return kKnnSignalsWidth;
    case v1::CONTEXT: return kContextWidth;
    default: return -1;
  }
}

}  // namespace

v1::UserModelSpec DefaultUserModel() {
  v1::UserModelSpec spec;
  spec.set_view_weight(1.0f);
  spec.set_click_weight(2.0f);
  spec.set_cart_weight(3.0f);
  spec.set_purchase_weight(4.0f);
  spec.set_half_life_seconds(365 * 24 * 3600.0f);
  spec.set_max_events(100);
  return spec;
}

v1::FeatureSpec DefaultFeatureSpec(int embedding_dim, int item_dense_dim) {
  v1::FeatureSpec spec;
  spec.set_embedding_dim(embedding_dim);
  spec.set_item_dense_dim(item_dense_dim);
  for (v1::FeatureBlockKind kind :
       {v1::USER_VECTOR, v1::ITEM_EMBEDDING, v1::USER_ITEM_PRODUCT, v1::USER_DENSE, v1::ITEM_DENSE,
        v1::USER_ITEM_DENSE_PRODUCT, v1::CATEGORY_AFFINITY, v1::RECALL_SIGNALS, v1::CONTEXT}) {
    if ((kind == v1::ITEM_DENSE || kind == v1::USER_DENSE || kind == v1::USER_ITEM_DENSE_PRODUCT) &&
        item_dense_dim == 0) {
      continue;  // catalogs without dense item features
    }
    v1::FeatureBlock* block = spec.add_blocks();
    block->set_kind(kind);
    block->set_width(BlockWidth(kind, embedding_dim, item_dense_dim));
  }
  return spec;
}

void UserState::Prepare(const Catalog& catalog) {
  if (catalog_ == &catalog) return;
  catalog_ = &catalog;
  vector_.assign(catalog.dim(), 0.f);
  dense_mean_.assign(catalog.dense_dim(), 0.f);
  category_weight_.assign(catalog.num_categories(), 0.f);
  categories_.clear();
  // Read and written at random, per request.
  AssignOnHugePages(&covisit_score_, catalog.size(), 0.f);
  AssignOnHugePages(&flags_, catalog.size(), uint8_t{0});
  recent_score_.clear();
  links_.clear();
  count_score_.clear();
  knn_score_.clear();
  knn_reached_.clear();
  covisited_.clear();
  history_.clear();
  has_vector_ = false;
}

void UserState::Reset() {
  for (int32_t item : covisited_) covisit_score_[item] = 0.f;
  if (!recent_score_.empty()) {
    for (int32_t item : covisited_) recent_score_[item] = links_[item] = count_score_[item] = 0.f;
  }
  for (int32_t item : knn_reached_) knn_score_[item] = 0.f;
  knn_reached_.clear();
  max_covisit_score_ = max_count_score_ = max_recent_score_ = max_links_ = max_knn_score_ = 0;
  used_items_ = 0;
  for (int32_t item : history_) flags_[item] = 0;
  for (int32_t c : categories_) category_weight_[c] = 0.f;
  categories_.clear();
  std::fill(dense_mean_.begin(), dense_mean_.end(), 0.f);
  covisited_.clear();
  history_.clear();
  std::fill(vector_.begin(), vector_.end(), 0.f);
  has_vector_ = false;
}

void BuildUserState(const Catalog& catalog, const CovisitIndex& covisit,
                    const v1::UserModelSpec& spec, absl::Span<const UserEvent> events,
                    UserState* state) {
  state->Prepare(catalog);
  state->Reset();
  if (spec.covisit_detail() && state->recent_score_.empty()) {
    AssignOnHugePages(&state->recent_score_, catalog.size(), 0.f);
    AssignOnHugePages(&state->links_, catalog.size(), 0.f);
    AssignOnHugePages(&state->count_score_, catalog.size(), 0.f);
  }
  const bool detail = !state->recent_score_.empty();
  if (events.empty()) return;

  // (used_items_ is set below, once the used events are in history_.)
  // Newest first, then keep max_events of them. Every event marks its item as seen (and
  // consumed by its type), also those past max_events.
  std::vector<UserEvent>& sorted = state->sorted_;
  sorted.assign(events.begin(), events.end());
  std::stable_sort(sorted.begin(), sorted.end(), [](const UserEvent& a, const UserEvent& b) {
    return a.timestamp_ms > b.timestamp_ms;
  });
  std::vector<UserEvent>& older = state->older_;
  older.clear();
  if (spec.max_events() > 0 && sorted.size() > static_cast<size_t>(spec.max_events())) {
    older.assign(sorted.begin() + spec.max_events(), sorted.end());
    sorted.resize(spec.max_events());
  }
  const int64_t newest = sorted.front().timestamp_ms;
  const double half_life_ms = std::max(1.0, 1000.0 * spec.half_life_seconds());
  const int dim = catalog.dim(), dense_dim = catalog.dense_dim();
  double total_weight = 0;
  std::vector<float>& vec = state->vector_;
  std::vector<float>& dense = state->dense_mean_;
  for (const UserEvent& e : sorted) {
    const double age_ms = static_cast<double>(newest - e.timestamp_ms);
    const float w = static_cast<float>(TypeWeight(spec, e.type) * std::exp2(-age_ms / half_life_ms));
    uint8_t& flags = state->flags_[e.item];
    if (!(flags & UserState::kHistory)) state->history_.push_back(e.item);
    flags |= UserState::kHistory;
    flags |= static_cast<uint8_t>(EventTypeBit(e.type));
    if (w <= 0) continue;
    total_weight += w;
    const float* emb = catalog.embedding(e.item);
    for (int k = 0; k < dim; ++k) vec[k] += w * emb[k];
    const float* d = catalog.dense(e.item);
    for (int k = 0; k < dense_dim; ++k) dense[k] += w * d[k];
    float& cw = state->category_weight_[catalog.category(e.item)];
    if (cw == 0.f) state->categories_.push_back(catalog.category(e.item));
    cw += w;
    absl::Span<const int32_t> nbrs = covisit.neighbors(e.item);
    absl::Span<const float> nw = covisit.weights(e.item);
    for (size_t j = 0; j < nbrs.size(); ++j) {
      float& score = state->covisit_score_[nbrs[j]];
      if (score == 0.f) state->covisited_.push_back(nbrs[j]);
      // Keep the score strictly positive once touched so the list above stays exact.
      score += std::max(w * nw[j], 1e-12f);
    }
    if (detail) {
      const bool newest_basket = e.timestamp_ms == newest;
      for (size_t j = 0; j < nbrs.size(); ++j) {
        state->links_[nbrs[j]] += 1.f;
        if (newest_basket) state->recent_score_[nbrs[j]] += w * nw[j];
      }
    }
  }
  state->used_items_ = static_cast<int>(state->history_.size());
  // Items of the events past max_events: seen and consumed, after the used ones (so
  // history() stays newest first).
  for (const UserEvent& e : older) {
    uint8_t& flags = state->flags_[e.item];
    if (!(flags & UserState::kHistory)) state->history_.push_back(e.item);
    flags |= UserState::kHistory | static_cast<uint8_t>(EventTypeBit(e.type));
  }
  for (int32_t item : state->covisited_) {
    state->max_covisit_score_ = std::max(state->max_covisit_score_, state->covisit_score_[item]);
  }
  if (detail) {
    for (int32_t item : state->covisited_) {
      state->max_recent_score_ = std::max(state->max_recent_score_, state->recent_score_[item]);
      state->max_links_ = std::max(state->max_links_, state->links_[item]);
    }
  }
  if (detail && covisit.has_counts()) {
    // The classic co-visitation score: raw counts summed over the newest distinct items,
    // each item once whatever its weight.
    const size_t used = std::min<size_t>(state->history_.size(), UserState::kCountScoreItems);
    for (size_t h = 0; h < used; ++h) {
      const int32_t item = state->history_[h];
      absl::Span<const int32_t> nbrs = covisit.neighbors(item);
      absl::Span<const float> counts = covisit.counts(item);
      for (size_t j = 0; j < nbrs.size(); ++j) {
        if (state->covisit_score_[nbrs[j]] == 0.f) continue;  // not touched: item past max_events
        state->count_score_[nbrs[j]] += counts[j];
      }
    }
    for (int32_t item : state->covisited_) {
      state->max_count_score_ = std::max(state->max_count_score_, state->count_score_[item]);
    }
  }
  if (covisit.has_knn()) {
    // Item-kNN: cosines summed over the newest distinct items, each once.
    if (state->knn_score_.empty()) AssignOnHugePages(&state->knn_score_, catalog.size(), 0.f);
    const size_t used = std::min<size_t>(state->history_.size(), UserState::kKnnItems);
    for (size_t h = 0; h < used; ++h) {
      absl::Span<const int32_t> nbrs = covisit.knn_neighbors(state->history_[h]);
      absl::Span<const float> weights = covisit.knn_weights(state->history_[h]);
      for (size_t j = 0; j < nbrs.size(); ++j) {
        float& score = state->knn_score_[nbrs[j]];
        if (score == 0.f) state->knn_reached_.push_back(nbrs[j]);
        score += std::max(weights[j], 1e-12f);  // strictly positive once reached, as above
      }
    }
    for (int32_t item : state->knn_reached_) {
      state->max_knn_score_ = std::max(state->max_knn_score_, state->knn_score_[item]);
    }
  }
  if (total_weight > 0) {
    // Below 1e-38 (every used event hundreds of half-lives older than a newest one whose
    // type weighs 0), 1 / total would overflow a float and the means with it; they are
    // then scaled by 1e38 instead, which keeps their direction and every value finite.
    const float inv = static_cast<float>(1.0 / std::max(total_weight, 1e-38));
    for (int k = 0; k < dim; ++k) vec[k] *= inv;
    for (int k = 0; k < dense_dim; ++k) dense[k] *= inv;
    for (int32_t c : state->categories_) state->category_weight_[c] *= inv;
    std::vector<float>& share = state->category_weight_;
    std::stable_sort(state->categories_.begin(), state->categories_.end(),
                     [&share](int32_t a, int32_t b) { return share[a] > share[b]; });
    state->has_vector_ = true;
  }
}

absl::StatusOr<uint32_t> ConsumedTypesMask(const v1::RecallSpec& recall) {
  if (recall.exclude_event_types().empty()) return kPurchasesOnly;
  uint32_t mask = 0;
  for (const std::string& name : recall.exclude_event_types()) {
    if (name == "view") mask |= EventTypeBit(EventType::kView);
    else if (name == "click") mask |= EventTypeBit(EventType::kClick);
    else if (name == "cart") mask |= EventTypeBit(EventType::kCart);
    else if (name == "purchase") mask |= EventTypeBit(EventType::kPurchase);
    else if (name != "none") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "recall.exclude_event_types: unknown event type '%s' (view, click, cart, purchase or none)",
          name));
    }
  }
  return mask;
}

std::vector<int> RequestConstantColumns(const v1::FeatureSpec& spec) {
  std::vector<int> columns;
  int at = 0;
  for (const v1::FeatureBlock& b : spec.blocks()) {
    if (b.kind() == v1::USER_VECTOR || b.kind() == v1::USER_DENSE || b.kind() == v1::CONTEXT) {
      for (int k = 0; k < b.width(); ++k) columns.push_back(at + k);
    }
    at += b.width();
  }
  return columns;
}

absl::StatusOr<FeatureBuilder> FeatureBuilder::Create(const v1::FeatureSpec& spec,
                                                      int embedding_dim, int item_dense_dim) {
  if (spec.embedding_dim() != embedding_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "feature spec: embedding_dim %d but the catalog's embeddings have %d", spec.embedding_dim(),
        embedding_dim));
  }
  if (spec.item_dense_dim() != item_dense_dim) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "feature spec: item_dense_dim %d but the catalog's dense features have %d",
        spec.item_dense_dim(), item_dense_dim));
  }
  if (spec.blocks().empty()) return absl::InvalidArgumentError("feature spec: no blocks");
  FeatureBuilder fb;
  fb.dim_ = embedding_dim;
  fb.dense_dim_ = item_dense_dim;
  for (int i = 0; i < spec.blocks_size(); ++i) {
    const v1::FeatureBlock& b = spec.blocks(i);
    const int want = BlockWidth(b.kind(), embedding_dim, item_dense_dim);
    if (want < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("feature spec: block %d has unknown kind %d", i, b.kind()));
    }
    if (b.width() != want) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "feature spec: block %d (%s) has width %d, want %d", i,
          v1::FeatureBlockKind_Name(b.kind()), b.width(), want));
    }
    if (std::find(fb.blocks_.begin(), fb.blocks_.end(), b.kind()) != fb.blocks_.end()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "feature spec: block %s appears twice", v1::FeatureBlockKind_Name(b.kind())));
    }
    fb.blocks_.push_back(b.kind());
    fb.width_ += want;
  }
  return fb;
}

void FeatureBuilder::Build(const Catalog& catalog, const UserState& user,
                           const RequestContext& context, absl::Span<const int32_t> items,
                           float* rows) const {
  const float* u = user.vector().data();
  float context_block[kContextWidth] = {0, 0, 0, 0, 0, 0};
  const int device = context.device >= 0 && context.device < 4 ? context.device : 0;
  context_block[device] = 1.f;
  if (context.hour >= 0 && context.hour < 24) {
    context_block[4] = std::sin(2 * kPi * context.hour / 24.f);
    context_block[5] = std::cos(2 * kPi * context.hour / 24.f);
  }
  float user_norm = 0;
  for (int k = 0; k < dim_; ++k) user_norm += u[k] * u[k];
  user_norm = std::sqrt(user_norm);
  // The used events' items only: the trainer sends max_events, a client up to --max_events.
  const float user_items = std::log1p(static_cast<float>(user.used_items()));
  // Candidates are scattered over the catalog: fetch a few rows ahead so the copies below
  // do not each wait for memory (a third of this stage's time on the 1M catalog).
  constexpr size_t kAhead = 8;
  const size_t emb_bytes = sizeof(float) * dim_, dense_bytes = sizeof(float) * dense_dim_;
  // Every cache line a row touches: from its start rounded down to 64 bytes to its last byte.
  auto prefetch_lines = [](const void* p, size_t bytes) {
    if (bytes == 0) return;
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
    const uintptr_t last = reinterpret_cast<uintptr_t>(p) + bytes - 1;
    for (uintptr_t a = first; a <= last; a += 64) __builtin_prefetch(reinterpret_cast<const void*>(a));
  };
  auto prefetch = [&](int32_t item) {
    prefetch_lines(catalog.embedding(item), emb_bytes);
    prefetch_lines(catalog.dense(item), dense_bytes);
    __builtin_prefetch(user.covisit_scores() + item);
  };
  for (size_t r = 0; r < std::min(kAhead, items.size()); ++r) prefetch(items[r]);
  for (size_t r = 0; r < items.size(); ++r) {
    const int32_t item = items[r];
    if (r + kAhead < items.size()) prefetch(items[r + kAhead]);
    const float* e = catalog.embedding(item);
    float* out = rows + r * static_cast<size_t>(width_);
    for (v1::FeatureBlockKind kind : blocks_) {
      switch (kind) {
        case v1::USER_VECTOR:
          std::copy(u, u + dim_, out);
          out += dim_;
          break;
        case v1::ITEM_EMBEDDING:
          std::copy(e, e + dim_, out);
          out += dim_;
          break;
        case v1::USER_ITEM_PRODUCT:
          for (int k = 0; k < dim_; ++k) out[k] = u[k] * e[k];
          out += dim_;
          break;
        case v1::ITEM_DENSE:
          std::copy(catalog.dense(item), catalog.dense(item) + dense_dim_, out);
          out += dense_dim_;
          break;
        case v1::USER_DENSE:
          std::copy(user.dense_mean().begin(), user.dense_mean().end(), out);
          out += dense_dim_;
          break;
        case v1::USER_ITEM_DENSE_PRODUCT: {
          const float* d = catalog.dense(item);
          for (int k = 0; k < dense_dim_; ++k) out[k] = user.dense_mean()[k] * d[k];
          out += dense_dim_;
          break;
        }
        case v1::CATEGORY_AFFINITY: {
          const float share = user.category_share(catalog.category(item));
          out[0] = share;
          out[1] = share > 0 ? 1.f : 0.f;
          out += kAffinityWidth;
          break;
        }
        case v1::RECALL_SIGNALS: {
          float dot = 0;
          for (int k = 0; k < dim_; ++k) dot += u[k] * e[k];
          const float cov = user.covisit_score(item);
          out[0] = dot;
          out[1] = std::log1p(cov);
          out[2] = cov > 0 ? 1.f : 0.f;
          out[3] = catalog.popularity_feature(item);
          out += kSignalWidth;
          break;
        }
        case v1::CANDIDATE_SIGNALS: {
          // Relative to the user's largest, so that they mean the same however much data
          // the artifacts were built from (the ranker learns at past anchors, serves on
          // the whole log): a ranking only needs the order within one request.
          float dot = 0, ee = 0;
          for (int k = 0; k < dim_; ++k) {
            dot += u[k] * e[k];
            ee += e[k] * e[k];
          }
          auto share = [](float x, float max) { return max > 0 ? x / max : 0.f; };
          auto log_share = [](float x, float max) { return max > 0 ? std::log1p(x) / std::log1p(max) : 0.f; };
          const float cov = user.covisit_score(item), count = user.count_score(item);
          out[0] = user_norm > 0 && ee > 0 ? dot / (user_norm * std::sqrt(ee)) : 0.f;
          out[1] = share(cov, user.max_covisit_score());
          out[2] = log_share(cov, user.max_covisit_score());
          out[3] = cov > 0 ? 1.f : 0.f;
          out[4] = share(user.recent_covisit_score(item), user.max_recent_covisit_score());
          out[5] = share(user.covisit_links(item), user.max_covisit_links());
          out[6] = catalog.popularity_feature(item);
          out[7] = user_items;
          out[8] = share(count, user.max_count_score());
          out[9] = log_share(count, user.max_count_score());
          out += kCandidateSignalsWidth;
          break;
        }
        case v1::ITEM_KNN_SIGNALS: {
          const float knn = user.knn_score(item), max = user.max_knn_score();
          out[0] = max > 0 ? knn / max : 0.f;
          out[1] = max > 0 ? std::log1p(knn) / std::log1p(max) : 0.f;
          out[2] = knn > 0 ? 1.f : 0.f;
          out += kKnnSignalsWidth;
          break;
        }
        case v1::CONTEXT:
          std::copy(context_block, context_block + kContextWidth, out);
          out += kContextWidth;
          break;
        default:
          break;
      }
    }
  }
}

}  // namespace recserve
