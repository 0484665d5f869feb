// Knowledge distillation for recserve-train: where the teacher comes from and how the
// distilled student is reported.
//
// A teacher is either read (LoadTeacher: a bundle version directory this trainer wrote,
// or any ONNX ranker engine/onnx_mlp.h reads) or trained first in the same run
// (DistillOptions::teacher_hidden, on the student's own rows). The student is then
// trained with DistillMlp (train/mlp_trainer.h) on hard labels plus the teacher's
// temperature-softened logits, and CompareDistilled measures it against its teacher and
// against the same-size student trained without a teacher, on the same held-out rows,
// each also in the form the bundle's compression policy serves at load.
//
// Thread-compatible: pure functions of their arguments.
#ifndef RECSERVE_TRAIN_DISTILL_H_
#define RECSERVE_TRAIN_DISTILL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/bundle.h"
#include "engine/mlp.h"
#include "recserve/v1/model.pb.h"

namespace recserve {

struct DistillOptions {
  // A teacher bundle version directory (models/<name>/<version>) or an ONNX ranker file.
  std::string teacher_path;
  // Instead of teacher_path: hidden widths of a teacher trained first in this run, on the
  // same rows and with the same options as the student. Empty with teacher_path empty:
  // no distillation.
  std::vector<int> teacher_hidden;
  // Distillation::alpha and ::temperature (train/mlp_trainer.h); defaults measured in
  // docs/benchmarks.md ("Knowledge distillation": alpha 0.8 did worse, T 1-4 alike).
  float alpha = 0.5f;
  float temperature = 2.0f;

  bool enabled() const { return !teacher_path.empty() || !teacher_hidden.empty(); }
};

// InvalidArgument when both teacher_path and teacher_hidden are set, a width is not
// positive, or alpha / temperature are out of Distillation's ranges.
absl::Status ValidateDistillOptions(const DistillOptions& options);

// The teacher at `path`: a directory is read as a bundle (ReadBundle: every check of a
// served bundle) whose feature blocks must be the student's `features`; a file is read as
// an ONNX ranker. Either way its input width must be the student's; InvalidArgument
// naming both widths (and the first differing block) otherwise.
absl::StatusOr<Mlp> LoadTeacher(const std::string& path, const v1::FeatureSpec& features);

// Teacher, student and baseline (same size as the student, no teacher) on `held_out`
// (rows with groups: slates or requests), served as `manifest`'s compression policy
// serves them when calibrated on `calibration`, and timed side by side
// (compression/compare.h). `held_out_name` says which rows they are.
absl::StatusOr<v1::DistillationReport> CompareDistilled(const Mlp& teacher, const Mlp& student,
                                                        const Mlp& baseline, const DistillOptions& options,
                                                        const v1::Manifest& manifest,
                                                        const CalibrationSet& calibration,
                                                        const CalibrationSet& held_out,
                                                        const std::string& held_out_name);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_DISTILL_H_
