// Reading and writing world directories (layout in world.h).
//
// Readers are hand-written because the 1M-item world has tens of millions of lines: each
// file is read in large blocks, lines and fields are string_views into the block, and
// numbers go through std::from_chars. Every refusal is an InvalidArgumentError of the
// form "<path>:<line>: field '<name>': <what is wrong>".
//
// All six files must exist (WriteWorld always writes them, empty ones included).
// Beyond the per-field rules, ReadWorld checks what world.h promises: item ids are unique
// and every event or impression names a known item, all items have the same number of
// dense features, and every test event (impression) is later than every train one.
#include "train/world.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

constexpr size_t kBlockBytes = size_t{8} << 20;
constexpr size_t kMaxLineBytes = size_t{64} << 20;
constexpr size_t kWriteBufferBytes = size_t{4} << 20;

constexpr char kItemsFile[] = "items.tsv";
constexpr char kEventsTrainFile[] = "events_train.tsv";
constexpr char kEventsTestFile[] = "events_test.tsv";
constexpr char kImpressionsTrainFile[] = "impressions_train.tsv";
constexpr char kImpressionsTestFile[] = "impressions_test.tsv";
constexpr char kParamsFile[] = "world.txt";
constexpr char kOracleAucKey[] = "oracle_auc";

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

std::string JoinPath(const std::string& dir, absl::string_view name) {
  if (dir.empty() || dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::Status IoError(absl::string_view what, const std::string& path, int error_number) {
  return absl::ErrnoToStatus(error_number, absl::StrCat(what, " ", path));
}

// Quotes untrusted text for an error message: escaped, and cut if long.
std::string Quote(absl::string_view text) {
  constexpr size_t kMaxShown = 48;
  if (text.size() <= kMaxShown) return absl::StrCat("'", absl::CHexEscape(text), "'");
  return absl::StrCat("'", absl::CHexEscape(text.substr(0, kMaxShown)), "...'");
}

// Where a line came from; error messages start with "<path>:<line>: ".
struct LineContext {
  const std::string& path;
  int64_t line;

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", message));
  }
  absl::Status FieldError(absl::string_view field, absl::string_view message) const {
    return Error(absl::StrCat("field '", field, "': ", message));
  }
};

// Calls `parse(line, line_number)` for every line of `path` that is neither empty nor a
// '#' comment; a trailing '\r' (CRLF files) is dropped. Stops at the first error.
template <typename ParseLine>
absl::Status ForEachLine(const std::string& path, ParseLine&& parse) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) return IoError("cannot open", path, errno);
  std::string buffer(kBlockBytes, '\0');
  size_t begin = 0;  // first byte not yet handed out
  size_t end = 0;    // one past the last byte read
  int64_t line_number = 0;
  bool at_eof = false;
  while (true) {
    const char* newline =
        static_cast<const char*>(std::memchr(buffer.data() + begin, '\n', end - begin));
    if (newline == nullptr && !at_eof) {
      // Keep the partial line at the front and read the next block behind it.
      std::memmove(buffer.data(), buffer.data() + begin, end - begin);
      end -= begin;
      begin = 0;
      if (end > buffer.size() / 2) {
        if (buffer.size() >= kMaxLineBytes) {
          return LineContext{path, line_number + 1}.Error(
              absl::StrCat("line longer than ", kMaxLineBytes, " bytes"));
        }
        buffer.resize(buffer.size() * 2);
      }
      const size_t got = std::fread(buffer.data() + end, 1, buffer.size() - end, file.get());
      if (got == 0) {
        if (std::ferror(file.get())) return IoError("cannot read", path, errno);
        at_eof = true;
      }
      end += got;
      continue;
    }
    if (newline == nullptr && begin == end) break;
    const size_t line_end = newline != nullptr ? static_cast<size_t>(newline - buffer.data()) : end;
    absl::string_view line(buffer.data() + begin, line_end - begin);
    begin = newline != nullptr ? line_end + 1 : end;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    RETURN_IF_ERROR(parse(line, line_number));
  }
  return absl::OkStatus();
}

