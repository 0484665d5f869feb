// The synthetic world generator; the model is described in datagen.h.
#include "train/datagen.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/quality.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

constexpr int64_t kSecondMs = 1000;
constexpr int64_t kHourMs = 3600 * kSecondMs;
constexpr int64_t kDayMs = 24 * kHourMs;
constexpr int64_t kSessionGapMs = 30 * 60 * kSecondMs;  // sessions of a user never overlap
constexpr double kPi = 3.14159265358979323846;

// Click-model constants that are not options (documented in datagen.h).
constexpr std::array<double, 4> kDeviceEffect = {-0.2, 0.1, 0.0, -0.1};
// Relative chance that a session starts in each UTC hour: quiet nights, busy evenings.
constexpr std::array<double, 24> kHourActivity = {0.3, 0.2, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7,
                                                  1.0, 1.0, 1.0, 1.1, 1.3, 1.2, 1.0, 1.0,
                                                  1.1, 1.3, 1.6, 1.9, 2.1, 2.0, 1.5, 0.8};
// Device a user owns: mobile, desktop, tablet.
constexpr std::array<double, 3> kOwnDevice = {0.6, 0.3, 0.1};
constexpr double kOwnDeviceShare = 0.8;     // sessions on the user's own device
constexpr double kUnknownDeviceShare = 0.05;
constexpr double kAnchorSlotShare = 0.3;    // slate slots from the anchor's category
constexpr double kLikedSlotShare = 0.3;     // slate slots from the user's categories
constexpr double kSessionCountSigma = 0.5;  // log-normal spread of sessions per user
constexpr double kEntryFromLikedShare = 0.6;  // else a session starts on a popular item
constexpr double kViewAnchorShare = 0.5;      // plain views: the anchor's category,
constexpr double kViewLikedShare = 0.25;      // a liked category, else a popular item

// std::mt19937_64 with hand-written distributions: the std:: distributions are
// implementation-defined, and the world must not change with the standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)
  uint64_t Below(uint64_t n) {  // [0, n), n > 0
    return static_cast<uint64_t>((static_cast<unsigned __int128>(engine_()) * n) >> 64);
  }
  int64_t Between(int64_t low, int64_t high) {  // [low, high]
    return low + static_cast<int64_t>(Below(static_cast<uint64_t>(high - low) + 1));
  }
  bool Bernoulli(double p) { return Uniform() < p; }
  double Normal() {  // Box-Muller
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double radius = std::sqrt(-2.0 * std::log(1.0 - Uniform()));
    const double angle = 2.0 * kPi * Uniform();
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }
  template <typename T>
  void Shuffle(std::vector<T>* values) {
    using std::swap;
    for (size_t i = values->size(); i > 1; --i) swap((*values)[i - 1], (*values)[Below(i)]);
  }

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0;
};

