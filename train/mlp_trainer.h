// Trains the ranking MLP (engine/mlp.h) on dense feature rows: ReLU hidden layers, one
// sigmoid output, binary cross-entropy, mini-batch Adam, early stopping on validation
// logloss. DistillMlp trains the same way on hard labels plus a teacher's soft labels
// (knowledge distillation, Hinton et al. 2015, for one sigmoid output).
//
// Contract:
//  - Inputs are raw feature rows [n x input_dim] row-major and 0/1 labels. The trainer
//    standardises every column internally (mean and standard deviation over the
//    training rows; a column whose deviation is below 1e-6 is only centred), because
//    Adam with one learning rate for every weight copes badly with columns on very
//    different scales. At the end the standardisation is folded into the first
//    layer (W' = W / std, b' = b - W' * mean), so the returned Mlp takes RAW rows and
//    needs no separate preprocessing step: ReferenceScore(mlp, raw_rows) reproduces the
//    trainer's own predictions (MlpTrainReport::val_predictions) up to float rounding.
//    That rounding grows with |mean| / std of a column: a feature stored as, say, a raw
//    timestamp should be shifted by the caller first.
//  - The returned Mlp has the weights of the epoch with the lowest validation logloss,
//    not those of the last epoch, and passes ValidateMlp.
//  - Matrix products run on oneDNN's sgemm (OpenMP threads, OMP_NUM_THREADS); the rest
//    are plain loops. With the same inputs, options and OMP_NUM_THREADS=1 the result is
//    bit-identical from run to run; with more threads sgemm may sum in a different
//    order, so results can differ in the last bits.
//  - Errors come back as absl::Status (InvalidArgument naming the bad size, value or
//    option; Internal for a oneDNN failure; ResourceExhausted when memory runs out);
//    no exception escapes.
//  - Thread-safety: TrainMlp is a pure function of its arguments; concurrent calls are
//    safe but share the machine's cores through OpenMP.
#ifndef RECSERVE_TRAIN_MLP_TRAINER_H_
#define RECSERVE_TRAIN_MLP_TRAINER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/mlp.h"