// Splits `line` at `separator`; stores the first N fields and returns how many there were.
template <size_t N>
size_t SplitFields(absl::string_view line, char separator,
                   std::array<absl::string_view, N>* fields) {
  size_t count = 0;
  const char* start = line.data();
  const char* const end = line.data() + line.size();
  while (true) {
    const char* stop = static_cast<const char*>(std::memchr(start, separator, end - start));
    if (count < N) (*fields)[count] = absl::string_view(start, (stop ? stop : end) - start);
    ++count;
    if (stop == nullptr) return count;
    start = stop + 1;
  }
}

template <typename Number>
bool ParseNumber(absl::string_view text, Number* value) {
  if (text.empty()) return false;
  const char* const last = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), last, *value);
  if (ec != std::errc() || ptr != last) return false;
  if constexpr (std::is_floating_point_v<Number>) return std::isfinite(*value);
  return true;
}

absl::Status ParseId(const LineContext& at, absl::string_view field, absl::string_view text,
                     uint64_t* value) {
  if (!ParseNumber(text, value)) {
    return at.FieldError(field, absl::StrCat("bad unsigned integer ", Quote(text)));
  }
  return absl::OkStatus();
}

absl::Status ParseTimestamp(const LineContext& at, absl::string_view field,
                            absl::string_view text, int64_t* value) {
  if (!ParseNumber(text, value)) {
    return at.FieldError(field, absl::StrCat("bad integer ", Quote(text)));
  }
  if (*value < 0) return at.FieldError(field, absl::StrCat("negative timestamp ", *value));
  return absl::OkStatus();
}

absl::Status ParseIntInRange(const LineContext& at, absl::string_view field,
                             absl::string_view text, int32_t low, int32_t high,
                             int32_t* value) {
  if (!ParseNumber(text, value)) {
    return at.FieldError(field, absl::StrCat("bad integer ", Quote(text)));
  }
  if (*value < low || *value > high) {
    return at.FieldError(field, absl::StrCat(*value, " is outside [", low, ", ", high, "]"));
  }
  return absl::OkStatus();
}

absl::Status WrongFieldCount(const LineContext& at, size_t got, absl::string_view expected) {
  return at.Error(
      absl::StrCat("expected ", expected, ", got ", got, got == 1 ? " field" : " fields"));
}

// The item ids of items.tsv, for "does this event name a known item" on every line.
class ItemIndex {
 public:
  explicit ItemIndex(std::vector<uint64_t> sorted_ids) : ids_(std::move(sorted_ids)) {
    dense_ = !ids_.empty() && ids_.back() - ids_.front() + 1 == ids_.size();
  }
  bool Contains(uint64_t id) const {
    if (dense_) return id >= ids_.front() && id <= ids_.back();
    return std::binary_search(ids_.begin(), ids_.end(), id);
  }

 private:
  std::vector<uint64_t> ids_;
  bool dense_ = false;  // ids_ is a run of consecutive ids
};

