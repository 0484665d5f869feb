#include "server/model_manager.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace recserve {

ModelManager::ModelManager(ModelManagerOptions options, VersionSource source)
    : source_(std::move(source)),
      loader_(options),
      serving_(options, &source_, &loader_),
      load_thread_(options, &serving_) {}

absl::StatusOr<std::unique_ptr<ModelManager>> ModelManager::Create(ModelManagerOptions options) {
  ASSIGN_OR_RETURN(VersionSource source, VersionSource::Create(options.base_path));
  const bool start = !options.start_paused;
  std::unique_ptr<ModelManager> m(new ModelManager(std::move(options), std::move(source)));
  if (start) m->Start();
  return m;
}

void ModelManager::RequestStop() {
  loader_.Cancel();  // first: a load in progress ends early, so the thread sees the stop soon
  load_thread_.RequestStop();
}

void ModelManager::Stop() {
  RequestStop();
  load_thread_.Stop();
}

absl::StatusOr<int64_t> ModelManager::ReloadNow(absl::Time deadline) {
  RETURN_IF_ERROR(load_thread_.ScanAndWait(deadline));
  return serving_.serving_version();
}

absl::StatusOr<int64_t> ModelManager::SetServingVersion(int64_t version, absl::Time deadline) {
  if (version < 0) {
    return absl::InvalidArgumentError(absl::StrCat("version: ", version, " is negative"));
  }
  // The pin is not set here: the load thread tries it and sets it only if it serves.
  RETURN_IF_ERROR(load_thread_.PinAndWait(version, deadline));
  return serving_.serving_version();
}

}  // namespace recserve
