// Pruning of the ranking MLP, applied when a model version is loaded.
//
// Unstructured magnitude pruning zeroes the smallest |w| to a target sparsity. It
// shrinks the stored model (zeros compress) but not dense compute: the int8 kernels
// multiply zeros as fast as anything else. Structured pruning removes whole hidden
// neurons and shrinks the layers, which is what makes dense kernels faster.
#ifndef RECSERVE_COMPRESSION_PRUNE_H_
#define RECSERVE_COMPRESSION_PRUNE_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/bundle.h"
#include "engine/mlp.h"

namespace recserve {

struct MagnitudePruneOptions {
  // Fraction of weights to zero in each pruned layer, in [0, 1).
  float sparsity = 0.5f;
  // If non-empty, one sparsity per layer (overrides `sparsity`).
  std::vector<float> per_layer;
  // One threshold over all pruned layers instead of one per layer.
  bool global = false;
  // Leave the output layer dense (it is tiny and every weight in it matters).
  bool keep_output_dense = true;
  // If set (rows of the MLP's input width), pruning is activation-aware: a weight's
  // importance is |w| times the RMS of its input over these rows, so raw-scale input
  // columns are judged by what they contribute; and each channel's bias absorbs the
  // mean contribution of the weights it lost. Not owned.
  const CalibrationSet* calibration = nullptr;
};

// Zeroes weights in place. Returns the fraction of zero weights over the whole MLP.
absl::StatusOr<double> MagnitudePrune(Mlp* mlp, const MagnitudePruneOptions& options);

struct StructuredPruneOptions {
  // Fraction of each hidden layer's neurons to remove, in [0, 1).
  float ratio = 0.3f;
  // Kept widths are rounded up to a multiple of this (kernels like 16 or 64); 1 = exact.
  int multiple = 16;
};

// Removes the hidden neurons of least importance (L2 norm of the incoming weights times
// L2 norm of the outgoing weights), shrinking each hidden layer and the next layer's
// inputs. The function computed on the kept neurons is unchanged.
absl::Status StructuredPrune(Mlp* mlp, const StructuredPruneOptions& options);

// Fraction of exactly-zero weights over all layers.
double Sparsity(const Mlp& mlp);

}  // namespace recserve

#endif  // RECSERVE_COMPRESSION_PRUNE_H_
