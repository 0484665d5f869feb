// A synthetic behaviour world whose click model is known, so the offline tools can
// measure how close a trained model gets to the truth (oracle AUC) and whether recall
// beats popularity.
//
// The generating model (all randomness from one std::mt19937_64 seeded with
// `seed`, with hand-written distributions, so a seed gives the same world on every run):
//
//   Categories k = 0..C-1 have unit centroids c_k in R^latent_dim (random directions)
//   and Zipf-ish sizes (weight 1/(k+1)^category_zipf_exponent).
//   Item i: category k(i) drawn by those weights; latent v_i = c_k(i) + item_noise * n
//   (n: N(0, 1/latent_dim) per coordinate, so |n| is about 1); popularity
//   pop_i ∝ 1/rank_i^zipf_exponent over a random permutation of the items; bias
//   b_i = popularity_bias_scale * log(pop_i / mean pop); dense features
//   d_i = W v_i + dense_noise * n' with one fixed random W (item_dense_dim x latent_dim),
//   so the dense columns carry real signal about v_i.
//   User u: likes 1..max_user_categories categories (drawn by category size), with
//   random mixture weights; u = normalise(sum_j w_j c_j) + user_noise * n.
//   Click probability of user u on item i shown on `device` at `hour`:
//     p = sigmoid(affinity_weight * <u, v_i> + popularity_weight * b_i
//                 + device_effect[device] + hour_effect_amplitude * cos(2 pi (hour - 21) / 24)
//                 + click_bias)
//   with device_effect = {-0.2 unknown, +0.1 mobile, 0 desktop, -0.1 tablet}.
//
// Behaviour: each user has about `sessions_per_user` sessions (log-normal spread, at
// least one) at random times over `span_days` from 2026-01-01 00:00 UTC, with a
// day-time-heavy hour profile. A session has one device (usually the user's own) and
// starts by viewing an entry item (from a liked category or a popular one), which
// becomes the session's anchor. Then, in random order, it has
//   - `events_per_session` plain browsing views: an item of the anchor's category, of a
//     liked category or a popular one;
//   - `impressions_per_session` slates of `slate_size` distinct items: ~30% from the
//     anchor's category, ~30% from the user's liked categories (popularity-weighted within
//     the category), the rest popularity-sampled. One impression row per item, labels
//     drawn from p; a clicked item logs a click, then a cart with `cart_probability`, then
//     a purchase with `purchase_probability`; an unclicked item is logged as a view with
//     `look_probability`. One of the clicked items becomes the new anchor, so items
//     clicked together in a session are related (co-visitation is informative).
// Time moves forward inside a session (seconds between steps), so an impression's
// history (events with an earlier timestamp) never contains its own outcome. Events and
// impressions at or after the cut time start_ms + (1 - test_fraction_of_time) * span go
// to the *_test sets. World.oracle_auc = Auc(true_p, label) over the test impressions;
// world.params holds every option, the cut time and oracle_auc.
#ifndef RECSERVE_TRAIN_DATAGEN_H_
#define RECSERVE_TRAIN_DATAGEN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "train/world.h"

namespace recserve {

// Defaults are the "small" preset (SmallWorld()).
struct WorldOptions {
  uint64_t seed = 42;

  // Catalogue and users. User ids are 1..num_users, item ids 1..num_items.
  int num_users = 20000;
  int num_items = 20000;
  int num_categories = 50;
  int latent_dim = 16;
  int item_dense_dim = 16;
  double zipf_exponent = 0.75;           // item popularity: pop ∝ 1/rank^zipf_exponent
  double category_zipf_exponent = 0.5;   // category sizes
  double item_noise = 0.5;               // sigma_item: spread of items around their centroid
  double user_noise = 0.3;               // spread of users around their category mixture
  double dense_noise = 0.1;              // noise on the dense item features
  int max_user_categories = 3;           // a user likes 1..this many categories

  // Click model (see the file comment).
  double affinity_weight = 3.0;          // alpha
  double popularity_weight = 1.0;        // beta
  double popularity_bias_scale = 0.1;    // b_i = scale * log(pop_i / mean pop)
  double hour_effect_amplitude = 0.2;
  double click_bias = -4.2;              // bias0

