// Item embeddings from behaviour sequences: skip-gram with negative sampling
// (word2vec's SGNS) where a "sentence" is one user's sequence of item indices.
//
// Contract:
//  - Items are dense indices in [0, num_items); anything else is refused with
//    InvalidArgument naming the sequence and position. Windows never cross sequence
//    boundaries.
//  - Returns the input ("center") vectors, [num_items x dim] row-major. Items that never
//    occur in `sequences` keep their initial vectors: small uniform random values in
//    [-0.5 / dim, 0.5 / dim), like every vector before training. They are noise, not
//    zero, so cosine similarities stay defined; callers that care should track which
//    items had any data.
//  - Determinism: with threads == 1 the result is a pure function of (sequences,
//    num_items, options) and bit-identical from run to run. With threads > 1 the
//    threads update shared vectors without locks (Hogwild!, as word2vec does); the
//    quality is the same but the bits depend on scheduling.
//  - Errors come back as absl::Status; no exception escapes.
//  - Thread-safety: a pure function; concurrent calls are independent.
#ifndef RECSERVE_TRAIN_ITEM2VEC_H_
#define RECSERVE_TRAIN_ITEM2VEC_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace recserve {

struct Item2VecOptions {
  // Embedding width, in [1, 4096].
  int dim = 32;
  // Maximum distance between center and context item. As in word2vec, each center
  // draws its actual window uniformly from [1, window], which weights near neighbours
  // more. Must be >= 1.
  int window = 5;
  // Negative samples per center position, drawn from the unigram distribution raised
  // to unigram_power (alias table, O(1) per draw). Unlike word2vec, which draws a fresh
  // set for every (center, context) pair, one set serves all context pairs of a center
  // (Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory"): it
  // touches several times fewer random rows, which are the cache misses that bound the
  // speed once the vectors outgrow L2. Must be >= 1.
  int negatives = 5;
  // Passes over all sequences. Must be >= 1.
  int epochs = 3;
  // Initial SGD step; decays linearly with the share of tokens processed down to
  // 1e-4 * learning_rate at the end. Must be > 0.
  float learning_rate = 0.025f;
  // Frequent-item subsampling threshold t (word2vec's -sample): an item with corpus
  // frequency f is kept with probability (sqrt(f / t) + 1) * t / f (capped at 1),
  // redrawn each epoch. 0 keeps every token. Must be >= 0.
  double subsample = 1e-4;
  // Exponent on item counts for the negative-sampling distribution; 0.75 is word2vec's,
  // 1 is plain popularity, 0 is uniform over the items that occur. Must be in [0, 4].
  double unigram_power = 0.75;
  // Worker threads, in [1, 256]. Above 1, Hogwild! (lock-free shared updates): faster,
  // but not bit-deterministic.
  int threads = 1;
  // Seeds initialisation, window sizes, subsampling and negative draws.
  uint64_t seed = 7;
  // On runs of at least 1M tokens x epochs, a line on stderr at every 10% of progress
  // (learning rate, tokens/s), and a summary line at the end of any run.
  bool verbose = true;
};

// Trains item vectors on `sequences` (each a list of item indices in [0, num_items))
// and returns the center vectors [num_items x options.dim] row-major.
absl::StatusOr<std::vector<float>> TrainItem2Vec(const std::vector<std::vector<int32_t>>& sequences,
                                                 int num_items, const Item2VecOptions& options);

}  // namespace recserve

#endif  // RECSERVE_TRAIN_ITEM2VEC_H_