// Walker/Vose alias table: O(1) draws from a fixed discrete distribution over `values`
// (0..n-1 unless given). One entry holds everything a draw reads, so a draw from a large
// table costs one cache miss.
class AliasTable {
 public:
  AliasTable() = default;
  explicit AliasTable(const std::vector<double>& weights)
      : AliasTable(weights, Iota(weights.size())) {}
  AliasTable(const std::vector<double>& weights, const std::vector<uint32_t>& values)
      : entries_(weights.size()) {
    const size_t n = weights.size();
    double total = 0;
    for (const double w : weights) total += w;
    std::vector<double> scaled(n);
    std::vector<uint32_t> small, large;
    for (size_t i = 0; i < n; ++i) {
      scaled[i] = weights[i] * static_cast<double>(n) / total;
      entries_[i] = Entry{1.0f, values[i], values[i]};
      (scaled[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
    }
    while (!small.empty() && !large.empty()) {
      const uint32_t s = small.back();
      small.pop_back();
      const uint32_t l = large.back();
      large.pop_back();
      entries_[s].probability = static_cast<float>(scaled[s]);
      entries_[s].alias = values[l];
      scaled[l] = (scaled[l] + scaled[s]) - 1.0;
      (scaled[l] < 1.0 ? small : large).push_back(l);
    }
  }

  uint32_t Sample(Rng& rng) const {
    const Entry& entry = entries_[rng.Below(entries_.size())];
    return rng.Uniform() < entry.probability ? entry.value : entry.alias;
  }

 private:
  struct Entry {
    float probability;  // of `value`; otherwise `alias`
    uint32_t value;
    uint32_t alias;
  };
  static std::vector<uint32_t> Iota(size_t n) {
    std::vector<uint32_t> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = static_cast<uint32_t>(i);
    return values;
  }

  std::vector<Entry> entries_;
};

// A random direction scale: N(0, 1/dim) per coordinate, so its norm is about 1.
void AddNoise(Rng& rng, double scale, float* vector, int dim) {
  const double per_coordinate = scale / std::sqrt(static_cast<double>(dim));
  for (int d = 0; d < dim; ++d) vector[d] += static_cast<float>(per_coordinate * rng.Normal());
}

double Dot(const float* a, const float* b, int dim) {
  double sum = 0;
  for (int d = 0; d < dim; ++d) sum += static_cast<double>(a[d]) * b[d];
  return sum;
}

std::string ShortestDouble(double value) {
  char digits[64];
  const auto result = std::to_chars(digits, digits + sizeof(digits), value);
  return std::string(digits, result.ptr);
}

double HourEffect(const WorldOptions& options, int32_t hour) {
  return options.hour_effect_amplitude * std::cos(2.0 * kPi * (hour - 21) / 24.0);
}

// The click model's logit (datagen.h); `hour_effect` is HourEffect(options, hour).
double ClickLogit(const WorldOptions& options, const float* user, const float* item, int dim,
                  double item_bias, int32_t device, double hour_effect) {
  return options.affinity_weight * Dot(user, item, dim) + options.popularity_weight * item_bias +
         kDeviceEffect[device] + hour_effect + options.click_bias;
}

// Items and everything the click model knows about them (indices 0..N-1; id = index + 1).
struct Catalog {
  int dim = 0;
  std::vector<float> centroids;        // num_categories x dim
  AliasTable category_by_size;
  std::vector<int32_t> category;       // per item
  std::vector<float> latent;           // num_items x dim
  std::vector<double> bias;            // b_i
  AliasTable by_popularity;            // over all items
  std::vector<AliasTable> category_by_popularity;  // draws items of one category

  const float* Latent(uint32_t item) const { return &latent[size_t{item} * dim]; }
};

Catalog MakeCatalog(const WorldOptions& options, Rng& rng, std::vector<ItemInfo>* items) {
  Catalog catalog;
  const int dim = options.latent_dim;
  const size_t num_items = static_cast<size_t>(options.num_items);
  catalog.dim = dim;

  catalog.centroids.assign(size_t{1} * options.num_categories * dim, 0.0f);
  for (int k = 0; k < options.num_categories; ++k) {
    float* c = &catalog.centroids[size_t{1} * k * dim];
    AddNoise(rng, 1.0, c, dim);
    const double norm = std::sqrt(Dot(c, c, dim));
    for (int d = 0; d < dim; ++d) c[d] = static_cast<float>(c[d] / norm);
  }
  std::vector<double> category_weights(options.num_categories);
  for (int k = 0; k < options.num_categories; ++k) {
    category_weights[k] = std::pow(k + 1.0, -options.category_zipf_exponent);
  }
  catalog.category_by_size = AliasTable(category_weights);

  // Popularity: Zipf over a random permutation of the items.
  std::vector<uint32_t> rank_of(num_items);
  for (size_t i = 0; i < num_items; ++i) rank_of[i] = static_cast<uint32_t>(i);
  rng.Shuffle(&rank_of);
  std::vector<double> popularity(num_items);
  double total_popularity = 0;
  for (size_t i = 0; i < num_items; ++i) {
    popularity[i] = std::pow(rank_of[i] + 1.0, -options.zipf_exponent);
    total_popularity += popularity[i];
  }
  const double mean_popularity = total_popularity / static_cast<double>(num_items);
  catalog.bias.resize(num_items);
  for (size_t i = 0; i < num_items; ++i) {
    catalog.bias[i] = options.popularity_bias_scale * std::log(popularity[i] / mean_popularity);
  }
  catalog.by_popularity = AliasTable(popularity);

  // Categories (the first num_categories items cover every category once) and latents.
  catalog.category.resize(num_items);
  catalog.latent.assign(num_items * dim, 0.0f);
  std::vector<std::vector<uint32_t>> category_items(options.num_categories);
  for (size_t i = 0; i < num_items; ++i) {
    const int32_t k = i < static_cast<size_t>(options.num_categories)
                          ? static_cast<int32_t>(i)
                          : static_cast<int32_t>(catalog.category_by_size.Sample(rng));
    catalog.category[i] = k;
    category_items[k].push_back(static_cast<uint32_t>(i));
    float* v = &catalog.latent[i * dim];
    std::copy_n(&catalog.centroids[size_t{1} * k * dim], dim, v);
    AddNoise(rng, options.item_noise, v, dim);
  }
  catalog.category_by_popularity.reserve(options.num_categories);
  for (const std::vector<uint32_t>& members : category_items) {
    std::vector<double> weights(members.size());
    for (size_t j = 0; j < members.size(); ++j) weights[j] = popularity[members[j]];
    catalog.category_by_popularity.emplace_back(weights, members);
  }

  // Dense features: a fixed random linear map of the latent, plus noise. Its rows are
  // orthonormalised (Gram-Schmidt) while there are at most `dim` of them, so the
  // features are a noisy rotation of (part of) the latent, as content attributes are.
  const int dense_dim = options.item_dense_dim;
  std::vector<float> map(size_t{1} * dense_dim * dim);
  for (float& w : map) w = static_cast<float>(rng.Normal() / std::sqrt(static_cast<double>(dim)));
  for (int r = 0; r < std::min(dense_dim, dim); ++r) {
    float* row = &map[size_t{1} * r * dim];
    for (int q = 0; q < r; ++q) {
      const float* prev = &map[size_t{1} * q * dim];
      double dot = 0;
      for (int k = 0; k < dim; ++k) dot += double{row[k]} * prev[k];
      for (int k = 0; k < dim; ++k) row[k] -= static_cast<float>(dot * prev[k]);
    }
    double norm = 0;
    for (int k = 0; k < dim; ++k) norm += double{row[k]} * row[k];
    const float inv = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.f;
    for (int k = 0; k < dim; ++k) row[k] *= inv;
  }
  items->resize(num_items);
  for (size_t i = 0; i < num_items; ++i) {
    ItemInfo& item = (*items)[i];
    item.item_id = i + 1;
    item.category = catalog.category[i];
    item.dense.resize(dense_dim);
    for (int r = 0; r < dense_dim; ++r) {
      item.dense[r] = static_cast<float>(Dot(&map[size_t{1} * r * dim], catalog.Latent(i), dim) +
                                         options.dense_noise * rng.Normal());
    }
  }
  return catalog;
}

struct UserProfile {
  std::vector<int32_t> liked;          // categories
  AliasTable liked_by_weight;
  std::vector<float> vector;           // u
  int32_t device = 1;
};

UserProfile MakeUser(const WorldOptions& options, const Catalog& catalog,
                     const AliasTable& own_device, Rng& rng) {
  UserProfile user;
  const int dim = catalog.dim;
  const int wanted = 1 + static_cast<int>(rng.Below(options.max_user_categories));
  for (int attempt = 0; static_cast<int>(user.liked.size()) < wanted && attempt < 10 * wanted;
       ++attempt) {
    const int32_t k = static_cast<int32_t>(catalog.category_by_size.Sample(rng));
    if (std::find(user.liked.begin(), user.liked.end(), k) == user.liked.end()) {
      user.liked.push_back(k);
    }
  }
  std::vector<double> weights(user.liked.size());
  user.vector.assign(dim, 0.0f);
  for (size_t j = 0; j < user.liked.size(); ++j) {
    weights[j] = 0.2 + 0.8 * rng.Uniform();
    const float* c = &catalog.centroids[size_t{1} * user.liked[j] * dim];
    for (int d = 0; d < dim; ++d) user.vector[d] += static_cast<float>(weights[j] * c[d]);
  }
  const double norm = std::sqrt(Dot(user.vector.data(), user.vector.data(), dim));
  for (float& x : user.vector) x = static_cast<float>(x / norm);
  AddNoise(rng, options.user_noise, user.vector.data(), dim);
  user.liked_by_weight = AliasTable(weights);
  user.device = 1 + static_cast<int32_t>(own_device.Sample(rng));
  return user;
}

// Generates the sessions of every user, appending to the (unsorted) output vectors.
class BehaviourGenerator {
 public:
  BehaviourGenerator(const WorldOptions& options, const Catalog& catalog, Rng& rng)
      : options_(options),
        catalog_(catalog),
        rng_(rng),
        hour_by_activity_(std::vector<double>(kHourActivity.begin(), kHourActivity.end())),
        own_device_(std::vector<double>(kOwnDevice.begin(), kOwnDevice.end())) {
    for (int h = 0; h < 24; ++h) {
      hour_effect_[h] = HourEffect(options, h);
    }
  }

  // With `truth`, the user's latent vector and device are appended to it.
  void GenerateUser(uint64_t user_id, std::vector<LoggedEvent>* events,
                    std::vector<Impression>* impressions, std::vector<float>* truth_latent,
                    std::vector<int32_t>* truth_device) {
    user_id_ = user_id;
    events_ = events;
    impressions_ = impressions;
    user_ = MakeUser(options_, catalog_, own_device_, rng_);
    if (truth_latent != nullptr) {
      truth_latent->insert(truth_latent->end(), user_.vector.begin(), user_.vector.end());
      truth_device->push_back(user_.device);
    }

    // Log-normal with mean sessions_per_user.
    const double spread = kSessionCountSigma * rng_.Normal() -
                          0.5 * kSessionCountSigma * kSessionCountSigma;
    const int64_t sessions =
        std::max<int64_t>(1, std::llround(options_.sessions_per_user * std::exp(spread)));
    std::vector<int64_t> starts(sessions);
    for (int64_t& start : starts) {
      start = options_.start_ms + static_cast<int64_t>(rng_.Below(options_.span_days)) * kDayMs +
              int64_t{hour_by_activity_.Sample(rng_)} * kHourMs +
              static_cast<int64_t>(rng_.Below(kHourMs));
    }
    std::sort(starts.begin(), starts.end());
    int64_t previous_end = 0;
    for (const int64_t start : starts) {
      previous_end = GenerateSession(std::max(start, previous_end + kSessionGapMs));
    }
  }

 private:
  // Returns the time of the session's last event.
  int64_t GenerateSession(int64_t clock) {
    const double device_draw = rng_.Uniform();
    const int32_t device = device_draw < kOwnDeviceShare ? user_.device
                           : device_draw < kOwnDeviceShare + kUnknownDeviceShare
                               ? 0
                               : 1 + static_cast<int32_t>(rng_.Below(3));
    anchor_ = rng_.Bernoulli(kEntryFromLikedShare) ? LikedItem() : PopularItem();
    Log(anchor_, EventKind::kView, clock);

    std::vector<bool> is_slate(options_.events_per_session, false);
    is_slate.resize(is_slate.size() + options_.impressions_per_session, true);
    rng_.Shuffle(&is_slate);
    for (const bool slate : is_slate) {
      clock += rng_.Between(5, 60) * kSecondMs;
      if (slate) {
        clock = ShowSlate(clock, device);
      } else {
        const double source = rng_.Uniform();
        const uint32_t item =
            source < kViewAnchorShare                     ? CategoryItem(catalog_.category[anchor_])
            : source < kViewAnchorShare + kViewLikedShare ? LikedItem()
                                                          : PopularItem();
        Log(item, EventKind::kView, clock);
      }
    }
    return clock;
  }

  // Shows one slate at `clock`; returns the time of the last event it caused.
  int64_t ShowSlate(int64_t clock, int32_t device) {
    const int size = options_.slate_size;
    const int anchor_slots = static_cast<int>(std::lround(kAnchorSlotShare * size));
    const int liked_slots = static_cast<int>(std::lround(kLikedSlotShare * size));
    slate_.clear();
    for (int slot = 0; slot < size; ++slot) {
      uint32_t item = 0;
      bool placed = false;
      for (int attempt = 0; attempt < 20 && !placed; ++attempt) {
        item = slot < anchor_slots                 ? CategoryItem(catalog_.category[anchor_])
               : slot < anchor_slots + liked_slots ? LikedItem()
                                                   : PopularItem();
        placed = !InSlate(item);
      }
      // Small categories can run out of distinct items: fall back to any unused item.
      for (int attempt = 0; attempt < 100 && !placed; ++attempt) {
        item = PopularItem();
        placed = !InSlate(item);
      }
      if (!placed) {
        for (item = 0; InSlate(item);) ++item;
      }
      slate_.push_back(item);
    }

    // The rows of a large catalogue are cache misses: start them all at once.
    for (const uint32_t item : slate_) {
      __builtin_prefetch(catalog_.Latent(item));
      __builtin_prefetch(catalog_.Latent(item) + catalog_.dim - 1);
      __builtin_prefetch(&catalog_.bias[item]);
    }
    const int32_t hour = static_cast<int32_t>((clock / kHourMs) % 24);
    const uint64_t impression_id = ++last_impression_id_;
    clicked_.clear();
    int64_t t = clock;
    for (const uint32_t item : slate_) {
      const double logit = ClickLogit(options_, user_.vector.data(), catalog_.Latent(item), catalog_.dim,
                                      catalog_.bias[item], device, hour_effect_[hour]);
      const float p = static_cast<float>(1.0 / (1.0 + std::exp(-logit)));
      const bool click = rng_.Uniform() < p;
      impressions_->push_back(Impression{impression_id, user_id_, ItemId(item), clock, device,
                                         hour, click ? 1.0f : 0.0f, p});
      t += rng_.Between(1, 8) * kSecondMs;
      if (click) {
        clicked_.push_back(item);
        Log(item, EventKind::kClick, t);
        if (rng_.Bernoulli(options_.cart_probability)) {
          t += rng_.Between(5, 60) * kSecondMs;
          Log(item, EventKind::kCart, t);
          if (rng_.Bernoulli(options_.purchase_probability)) {
            t += rng_.Between(10, 120) * kSecondMs;
            Log(item, EventKind::kPurchase, t);
          }
        }
      } else if (rng_.Bernoulli(options_.look_probability)) {
        Log(item, EventKind::kView, t);
      }
    }
    if (!clicked_.empty()) anchor_ = clicked_[rng_.Below(clicked_.size())];
    return t;
  }

  bool InSlate(uint32_t item) const {
    return std::find(slate_.begin(), slate_.end(), item) != slate_.end();
  }
  uint32_t PopularItem() { return catalog_.by_popularity.Sample(rng_); }
  uint32_t CategoryItem(int32_t k) {
    return catalog_.category_by_popularity[k].Sample(rng_);
  }
  uint32_t LikedItem() { return CategoryItem(user_.liked[user_.liked_by_weight.Sample(rng_)]); }
  static uint64_t ItemId(uint32_t item) { return uint64_t{item} + 1; }
  void Log(uint32_t item, EventKind kind, int64_t t) {
    events_->push_back(LoggedEvent{user_id_, ItemId(item), kind, t});
  }

  const WorldOptions& options_;
  const Catalog& catalog_;
  Rng& rng_;
  const AliasTable hour_by_activity_;
  const AliasTable own_device_;
  std::array<double, 24> hour_effect_;
  uint64_t last_impression_id_ = 0;

  // The user and session being generated.
  uint64_t user_id_ = 0;
  UserProfile user_;
  uint32_t anchor_ = 0;
  std::vector<uint32_t> slate_;
  std::vector<uint32_t> clicked_;
  std::vector<LoggedEvent>* events_ = nullptr;
  std::vector<Impression>* impressions_ = nullptr;
};

// Moves the rows with timestamp >= cut_ms (a sorted tail) from `all` into `test`.
template <typename Row>
void SplitAtTime(int64_t cut_ms, std::vector<Row>* all, std::vector<Row>* test) {
  const auto first_test = std::partition_point(
      all->begin(), all->end(), [cut_ms](const Row& row) { return row.timestamp_ms < cut_ms; });
  test->assign(first_test, all->end());
  all->erase(first_test, all->end());
}

void RecordParams(const WorldOptions& o, int64_t cut_ms, World* world) {
  auto& p = world->params;
  p["generator"] = "recserve-datagen";
  p["seed"] = absl::StrCat(o.seed);
  p["num_users"] = absl::StrCat(o.num_users);
  p["num_items"] = absl::StrCat(o.num_items);
  p["num_categories"] = absl::StrCat(o.num_categories);
  p["latent_dim"] = absl::StrCat(o.latent_dim);
  p["item_dense_dim"] = absl::StrCat(o.item_dense_dim);
  p["zipf_exponent"] = ShortestDouble(o.zipf_exponent);
  p["category_zipf_exponent"] = ShortestDouble(o.category_zipf_exponent);
  p["item_noise"] = ShortestDouble(o.item_noise);
  p["user_noise"] = ShortestDouble(o.user_noise);
  p["dense_noise"] = ShortestDouble(o.dense_noise);
  p["max_user_categories"] = absl::StrCat(o.max_user_categories);
  p["affinity_weight"] = ShortestDouble(o.affinity_weight);
  p["popularity_weight"] = ShortestDouble(o.popularity_weight);
  p["popularity_bias_scale"] = ShortestDouble(o.popularity_bias_scale);
  p["hour_effect_amplitude"] = ShortestDouble(o.hour_effect_amplitude);
  p["click_bias"] = ShortestDouble(o.click_bias);
  p["sessions_per_user"] = absl::StrCat(o.sessions_per_user);
  p["events_per_session"] = absl::StrCat(o.events_per_session);
  p["impressions_per_session"] = absl::StrCat(o.impressions_per_session);
  p["slate_size"] = absl::StrCat(o.slate_size);
  p["cart_probability"] = ShortestDouble(o.cart_probability);
  p["purchase_probability"] = ShortestDouble(o.purchase_probability);
  p["look_probability"] = ShortestDouble(o.look_probability);
  p["span_days"] = absl::StrCat(o.span_days);
  p["start_ms"] = absl::StrCat(o.start_ms);
  p["test_fraction_of_time"] = ShortestDouble(o.test_fraction_of_time);
  p["cut_ms"] = absl::StrCat(cut_ms);
  p["oracle_auc"] = ShortestDouble(world->oracle_auc);
}

absl::Status OutOfRange(absl::string_view name, double value, absl::string_view range) {
  return absl::InvalidArgumentError(
      absl::StrCat("world option ", name, " = ", value, " is outside ", range));
}

}  // namespace

WorldOptions TinyWorld() {
  WorldOptions options;
  options.num_users = 2000;
  options.num_items = 3000;
  options.num_categories = 20;
  return options;
}

WorldOptions SmallWorld() { return WorldOptions(); }

WorldOptions MillionItemWorld() {
  WorldOptions options;
  options.num_users = 200000;
  options.num_items = 1000000;
  options.num_categories = 500;
  return options;
}

absl::StatusOr<WorldOptions> WorldPreset(absl::string_view name) {
  if (name == "tiny") return TinyWorld();
  if (name == "small") return SmallWorld();
  if (name == "1m") return MillionItemWorld();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown world preset '", name, "' (want tiny|small|1m)"));
}

absl::Status ValidateWorldOptions(const WorldOptions& o) {
  constexpr int kMaxCount = 100000000;
  if (o.num_users < 1 || o.num_users > kMaxCount) {
    return OutOfRange("num_users", o.num_users, "[1, 1e8]");
  }
  if (o.num_items < 1 || o.num_items > kMaxCount) {
    return OutOfRange("num_items", o.num_items, "[1, 1e8]");
  }
  if (o.num_categories < 1 || o.num_categories > o.num_items) {
    return OutOfRange("num_categories", o.num_categories, "[1, num_items]");
  }
  if (o.latent_dim < 1 || o.latent_dim > 1024) {
    return OutOfRange("latent_dim", o.latent_dim, "[1, 1024]");
  }
  if (o.item_dense_dim < 0 || o.item_dense_dim > 1024) {
    return OutOfRange("item_dense_dim", o.item_dense_dim, "[0, 1024]");
  }
  if (o.max_user_categories < 1 || o.max_user_categories > o.num_categories) {
    return OutOfRange("max_user_categories", o.max_user_categories, "[1, num_categories]");
  }
  if (o.sessions_per_user < 1 || o.sessions_per_user > 10000) {
    return OutOfRange("sessions_per_user", o.sessions_per_user, "[1, 10000]");
  }
  if (o.events_per_session < 0 || o.events_per_session > 10000) {
    return OutOfRange("events_per_session", o.events_per_session, "[0, 10000]");
  }
  if (o.impressions_per_session < 0 || o.impressions_per_session > 10000) {
    return OutOfRange("impressions_per_session", o.impressions_per_session, "[0, 10000]");
  }
  if (o.slate_size < 1 || o.slate_size > 1000 || o.slate_size > o.num_items) {
    return OutOfRange("slate_size", o.slate_size, "[1, min(1000, num_items)]");
  }
  // Bounds the output: expected impressions, with the log-normal session spread.
  const double expected_rows = 1.0 * o.num_users * o.sessions_per_user *
                               (o.impressions_per_session * o.slate_size + o.events_per_session);
  if (expected_rows > 2e9) {
    return OutOfRange("users x sessions x rows per session", expected_rows, "[0, 2e9]");
  }
  if (o.span_days < 1 || o.span_days > 3650) {
    return OutOfRange("span_days", o.span_days, "[1, 3650]");
  }
  if (o.start_ms < 0 || o.start_ms > (int64_t{1} << 50)) {
    return OutOfRange("start_ms", static_cast<double>(o.start_ms), "[0, 2^50]");
  }
  const std::pair<const char*, double> non_negative[] = {
      {"zipf_exponent", o.zipf_exponent},
      {"category_zipf_exponent", o.category_zipf_exponent},
      {"item_noise", o.item_noise},
      {"user_noise", o.user_noise},
      {"dense_noise", o.dense_noise}};
  for (const auto& [name, value] : non_negative) {
    if (!(value >= 0 && value <= 100)) return OutOfRange(name, value, "[0, 100]");
  }
  const std::pair<const char*, double> weights[] = {
      {"affinity_weight", o.affinity_weight},
      {"popularity_weight", o.popularity_weight},
      {"popularity_bias_scale", o.popularity_bias_scale},
      {"hour_effect_amplitude", o.hour_effect_amplitude},
      {"click_bias", o.click_bias}};
  for (const auto& [name, value] : weights) {
    if (!(std::fabs(value) <= 100)) return OutOfRange(name, value, "[-100, 100]");
  }
  const std::pair<const char*, double> probabilities[] = {
      {"cart_probability", o.cart_probability},
      {"purchase_probability", o.purchase_probability},
      {"look_probability", o.look_probability}};
  for (const auto& [name, value] : probabilities) {
    if (!(value >= 0 && value <= 1)) return OutOfRange(name, value, "[0, 1]");
  }
  if (!(o.test_fraction_of_time >= 0 && o.test_fraction_of_time < 1)) {
    return OutOfRange("test_fraction_of_time", o.test_fraction_of_time, "[0, 1)");
  }
  return absl::OkStatus();
}

double ClickModel::Probability(uint64_t user_id, uint64_t item_id, int32_t device, int32_t hour) const {
  const double logit = ClickLogit(options_, &user_latent_[(user_id - 1) * dim_], &item_latent_[(item_id - 1) * dim_],
                                  dim_, item_bias_[item_id - 1], device, HourEffect(options_, hour));
  return 1.0 / (1.0 + std::exp(-logit));
}

World GenerateWorld(const WorldOptions& options, ClickModel* truth) {
  if (const absl::Status status = ValidateWorldOptions(options); !status.ok()) {
    std::fprintf(stderr, "GenerateWorld: %s\n", status.ToString().c_str());
    std::abort();
  }
  Rng rng(options.seed);
  World world;
  const Catalog catalog = MakeCatalog(options, rng, &world.items);
  if (truth != nullptr) {
    *truth = ClickModel();
    truth->options_ = options;
    truth->dim_ = catalog.dim;
    truth->item_latent_ = catalog.latent;
    truth->item_bias_ = catalog.bias;
  }

  const double rows_per_user = options.sessions_per_user * 1.1 *
                               (options.impressions_per_session * options.slate_size);
  world.train_impressions.reserve(static_cast<size_t>(rows_per_user * options.num_users));
  BehaviourGenerator behaviour(options, catalog, rng);
  for (int u = 0; u < options.num_users; ++u) {
    behaviour.GenerateUser(static_cast<uint64_t>(u) + 1, &world.train_events, &world.train_impressions,
                           truth != nullptr ? &truth->user_latent_ : nullptr,
                           truth != nullptr ? &truth->user_device_ : nullptr);
  }

  // Full keys, so the order never depends on the sort algorithm.
  std::sort(world.train_events.begin(), world.train_events.end(),
            [](const LoggedEvent& a, const LoggedEvent& b) {
              return std::tie(a.timestamp_ms, a.user_id, a.kind, a.item_id) <
                     std::tie(b.timestamp_ms, b.user_id, b.kind, b.item_id);
            });
  std::sort(world.train_impressions.begin(), world.train_impressions.end(),
            [](const Impression& a, const Impression& b) {
              return std::tie(a.timestamp_ms, a.user_id, a.impression_id, a.item_id) <
                     std::tie(b.timestamp_ms, b.user_id, b.impression_id, b.item_id);
            });
  const int64_t cut_ms =
      options.start_ms + std::llround((1.0 - options.test_fraction_of_time) *
                                      static_cast<double>(options.span_days * kDayMs));
  SplitAtTime(cut_ms, &world.train_events, &world.test_events);
  SplitAtTime(cut_ms, &world.train_impressions, &world.test_impressions);

  std::vector<float> true_p, labels;
  true_p.reserve(world.test_impressions.size());
  labels.reserve(world.test_impressions.size());
  for (const Impression& impression : world.test_impressions) {
    true_p.push_back(impression.true_p);
    labels.push_back(impression.label);
  }
  world.oracle_auc = Auc(true_p, labels);
  RecordParams(options, cut_ms, &world);
  return world;
}

absl::StatusOr<WorldOptions> WorldOptionsFromParams(const std::map<std::string, std::string>& params) {
  WorldOptions o;
  const std::pair<const char*, int*> ints[] = {
      {"num_users", &o.num_users}, {"num_items", &o.num_items}, {"num_categories", &o.num_categories},
      {"latent_dim", &o.latent_dim}, {"item_dense_dim", &o.item_dense_dim},
      {"max_user_categories", &o.max_user_categories}, {"sessions_per_user", &o.sessions_per_user},
      {"events_per_session", &o.events_per_session}, {"impressions_per_session", &o.impressions_per_session},
      {"slate_size", &o.slate_size}, {"span_days", &o.span_days}};
  const std::pair<const char*, double*> doubles[] = {
      {"zipf_exponent", &o.zipf_exponent}, {"category_zipf_exponent", &o.category_zipf_exponent},
      {"item_noise", &o.item_noise}, {"user_noise", &o.user_noise}, {"dense_noise", &o.dense_noise},
      {"affinity_weight", &o.affinity_weight}, {"popularity_weight", &o.popularity_weight},
      {"popularity_bias_scale", &o.popularity_bias_scale}, {"hour_effect_amplitude", &o.hour_effect_amplitude},
      {"click_bias", &o.click_bias}, {"cart_probability", &o.cart_probability},
      {"purchase_probability", &o.purchase_probability}, {"look_probability", &o.look_probability},
      {"test_fraction_of_time", &o.test_fraction_of_time}};
  auto value = [&](const char* key) -> absl::StatusOr<std::string> {
    auto it = params.find(key);
    if (it == params.end()) return absl::InvalidArgumentError(absl::StrCat("world.txt: no ", key));
    return it->second;
  };
  auto bad = [](const char* key, const std::string& text) {
    return absl::InvalidArgumentError(absl::StrCat("world.txt: ", key, "=", text, " is not a number"));
  };
  for (const auto& [key, field] : ints) {
    ASSIGN_OR_RETURN(std::string text, value(key));
    if (!absl::SimpleAtoi(text, field)) return bad(key, text);
  }
  for (const auto& [key, field] : doubles) {
    ASSIGN_OR_RETURN(std::string text, value(key));
    if (!absl::SimpleAtod(text, field)) return bad(key, text);
  }
  ASSIGN_OR_RETURN(std::string seed, value("seed"));
  if (!absl::SimpleAtoi(seed, &o.seed)) return bad("seed", seed);
  ASSIGN_OR_RETURN(std::string start, value("start_ms"));
  if (!absl::SimpleAtoi(start, &o.start_ms)) return bad("start_ms", start);
  RETURN_IF_ERROR(ValidateWorldOptions(o));
  return o;
}

double PopularityHitRate(const World& world, int k) {
  std::vector<uint64_t> clicked;
  for (const LoggedEvent& event : world.train_events) {
    if (event.kind == EventKind::kClick) clicked.push_back(event.item_id);
  }
  std::sort(clicked.begin(), clicked.end());
  std::vector<std::pair<int64_t, uint64_t>> counts;  // (-count, item): best first
  for (size_t i = 0; i < clicked.size();) {
    size_t j = i;
    while (j < clicked.size() && clicked[j] == clicked[i]) ++j;
    counts.emplace_back(-static_cast<int64_t>(j - i), clicked[i]);
    i = j;
  }
  const size_t top = std::min(counts.size(), static_cast<size_t>(std::max(k, 0)));
  std::partial_sort(counts.begin(), counts.begin() + top, counts.end());
  std::vector<uint64_t> top_items(top);
  for (size_t i = 0; i < top; ++i) top_items[i] = counts[i].second;
  std::sort(top_items.begin(), top_items.end());

  int64_t test_clicks = 0, hits = 0;
  for (const LoggedEvent& event : world.test_events) {
    if (event.kind != EventKind::kClick) continue;
    ++test_clicks;
    hits += std::binary_search(top_items.begin(), top_items.end(), event.item_id);
  }
  return test_clicks == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(test_clicks);
}

WorldSummary SummarizeWorld(const World& world) {
  WorldSummary summary;
  summary.items = static_cast<int64_t>(world.items.size());
  summary.train_events = static_cast<int64_t>(world.train_events.size());
  summary.test_events = static_cast<int64_t>(world.test_events.size());
  summary.train_impressions = static_cast<int64_t>(world.train_impressions.size());
  summary.test_impressions = static_cast<int64_t>(world.test_impressions.size());
  summary.oracle_auc = world.oracle_auc;

  double clicks = 0;
  for (const auto* part : {&world.train_impressions, &world.test_impressions}) {
    for (const Impression& impression : *part) clicks += impression.label;
  }
  const int64_t impressions = summary.train_impressions + summary.test_impressions;
  summary.click_rate = impressions == 0 ? 0 : clicks / static_cast<double>(impressions);

  // (user, is_test) pairs sorted by user give both the user count and train histories.
  std::vector<std::pair<uint64_t, bool>> users;
  users.reserve(world.train_events.size() + world.test_events.size());
  for (const LoggedEvent& event : world.train_events) users.emplace_back(event.user_id, false);
  for (const LoggedEvent& event : world.test_events) users.emplace_back(event.user_id, true);
  std::sort(users.begin(), users.end());
  std::vector<int64_t> train_counts;
  for (size_t i = 0; i < users.size();) {
    size_t j = i;
    int64_t train = 0;
    for (; j < users.size() && users[j].first == users[i].first; ++j) train += !users[j].second;
    train_counts.push_back(train);
    i = j;
  }
  summary.users = static_cast<int64_t>(train_counts.size());
  if (!train_counts.empty()) {
    const size_t middle = train_counts.size() / 2;
    std::nth_element(train_counts.begin(), train_counts.begin() + middle, train_counts.end());
    summary.median_train_events_per_user = static_cast<double>(train_counts[middle]);
  }
  summary.popularity_hit_rate_at_100 = PopularityHitRate(world, 100);
  return summary;
}

}  // namespace recserve
