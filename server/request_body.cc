#include "server/request_body.h"

#include <cstdint>

#include "absl/base/call_once.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/wire_format_lite.h"

namespace recserve {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

// Set while this thread parses a request body: protobuf's log lines go here.
thread_local std::string* parse_complaint = nullptr;
// The handler before ours; null when protobuf's logging was off. Written once, before
// RouteProtobufLog can run.
google::protobuf::LogHandler* previous_log_handler = nullptr;

void RouteProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                      const std::string& message) {
  if (parse_complaint != nullptr) {
    if (parse_complaint->empty()) *parse_complaint = message;  // the first says what failed
    return;
  }
  if (previous_log_handler != nullptr) previous_log_handler(level, filename, line, message);
}

// Walks the wire format over a bounded view of the bytes, one message (or group) per
// Walk, tracking depth as protobuf's parser does: the outermost message is depth 0 and
// each message or group inside adds one.
class WireWalker {
 public:
  explicit WireWalker(absl::string_view bytes)
      : in_(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size())) {
    in_.PushLimit(static_cast<int>(bytes.size()));
  }

  // Reads fields of `type` (null: unknown, inside a group of an unknown field) up to the
  // current limit, or, inside group `group` (0: not a group), up to its end tag.
  std::string Walk(const Descriptor* type, int depth, uint32_t group) {
    const int max_depth = google::protobuf::io::CodedInputStream::GetDefaultRecursionLimit();
    while (true) {
      const int at = in_.CurrentPosition();
      if (in_.BytesUntilLimit() == 0) {
        if (group == 0) return "";
        return absl::StrFormat("byte %d: group %d is not closed before the end of its message", at, group);
      }
      uint64_t tag = 0;
      if (!in_.ReadVarint64(&tag)) return absl::StrFormat("byte %d: a tag that is a truncated or overlong varint", at);
      if (tag > UINT32_MAX) return absl::StrFormat("byte %d: tag %d is out of range", at, tag);
      const uint32_t field = static_cast<uint32_t>(tag) >> 3;
      const int wire_type = static_cast<int>(tag & 7);
      if (field == 0) return absl::StrFormat("byte %d: field number 0 (tag %d)", at, tag);
      const FieldDescriptor* known = type != nullptr ? type->FindFieldByNumber(static_cast<int>(field)) : nullptr;
      const auto name = [&] {
        return known != nullptr ? absl::StrCat(known->full_name(), " (", field, ")") : absl::StrCat(field);
      };
      switch (wire_type) {
        case WireFormatLite::WIRETYPE_VARINT: {
          uint64_t value;
          if (!in_.ReadVarint64(&value)) {
            return absl::StrFormat("byte %d: field %s: a truncated or overlong varint", at, name());
          }
          break;
        }
        case WireFormatLite::WIRETYPE_FIXED64: {
          uint64_t value;
          if (!in_.ReadLittleEndian64(&value)) {
            return absl::StrFormat("byte %d: field %s: an 8-byte value runs past the end of its message", at,
                                   name());
          }
          break;
        }
        case WireFormatLite::WIRETYPE_FIXED32: {
          uint32_t value;
          if (!in_.ReadLittleEndian32(&value)) {
            return absl::StrFormat("byte %d: field %s: a 4-byte value runs past the end of its message", at,
                                   name());
          }
          break;
        }
        case WireFormatLite::WIRETYPE_LENGTH_DELIMITED: {
          uint32_t length;
          if (!in_.ReadVarint32(&length)) {
            return absl::StrFormat("byte %d: field %s: a length that is a truncated or overlong varint", at,
                                   name());
          }
          const int left = in_.BytesUntilLimit();
          if (length > static_cast<uint32_t>(left)) {
            return absl::StrFormat("byte %d: field %s: %d bytes long, past the end of its message (%d bytes left)",
                                   at, name(), length, left);
          }
          if (known != nullptr && known->type() == FieldDescriptor::TYPE_MESSAGE) {
            if (depth + 1 > max_depth) {
              return absl::StrFormat("byte %d: field %s: messages and groups nested deeper than %d", at, name(),
                                     max_depth);
            }
            const auto limit = in_.PushLimit(static_cast<int>(length));
            std::string fault = Walk(known->message_type(), depth + 1, 0);
            if (!fault.empty()) return fault;
            in_.PopLimit(limit);
          } else if (known != nullptr && known->is_repeated() && known->is_packable()) {
            std::string fault = WalkPacked(*known, static_cast<int>(length), name);
            if (!fault.empty()) return fault;
          } else {
            in_.Skip(static_cast<int>(length));
          }
          break;
        }
        case WireFormatLite::WIRETYPE_START_GROUP: {
          if (depth + 1 > max_depth) {
            return absl::StrFormat("byte %d: field %s: messages and groups nested deeper than %d", at, name(),
                                   max_depth);
          }
          const Descriptor* group_type =
              known != nullptr && known->type() == FieldDescriptor::TYPE_GROUP ? known->message_type() : nullptr;
          std::string fault = Walk(group_type, depth + 1, field);
          if (!fault.empty()) return fault;
          break;
        }
        case WireFormatLite::WIRETYPE_END_GROUP:
          if (field == group) return "";
          if (group == 0) return absl::StrFormat("byte %d: end of group %d, which is not open", at, field);
          return absl::StrFormat("byte %d: end of group %d inside group %d", at, field, group);
        default:
          return absl::StrFormat("byte %d: field %s: wire type %d is not a protobuf wire type", at, name(),
                                 wire_type);
      }
    }
  }

 private:
  // A packed repeated field's `length` bytes: whole varints, or whole fixed values.
  template <typename Name>
  std::string WalkPacked(const FieldDescriptor& field, int length, const Name& name) {
    // FieldDescriptor::Type and WireFormatLite::FieldType number the types alike.
    const WireFormatLite::WireType element =
        WireFormatLite::WireTypeForFieldType(static_cast<WireFormatLite::FieldType>(field.type()));
    if (element != WireFormatLite::WIRETYPE_VARINT) {
      const int width = element == WireFormatLite::WIRETYPE_FIXED32 ? 4 : 8;
      if (length % width != 0) {
        return absl::StrFormat("byte %d: field %s: %d bytes of packed %d-byte values", in_.CurrentPosition(),
                               name(), length, width);
      }
      in_.Skip(length);
      return "";
    }
    const auto limit = in_.PushLimit(length);
    while (in_.BytesUntilLimit() > 0) {
      const int at = in_.CurrentPosition();
      uint64_t value;
      if (!in_.ReadVarint64(&value)) {
        return absl::StrFormat("byte %d: field %s: a packed varint that is truncated or overlong", at, name());
      }
    }
    in_.PopLimit(limit);
    return "";
  }

  google::protobuf::io::CodedInputStream in_;
};

}  // namespace

