#include "server/worker_pool.h"

#include <omp.h>

#include <memory>

#include "server/sync.h"

namespace recserve {

WorkerPool::WorkerPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

WorkerPool::~WorkerPool() { Stop(); }

bool WorkerPool::Submit(std::function<void()> task) {
  MutexLock lock(&mu_);
  if (stop_) return false;
  queue_.push_back(std::move(task));
  return true;
}

bool WorkerPool::RunOnEveryWorker(const std::function<void()>& fn) {
  const int n = size();
  // Shared by every task: a worker may still be inside WaitForNotification after this
  // function returns, so the synchronization objects live until the last task ends.
  struct Rendezvous {
    explicit Rendezvous(int n) : ran(n) {}
    BlockingCounter ran;
    Notification release;
  };
  auto rendezvous = std::make_shared<Rendezvous>(n);
  int queued = 0;
  for (; queued < n; ++queued) {
    const bool ok = Submit([rendezvous, &fn] {
      fn();
      rendezvous->ran.DecrementCount();
      rendezvous->release.WaitForNotification();
    });
    if (!ok) break;
  }
  // Stopping: the workers still drain what was queued; count the rest as done.
  for (int i = queued; i < n; ++i) rendezvous->ran.DecrementCount();
  rendezvous->ran.Wait();
  rendezvous->release.Notify();
  return queued == n;
}

void WorkerPool::Stop() {
  MutexLock join_lock(&join_mu_);
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void WorkerPool::Run() {
  // One oneDNN/OpenMP thread per worker: parallelism comes from the workers.
  omp_set_num_threads(1);
  while (true) {
    std::function<void()> task;
    {
      MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace recserve