absl::StatusOr<ItemIndex> ReadItems(const std::string& path, std::vector<ItemInfo>* items) {
  std::vector<std::pair<uint64_t, int64_t>> id_lines;  // (item_id, line) for the unique check
  int64_t dense_dim_line = 0;                          // line that fixed the dense width
  RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line, int64_t line_number) {
    const LineContext at{path, line_number};
    std::array<absl::string_view, 3> fields;
    const size_t count = SplitFields(line, '\t', &fields);
    if (count < 2 || count > 3) {
      return WrongFieldCount(at, count, "3 fields (item_id, category, dense)");
    }
    ItemInfo item;
    RETURN_IF_ERROR(ParseId(at, "item_id", fields[0], &item.item_id));
    RETURN_IF_ERROR(ParseIntInRange(at, "category", fields[1], 0,
                                    std::numeric_limits<int32_t>::max(), &item.category));
    if (count == 3 && !fields[2].empty()) {
      item.dense.reserve(std::count(fields[2].begin(), fields[2].end(), ',') + 1);
      size_t start = 0;
      while (true) {
        const size_t stop = fields[2].find(',', start);
        const absl::string_view text = fields[2].substr(
            start, stop == absl::string_view::npos ? absl::string_view::npos : stop - start);
        float value;
        if (!ParseNumber(text, &value)) {
          return at.FieldError("dense", absl::StrCat("bad number ", Quote(text), " at value ",
                                                     item.dense.size() + 1));
        }
        item.dense.push_back(value);
        if (stop == absl::string_view::npos) break;
        start = stop + 1;
      }
    }
    if (items->empty()) {
      dense_dim_line = line_number;
    } else if (item.dense.size() != items->front().dense.size()) {
      return at.FieldError("dense", absl::StrCat(item.dense.size(), " values, but line ",
                                                 dense_dim_line, " has ",
                                                 items->front().dense.size()));
    }
    id_lines.emplace_back(item.item_id, line_number);
    items->push_back(std::move(item));
    return absl::OkStatus();
  }));
  std::sort(id_lines.begin(), id_lines.end());
  std::vector<uint64_t> ids(id_lines.size());
  for (size_t i = 0; i < id_lines.size(); ++i) {
    if (i > 0 && id_lines[i].first == id_lines[i - 1].first) {
      const int64_t line = std::max(id_lines[i].second, id_lines[i - 1].second);
      return LineContext{path, line}.FieldError(
          "item_id", absl::StrCat("duplicate item ", id_lines[i].first, " (also on line ",
                                  std::min(id_lines[i].second, id_lines[i - 1].second), ")"));
    }
    ids[i] = id_lines[i].first;
  }
  return ItemIndex(std::move(ids));
}

absl::Status CheckKnownItem(const LineContext& at, const ItemIndex& index, uint64_t item_id) {
  if (!index.Contains(item_id)) {
    return at.FieldError("item_id", absl::StrCat("unknown item ", item_id, " (not in ",
                                                 kItemsFile, ")"));
  }
  return absl::OkStatus();
}

// Test rows must be strictly later than the last train row (`last_train_ms` -1: no bound).
absl::Status CheckLaterThanTrain(const LineContext& at, int64_t timestamp_ms,
                                 int64_t last_train_ms) {
  if (timestamp_ms <= last_train_ms) {
    return at.FieldError("timestamp_ms",
                         absl::StrCat(timestamp_ms, " is not later than the last train row (",
                                      last_train_ms, ")"));
  }
  return absl::OkStatus();
}

absl::Status ParseEventKind(const LineContext& at, absl::string_view text, EventKind* kind) {
  if (text == "view") {
    *kind = EventKind::kView;
  } else if (text == "click") {
    *kind = EventKind::kClick;
  } else if (text == "cart") {
    *kind = EventKind::kCart;
  } else if (text == "purchase") {
    *kind = EventKind::kPurchase;
  } else {
    return at.FieldError("type", absl::StrCat("unknown event type ", Quote(text),
                                              " (want view|click|cart|purchase)"));
  }
  return absl::OkStatus();
}

absl::string_view EventKindName(EventKind kind) {
  switch (kind) {
    case EventKind::kView:
      return "view";
    case EventKind::kClick:
      return "click";
    case EventKind::kCart:
      return "cart";
    case EventKind::kPurchase:
      return "purchase";
  }
  return "unknown";
}

bool EventOrder(const LoggedEvent& a, const LoggedEvent& b) {
  return a.timestamp_ms != b.timestamp_ms ? a.timestamp_ms < b.timestamp_ms
                                          : a.user_id < b.user_id;
}

// Sorts by (timestamp, user); equal keys keep their file order (click before its cart).
void SortEvents(std::vector<LoggedEvent>* events) {
  if (!std::is_sorted(events->begin(), events->end(), EventOrder)) {
    std::stable_sort(events->begin(), events->end(), EventOrder);
  }
}