void InstallProtobufLogCapture() {
  static absl::once_flag once;
  absl::call_once(once, [] { previous_log_handler = google::protobuf::SetLogHandler(&RouteProtobufLog); });
}

std::string DescribeWireFormatFault(absl::string_view bytes, const Descriptor& type) {
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) return "the body is larger than 2 GiB";
  return WireWalker(bytes).Walk(&type, 0, 0);
}

absl::Status ParseRequestBody(google::protobuf::io::ZeroCopyInputStream* body,
                              absl::FunctionRef<std::string()> whole_body, google::protobuf::Message* message) {
  InstallProtobufLogCapture();
  std::string complaint;
  parse_complaint = &complaint;
  const bool parsed = message->ParseFromZeroCopyStream(body);
  parse_complaint = nullptr;
  if (parsed) return absl::OkStatus();
  // Protobuf logs only what it refused (a string that is not UTF-8); else find the fault.
  std::string fault(absl::StripTrailingAsciiWhitespace(complaint));
  if (fault.empty()) fault = DescribeWireFormatFault(whole_body(), *message->GetDescriptor());
  if (fault.empty()) fault = "protobuf's parser refused it, though its wire format is sound";
  return absl::InvalidArgumentError(
      absl::StrCat("the request body is not a ", message->GetDescriptor()->full_name(), ": ", fault));
}

}  // namespace recserve
