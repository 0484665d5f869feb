// Reading real behaviour logs (contract in event_log.h; the user-facing rules and the
// hostile-input table are in docs/data-formats.md, checked by event_log_test.cc).
//
// One streaming pass: zlib reads plain and gzip files alike, lines are string_views into
// a 1 MiB block (a line longer than kMaxLineBytes is skipped up to its newline and
// reported as a bad row, never buffered), fields are split in place (a quoted field with
// "" escapes is unescaped into a per-row scratch buffer). Each data row either becomes a
// LoggedEvent or a bad-row Status. After the pass the events are stably sorted by
// (timestamp, user) and exact duplicates are dropped per (timestamp, user) group with a
// hash set, so the whole import is O(n log n) whatever the shape of the log (one user
// with 10^6 events at one timestamp included).
//
// Two kinds of refusal:
//   bad row   (this row is wrong: a field, the field count, an overlong line): an error,
//             or counted and skipped under skip_bad_rows;
//   fatal     (the file as a whole cannot be trusted: I/O or gzip errors, header errors,
//             an item-key hash collision, more than max_rows rows, seconds and
//             milliseconds mixed under unit "auto", no events at all): always an error.
#include "train/event_log.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/item_key.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

constexpr size_t kMaxLineBytes = size_t{64} << 10;  // longer lines are bad rows
constexpr size_t kBlockBytes = size_t{1} << 20;     // > kMaxLineBytes: a line always fits
constexpr unsigned kGzBufferBytes = 256u << 10;
constexpr size_t kMaxBadRowExamples = 5;
// Under unit "auto" a timestamp above this is milliseconds (after 1973-03-03 in ms), at
// or below it seconds (before year 5138 in seconds).
constexpr int64_t kMillisecondsAbove = 100'000'000'000;
// (timestamp, user) groups up to this size are deduplicated pairwise, larger ones with a
// hash set.
constexpr size_t kPairwiseDedupMax = 16;

constexpr absl::string_view kUtf8Bom = "\xEF\xBB\xBF";

// Column roles and the header names that select them (lower case; headers are compared
// case-insensitively).
enum Role { kUser = 0, kItem, kType, kTime, kRoleCount };
constexpr const char* kRoleNames[kRoleCount] = {"user_id", "item_id", "event_type", "timestamp"};
const std::vector<std::vector<absl::string_view>>& RoleAliases() {
  static const auto* const aliases = new std::vector<std::vector<absl::string_view>>{
      {"user_id", "user", "userid", "customer_id"},
      {"item_id", "item", "itemid", "product_id", "sku"},
      {"event_type", "type", "behavior_type", "behaviour_type", "event"},
      {"timestamp", "time", "ts", "unix_time"},
  };
  return *aliases;
}
constexpr absl::string_view kRatingAliases[] = {"rating", "score"};

struct KindName {
  absl::string_view name;
  EventKind kind;
};
constexpr KindName kKindNames[] = {
    {"view", EventKind::kView},         {"pv", EventKind::kView},
    {"impression", EventKind::kView},   {"click", EventKind::kClick},
    {"cart", EventKind::kCart},         {"addtocart", EventKind::kCart},
    {"add_to_cart", EventKind::kCart},  {"fav", EventKind::kCart},
    {"favorite", EventKind::kCart},     {"favourite", EventKind::kCart},
    {"purchase", EventKind::kPurchase}, {"buy", EventKind::kPurchase},
    {"order", EventKind::kPurchase},    {"transaction", EventKind::kPurchase},
};

// "view|pv|...|transaction", for the unknown-type message.
const std::string& KnownTypeNames() {
  static const std::string* const names = [] {
    auto* joined = new std::string;
    for (const KindName& kind_name : kKindNames) {
      absl::StrAppend(joined, joined->empty() ? "" : "|", kind_name.name);
    }
    return joined;
  }();
  return *names;
}