absl::Status ReadEvents(const std::string& path, const ItemIndex& items, int64_t last_train_ms,
                        std::vector<LoggedEvent>* events) {
  return ForEachLine(path, [&](absl::string_view line, int64_t line_number) {
    const LineContext at{path, line_number};
    std::array<absl::string_view, 4> fields;
    const size_t count = SplitFields(line, '\t', &fields);
    if (count != 4) {
      return WrongFieldCount(at, count, "4 fields (user_id, item_id, type, timestamp_ms)");
    }
    LoggedEvent event;
    RETURN_IF_ERROR(ParseId(at, "user_id", fields[0], &event.user_id));
    RETURN_IF_ERROR(ParseId(at, "item_id", fields[1], &event.item_id));
    RETURN_IF_ERROR(CheckKnownItem(at, items, event.item_id));
    RETURN_IF_ERROR(ParseEventKind(at, fields[2], &event.kind));
    RETURN_IF_ERROR(ParseTimestamp(at, "timestamp_ms", fields[3], &event.timestamp_ms));
    RETURN_IF_ERROR(CheckLaterThanTrain(at, event.timestamp_ms, last_train_ms));
    events->push_back(event);
    return absl::OkStatus();
  });
}

absl::Status ReadImpressions(const std::string& path, const ItemIndex& items,
                             int64_t last_train_ms, std::vector<Impression>* impressions) {
  return ForEachLine(path, [&](absl::string_view line, int64_t line_number) {
    const LineContext at{path, line_number};
    std::array<absl::string_view, 8> fields;
    const size_t count = SplitFields(line, '\t', &fields);
    if (count != 8) {
      return WrongFieldCount(at, count,
                             "8 fields (impression_id, user_id, item_id, timestamp_ms, device, "
                             "hour, label, true_p)");
    }
    Impression impression;
    RETURN_IF_ERROR(ParseId(at, "impression_id", fields[0], &impression.impression_id));
    RETURN_IF_ERROR(ParseId(at, "user_id", fields[1], &impression.user_id));
    RETURN_IF_ERROR(ParseId(at, "item_id", fields[2], &impression.item_id));
    RETURN_IF_ERROR(CheckKnownItem(at, items, impression.item_id));
    RETURN_IF_ERROR(ParseTimestamp(at, "timestamp_ms", fields[3], &impression.timestamp_ms));
    RETURN_IF_ERROR(CheckLaterThanTrain(at, impression.timestamp_ms, last_train_ms));
    RETURN_IF_ERROR(ParseIntInRange(at, "device", fields[4], 0, 3, &impression.device));
    RETURN_IF_ERROR(ParseIntInRange(at, "hour", fields[5], 0, 23, &impression.hour));
    if (fields[6] == "0" || fields[6] == "1") {
      impression.label = fields[6] == "1" ? 1.0f : 0.0f;
    } else {
      return at.FieldError("label",
                           absl::StrCat("bad label ", Quote(fields[6]), " (want 0 or 1)"));
    }
    if (!ParseNumber(fields[7], &impression.true_p) ||
        !(impression.true_p == -1.0f ||
          (impression.true_p >= 0.0f && impression.true_p <= 1.0f))) {
      return at.FieldError("true_p", absl::StrCat("bad probability ", Quote(fields[7]),
                                                  " (want [0, 1], or -1 when unknown)"));
    }
    impressions->push_back(impression);
    return absl::OkStatus();
  });
}

