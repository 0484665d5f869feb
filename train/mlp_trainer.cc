#include "train/mlp_trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <new>
#include <numeric>
#include <random>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "engine/quality.h"
#include "engine/status_macros.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace recserve {
namespace {

constexpr float kBeta1 = 0.9f;
constexpr float kBeta2 = 0.999f;
constexpr float kAdamEpsilon = 1e-8f;
// Below this a column is treated as constant: dividing by a tiny deviation would turn
// rounding noise into huge standardised values.
constexpr double kMinStd = 1e-6;
// Matches ValidateMlp's shape limit so that whatever we train also validates.
constexpr int kMaxWidth = 1 << 16;
// Rows per forward pass when scoring the validation set; large enough that sgemm runs
// at full speed, small enough that activations stay cache- and memory-friendly.
constexpr int kMinEvalBatch = 1024;

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Row-major C[M x N] = op(A) * op(B) + beta * C through oneDNN; a failure (bad
// dimensions, no memory for packing) becomes a Status instead of garbage output.
absl::Status Sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl::status s = dnnl::sgemm(transa, transb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
  if (s != dnnl::status::success) {
    return absl::InternalError(
        absl::StrFormat("oneDNN sgemm(%c%c, M=%d, N=%d, K=%d) failed with status %d", transa,
                        transb, m, n, k, static_cast<int>(s)));
  }
  return absl::OkStatus();
}

// Every value finite; names the first offender by row and column.
absl::Status CheckFinite(absl::Span<const float> values, int cols, const char* what) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: value at row %d, column %d is %f (must be finite)", what, i / cols,
                          i % cols, values[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLabels(absl::Span<const float> labels, const char* what) {
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0.0f && labels[i] != 1.0f) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s[%d] is %f; labels must be 0 or 1", what, i, labels[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckShape(absl::Span<const float> rows, absl::Span<const float> labels, int num_rows,
                        int input_dim, const char* rows_name, const char* labels_name,
                        const char* count_name) {
  if (num_rows < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is %d; need at least one row", count_name, num_rows));
  }
  const uint64_t want = static_cast<uint64_t>(num_rows) * static_cast<uint64_t>(input_dim);
  if (rows.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has %d values, want %s (%d) x input_dim (%d) = %d", rows_name,
                        rows.size(), count_name, num_rows, input_dim, want));
  }
  if (labels.size() != static_cast<size_t>(num_rows)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s has %d values, want %s = %d", labels_name,
                                                      labels.size(), count_name, num_rows));
  }
  return absl::OkStatus();
}

absl::Status CheckOptions(const MlpTrainOptions& o) {
  for (size_t i = 0; i < o.hidden.size(); ++i) {
    if (o.hidden[i] < 1 || o.hidden[i] > kMaxWidth) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "options.hidden[%d] is %d; widths must be in [1, %d]", i, o.hidden[i], kMaxWidth));
    }
  }
  if (o.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.batch_size is %d; must be >= 1", o.batch_size));
  }
  if (!(o.learning_rate > 0) || !std::isfinite(o.learning_rate)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.learning_rate is %f; must be finite and > 0", o.learning_rate));
  }
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.weight_decay is %f; must be finite and >= 0", o.weight_decay));
  }
  if (o.max_epochs < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.max_epochs is %d; must be >= 1", o.max_epochs));
  }
  if (o.patience < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("options.patience is %d; must be >= 0", o.patience));
  }
  return absl::OkStatus();
}

// Per-column affine map x -> (x - mean) * inv_std, fitted on the training rows.
struct Standardizer {
  std::vector<float> mean;
  std::vector<float> inv_std;

  static Standardizer Fit(absl::Span<const float> rows, int n, int d) {
    // Two passes in double: the one-pass formula loses everything when mean >> std.
    std::vector<double> sum(d, 0.0), sq(d, 0.0);
    for (int r = 0; r < n; ++r) {
      const float* x = rows.data() + static_cast<size_t>(r) * d;
      for (int j = 0; j < d; ++j) sum[j] += x[j];
    }
    for (int j = 0; j < d; ++j) sum[j] /= n;
    for (int r = 0; r < n; ++r) {
      const float* x = rows.data() + static_cast<size_t>(r) * d;
      for (int j = 0; j < d; ++j) {
        const double c = x[j] - sum[j];
        sq[j] += c * c;
      }
    }
    Standardizer s;
    s.mean.resize(d);
    s.inv_std.resize(d);
    for (int j = 0; j < d; ++j) {
      const double stddev = std::sqrt(sq[j] / n);
      s.mean[j] = static_cast<float>(sum[j]);
      s.inv_std[j] = static_cast<float>(stddev < kMinStd ? 1.0 : 1.0 / stddev);
    }
    return s;
  }

