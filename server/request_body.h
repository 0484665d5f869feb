// Reading a request body that a client may have built by hand.
//
// gRPC's generated handlers parse a request with protobuf and, when that fails, answer
// UNIMPLEMENTED with no message; protobuf itself writes an ERROR line for every string
// that is not UTF-8. The Recommender takes its requests as bytes instead and parses
// them here: a body that is not a message is refused with INVALID_ARGUMENT naming what
// is wrong, and protobuf's own log lines about it go into that message, not to stderr.
//
// Thread-safe: protobuf's log lines are routed per thread (a process-wide handler,
// installed once, hands a line logged during ParseRequestBody to that parse and passes
// every other line to the handler that was there before).
#ifndef RECSERVE_SERVER_REQUEST_BODY_H_
#define RECSERVE_SERVER_REQUEST_BODY_H_

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/zero_copy_stream.h"
#include "google/protobuf/message.h"

namespace recserve {

// Installs the protobuf log handler described above; idempotent. Call it at start-up,
// before request threads exist (protobuf's handler pointer is a plain global);
// ParseRequestBody calls it too.
void InstallProtobufLogCapture();

// Parses `body` into `message` exactly as gRPC's generated code would. On failure
// returns INVALID_ARGUMENT "the request body is not a <type>: <fault>", the fault being
// protobuf's own complaint if it logged one (a string field that is not UTF-8, named),
// else the first one DescribeWireFormatFault finds in the bytes `whole_body` returns
// (called only on failure), else that protobuf refused it.
absl::Status ParseRequestBody(google::protobuf::io::ZeroCopyInputStream* body,
                              absl::FunctionRef<std::string()> whole_body,
                              google::protobuf::Message* message);

// The first wire-format fault in `bytes` read as a `type` message, as "byte <offset>:
// <what>" (offsets from the start of `bytes`), or "" when the structure is sound: tags
// (field number 0, wire types 6 and 7), truncated or overlong varints, fixed values and
// lengths running past the end of their message, packed varints, group start and end
// tags that do not pair up, and messages or groups nested deeper than protobuf's
// recursion limit (100). Field names come from `type` where the field is known.
// Does not check that strings are UTF-8.
std::string DescribeWireFormatFault(absl::string_view bytes, const google::protobuf::Descriptor& type);

}  // namespace recserve

#endif  // RECSERVE_SERVER_REQUEST_BODY_H_