  // Behaviour.
  int sessions_per_user = 12;            // mean; per-user counts vary log-normally
  int events_per_session = 3;            // plain browsing views per session
  int impressions_per_session = 2;       // slates per session
  int slate_size = 10;                   // items per slate
  double cart_probability = 0.3;         // after a click
  double purchase_probability = 0.4;     // after a cart
  double look_probability = 0.05;        // an unclicked slate item is logged as a view
  int span_days = 60;
  int64_t start_ms = 1767225600000;      // 2026-01-01 00:00:00 UTC
  double test_fraction_of_time = 0.1;    // the last 10% of the span is test
};

// ~2000 users x 3000 items; generates in well under 2 s (unit tests).
WorldOptions TinyWorld();
// ~20000 users x 20000 items; the default world (generation < 20 s).
WorldOptions SmallWorld();
// 1,000,000 items x 200,000 users, for benchmarks.
WorldOptions MillionItemWorld();
// "tiny" | "small" | "1m"; InvalidArgument otherwise.
absl::StatusOr<WorldOptions> WorldPreset(absl::string_view name);

// InvalidArgument naming the first option out of range.
absl::Status ValidateWorldOptions(const WorldOptions& options);

// What the generator knows and the logs do not: every user's and item's latent vector,
// the items' popularity biases and the users' own devices. It scores any (user, item,
// context) with the click model above, so a simulator can make the world's users react
// to lists nobody logged (the feedback loop, bench/loop_main.cc). A value type; const
// methods are thread-safe.
class ClickModel {
 public:
  // The click model's probability (datagen.h's formula; ShowSlate draws its labels from
  // the same code). `user_id` in 1..num_users, `item_id` in 1..num_items (checked by
  // the caller: out of range is a programmer error), device 0..3, hour 0..23.
  double Probability(uint64_t user_id, uint64_t item_id, int32_t device, int32_t hour) const;
  // The device the user's sessions mostly use (1 mobile, 2 desktop, 3 tablet).
  int32_t UserDevice(uint64_t user_id) const { return user_device_[user_id - 1]; }
  int num_users() const { return static_cast<int>(user_device_.size()); }
  int num_items() const { return static_cast<int>(item_bias_.size()); }

 private:
  friend World GenerateWorld(const WorldOptions& options, ClickModel* truth);
  WorldOptions options_;
  int dim_ = 0;
  std::vector<float> item_latent_;  // num_items x dim
  std::vector<double> item_bias_;
  std::vector<float> user_latent_;  // num_users x dim
  std::vector<int32_t> user_device_;
};

// Generates the world. `options` must pass ValidateWorldOptions (aborts otherwise:
// a programmer error). Deterministic for a given `options`. With `truth`, also fills
// the world's click model (the same world either way).
World GenerateWorld(const WorldOptions& options, ClickModel* truth = nullptr);

// The options a world directory was generated with (world.txt's keys, as RecordParams
// writes them); InvalidArgument naming a missing or unreadable key.
absl::StatusOr<WorldOptions> WorldOptionsFromParams(const std::map<std::string, std::string>& params);

// Figures that describe a world (printed by recserve-datagen).
struct WorldSummary {
  int64_t users = 0;  // distinct users with at least one event
  int64_t items = 0;
  int64_t train_events = 0;
  int64_t test_events = 0;
  int64_t train_impressions = 0;
  int64_t test_impressions = 0;
  double click_rate = 0;               // mean label over all impressions
  double oracle_auc = 0;               // World::oracle_auc
  double median_train_events_per_user = 0;
  // Popularity baseline: the share of test click events whose item is among the
  // 100 items with the most train click events (ties broken by smaller item id).
  double popularity_hit_rate_at_100 = 0;
};

WorldSummary SummarizeWorld(const World& world);

// The popularity baseline for any k (see WorldSummary); 0 when there are no test clicks.
double PopularityHitRate(const World& world, int k);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_DATAGEN_H_
