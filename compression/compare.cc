#include "compression/compare.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/quality.h"
#include "engine/status_macros.h"

namespace recserve {
namespace {

using Clock = std::chrono::steady_clock;

// Scores `batches` slices of `batch` held-out rows (taken in turn, wrapping around),
// each made one request's candidates first: the request-constant columns (user and
// context features) of every row set to the slice's first row's, as the serving path
// scores them (the int8 ranker computes those columns' contribution once per batch).
// Returns the seconds spent in Score.
absl::StatusOr<double> TimeBatches(const Ranker& ranker, RankerScratch* scratch, const CalibrationSet& rows,
                                   const std::vector<int>& constant_columns, int batch, int batches,
                                   int* next_row, std::vector<float>* buffer, std::vector<float>* out) {
  const int width = rows.width;
  double seconds = 0;
  for (int b = 0; b < batches; ++b) {
    const int n = std::min(batch, rows.rows);
    if (*next_row + n > rows.rows) *next_row = 0;
    std::copy_n(rows.features.begin() + static_cast<size_t>(*next_row) * width, static_cast<size_t>(n) * width,
                buffer->begin());
    for (int r = 1; r < n; ++r) {
      for (int c : constant_columns) (*buffer)[static_cast<size_t>(r) * width + c] = (*buffer)[c];
    }
    *next_row += n;
    const Clock::time_point start = Clock::now();
    RETURN_IF_ERROR(ranker.Score(buffer->data(), n, out->data(), scratch));
    seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }
  return seconds;
}

}  // namespace

absl::StatusOr<std::vector<v1::RankerFigures>> CompareRankers(absl::Span<const NamedMlp> mlps,
                                                              const CalibrationSet& calibration,
                                                              const CompressionPolicy& policy,
                                                              const CalibrationSet& held_out,
                                                              const CompareOptions& options) {
  if (options.batch < 1 || options.rounds < 1 || options.batches_per_round < 1) {
    return absl::InvalidArgumentError(absl::StrFormat("CompareRankers: batch %d, rounds %d, batches_per_round %d; "
                                                      "each must be >= 1",
                                                      options.batch, options.rounds, options.batches_per_round));
  }
  if (held_out.rows < 1) return absl::InvalidArgumentError("CompareRankers: no held-out rows");
  struct Entry {
    std::unique_ptr<Ranker> fp32, served;
    std::unique_ptr<RankerScratch> fp32_scratch, served_scratch;
    std::vector<double> fp32_seconds, served_seconds;  // per timed round
  };
  std::vector<Entry> entries(mlps.size());
  std::vector<v1::RankerFigures> figures(mlps.size());
  for (size_t i = 0; i < mlps.size(); ++i) {
    const Mlp& mlp = *mlps[i].mlp;
    if (mlp.input_dim() != held_out.width || mlp.input_dim() != calibration.width) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CompareRankers: %s takes %d input features; the held-out rows have %d and the calibration rows %d",
          mlps[i].name, mlp.input_dim(), held_out.width, calibration.width));
    }
    v1::RankerFigures& f = figures[i];
    f.set_name(mlps[i].name);
    for (int s : mlp.LayerSizes()) f.add_layer_sizes(s);
    f.set_parameters(mlp.ParameterCount());
    f.set_macs_per_row(mlp.MacsPerRow());
    Entry& e = entries[i];
    ASSIGN_OR_RETURN(e.fp32, CreateFp32Ranker(mlp));
    ASSIGN_OR_RETURN(GatedRanker gated, BuildGatedRanker(mlp, calibration, policy));
    e.served = std::move(gated.ranker);
    // The chain's form ("prune+int8", "mixed(...)"), not the kernel's kind ("int8").
    f.set_served_form(e.served->choice() != nullptr ? e.served->choice()->form : e.served->kind());
    ASSIGN_OR_RETURN(const std::vector<float> p, ScoreAll(*e.fp32, held_out.features, held_out.rows));
    ASSIGN_OR_RETURN(const std::vector<float> q, ScoreAll(*e.served, held_out.features, held_out.rows));
    f.set_auc(Auc(p, held_out.labels));
    f.set_logloss(LogLoss(p, held_out.labels));
    f.set_ndcg10(MeanGroupNdcg(p, held_out.labels, held_out.groups, 10));
    f.set_served_auc(Auc(q, held_out.labels));
    e.fp32_scratch = e.fp32->NewScratch();
    e.served_scratch = e.served->NewScratch();
  }
  int padded = 0;
  for (const Entry& e : entries) {
    padded = std::max({padded, e.fp32->PaddedRows(options.batch), e.served->PaddedRows(options.batch)});
  }
  std::vector<float> buffer(static_cast<size_t>(padded) * held_out.width), out(padded);
  int next_row = 0;
  // One untimed round first: page faults and oneDNN's first-call costs.
  for (int round = 0; round <= options.rounds; ++round) {
    for (Entry& e : entries) {
      const int start = next_row;
      const std::vector<int>& constant = policy.quantize.constant_columns;
      ASSIGN_OR_RETURN(const double f, TimeBatches(*e.fp32, e.fp32_scratch.get(), held_out, constant, options.batch,
                                                   options.batches_per_round, &next_row, &buffer, &out));
      next_row = start;  // the served form scores the very same rows
      ASSIGN_OR_RETURN(const double s, TimeBatches(*e.served, e.served_scratch.get(), held_out, constant,
                                                   options.batch, options.batches_per_round, &next_row, &buffer,
                                                   &out));
      if (round > 0) {
        e.fp32_seconds.push_back(f);
        e.served_seconds.push_back(s);
      }
    }
  }
  // The median round: a round the scheduler gave to another process (a shared machine)
  // moves a mean, not the median.
  const double candidates = static_cast<double>(options.batches_per_round) * std::min(options.batch, held_out.rows);
  auto median_ns = [candidates](std::vector<double>& seconds) {
    std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
    return 1e9 * seconds[seconds.size() / 2] / candidates;
  };
  for (size_t i = 0; i < entries.size(); ++i) {
    figures[i].set_fp32_ns_per_candidate(median_ns(entries[i].fp32_seconds));
    figures[i].set_served_ns_per_candidate(median_ns(entries[i].served_seconds));
  }
  return figures;
}