  // Writes the standardised copies of rows[index[0..count)] into `out` [count x d].
  void Gather(const float* rows, int d, const int* index, int count, float* out) const {
#pragma omp parallel for if (static_cast <int64_t>(count) * d > (1 << 16))
    for (int i = 0; i < count; ++i) {
      // Shuffled rows are scattered over the whole training set: fetch a few ahead.
      if (i + 4 < count) __builtin_prefetch(rows + static_cast<size_t>(index[i + 4]) * d);
      const float* x = rows + static_cast<size_t>(index[i]) * d;
      float* y = out + static_cast<size_t>(i) * d;
      for (int j = 0; j < d; ++j) y[j] = (x[j] - mean[j]) * inv_std[j];
    }
  }
};

// BCE(p, sigmoid(z)) via softplus, so that large |z| neither overflows nor rounds to
// log(0): -p log sigmoid(z) - (1 - p) log(1 - sigmoid(z)) = softplus(z) - p * z, whose
// derivative in z is sigmoid(z) - p.
double CrossEntropyOfLogit(float z, float p) {
  const double softplus = std::max(z, 0.0f) + std::log1p(std::exp(-std::fabs(static_cast<double>(z))));
  return softplus - static_cast<double>(p) * z;
}

// Adam moments and the latest gradient of one layer, shaped like the layer.
struct LayerOptimizerState {
  std::vector<float> grad_weight, grad_bias;
  std::vector<float> m_weight, v_weight, m_bias, v_bias;

  explicit LayerOptimizerState(const DenseLayer& l)
      : grad_weight(l.weight.size(), 0.0f),
        grad_bias(l.bias.size(), 0.0f),
        m_weight(l.weight.size(), 0.0f),
        v_weight(l.weight.size(), 0.0f),
        m_bias(l.bias.size(), 0.0f),
        v_bias(l.bias.size(), 0.0f) {}
};

void AdamUpdate(float* param, const float* grad, float* m, float* v, size_t n, float step,
                float v_correction, float decay_factor) {
#pragma omp parallel for if (n > (1 << 15))
  for (size_t i = 0; i < n; ++i) {
    const float g = grad[i];
    m[i] = kBeta1 * m[i] + (1.0f - kBeta1) * g;
    v[i] = kBeta2 * v[i] + (1.0f - kBeta2) * g * g;
    // Decoupled decay (AdamW): shrink, then take the Adam step on the moments.
    param[i] =
        param[i] * decay_factor - step * m[i] / (std::sqrt(v[i] * v_correction) + kAdamEpsilon);
  }
}

// Activation buffers for forward and backward passes of up to `capacity` rows, allocated
// once so that no step allocates.
class Workspace {
 public:
  Workspace(const Mlp& net, int capacity) : capacity_(capacity) {
    const size_t cap = static_cast<size_t>(capacity);
    activations_.emplace_back(cap * net.input_dim());
    size_t widest = net.input_dim();
    for (const DenseLayer& l : net.layers) {
      activations_.emplace_back(cap * l.out);
      widest = std::max<size_t>(widest, l.out);
    }
    delta_.resize(cap * widest);
    delta_prev_.resize(cap * widest);
    ones_.assign(cap, 1.0f);
  }

  int capacity() const { return capacity_; }
  float* input() { return activations_.front().data(); }
  // Pre-sigmoid outputs of the last Forward, one per row.
  const float* logits() const { return activations_.back().data(); }

