#include "train/distill.h"

#include <omp.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "compression/compare.h"
#include "compression/compress.h"
#include "engine/onednn_util.h"
#include "engine/onnx_mlp.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

int Width(const v1::FeatureSpec& features) {
  int width = 0;
  for (const v1::FeatureBlock& b : features.blocks()) width += b.width();
  return width;
}

std::string DescribeBlocks(const v1::FeatureSpec& features) {
  return absl::StrJoin(features.blocks(), ", ", [](std::string* out, const v1::FeatureBlock& b) {
    absl::StrAppendFormat(out, "%s:%d", v1::FeatureBlockKind_Name(b.kind()), b.width());
  });
}

}  // namespace

absl::Status ValidateDistillOptions(const DistillOptions& o) {
  if (!o.teacher_path.empty() && !o.teacher_hidden.empty()) {
    return absl::InvalidArgumentError("distillation: give a teacher path or teacher hidden widths, not both");
  }
  for (int w : o.teacher_hidden) {
    if (w < 1) return absl::InvalidArgumentError(absl::StrFormat("distillation: teacher width %d is not positive", w));
  }
  if (!(o.alpha >= 0 && o.alpha <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat("distillation: alpha is %g; must be in [0, 1]", o.alpha));
  }
  if (!(o.temperature >= 1 && o.temperature <= 100)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("distillation: temperature is %g; must be in [1, 100]", o.temperature));
  }
  return absl::OkStatus();
}

absl::StatusOr<Mlp> LoadTeacher(const std::string& path, const v1::FeatureSpec& features) {
  const int width = Width(features);
  std::error_code ec;
  Mlp teacher;
  if (std::filesystem::is_directory(path, ec)) {
    ASSIGN_OR_RETURN(BundleContents bundle, ReadBundle(path));
    const v1::FeatureSpec& theirs = bundle.manifest.features();
    bool same = theirs.blocks_size() == features.blocks_size();
    for (int i = 0; same && i < features.blocks_size(); ++i) {
      same = theirs.blocks(i).kind() == features.blocks(i).kind() && theirs.blocks(i).width() == features.blocks(i).width();
    }
    if (!same) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "teacher bundle %s takes %d input features (%s); the student's rows have %d (%s)", path,
          Width(theirs), DescribeBlocks(theirs), width, DescribeBlocks(features)));
    }
    teacher = std::move(bundle.mlp);
  } else {
    ASSIGN_OR_RETURN(teacher, ReadOnnxMlp(path));
  }
  if (teacher.input_dim() != width) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "teacher %s takes %d input features; the student's rows have %d (%s)", path, teacher.input_dim(), width,
        DescribeBlocks(features)));
  }
  return teacher;
}

absl::StatusOr<v1::DistillationReport> CompareDistilled(const Mlp& teacher, const Mlp& student,
                                                        const Mlp& baseline, const DistillOptions& options,
                                                        const v1::Manifest& manifest,
                                                        const CalibrationSet& calibration,
                                                        const CalibrationSet& held_out,
                                                        const std::string& held_out_name) {
  ASSIGN_OR_RETURN(const CompressionPolicy policy, ResolvePolicy(manifest, PolicyOverrides()));
  const NamedMlp rankers[] = {{"teacher", &teacher}, {"student", &student}, {"baseline", &baseline}};
  ASSIGN_OR_RETURN(std::vector<v1::RankerFigures> figures,
                   CompareRankers(rankers, calibration, policy, held_out, CompareOptions()));
  v1::DistillationReport report;
  report.set_teacher(options.teacher_path.empty() ? "trained in this run" : options.teacher_path);
  report.set_alpha(options.alpha);
  report.set_temperature(options.temperature);
  report.set_held_out(held_out_name);
  report.set_held_out_rows(held_out.rows);
  for (v1::RankerFigures& f : figures) *report.add_rankers() = std::move(f);
  report.set_cpu_isa(CpuIsaName());
  report.set_threads(omp_get_max_threads());
  return report;
}

}  // namespace recserve
