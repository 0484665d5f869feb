// The largest values a model version may hold, chosen so that everything the engine
// computes from them on the request path stays finite.
//
// The readers already refuse NaN and infinity; finite values can still overflow once
// multiplied and summed (an embedding of 1e20 squares to infinity in a dot product, and
// infinity minus infinity is NaN). Within these limits, with d <= 4096 embedding
// dimensions, E <= kMaxUserEvents events and a type weight W <= kMaxEventWeight
// (features.h), every feature and recall score is bounded well below FLT_MAX (3.4e38):
//   user vector and dense mean: weighted sums <= E W B = 1e26, means <= B (plus rounding)
//   dot products, squared norms (RECALL_SIGNALS, CANDIDATE_SIGNALS, the exact scans,
//   HNSW distances): <= d B^2 = 4.1e33
//   element products (USER_ITEM_PRODUCT, USER_ITEM_DENSE_PRODUCT): <= B^2 = 1e30
//   co-visitation scores: each event adds at most W B per place the item holds in a
//   neighbour list, so <= E W B L = 1e26 L for an item listed L times: finite for
//   any L that fits in memory
//   popularity, shares, counts of links: logarithms or ratios in [0, 1]
// with B = kMaxBundleValue. The ranker's own arithmetic (weights up to B times features
// up to 4.1e33) can still overflow: the request path turns a score that is not finite
// into the lowest (pipeline.h), and warm-up and the accuracy gate refuse a version that
// scores one.
#ifndef RECSERVE_ENGINE_VALUE_LIMITS_H_
#define RECSERVE_ENGINE_VALUE_LIMITS_H_

namespace recserve {

// Largest magnitude of any float in a bundle: item embeddings and dense features,
// popularity, co-visitation weights and counts, calibration features, ranker weights and
// biases. Far above real values (embeddings near 1, raw counts, timestamps in ms ~1.7e12).
inline constexpr float kMaxBundleValue = 1e15f;

// Largest event-type weight of a manifest's user model.
inline constexpr float kMaxEventWeight = 1e6f;

// Largest user_model.max_events of a manifest (events used per user state).
inline constexpr int kMaxUserEvents = 100000;

}  // namespace recserve

#endif  // RECSERVE_ENGINE_VALUE_LIMITS_H_