std::string FormatRankerTable(const std::vector<v1::RankerFigures>& rankers, const std::string& reference) {
  const v1::RankerFigures* ref = rankers.empty() ? nullptr : &rankers.front();
  for (const v1::RankerFigures& r : rankers) {
    if (r.name() == reference) ref = &r;
  }
  std::string out = absl::StrFormat("%-10s %-22s %9s %9s %7s %8s %7s %-22s %7s %9s %9s %7s\n", "ranker", "layers",
                                    "params", "MACs", "AUC", "logloss", "NDCG@10", "served form", "AUC",
                                    "fp32 ns", "served ns", "ratio");
  for (const v1::RankerFigures& r : rankers) {
    const double ratio = ref != nullptr && ref->served_ns_per_candidate() > 0
                             ? r.served_ns_per_candidate() / ref->served_ns_per_candidate()
                             : 0;
    absl::StrAppendFormat(&out, "%-10s %-22s %9d %9d %7.4f %8.5f %7.4f %-22s %7.4f %9.1f %9.1f %6.2fx\n", r.name(),
                          absl::StrJoin(r.layer_sizes(), "-"), r.parameters(), r.macs_per_row(), r.auc(),
                          r.logloss(), r.ndcg10(), r.served_form(), r.served_auc(), r.fp32_ns_per_candidate(),
                          r.served_ns_per_candidate(), ratio);
  }
  return out;
}

std::string FormatDistillationReport(const v1::DistillationReport& report) {
  std::string out = absl::StrFormat(
      "distillation: teacher %s, alpha %.2f, temperature %.1f; on %d held-out rows (%s); median ranking time per candidate "
      "in batches of 256 (%d OpenMP thread(s), oneDNN ISA %s), ratio = served time / the student's\n",
      report.teacher(), report.alpha(), report.temperature(), report.held_out_rows(), report.held_out(),
      report.threads(), report.cpu_isa());
  absl::StrAppend(&out, FormatRankerTable({report.rankers().begin(), report.rankers().end()}, "student"));
  return out;
}

}  // namespace recserve
