#include "train/impression_labels.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/item_key.h"
#include "engine/impression_file.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

using UserItem = std::pair<std::string, uint64_t>;
// Sorted interaction times per (user, item).
using TimesByUserItem = absl::flat_hash_map<UserItem, std::vector<int64_t>>;
// Sorted showings per (user, item): (time, record index), so that answers of one
// millisecond still come one after the other (in log order).
using Showing = std::pair<int64_t, size_t>;
using ShowingsByUserItem = absl::flat_hash_map<UserItem, std::vector<Showing>>;

bool IsInteraction(int32_t type) { return type >= static_cast<int32_t>(EventType::kClick); }

// The event's item id: its key's (the key wins, as on the server), else item_id; 0 when
// it names neither.
uint64_t ItemIdOf(const v1::Event& e) { return e.item().empty() ? e.item_id() : ItemIdFromKey(e.item()); }

bool IsHashedUser(const std::string& user) { return absl::StartsWith(user, "h:"); }

// The join key of a record's user with the event log's numeric user ids.
std::string LogUser(const std::string& user) {
  return IsHashedUser(user) ? user : absl::StrCat(ItemIdFromKey(user));
}

template <typename Map>
void SortAll(Map* times) {
  for (auto& [key, list] : *times) std::sort(list.begin(), list.end());
}

}  // namespace

absl::StatusOr<std::vector<v1::Impression>> ReadImpressionLog(const std::string& dir) {
  ASSIGN_OR_RETURN(std::vector<ImpressionFileInfo> files, ListImpressionFiles(dir, /*include_active=*/true));
  absl::flat_hash_set<std::string> complete;
  for (const ImpressionFileInfo& file : files) {
    if (!file.active) complete.insert(file.path);
  }
  std::vector<v1::Impression> records;
  for (const ImpressionFileInfo& file : files) {
    const std::string complete_path =
        file.path.substr(0, file.path.size() - (sizeof(kImpressionActiveSuffix) - 1)) + kImpressionFileSuffix;
    // A file renamed while the directory was listed can show under both names.
    if (file.active && complete.contains(complete_path)) continue;
    absl::StatusOr<ImpressionFileContents> contents = ReadImpressionFile(file.path);
    if (file.active && absl::IsNotFound(contents.status())) {
      // Closed since it was listed: the writer renamed it to its complete name.
      contents = ReadImpressionFile(complete_path);
    }
    if (!contents.ok()) return contents.status();
    for (v1::Impression& r : contents->records) records.push_back(std::move(r));
  }
  return records;
}

absl::StatusOr<std::vector<ServedSlate>> LabelImpressions(const std::vector<v1::Impression>& records,
                                                          const std::vector<LoggedEvent>& event_log,
                                                          const LabelOptions& options, LabelStats* stats) {
  if (options.window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("label window ", absl::FormatDuration(options.window),
                                                   " is not positive"));
  }
  const int64_t window_ms = absl::ToInt64Milliseconds(options.window);
  LabelStats local;
  LabelStats& st = stats != nullptr ? *stats : local;
  st = LabelStats();

  TimesByUserItem interactions;
  ShowingsByUserItem showings;
  absl::flat_hash_map<std::string, int64_t> newest_record;  // per user: events known up to it
  for (size_t index = 0; index < records.size(); ++index) {
    const v1::Impression& r = records[index];
    const std::string user = LogUser(r.user());
    int64_t& newest = newest_record[user];
    newest = std::max(newest, r.time_unix_ms());
    for (const v1::Event& e : r.events()) {
      const uint64_t item = ItemIdOf(e);
      if (item != 0 && IsInteraction(e.type())) interactions[{user, item}].push_back(e.timestamp_ms());
    }
    for (const v1::RecommendedItem& shown : r.response().items()) {
      showings[{user, shown.item_id()}].push_back({r.time_unix_ms(), index});
    }
  }
  int64_t log_end = options.event_log_end_ms;
  absl::flat_hash_set<uint64_t> log_users;
  for (const LoggedEvent& e : event_log) {
    if (options.event_log_end_ms == 0) log_end = std::max(log_end, e.timestamp_ms);
    if (options.known_users_only) log_users.insert(e.user_id);
    if (IsInteraction(static_cast<int32_t>(e.kind))) {
      interactions[{absl::StrCat(e.user_id), e.item_id}].push_back(e.timestamp_ms);
    }
  }
  SortAll(&interactions);
  SortAll(&showings);
  const bool has_log = !event_log.empty() || options.event_log_end_ms > 0;

  std::vector<ServedSlate> slates;
  for (size_t index = 0; index < records.size(); ++index) {
    const v1::Impression& r = records[index];
    if (r.events_size() == 0 && r.events_count() > 0) {
      ++st.digest_only;
      continue;
    }
    const std::string user = LogUser(r.user());
    if (options.known_users_only && (IsHashedUser(r.user()) || !log_users.contains(ItemIdFromKey(r.user())))) {
      ++st.unknown_users;
      continue;
    }
    ++st.records;
    ServedSlate slate;
    slate.user = r.user();
    slate.time_ms = r.time_unix_ms();
    slate.context = {r.context().device(), r.context().hour()};
    slate.model_version = r.response().model_version();
    for (const v1::Event& e : r.events()) {
      const uint64_t item = ItemIdOf(e);
      if (item == 0) {
        ++st.skipped_events;
        continue;
      }
      slate.events.push_back({item, static_cast<EventType>(e.type()), e.timestamp_ms()});
    }
    int64_t horizon = newest_record[user];
    if (has_log && !IsHashedUser(r.user())) horizon = std::max(horizon, log_end);
    const int64_t t = r.time_unix_ms();
    for (int p = 0; p < r.response().items_size(); ++p) {
      const uint64_t item = r.response().items(p).item_id();
      ++st.shown;
      if (horizon < t + window_ms) {
        ++st.open;
        continue;
      }
      // The first interaction after the showing, within the window, and the next
      // showing of the item to the user: the click is this showing's when it comes first.
      bool clicked = false;
      if (auto it = interactions.find(UserItem{user, item}); it != interactions.end()) {
        auto next = std::upper_bound(it->second.begin(), it->second.end(), t);
        if (next != it->second.end() && *next <= t + window_ms) {
          const std::vector<Showing>& shown_at = showings[{user, item}];
          auto reshown = std::upper_bound(shown_at.begin(), shown_at.end(), Showing{t, index});
          clicked = reshown == shown_at.end() || reshown->first >= *next;
        }
      }
      ++(clicked ? st.clicked : st.not_clicked);
      slate.items.push_back({item, p, clicked ? 1.f : 0.f});
    }
    if (!slate.items.empty()) slates.push_back(std::move(slate));
  }
  std::stable_sort(slates.begin(), slates.end(),
                   [](const ServedSlate& a, const ServedSlate& b) { return a.time_ms < b.time_ms; });
  return slates;
}

}  // namespace recserve
