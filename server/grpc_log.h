// gRPC core's log lines, written through LogRateLimiter.
//
// gRPC core writes some refusals at ERROR once per call: a compressed request (refused,
// see server.cc) gets "Compression algorithm 'gzip' is disabled.", so a client looping
// on one could fill the server's log. Once installed, ERROR lines pass at most once a
// second for each place in gRPC's code that writes them, the next one saying how many
// were held back; lines of other severities (written only when GRPC_VERBOSITY asks for
// them) pass as they come. Process-wide (gpr_set_log_function); thread-safe.
#ifndef RECSERVE_SERVER_GRPC_LOG_H_
#define RECSERVE_SERVER_GRPC_LOG_H_

namespace recserve {

// Routes gRPC core's log lines to stderr as above. Call once at start-up, in the binary
// (tests keep gRPC's own logger).
void InstallRateLimitedGrpcLog();

}  // namespace recserve

#endif  // RECSERVE_SERVER_GRPC_LOG_H_