absl::Status ReadParams(const std::string& path, World* world) {
  std::map<std::string, int64_t> key_lines;
  RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line, int64_t line_number) {
    const LineContext at{path, line_number};
    const size_t equals = line.find('=');
    if (equals == absl::string_view::npos || equals == 0) {
      return at.Error(absl::StrCat("expected key=value, got ", Quote(line)));
    }
    std::string key(line.substr(0, equals));
    const auto [it, inserted] = key_lines.emplace(key, line_number);
    if (!inserted) {
      return at.Error(absl::StrCat("duplicate key '", key, "' (also on line ", it->second, ")"));
    }
    const absl::string_view value = line.substr(equals + 1);
    if (key == kOracleAucKey &&
        !(ParseNumber(value, &world->oracle_auc) && world->oracle_auc >= 0 &&
          world->oracle_auc <= 1)) {
      return at.FieldError(kOracleAucKey, absl::StrCat("bad AUC ", Quote(value)));
    }
    world->params.emplace(std::move(key), std::string(value));
    return absl::OkStatus();
  }));
  return absl::OkStatus();
}

int64_t LastTimestamp(const std::vector<LoggedEvent>& sorted_events) {
  return sorted_events.empty() ? -1 : sorted_events.back().timestamp_ms;
}

int64_t LastTimestamp(const std::vector<Impression>& impressions) {
  int64_t last = -1;
  for (const Impression& impression : impressions) last = std::max(last, impression.timestamp_ms);
  return last;
}

// Writes a file through a temporary sibling that is renamed into place on Commit(), so
// a reader never sees a half-written file. Numbers are formatted with std::to_chars
// (floats in their shortest round-trip form).
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path)
      : path_(std::move(path)), temp_path_(absl::StrCat(path_, ".tmp")) {
    buffer_.reserve(kWriteBufferBytes + 4096);
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (file_ != nullptr) {
      file_.reset();
      std::remove(temp_path_.c_str());
    }
  }

  absl::Status Open() {
    file_.reset(std::fopen(temp_path_.c_str(), "wb"));
    if (file_ == nullptr) return IoError("cannot create", temp_path_, errno);
    return absl::OkStatus();
  }

  AtomicFileWriter& Text(absl::string_view text) {
    buffer_.append(text.data(), text.size());
    return *this;
  }
  AtomicFileWriter& Char(char c) {
    buffer_.push_back(c);
    return *this;
  }
  template <typename Number>
  AtomicFileWriter& Num(Number value) {
    char digits[64];
    const auto result = std::to_chars(digits, digits + sizeof(digits), value);
    buffer_.append(digits, result.ptr);
    return *this;
  }
  // Ends a line; flushes the buffer when it is full.
  void EndLine() {
    buffer_.push_back('\n');
    if (buffer_.size() >= kWriteBufferBytes) Flush();
  }

  absl::Status Commit() {
    Flush();
    RETURN_IF_ERROR(status_);
    std::FILE* file = file_.release();
    if (std::fclose(file) != 0) {
      const int error_number = errno;
      std::remove(temp_path_.c_str());
      return IoError("cannot write", temp_path_, error_number);
    }
    if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
      const int error_number = errno;
      std::remove(temp_path_.c_str());
      return IoError(absl::StrCat("cannot rename ", temp_path_, " to"), path_, error_number);
    }
    return absl::OkStatus();
  }

 private:
  void Flush() {
    if (status_.ok() && !buffer_.empty() &&
        std::fwrite(buffer_.data(), 1, buffer_.size(), file_.get()) != buffer_.size()) {
      status_ = IoError("cannot write", temp_path_, errno);
    }
    buffer_.clear();
  }

  const std::string path_;
  const std::string temp_path_;
  FilePtr file_;
  std::string buffer_;
  absl::Status status_;  // the first write error
};

absl::Status WriteItems(const std::vector<ItemInfo>& items, const std::string& path) {
  AtomicFileWriter out(path);
  RETURN_IF_ERROR(out.Open());
  out.Text("# item_id\tcategory\tdense").EndLine();
  for (const ItemInfo& item : items) {
    out.Num(item.item_id).Char('\t').Num(item.category).Char('\t');
    for (size_t i = 0; i < item.dense.size(); ++i) {
      if (i > 0) out.Char(',');
      out.Num(item.dense[i]);
    }
    out.EndLine();
  }
  return out.Commit();
}