// Quotes untrusted text for an error message: C-escaped, and cut if long.
std::string Quote(absl::string_view text) {
  constexpr size_t kMaxShown = 48;
  if (text.size() <= kMaxShown) return absl::StrCat("'", absl::CHexEscape(text), "'");
  return absl::StrCat("'", absl::CHexEscape(text.substr(0, kMaxShown)), "...'");
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

absl::string_view TrimSpaces(absl::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool IsBlank(absl::string_view line) { return TrimSpaces(line).empty(); }

bool AllDigits(absl::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// "-?digits(.digits)?": what a number in a headerless ratings line looks like.
bool LooksNumeric(absl::string_view text) {
  if (!text.empty() && text.front() == '-') text.remove_prefix(1);
  const size_t dot = text.find('.');
  if (dot == absl::string_view::npos) return AllDigits(text);
  return AllDigits(text.substr(0, dot)) && AllDigits(text.substr(dot + 1));
}

bool IsOneOf(absl::string_view lower_name, const std::vector<absl::string_view>& names) {
  return std::find(names.begin(), names.end(), lower_name) != names.end();
}

bool IsRatingName(absl::string_view lower_name) {
  return std::find(std::begin(kRatingAliases), std::end(kRatingAliases), lower_name) !=
         std::end(kRatingAliases);
}

// Splits one CSV line at commas into `fields` (views into `line` or `scratch`).
// Unquoted fields are trimmed of spaces and tabs. A field whose first non-space character
// is '"' runs to the closing '"', with "" standing for one '"'; its content is kept as is
// (commas and spaces included) and only spaces may follow it before the next comma. A '"'
// inside an unquoted field is an ordinary character. On a malformed quoted field returns
// false and sets *bad_field (0-based) and *why.
bool SplitCsvLine(absl::string_view line, std::vector<absl::string_view>* fields,
                  std::string* scratch, size_t* bad_field, const char** why) {
  fields->clear();
  scratch->clear();
  // Unescaping only shrinks text, so `scratch` never reallocates below and the views
  // into it stay valid.
  if (scratch->capacity() < line.size()) scratch->reserve(line.size());
  const size_t n = line.size();
  size_t pos = 0;
  while (true) {
    size_t start = pos;
    while (start < n && IsSpace(line[start])) ++start;
    if (start < n && line[start] == '"') {
      size_t i = start + 1;
      bool escaped = false;
      while (true) {
        if (i >= n) {
          *bad_field = fields->size();
          *why = "unterminated quoted field (a quoted field must end on its own line)";
          return false;
        }
        if (line[i] == '"') {
          if (i + 1 < n && line[i + 1] == '"') {
            escaped = true;
            i += 2;
            continue;
          }
          break;
        }
        ++i;
      }
      absl::string_view content = line.substr(start + 1, i - start - 1);
      if (escaped) {
        const size_t first = scratch->size();
        for (size_t k = 0; k < content.size(); ++k) {
          scratch->push_back(content[k]);
          if (content[k] == '"') ++k;  // the second quote of ""
        }
        content = absl::string_view(scratch->data() + first, scratch->size() - first);
      }
      fields->push_back(content);
      pos = i + 1;
      while (pos < n && IsSpace(line[pos])) ++pos;
      if (pos == n) return true;
      if (line[pos] != ',') {
        *bad_field = fields->size() - 1;
        *why = "text after the closing quote of a quoted field";
        return false;
      }
      ++pos;
      continue;
    }
    const size_t comma = line.find(',', pos);
    const size_t stop = comma == absl::string_view::npos ? n : comma;
    fields->push_back(TrimSpaces(line.substr(pos, stop - pos)));
    if (comma == absl::string_view::npos) return true;
    pos = comma + 1;
  }
}

struct GzCloser {
  void operator()(gzFile_s* file) const { gzclose(file); }
};

// Lines of a plain or gzip file, '\n' or "\r\n" terminated (the last one may lack it).
class LineReader {
 public:
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path) {
    errno = 0;
    gzFile file = gzopen(path.c_str(), "rb");
    if (file == nullptr) {
      return absl::ErrnoToStatus(errno != 0 ? errno : ENOMEM, absl::StrCat("cannot open ", path));
    }
    gzbuffer(file, kGzBufferBytes);
    return std::unique_ptr<LineReader>(new LineReader(path, file));
  }

  // The next line without its terminator in *line; false at the end of the file. A line
  // longer than kMaxLineBytes sets *too_long and leaves *line empty (its bytes are read
  // and dropped, never held). The view is valid until the next call.
  absl::StatusOr<bool> Next(absl::string_view* line, bool* too_long) {
    *too_long = false;
    *line = absl::string_view();
    while (true) {
      const char* newline =
          static_cast<const char*>(std::memchr(buffer_.data() + begin_, '\n', end_ - begin_));
      if (newline != nullptr) {
        const size_t stop = static_cast<size_t>(newline - buffer_.data());
        const absl::string_view text(buffer_.data() + begin_, stop - begin_);
        begin_ = stop + 1;
        return Deliver(text, line, too_long);
      }
      if (discarding_) {
        begin_ = end_ = 0;
      } else if (end_ - begin_ > kMaxLineBytes) {
        discarding_ = true;  // drop what we have and everything up to the next '\n'
        begin_ = end_ = 0;
      }
      if (at_eof_) {
        if (!discarding_ && begin_ == end_) return false;
        const absl::string_view text(buffer_.data() + begin_, end_ - begin_);
        begin_ = end_;
        return Deliver(text, line, too_long);
      }
      std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      const int got =
          gzread(file_.get(), buffer_.data() + end_, static_cast<unsigned>(buffer_.size() - end_));
      if (got < 0) return ReadError();
      if (got == 0) {
        int code = Z_OK;
        gzerror(file_.get(), &code);
        // zlib reports a gzip stream cut short as Z_BUF_ERROR at the end, not as -1.
        if (code != Z_OK) return ReadError();
        at_eof_ = true;
      }
      end_ += static_cast<size_t>(got);
    }
  }

  int64_t line_number() const { return line_number_; }

 private:
  LineReader(const std::string& path, gzFile file)
      : path_(path), file_(file), buffer_(kBlockBytes, '\0') {}

  bool Deliver(absl::string_view text, absl::string_view* line, bool* too_long) {
    ++line_number_;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (discarding_ || text.size() > kMaxLineBytes) {
      discarding_ = false;
      *too_long = true;
      return true;
    }
    *line = text;
    return true;
  }

  absl::Status ReadError() {
    int code = Z_OK;
    const char* text = gzerror(file_.get(), &code);
    if (code == Z_ERRNO) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path_));
    // zlib's message is "<path>: <what>"; keep the what.
    absl::string_view message = text != nullptr ? text : "unknown error";
    absl::ConsumePrefix(&message, absl::StrCat(path_, ": "));
    if (code == Z_BUF_ERROR) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": gzip data ends early (truncated file?): ", message));
    }
    return absl::InvalidArgumentError(absl::StrCat(path_, ": cannot decompress: ", message));
  }

  const std::string path_;
  std::unique_ptr<gzFile_s, GzCloser> file_;
  std::string buffer_;
  size_t begin_ = 0;  // first byte not yet handed out
  size_t end_ = 0;    // one past the last byte read
  bool at_eof_ = false;
  bool discarding_ = false;  // inside a too-long line
  int64_t line_number_ = 0;
};

