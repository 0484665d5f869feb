// Shared oneDNN plumbing for the rankers: the process-wide CPU engine and the
// conversion of dnnl::error into absl::Status at the engine boundary.
#ifndef RECSERVE_ENGINE_ONEDNN_UTIL_H_
#define RECSERVE_ENGINE_ONEDNN_UTIL_H_

#include <string>

#include <oneapi/dnnl/dnnl.hpp>

#include "absl/status/status.h"

namespace recserve {

// One CPU engine for the process; oneDNN engines are thread-safe.
const dnnl::engine& CpuEngine();

absl::Status DnnlError(const std::string& what, const dnnl::error& e);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_ONEDNN_UTIL_H_
