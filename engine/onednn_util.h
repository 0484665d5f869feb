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

// The instruction set oneDNN's kernels use on this CPU (after ONEDNN_MAX_CPU_ISA), as
// the name that variable takes: "avx512_core_amx", "avx512_core_vnni", "avx2", ...
std::string CpuIsaName();

// The int8 multiply-accumulates one core can issue per cycle with that instruction set:
// AMX's TDPBUSD (16 x 16 x 64 MACs every 16 cycles) 1024; AVX-512 VNNI (two 512-bit
// VPDPBUSD ports) 128; AVX2 VNNI 64; 0 where oneDNN has no int8 dot-product instruction.
int Int8MacsPerCycle();

}  // namespace recserve

#endif  // RECSERVE_ENGINE_ONEDNN_UTIL_H_