enum class Format { kEvents, kRatings };
enum class Unit { kAuto, kSeconds, kMilliseconds };

// A parsed timestamp field: the integer part and the first three fraction digits.
enum class TimestampText { kOk, kNotANumber, kNegative, kOutOfRange };
TimestampText ParseTimestampText(absl::string_view text, int64_t* whole, int64_t* frac_ms) {
  if (text.size() > 1 && text[0] == '-' && text[1] != '-') {
    int64_t unused_whole, unused_frac;
    return ParseTimestampText(text.substr(1), &unused_whole, &unused_frac) ==
                   TimestampText::kNotANumber
               ? TimestampText::kNotANumber
               : TimestampText::kNegative;
  }
  const size_t dot = text.find('.');
  const absl::string_view integer = text.substr(0, dot);
  if (!AllDigits(integer)) return TimestampText::kNotANumber;
  *frac_ms = 0;
  if (dot != absl::string_view::npos) {
    const absl::string_view fraction = text.substr(dot + 1);
    if (!AllDigits(fraction)) return TimestampText::kNotANumber;
    for (size_t i = 0; i < 3; ++i) {
      *frac_ms = *frac_ms * 10 + (i < fraction.size() ? fraction[i] - '0' : 0);
    }
  }
  const auto [ptr, ec] = std::from_chars(integer.data(), integer.data() + integer.size(), *whole);
  if (ec == std::errc::result_out_of_range) return TimestampText::kOutOfRange;
  if (ec != std::errc() || ptr != integer.data() + integer.size()) {
    return TimestampText::kNotANumber;
  }
  return TimestampText::kOk;
}