  // Runs `batch` rows already standardised into input() through `net`.
  absl::Status Forward(const Mlp& net, int batch) {
    for (size_t li = 0; li < net.layers.size(); ++li) {
      const DenseLayer& l = net.layers[li];
      const float* x = activations_[li].data();
      float* y = activations_[li + 1].data();
      // y[B x out] = x[B x in] * W^T, W stored [out x in].
      RETURN_IF_ERROR(
          Sgemm('N', 'T', batch, l.out, l.in, x, l.in, l.weight.data(), l.in, 0.0f, y, l.out));
      const float* b = l.bias.data();
      const int out = l.out;
      const bool relu = l.relu;
#pragma omp parallel for if (static_cast <int64_t>(batch) * out > (1 << 16))
      for (int r = 0; r < batch; ++r) {
        float* row = y + static_cast<size_t>(r) * out;
        if (relu) {
          for (int o = 0; o < out; ++o) row[o] = std::max(row[o] + b[o], 0.0f);
        } else {
          for (int o = 0; o < out; ++o) row[o] += b[o];
        }
      }
    }
    return absl::OkStatus();
  }

  // After Forward on the same rows: the mean loss of the batch against `labels` (and,
  // when `soft` is not null, against the teacher's softened probabilities soft[r] =
  // sigmoid(t_r / T): the Distillation loss), and the gradients of that mean in `state`.
  absl::StatusOr<double> Backward(const Mlp& net, int batch, const float* labels, const float* soft,
                                  float alpha, float temperature,
                                  std::vector<LayerOptimizerState>& state) {
    const float* z = logits();
    double loss = 0;
    const float inv_batch = 1.0f / static_cast<float>(batch);
    for (int r = 0; r < batch; ++r) {
      const float zr = z[r];
      double row_loss = CrossEntropyOfLogit(zr, labels[r]);
      float dz = Sigmoid(zr) - labels[r];
      if (soft != nullptr) {
        // d/dz of T^2 * BCE(q, sigmoid(z / T)) is T * (sigmoid(z / T) - q).
        const float zt = zr / temperature;
        row_loss = (1.0 - alpha) * row_loss +
                   static_cast<double>(alpha) * temperature * temperature * CrossEntropyOfLogit(zt, soft[r]);
        dz = (1.0f - alpha) * dz + alpha * temperature * (Sigmoid(zt) - soft[r]);
      }
      loss += row_loss;
      delta_[r] = dz * inv_batch;
    }
    for (size_t li = net.layers.size(); li-- > 0;) {
      const DenseLayer& l = net.layers[li];
      LayerOptimizerState& s = state[li];
      const float* x = activations_[li].data();
      // dW[out x in] = delta^T[out x B] * x[B x in].
      RETURN_IF_ERROR(Sgemm('T', 'N', l.out, l.in, batch, delta_.data(), l.out, x, l.in, 0.0f,
                            s.grad_weight.data(), l.in));
      // Bias gradient: column sums of delta, as ones[1 x B] * delta[B x out] (a plain
      // loop here cost more than the weight-gradient product).
      RETURN_IF_ERROR(Sgemm('N', 'N', 1, l.out, batch, ones_.data(), batch, delta_.data(), l.out,
                            0.0f, s.grad_bias.data(), l.out));
      if (li == 0) break;  // no gradient needed for the input rows
      // d x[B x in] = delta[B x out] * W[out x in], then through the previous ReLU:
      // x > 0 exactly where the ReLU passed its input.
      RETURN_IF_ERROR(Sgemm('N', 'N', batch, l.in, l.out, delta_.data(), l.out, l.weight.data(),
                            l.in, 0.0f, delta_prev_.data(), l.in));
      const size_t n = static_cast<size_t>(batch) * l.in;
      float* dp = delta_prev_.data();
#pragma omp parallel for if (n > (1 << 16))
      for (size_t i = 0; i < n; ++i) {
        // A select, not a branch: the sign pattern is random, so a branch mispredicts
        // about half the time, and the select vectorises.
        dp[i] = x[i] > 0.0f ? dp[i] : 0.0f;
      }
      delta_.swap(delta_prev_);
    }
    return loss / batch;
  }

 private:
  int capacity_;
  std::vector<std::vector<float>> activations_;  // [0] = input, [i + 1] = layer i output
  std::vector<float> delta_, delta_prev_;        // gradient w.r.t. a layer's output
  std::vector<float> ones_;                      // capacity ones, for bias gradients
};