absl::Status WriteEvents(const std::vector<LoggedEvent>& events, const std::string& path) {
  AtomicFileWriter out(path);
  RETURN_IF_ERROR(out.Open());
  out.Text("# user_id\titem_id\ttype\ttimestamp_ms").EndLine();
  for (const LoggedEvent& event : events) {
    out.Num(event.user_id).Char('\t').Num(event.item_id).Char('\t');
    out.Text(EventKindName(event.kind)).Char('\t').Num(event.timestamp_ms).EndLine();
  }
  return out.Commit();
}

absl::Status WriteImpressions(const std::vector<Impression>& impressions,
                              const std::string& path) {
  AtomicFileWriter out(path);
  RETURN_IF_ERROR(out.Open());
  out.Text("# impression_id\tuser_id\titem_id\ttimestamp_ms\tdevice\thour\tlabel\ttrue_p")
      .EndLine();
  for (const Impression& impression : impressions) {
    out.Num(impression.impression_id).Char('\t').Num(impression.user_id).Char('\t');
    out.Num(impression.item_id).Char('\t').Num(impression.timestamp_ms).Char('\t');
    out.Num(impression.device).Char('\t').Num(impression.hour).Char('\t');
    out.Char(impression.label > 0.5f ? '1' : '0').Char('\t').Num(impression.true_p).EndLine();
  }
  return out.Commit();
}

absl::Status WriteParams(const World& world, const std::string& path) {
  std::map<std::string, std::string> params = world.params;
  if (world.oracle_auc != 0) {
    char digits[64];
    const auto result = std::to_chars(digits, digits + sizeof(digits), world.oracle_auc);
    params[kOracleAucKey] = std::string(digits, result.ptr);
  }
  AtomicFileWriter out(path);
  RETURN_IF_ERROR(out.Open());
  out.Text("# key=value: generator parameters and oracle_auc").EndLine();
  for (const auto& [key, value] : params) {
    if (key.empty() || key.find_first_of("=\n\r") != std::string::npos || key[0] == '#' ||
        value.find_first_of("\n\r") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": param ", Quote(key), " = ", Quote(value),
                       " cannot be written as a key=value line"));
    }
    out.Text(key).Char('=').Text(value).EndLine();
  }
  return out.Commit();
}

}  // namespace

absl::StatusOr<World> ReadWorld(const std::string& dir) {
  World world;
  ASSIGN_OR_RETURN(const ItemIndex items, ReadItems(JoinPath(dir, kItemsFile), &world.items));

  RETURN_IF_ERROR(
      ReadEvents(JoinPath(dir, kEventsTrainFile), items, /*last_train_ms=*/-1,
                 &world.train_events));
  SortEvents(&world.train_events);
  RETURN_IF_ERROR(ReadEvents(JoinPath(dir, kEventsTestFile), items,
                             LastTimestamp(world.train_events), &world.test_events));
  SortEvents(&world.test_events);

  RETURN_IF_ERROR(ReadImpressions(JoinPath(dir, kImpressionsTrainFile), items,
                                  /*last_train_ms=*/-1, &world.train_impressions));
  RETURN_IF_ERROR(ReadImpressions(JoinPath(dir, kImpressionsTestFile), items,
                                  LastTimestamp(world.train_impressions),
                                  &world.test_impressions));

  RETURN_IF_ERROR(ReadParams(JoinPath(dir, kParamsFile), &world));
  return world;
}

absl::Status WriteWorld(const World& world, const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::ErrnoToStatus(error.value(), absl::StrCat("cannot create directory ", dir));
  }
  RETURN_IF_ERROR(WriteItems(world.items, JoinPath(dir, kItemsFile)));
  RETURN_IF_ERROR(WriteEvents(world.train_events, JoinPath(dir, kEventsTrainFile)));
  RETURN_IF_ERROR(WriteEvents(world.test_events, JoinPath(dir, kEventsTestFile)));
  RETURN_IF_ERROR(
      WriteImpressions(world.train_impressions, JoinPath(dir, kImpressionsTrainFile)));
  RETURN_IF_ERROR(WriteImpressions(world.test_impressions, JoinPath(dir, kImpressionsTestFile)));
  return WriteParams(world, JoinPath(dir, kParamsFile));
}