std::string FormatUtc(int64_t ms) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

// One accepted row before it joins the log.
struct ParsedRow {
  LoggedEvent event;
  absl::string_view item_key;
  bool milliseconds = false;  // the timestamp was read as milliseconds
};

struct ItemKeyEntry {
  std::string key;
  int64_t line;  // where the key was first seen, for the collision message
};

class Importer {
 public:
  Importer(const std::string& path, const EventLogOptions& options, Unit unit, int64_t now_ms)
      : path_(path), options_(options), unit_(unit) {
    // now + max_future_seconds, saturating.
    const int64_t max = std::numeric_limits<int64_t>::max();
    const int64_t future_ms = options.max_future_seconds > (max - now_ms) / 1000
                                  ? max - now_ms
                                  : options.max_future_seconds * 1000;
    latest_ms_ = now_ms + future_ms;
  }

  absl::StatusOr<EventLog> Run() {
    ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path_));
    EventLogStats& stats = log_.stats;
    bool seen_first_line = false;
    bool has_header = false;
    absl::string_view line;
    bool too_long;
    while (true) {
      ASSIGN_OR_RETURN(const bool more, reader->Next(&line, &too_long));
      if (!more) break;
      const int64_t line_number = reader->line_number();
      if (line_number == 1 && !too_long) {
        if (absl::StartsWith(line, "\xFF\xFE") || absl::StartsWith(line, "\xFE\xFF")) {
          return absl::InvalidArgumentError(absl::StrCat(
              path_, ":1: the file starts with a UTF-16 byte-order mark; save it as UTF-8"));
        }
        if (absl::StartsWith(line, kUtf8Bom)) line.remove_prefix(kUtf8Bom.size());
      }
      if (!too_long && IsBlank(line)) continue;
      if (!seen_first_line) {
        seen_first_line = true;
        if (too_long) {
          return absl::InvalidArgumentError(absl::StrCat(
              path_, ":", line_number, ": first line longer than ", kMaxLineBytes, " bytes"));
        }
        ASSIGN_OR_RETURN(has_header, ReadFirstLine(line, line_number));
        if (has_header) continue;
      }
      ++stats.rows;
      if (options_.max_rows > 0 && stats.rows > options_.max_rows) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ":", line_number, ": more than max_rows=", options_.max_rows, " data rows"));
      }
      ParsedRow row;
      absl::Status row_status =
          too_long ? absl::InvalidArgumentError(absl::StrCat(
                         path_, ":", line_number, ": line longer than ", kMaxLineBytes, " bytes"))
                   : ParseRow(line, line_number, &row);
      if (!row_status.ok()) {
        if (!options_.skip_bad_rows) return row_status;
        ++stats.bad_rows;
        if (stats.bad_row_examples.size() < kMaxBadRowExamples) {
          stats.bad_row_examples.emplace_back(row_status.message());
        }
        continue;
      }
      RETURN_IF_ERROR(AddItemKey(row, line_number));
      if (unit_ == Unit::kAuto) {
        ScaleExample& example = row.milliseconds ? first_ms_ : first_seconds_;
        if (example.line == 0) example = {line_number, row.event.timestamp_ms};
      }
      log_.events.push_back(row.event);
    }
    if (!seen_first_line) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": no events: the file is empty"));
    }
    if (stats.rows == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": no events: the file has only a header line"));
    }
    if (log_.events.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": no events: all ", stats.rows,
                       " rows are bad; the first: ", stats.bad_row_examples.front()));
    }
    if (first_ms_.line != 0 && first_seconds_.line != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": timestamps mix seconds and milliseconds: line ", first_seconds_.line, " has ",
          first_seconds_.timestamp_ms / 1000, " (seconds) and line ", first_ms_.line, " has ",
          first_ms_.timestamp_ms, " (milliseconds); set the timestamp unit (s or ms) explicitly"));
    }
    stats.timestamp_unit =
        unit_ == Unit::kMilliseconds || (unit_ == Unit::kAuto && first_ms_.line != 0) ? "ms" : "s";
    stats.format = format_ == Format::kEvents ? "events" : "ratings";
    SortAndDeduplicate();
    return Finish();
  }

 private:
  struct ScaleExample {
    int64_t line = 0;  // 0: none yet
    int64_t timestamp_ms = 0;
  };

  // Decides the format from the first non-blank line; true when it is a header.
  absl::StatusOr<bool> ReadFirstLine(absl::string_view line, int64_t line_number) {
    size_t bad_field;
    const char* why;
    if (!SplitCsvLine(line, &fields_, &scratch_, &bad_field, &why)) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ":", line_number,
                                                     ": first line, field ", bad_field + 1, ": ",
                                                     why, " (line ", Quote(line), ")"));
    }
    std::vector<std::string> names;
    names.reserve(fields_.size());
    for (absl::string_view field : fields_) names.push_back(absl::AsciiStrToLower(field));
    const bool names_type = std::any_of(names.begin(), names.end(), [](const std::string& name) {
      return IsOneOf(name, RoleAliases()[kType]);
    });
    const bool names_rating = std::any_of(names.begin(), names.end(), IsRatingName);
    const bool four_numbers =
        fields_.size() == 4 && std::all_of(fields_.begin(), fields_.end(), LooksNumeric);
    const std::string& format = options_.format;
    if (format == "events" || (format == "auto" && names_type)) {
      format_ = Format::kEvents;
      RETURN_IF_ERROR(ReadEventsHeader(line, line_number, names));
      return true;
    }
    if (format == "ratings" || (format == "auto" && (names_rating || four_numbers))) {
      format_ = Format::kRatings;
      // A headerless ratings line has a number as its rating.
      const bool header = names_rating || fields_.size() < 3 || !LooksNumeric(fields_[2]);
      if (header && (fields_.size() != 4 || !IsRatingName(names[2]))) {
        return absl::InvalidArgumentError(absl::StrCat(
            path_, ":", line_number,
            ": header: the ratings format wants the columns user,item,rating,timestamp in this "
            "order (rating named rating or score), got ",
            Quote(line)));
      }
      column_names_ = {"user", "item", "rating", "timestamp"};
      return header;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ":", line_number, ": cannot tell the format from the first line ", Quote(line),
        ": expected a header with an event-type column (event_type|type|behavior_type|"
        "behaviour_type|event) for the events format, or a header with a rating column "
        "(rating|score) or 4 numeric fields user,item,rating,timestamp without a header for "
        "the ratings format"));
  }

  absl::Status ReadEventsHeader(absl::string_view line, int64_t line_number,
                                const std::vector<std::string>& names) {
    for (size_t i = 0; i < names.size(); ++i) {
      for (int role = 0; role < kRoleCount; ++role) {
        if (!IsOneOf(names[i], RoleAliases()[role])) continue;
        if (columns_[role] >= 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              path_, ":", line_number, ": header: columns '", fields_[columns_[role]], "' and '",
              fields_[i], "' both name the ", kRoleNames[role], " column; keep one"));
        }
        columns_[role] = static_cast<int>(i);
      }
    }
    for (int role = 0; role < kRoleCount; ++role) {
      if (columns_[role] < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path_, ":", line_number, ": header: missing column '", kRoleNames[role],
                         "' (accepted names: ", absl::StrJoin(RoleAliases()[role], "|"),
                         "; header ", Quote(line), ")"));
      }
    }
    header_fields_ = fields_.size();
    column_names_.clear();
    for (absl::string_view field : fields_) column_names_.emplace_back(field);
    return absl::OkStatus();
  }

  absl::Status RowError(int64_t line_number, absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ":", line_number, ": ", message));
  }
  absl::Status FieldError(int64_t line_number, size_t field, absl::string_view what,
                          absl::string_view value) const {
    const std::string column = field < column_names_.size()
                                   ? absl::StrCat("column '", column_names_[field], "'")
                                   : absl::StrCat("field ", field + 1);
    return RowError(line_number, absl::StrCat(column, ": ", what, " (value ", Quote(value), ")"));
  }

  // Ids: non-empty, at most kMaxItemKeyBytes, no control characters.
  absl::Status CheckId(int64_t line_number, size_t field, absl::string_view id) const {
    if (id.empty()) return FieldError(line_number, field, "empty id", id);
    if (id.size() > kMaxItemKeyBytes) {
      return FieldError(line_number, field,
                        absl::StrCat("id of ", id.size(), " bytes, longer than ", kMaxItemKeyBytes),
                        id);
    }
    for (unsigned char c : id) {
      if (c < 0x20 || c == 0x7f) {
        return FieldError(
            line_number, field,
            absl::StrCat("id with control character 0x", absl::Hex(c, absl::kZeroPad2)), id);
      }
    }
    return absl::OkStatus();
  }

  absl::Status ParseTimestamp(int64_t line_number, size_t field, absl::string_view text,
                              ParsedRow* row) const {
    int64_t whole = 0, frac_ms = 0;
    switch (ParseTimestampText(text, &whole, &frac_ms)) {
      case TimestampText::kOk:
        break;
      case TimestampText::kNotANumber:
        return FieldError(line_number, field,
                          "not a Unix timestamp (want integer seconds or milliseconds, "
                          "optionally with a decimal fraction)",
                          text);
      case TimestampText::kNegative:
        return FieldError(line_number, field, "negative timestamp", text);
      case TimestampText::kOutOfRange:
        return FieldError(line_number, field, "timestamp out of range", text);
    }
    if (whole == 0) return FieldError(line_number, field, "zero timestamp", text);
    row->milliseconds =
        unit_ == Unit::kMilliseconds || (unit_ == Unit::kAuto && whole > kMillisecondsAbove);
    if (row->milliseconds) {
      row->event.timestamp_ms = whole;  // a fraction of a millisecond is dropped
    } else {
      if (whole > (std::numeric_limits<int64_t>::max() - 999) / 1000) {
        return FieldError(line_number, field, "timestamp out of range (seconds)", text);
      }
      row->event.timestamp_ms = whole * 1000 + frac_ms;
    }
    if (row->event.timestamp_ms > latest_ms_) {
      return FieldError(
          line_number, field,
          absl::StrCat("timestamp in the future: ", FormatUtc(row->event.timestamp_ms), " read as ",
                       row->milliseconds ? "milliseconds" : "seconds", " is later than now + ",
                       options_.max_future_seconds, " s"),
          text);
    }
    return absl::OkStatus();
  }

  absl::Status ParseRow(absl::string_view line, int64_t line_number, ParsedRow* row) {
    size_t bad_field;
    const char* why;
    if (!SplitCsvLine(line, &fields_, &scratch_, &bad_field, &why)) {
      return FieldError(line_number, bad_field, why, line);
    }
    if (format_ == Format::kEvents) {
      if (fields_.size() != header_fields_) {
        return RowError(line_number,
                        absl::StrCat("expected ", header_fields_, " fields as in the header, got ",
                                     fields_.size()));
      }
      const absl::string_view user = fields_[columns_[kUser]];
      const absl::string_view item = fields_[columns_[kItem]];
      const absl::string_view type = fields_[columns_[kType]];
      RETURN_IF_ERROR(CheckId(line_number, columns_[kUser], user));
      RETURN_IF_ERROR(CheckId(line_number, columns_[kItem], item));
      bool known = false;
      for (const KindName& kind_name : kKindNames) {
        if (absl::EqualsIgnoreCase(type, kind_name.name)) {
          row->event.kind = kind_name.kind;
          known = true;
          break;
        }
      }
      if (!known) {
        return FieldError(line_number, columns_[kType],
                          absl::StrCat("unknown event type, want one of ", KnownTypeNames()), type);
      }
      RETURN_IF_ERROR(ParseTimestamp(line_number, columns_[kTime], fields_[columns_[kTime]], row));
      row->event.user_id = ItemIdFromKey(user);
      row->event.item_id = ItemIdFromKey(item);
      row->item_key = item;
      return absl::OkStatus();
    }
    if (fields_.size() != 4) {
      return RowError(
          line_number,
          absl::StrCat("expected 4 fields (user, item, rating, timestamp), got ", fields_.size()));
    }
    RETURN_IF_ERROR(CheckId(line_number, 0, fields_[0]));
    RETURN_IF_ERROR(CheckId(line_number, 1, fields_[1]));
    double rating = 0;
    const absl::string_view rating_text = fields_[2];
    const auto [ptr, ec] =
        std::from_chars(rating_text.data(), rating_text.data() + rating_text.size(), rating);
    if (rating_text.empty() || ec != std::errc() ||
        ptr != rating_text.data() + rating_text.size() || !std::isfinite(rating)) {
      return FieldError(line_number, 2, "rating is not a finite number", rating_text);
    }
    RETURN_IF_ERROR(ParseTimestamp(line_number, 3, fields_[3], row));
    row->event.kind =
        rating >= options_.ratings_click_threshold ? EventKind::kClick : EventKind::kView;
    row->event.user_id = ItemIdFromKey(fields_[0]);
    row->event.item_id = ItemIdFromKey(fields_[1]);
    row->item_key = fields_[1];
    return absl::OkStatus();
  }

  // Remembers the row's item key; two keys with one numeric id are a fatal error.
  absl::Status AddItemKey(const ParsedRow& row, int64_t line_number) {
    const auto it = item_keys_.find(row.event.item_id);
    if (it == item_keys_.end()) {
      item_keys_.emplace(row.event.item_id, ItemKeyEntry{std::string(row.item_key), line_number});
      return absl::OkStatus();
    }
    if (it->second.key == row.item_key) return absl::OkStatus();
    const size_t item_field = format_ == Format::kEvents ? columns_[kItem] : 1;
    return FieldError(
        line_number, item_field,
        absl::StrCat("item key ", Quote(row.item_key), " and item key ", Quote(it->second.key),
                     " (line ", it->second.line, ") have the same numeric id ", row.event.item_id,
                     " (a hash collision); rename one of them"),
        row.item_key);
  }

  void SortAndDeduplicate() {
    std::vector<LoggedEvent>& events = log_.events;
    const auto earlier = [](const LoggedEvent& a, const LoggedEvent& b) {
      if (a.timestamp_ms != b.timestamp_ms) return a.timestamp_ms < b.timestamp_ms;
      return a.user_id < b.user_id;
    };
    if (!std::is_sorted(events.begin(), events.end(), earlier)) {
      std::stable_sort(events.begin(), events.end(), earlier);
    }
    // Duplicates share (timestamp, user), so they sit in one group; keep the first.
    size_t kept = 0;
    absl::flat_hash_set<std::pair<uint64_t, EventKind>> seen;
    for (size_t begin = 0; begin < events.size();) {
      size_t end = begin + 1;
      while (end < events.size() && events[end].timestamp_ms == events[begin].timestamp_ms &&
             events[end].user_id == events[begin].user_id) {
        ++end;
      }
      const size_t group_kept = kept;
      if (end - begin > kPairwiseDedupMax) seen.clear();
      for (size_t i = begin; i < end; ++i) {
        const LoggedEvent event = events[i];
        bool duplicate = false;
        if (end - begin > kPairwiseDedupMax) {
          duplicate = !seen.emplace(event.item_id, event.kind).second;
        } else {
          for (size_t j = group_kept; j < kept && !duplicate; ++j) {
            duplicate = events[j].item_id == event.item_id && events[j].kind == event.kind;
          }
        }
        if (duplicate) {
          ++log_.stats.duplicates;
        } else {
          events[kept++] = event;
        }
      }
      begin = end;
    }
    events.resize(kept);
  }

  absl::StatusOr<EventLog> Finish() {
    EventLogStats& stats = log_.stats;
    stats.events = static_cast<int64_t>(log_.events.size());
    std::vector<uint64_t> users;
    users.reserve(log_.events.size());
    for (const LoggedEvent& event : log_.events) users.push_back(event.user_id);
    std::sort(users.begin(), users.end());
    stats.users = std::unique(users.begin(), users.end()) - users.begin();
    for (auto& [id, entry] : item_keys_) log_.item_keys.emplace(id, std::move(entry.key));
    stats.items = static_cast<int64_t>(log_.item_keys.size());
    return std::move(log_);
  }

  const std::string& path_;
  const EventLogOptions& options_;
  const Unit unit_;
  int64_t latest_ms_ = 0;  // later timestamps are in the future

  Format format_ = Format::kEvents;
  int columns_[kRoleCount] = {-1, -1, -1, -1};  // events: field index of each role
  size_t header_fields_ = 0;                    // events: fields per row
  std::vector<std::string> column_names_;       // for messages, by field index

  std::vector<absl::string_view> fields_;  // the current line's fields
  std::string scratch_;                    // unescaped quoted fields of the current line
  absl::flat_hash_map<uint64_t, ItemKeyEntry> item_keys_;
  ScaleExample first_seconds_, first_ms_;  // unit "auto": the first row of each scale
  EventLog log_;
};

}  // namespace

absl::StatusOr<EventLog> ReadEventLog(const std::string& path, const EventLogOptions& options) {
  if (options.format != "auto" && options.format != "events" && options.format != "ratings") {
    return absl::InvalidArgumentError(absl::StrCat(
        "event log format must be auto, events or ratings, got ", Quote(options.format)));
  }
  Unit unit;
  if (options.timestamp_unit == "auto") {
    unit = Unit::kAuto;
  } else if (options.timestamp_unit == "s") {
    unit = Unit::kSeconds;
  } else if (options.timestamp_unit == "ms") {
    unit = Unit::kMilliseconds;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "event log timestamp unit must be auto, s or ms, got ", Quote(options.timestamp_unit)));
  }
  if (!std::isfinite(options.ratings_click_threshold)) {
    return absl::InvalidArgumentError(absl::StrCat("ratings_click_threshold must be finite, got ",
                                                   options.ratings_click_threshold));
  }
  if (options.max_future_seconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_future_seconds must be >= 0, got ", options.max_future_seconds));
  }
  if (options.max_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_rows must be >= 0 (0: no limit), got ", options.max_rows));
  }
  Importer importer(path, options, unit, absl::ToUnixMillis(absl::Now()));
  return importer.Run();
}

}  // namespace recserve