// Probabilities for raw `rows` [n x d]: the trainer's own inference path.
absl::Status Predict(const Mlp& net, const Standardizer& standardizer, const float* rows, int n,
                     Workspace& ws, std::vector<int>& index, float* probabilities) {
  const int d = net.input_dim();
  for (int start = 0; start < n; start += ws.capacity()) {
    const int count = std::min(ws.capacity(), n - start);
    index.resize(count);
    std::iota(index.begin(), index.end(), start);
    standardizer.Gather(rows, d, index.data(), count, ws.input());
    RETURN_IF_ERROR(ws.Forward(net, count));
    const float* z = ws.logits();
    for (int i = 0; i < count; ++i) probabilities[start + i] = Sigmoid(z[i]);
  }
  return absl::OkStatus();
}

Mlp InitialNetwork(int input_dim, const std::vector<int>& hidden, double positive_rate,
                   std::mt19937_64& rng) {
  Mlp net;
  int in = input_dim;
  for (size_t i = 0; i <= hidden.size(); ++i) {
    const bool last = i == hidden.size();
    DenseLayer l;
    l.in = in;
    l.out = last ? 1 : hidden[i];
    l.relu = !last;
    // He (Kaiming) normal for layers feeding a ReLU keeps activation variance steady
    // through depth; the output layer has no ReLU, so gain 1 (LeCun) instead of 2.
    const float stddev = static_cast<float>(std::sqrt((last ? 1.0 : 2.0) / in));
    l.weight.resize(static_cast<size_t>(l.in) * l.out);
    for (float& w : l.weight) w = absl::Gaussian<float>(rng, 0.0f, stddev);
    l.bias.assign(l.out, 0.0f);
    if (last) {
      // Start at the base rate's log-odds: with rare positives (CTR of a few percent) a
      // zero bias would spend the first steps learning only the mean.
      const double p = std::clamp(positive_rate, 1e-4, 1 - 1e-4);
      l.bias[0] = static_cast<float>(std::log(p / (1 - p)));
    }
    net.layers.push_back(std::move(l));
    in = last ? 1 : hidden[i];
  }
  return net;
}

// Rewrites the first layer so that it takes raw rows: W (x - mean) * inv_std + b ==
// (W * inv_std) x + (b - sum_j W_j * inv_std_j * mean_j).
void FoldStandardization(const Standardizer& s, Mlp& net) {
  DenseLayer& l = net.layers.front();
  for (int o = 0; o < l.out; ++o) {
    float* w = l.weight.data() + static_cast<size_t>(o) * l.in;
    double shift = 0;
    for (int j = 0; j < l.in; ++j) {
      const double scaled = static_cast<double>(w[j]) * s.inv_std[j];
      shift += scaled * s.mean[j];
      w[j] = static_cast<float>(scaled);
    }
    l.bias[o] = static_cast<float>(l.bias[o] - shift);
  }
}

absl::Status CheckDistillation(const Distillation& d, int num_rows) {
  if (d.teacher_logits.size() != static_cast<size_t>(num_rows)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "distillation: %d teacher logits for %d training rows; need one per row", d.teacher_logits.size(), num_rows));
  }
  if (!(d.alpha >= 0 && d.alpha <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat("distillation: alpha is %f; must be in [0, 1]", d.alpha));
  }
  if (!(d.temperature >= 1 && d.temperature <= 100)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("distillation: temperature is %f; must be in [1, 100]", d.temperature));
  }
  return CheckFinite(d.teacher_logits, 1, "distillation: teacher_logits");
}

