#include "engine/onednn_util.h"

#include "absl/strings/str_cat.h"

namespace recserve {

const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

absl::Status DnnlError(const std::string& what, const dnnl::error& e) {
  return absl::InternalError(absl::StrCat(what, ": oneDNN error ", e.status, ": ", e.what()));
}

}  // namespace recserve