absl::StatusOr<World> ReadRatingsCsv(const std::string& path, double click_threshold,
                                     double test_fraction) {
  if (!std::isfinite(click_threshold)) {
    return absl::InvalidArgumentError(
        absl::StrCat("click_threshold must be finite, got ", click_threshold));
  }
  if (!(test_fraction >= 0 && test_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("test_fraction must be in [0, 1), got ", test_fraction));
  }
  std::vector<LoggedEvent> events;
  bool first_line = true;
  RETURN_IF_ERROR(ForEachLine(path, [&](absl::string_view line, int64_t line_number) {
    const LineContext at{path, line_number};
    std::array<absl::string_view, 4> fields;
    const size_t count = SplitFields(line, ',', &fields);
    // A header is a first line that does not start with a number ("userId,movieId,...").
    const bool header = first_line && (fields[0].empty() || fields[0][0] < '0' ||
                                       fields[0][0] > '9');
    first_line = false;
    if (header) return absl::OkStatus();
    if (count != 4) {
      return WrongFieldCount(at, count, "4 fields (user, item, rating, timestamp)");
    }
    LoggedEvent event;
    RETURN_IF_ERROR(ParseId(at, "user", fields[0], &event.user_id));
    RETURN_IF_ERROR(ParseId(at, "item", fields[1], &event.item_id));
    double rating;
    if (!ParseNumber(fields[2], &rating)) {
      return at.FieldError("rating", absl::StrCat("bad number ", Quote(fields[2])));
    }
    int64_t seconds;
    RETURN_IF_ERROR(ParseTimestamp(at, "timestamp", fields[3], &seconds));
    if (seconds > std::numeric_limits<int64_t>::max() / 1000) {
      return at.FieldError("timestamp", absl::StrCat(seconds, " seconds overflows milliseconds"));
    }
    event.timestamp_ms = seconds * 1000;
    event.kind = rating >= click_threshold ? EventKind::kClick : EventKind::kView;
    events.push_back(event);
    return absl::OkStatus();
  }));
  SortEvents(&events);

  World world;
  // The last `test_fraction` of events by time; events tied with the first test event
  // go to test too, so every test event is later than every train event.
  const size_t test_count =
      static_cast<size_t>(std::llround(static_cast<double>(events.size()) * test_fraction));
  size_t split = events.size();
  if (test_count > 0) {
    const int64_t cut_ms = events[events.size() - test_count].timestamp_ms;
    split = std::lower_bound(events.begin(), events.end(), cut_ms,
                             [](const LoggedEvent& e, int64_t t) { return e.timestamp_ms < t; }) -
            events.begin();
  }
  world.test_events.assign(events.begin() + split, events.end());
  events.resize(split);
  world.train_events = std::move(events);

  std::vector<uint64_t> item_ids;
  item_ids.reserve(world.train_events.size() + world.test_events.size());
  for (const auto* part : {&world.train_events, &world.test_events}) {
    for (const LoggedEvent& event : *part) item_ids.push_back(event.item_id);
  }
  std::sort(item_ids.begin(), item_ids.end());
  item_ids.erase(std::unique(item_ids.begin(), item_ids.end()), item_ids.end());
  world.items.reserve(item_ids.size());
  for (const uint64_t id : item_ids) world.items.push_back(ItemInfo{id, 0, {}});

  world.params["source"] = path;
  world.params["format"] = "ratings_csv";
  world.params["click_threshold"] = absl::StrCat(click_threshold);
  world.params["test_fraction"] = absl::StrCat(test_fraction);
  return world;
}

}  // namespace recserve