// `distillation` null: plain BCE.
absl::StatusOr<Mlp> TrainMlpImpl(absl::Span<const float> rows, absl::Span<const float> labels,
                                 int num_rows, int input_dim, absl::Span<const float> val_rows,
                                 absl::Span<const float> val_labels, int num_val,
                                 const Distillation* distillation, const MlpTrainOptions& options,
                                 MlpTrainReport* report) {
  const Clock::time_point start = Clock::now();
  if (input_dim < 1 || input_dim > kMaxWidth) {
    return absl::InvalidArgumentError(
        absl::StrFormat("input_dim is %d; must be in [1, %d]", input_dim, kMaxWidth));
  }
  RETURN_IF_ERROR(CheckShape(rows, labels, num_rows, input_dim, "rows", "labels", "num_rows"));
  RETURN_IF_ERROR(
      CheckShape(val_rows, val_labels, num_val, input_dim, "val_rows", "val_labels", "num_val"));
  RETURN_IF_ERROR(CheckOptions(options));
  RETURN_IF_ERROR(CheckFinite(rows, input_dim, "rows"));
  RETURN_IF_ERROR(CheckFinite(val_rows, input_dim, "val_rows"));
  RETURN_IF_ERROR(CheckLabels(labels, "labels"));
  RETURN_IF_ERROR(CheckLabels(val_labels, "val_labels"));
  // The teacher's softened probabilities, sigmoid(t / T), once per row.
  std::vector<float> soft_targets;
  float alpha = 0, temperature = 1;
  if (distillation != nullptr) {
    RETURN_IF_ERROR(CheckDistillation(*distillation, num_rows));
    alpha = distillation->alpha;
    temperature = distillation->temperature;
    soft_targets.resize(num_rows);
    for (int r = 0; r < num_rows; ++r) soft_targets[r] = Sigmoid(distillation->teacher_logits[r] / temperature);
  }

  const Standardizer standardizer = Standardizer::Fit(rows, num_rows, input_dim);
  std::mt19937_64 rng(options.seed);
  const double positive_rate =
      std::accumulate(labels.begin(), labels.end(), 0.0) / static_cast<double>(num_rows);
  Mlp net = InitialNetwork(input_dim, options.hidden, positive_rate, rng);
  std::vector<LayerOptimizerState> state;
  for (const DenseLayer& l : net.layers) state.emplace_back(l);

  const int batch_size = std::min(options.batch_size, num_rows);
  Workspace train_ws(net, batch_size);
  Workspace eval_ws(net, std::max(batch_size, std::min(num_val, kMinEvalBatch)));
  std::vector<int> order(num_rows);
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> batch_labels(batch_size);
  std::vector<float> batch_soft(distillation != nullptr ? batch_size : 0);
  std::vector<int> eval_index;
  std::vector<float> val_probs(num_val);

  MlpTrainReport rep;
  Mlp best = net;
  rep.best_val_logloss = INFINITY;
  int epochs_without_improvement = 0;
  int64_t adam_steps = 0;
  const float decay_factor = 1.0f - options.learning_rate * options.weight_decay;

  for (int epoch = 1; epoch <= options.max_epochs; ++epoch) {
    const Clock::time_point epoch_start = Clock::now();
    // Fisher-Yates by hand: std::shuffle's algorithm is implementation-defined, and
    // the seed must pin the order.
    for (int i = num_rows - 1; i > 0; --i) {
      std::swap(order[i], order[absl::Uniform<int>(absl::IntervalClosed, rng, 0, i)]);
    }
    double loss_sum = 0;
    for (int begin = 0; begin < num_rows; begin += batch_size) {
      const int count = std::min(batch_size, num_rows - begin);
      standardizer.Gather(rows.data(), input_dim, order.data() + begin, count, train_ws.input());
      for (int i = 0; i < count; ++i) batch_labels[i] = labels[order[begin + i]];
      if (!batch_soft.empty()) {
        for (int i = 0; i < count; ++i) batch_soft[i] = soft_targets[order[begin + i]];
      }
      RETURN_IF_ERROR(train_ws.Forward(net, count));
      ASSIGN_OR_RETURN(const double batch_loss,
                       train_ws.Backward(net, count, batch_labels.data(),
                                         batch_soft.empty() ? nullptr : batch_soft.data(), alpha,
                                         temperature, state));
      loss_sum += batch_loss * count;

      ++adam_steps;
      // Bias correction folded into the step size and the v scale.
      const double bc1 = 1.0 - std::pow(static_cast<double>(kBeta1), adam_steps);
      const double bc2 = 1.0 - std::pow(static_cast<double>(kBeta2), adam_steps);
      const float step = static_cast<float>(options.learning_rate / bc1);
      const float v_correction = static_cast<float>(1.0 / bc2);
      for (size_t li = 0; li < net.layers.size(); ++li) {
        DenseLayer& l = net.layers[li];
        LayerOptimizerState& s = state[li];
        AdamUpdate(l.weight.data(), s.grad_weight.data(), s.m_weight.data(), s.v_weight.data(),
                   l.weight.size(), step, v_correction, decay_factor);
        AdamUpdate(l.bias.data(), s.grad_bias.data(), s.m_bias.data(), s.v_bias.data(),
                   l.bias.size(), step, v_correction, 1.0f);
      }
    }
    const double train_seconds = SecondsSince(epoch_start);

    RETURN_IF_ERROR(Predict(net, standardizer, val_rows.data(), num_val, eval_ws, eval_index,
                            val_probs.data()));
    const double val_logloss = LogLoss(val_probs, val_labels);
    const double val_auc = Auc(val_probs, val_labels);
    if (!std::isfinite(loss_sum)) {
      return absl::InternalError(absl::StrFormat(
          "training diverged in epoch %d (non-finite loss); lower options.learning_rate "
          "(now %g)",
          epoch, options.learning_rate));
    }
    rep.epochs = epoch;
    rep.val_logloss_history.push_back(val_logloss);
    const bool improved = val_logloss < rep.best_val_logloss;
    if (improved) {
      rep.best_val_logloss = val_logloss;
      rep.best_val_auc = val_auc;
      rep.best_epoch = epoch;
      rep.val_predictions = val_probs;
      best = net;
      epochs_without_improvement = 0;
    } else {
      ++epochs_without_improvement;
    }
    if (options.verbose) {
      absl::FPrintF(stderr,
                    "mlp epoch %d/%d  train_loss %.5f  val_logloss %.5f  val_auc %.4f  %.2fs  "
                    "%.0f rows/s%s\n",
                    epoch, options.max_epochs, loss_sum / num_rows, val_logloss, val_auc,
                    SecondsSince(epoch_start), num_rows / std::max(train_seconds, 1e-9),
                    improved ? "  *best" : "");
    }
    if (options.patience > 0 && epochs_without_improvement >= options.patience) break;
  }

  if (rep.best_epoch == 0) {
    return absl::InternalError("no epoch produced a finite validation logloss");
  }
  FoldStandardization(standardizer, best);
  RETURN_IF_ERROR(ValidateMlp(best));
  rep.seconds = SecondsSince(start);
  if (options.verbose) {
    absl::FPrintF(stderr, "mlp: %d epochs, best epoch %d (val_logloss %.5f, val_auc %.4f), %.1fs\n",
                  rep.epochs, rep.best_epoch, rep.best_val_logloss, rep.best_val_auc, rep.seconds);
  }
  if (report != nullptr) *report = std::move(rep);
  return best;
}