namespace recserve {

struct MlpTrainOptions {
  // Widths of the ReLU hidden layers, input side first. Empty trains a logistic
  // regression (one [1 x input_dim] layer). Each width must be in [1, 65536].
  std::vector<int> hidden = {256, 128, 64};
  // Rows per Adam step; the last batch of an epoch may be smaller. Must be >= 1.
  int batch_size = 512;
  // Adam step size (beta1 = 0.9, beta2 = 0.999, eps = 1e-8, bias-corrected). > 0.
  float learning_rate = 1e-3f;
  // Decoupled weight decay (AdamW): each step multiplies every weight (not the biases)
  // by (1 - learning_rate * weight_decay), outside the Adam moments. Applied to the
  // weights of the standardised problem, i.e. before folding. 0 = off. Must be >= 0.
  float weight_decay = 0.0f;
  // Upper bound on passes over the training rows. Must be >= 1.
  int max_epochs = 30;
  // Stop after this many consecutive epochs without a lower validation logloss than
  // the best so far; the best epoch's weights are returned either way. 0 disables
  // early stopping (all max_epochs run). Must be >= 0.
  int patience = 3;
  // Seeds the He (Kaiming) initialisation and the per-epoch shuffles.
  uint64_t seed = 1;
  // One line per epoch on stderr: epoch, mean train loss, validation logloss and AUC,
  // seconds, training rows/s.
  bool verbose = true;
};

struct MlpTrainReport {
  int epochs = 0;               // epochs actually run
  int best_epoch = 0;           // 1-based epoch whose weights were returned
  double best_val_logloss = 0;  // validation logloss of the returned weights
  double best_val_auc = 0;      // validation AUC of the returned weights
  double seconds = 0;           // wall time of the whole call
  // Validation logloss after each epoch run (size == epochs).
  std::vector<double> val_logloss_history;
  // Validation probabilities of the returned weights, from the trainer's own forward
  // pass (standardise, then the unfolded weights through sgemm): what
  // ReferenceScore(returned mlp, val_rows) should reproduce.
  std::vector<float> val_predictions;
};

// Trains an Mlp of shape input_dim -> options.hidden... -> 1 (sigmoid).
// `rows` is [num_rows x input_dim] row-major with `labels` of num_rows values in {0, 1};
// `val_rows` / `val_labels` likewise with num_val >= 1 rows (validation drives early
// stopping and the choice of the returned weights). All values must be finite.
// `report` may be null.
absl::StatusOr<Mlp> TrainMlp(absl::Span<const float> rows, absl::Span<const float> labels,
                             int num_rows, int input_dim, absl::Span<const float> val_rows,
                             absl::Span<const float> val_labels, int num_val,
                             const MlpTrainOptions& options, MlpTrainReport* report);

// Knowledge distillation: per training row, besides its 0/1 label, a teacher's logit t.
// With student logit z, temperature T and weight alpha the row's loss is
//   (1 - alpha) * BCE(y, sigmoid(z)) + alpha * T^2 * BCE(sigmoid(t / T), sigmoid(z / T)),
// BCE(p, q) = -p log q - (1 - p) log(1 - q): the soft-label term is the cross-entropy of
// the student's softened probability against the teacher's. T^2 keeps its gradient,
// alpha * T * (sigmoid(z / T) - sigmoid(t / T)), on the scale of the hard term's as T
// grows. Validation (early stopping, the returned weights, the report) stays on the hard
// labels: the student is judged on clicks, not on agreeing with its teacher.
struct Distillation {
  // One teacher logit (pre-sigmoid) per training row; all finite.
  absl::Span<const float> teacher_logits;
  // Weight of the soft-label term, in [0, 1]. 0 trains on the hard labels alone, and
  // then exactly as TrainMlp does (the same weights for the same seed).
  float alpha = 0.5f;
  // Softens both distributions; in [1, 100]. 1 = the teacher's own probabilities.
  float temperature = 2.0f;
};

// TrainMlp with the loss above. InvalidArgument when teacher_logits does not hold
// num_rows finite values or alpha / temperature are out of range.
absl::StatusOr<Mlp> DistillMlp(absl::Span<const float> rows, absl::Span<const float> labels,
                               int num_rows, int input_dim, absl::Span<const float> val_rows,
                               absl::Span<const float> val_labels, int num_val,
                               const Distillation& distillation, const MlpTrainOptions& options,
                               MlpTrainReport* report);

// Pre-sigmoid outputs of `mlp` for raw `rows` [n x input_dim], through the trainer's own
// forward pass (sgemm): a teacher's logits exactly, where sigmoid(probability) would lose
// them to rounding once a probability is within 1e-7 of 0 or 1.
absl::StatusOr<std::vector<float>> MlpLogits(const Mlp& mlp, absl::Span<const float> rows, int n);

// The mean training loss over `rows` (raw, not standardised) and its gradient with respect
// to every weight and bias of `mlp`, from the forward and backward passes the trainer
// steps with: what finite differences of the loss must reproduce. `distillation` may be
// null (plain BCE). `gradient` receives one DenseLayer per layer of `mlp`, same shapes.
absl::StatusOr<double> MlpLossAndGradient(const Mlp& mlp, absl::Span<const float> rows,
                                          absl::Span<const float> labels, int n,
                                          const Distillation* distillation,
                                          std::vector<DenseLayer>* gradient);

// One network whose logit is the mean of the members' logits: the members side by side,
// each layer's weight block-diagonal across members (the first layer's blocks share the
// input, so they are stacked), the output layer the members' output rows scaled by
// 1 / members. It runs every member in one pass at the cost of one network of the summed
// widths, and its sigmoid is the members' geometric-mean odds. The members must take the
// same input and have the same depth; returns InvalidArgument naming the first mismatch.
absl::StatusOr<Mlp> CombineMlps(absl::Span<const Mlp> members);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_MLP_TRAINER_H_
