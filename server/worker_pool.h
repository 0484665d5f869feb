// A fixed pool of request worker threads. gRPC's callback threads hand each Recommend
// to this pool, so the number of threads doing engine work is a flag, each worker keeps
// its own engine scratch (thread_local) for its whole life, and oneDNN runs one thread
// per worker (OpenMP set to 1 on each).
//
// Thread-safe. Tasks run in FIFO order; Stop() runs what is queued, then joins.
#ifndef RECSERVE_SERVER_WORKER_POOL_H_
#define RECSERVE_SERVER_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "server/sync.h"

namespace recserve {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();
  // False once Stop() has begun (the task is not run).
  bool Submit(std::function<void()> task) ABSL_LOCKS_EXCLUDED(mu_);
  // Runs what is queued, then joins the workers. Idempotent; concurrent calls each
  // return once the workers are joined.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_, join_mu_);
  // Runs `fn` once on every worker thread (each holds until all have run it, so no
  // worker runs it twice) and returns when all have; false if stopping.
  bool RunOnEveryWorker(const std::function<void()>& fn) ABSL_LOCKS_EXCLUDED(mu_);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  // A leaf: tasks run outside it, and no caller holds another lock of ours.
  Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Serializes Stop's joins (a thread is joined once); taken before mu_, never inside it.
  Mutex join_mu_;
  std::vector<std::thread> threads_;  // joined under join_mu_
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_WORKER_POOL_H_