// Runs `body`, turning what oneDNN and allocation throw into a Status: no exception may
// cross the module boundary.
template <typename Body>
auto Guarded(const char* what, int num_rows, int input_dim, Body body) -> decltype(body()) {
  try {
    return body();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrFormat("%s: oneDNN error (status %d): %s", what, e.status, e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: out of memory for %d rows x %d features", what, num_rows, input_dim));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrFormat("%s: %s", what, e.what()));
  }
}

}  // namespace

absl::StatusOr<Mlp> TrainMlp(absl::Span<const float> rows, absl::Span<const float> labels,
                             int num_rows, int input_dim, absl::Span<const float> val_rows,
                             absl::Span<const float> val_labels, int num_val,
                             const MlpTrainOptions& options, MlpTrainReport* report) {
  return Guarded("TrainMlp", num_rows, input_dim, [&] {
    return TrainMlpImpl(rows, labels, num_rows, input_dim, val_rows, val_labels, num_val, nullptr, options,
                        report);
  });
}

absl::StatusOr<Mlp> DistillMlp(absl::Span<const float> rows, absl::Span<const float> labels,
                               int num_rows, int input_dim, absl::Span<const float> val_rows,
                               absl::Span<const float> val_labels, int num_val,
                               const Distillation& distillation, const MlpTrainOptions& options,
                               MlpTrainReport* report) {
  return Guarded("DistillMlp", num_rows, input_dim, [&] {
    return TrainMlpImpl(rows, labels, num_rows, input_dim, val_rows, val_labels, num_val, &distillation,
                        options, report);
  });
}

absl::StatusOr<std::vector<float>> MlpLogits(const Mlp& mlp, absl::Span<const float> rows, int n) {
  RETURN_IF_ERROR(ValidateMlp(mlp));
  const int d = mlp.input_dim();
  if (n < 0 || rows.size() != static_cast<size_t>(n) * d) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MlpLogits: %d values are not %d rows of the network's input width %d", rows.size(), n, d));
  }
  return Guarded("MlpLogits", n, d, [&]() -> absl::StatusOr<std::vector<float>> {
    std::vector<float> logits(n);
    Workspace ws(mlp, std::max(1, std::min(n, kMinEvalBatch)));
    for (int start = 0; start < n; start += ws.capacity()) {
      const int count = std::min(ws.capacity(), n - start);
      std::copy_n(rows.data() + static_cast<size_t>(start) * d, static_cast<size_t>(count) * d, ws.input());
      RETURN_IF_ERROR(ws.Forward(mlp, count));
      std::copy_n(ws.logits(), count, logits.data() + start);
    }
    return logits;
  });
}

absl::StatusOr<double> MlpLossAndGradient(const Mlp& mlp, absl::Span<const float> rows,
                                          absl::Span<const float> labels, int n,
                                          const Distillation* distillation,
                                          std::vector<DenseLayer>* gradient) {
  RETURN_IF_ERROR(ValidateMlp(mlp));
  const int d = mlp.input_dim();
  RETURN_IF_ERROR(CheckShape(rows, labels, n, d, "rows", "labels", "n"));
  std::vector<float> soft;
  if (distillation != nullptr) {
    RETURN_IF_ERROR(CheckDistillation(*distillation, n));
    for (float t : distillation->teacher_logits) soft.push_back(Sigmoid(t / distillation->temperature));
  }
  return Guarded("MlpLossAndGradient", n, d, [&]() -> absl::StatusOr<double> {
    Workspace ws(mlp, n);
    std::vector<LayerOptimizerState> state;
    for (const DenseLayer& l : mlp.layers) state.emplace_back(l);
    std::copy(rows.begin(), rows.end(), ws.input());
    RETURN_IF_ERROR(ws.Forward(mlp, n));
    ASSIGN_OR_RETURN(const double loss,
                     ws.Backward(mlp, n, labels.data(), distillation != nullptr ? soft.data() : nullptr,
                                 distillation != nullptr ? distillation->alpha : 0.0f,
                                 distillation != nullptr ? distillation->temperature : 1.0f, state));
    gradient->clear();
    for (size_t li = 0; li < mlp.layers.size(); ++li) {
      DenseLayer g = mlp.layers[li];
      g.weight = std::move(state[li].grad_weight);
      g.bias = std::move(state[li].grad_bias);
      gradient->push_back(std::move(g));
    }
    return loss;
  });
}

absl::StatusOr<Mlp> CombineMlps(absl::Span<const Mlp> members) {
  if (members.empty()) return absl::InvalidArgumentError("CombineMlps: no members");
  const Mlp& first = members.front();
  for (size_t k = 0; k < members.size(); ++k) {
    RETURN_IF_ERROR(ValidateMlp(members[k]));
    if (members[k].layers.size() != first.layers.size() || members[k].input_dim() != first.input_dim()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "CombineMlps: member %d has %d layers and input %d; member 0 has %d and %d", k, members[k].layers.size(),
          members[k].input_dim(), first.layers.size(), first.input_dim()));
    }
  }
  if (members.size() == 1) return first;
  Mlp net;
  const size_t depth = first.layers.size();
  const float inv_members = 1.0f / static_cast<float>(members.size());
  for (size_t li = 0; li < depth; ++li) {
    const bool input_layer = li == 0, output_layer = li + 1 == depth;
    DenseLayer l;
    l.relu = first.layers[li].relu;
    l.in = input_layer ? first.input_dim() : 0;
    for (const Mlp& m : members) {
      if (!input_layer) l.in += m.layers[li].in;
      l.out += output_layer ? 0 : m.layers[li].out;
    }
    if (output_layer) l.out = 1;
    l.weight.assign(static_cast<size_t>(l.out) * l.in, 0.f);
    l.bias.assign(l.out, 0.f);
    int row = 0, col = 0;  // where the current member's block starts
    for (const Mlp& m : members) {
      const DenseLayer& src = m.layers[li];
      for (int o = 0; o < src.out; ++o) {
        const int r = output_layer ? 0 : row + o;
        const int c = input_layer ? 0 : col;
        const float scale = output_layer ? inv_members : 1.0f;
        for (int i = 0; i < src.in; ++i) {
          l.weight[static_cast<size_t>(r) * l.in + c + i] = scale * src.weight[static_cast<size_t>(o) * src.in + i];
        }
        l.bias[r] += scale * src.bias[o];
      }
      row += output_layer ? 0 : src.out;
      col += input_layer ? 0 : src.in;
    }
    net.layers.push_back(std::move(l));
  }
  RETURN_IF_ERROR(ValidateMlp(net));
  return net;
}

}  // namespace recserve
