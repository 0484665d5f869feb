#include "server/worker_pool.h"

#include <omp.h>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"

namespace recserve {

WorkerPool::WorkerPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

WorkerPool::~WorkerPool() { Stop(); }

bool WorkerPool::Submit(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stop_) return false;
  queue_.push_back(std::move(task));
  return true;
}

bool WorkerPool::RunOnEveryWorker(const std::function<void()>& fn) {
  const int n = size();
  absl::BlockingCounter ran(n);
  absl::Notification release;
  for (int i = 0; i < n; ++i) {
    const bool queued = Submit([&] {
      fn();
      ran.DecrementCount();
      release.WaitForNotification();
    });
    if (!queued) {
      // Stopping: the workers drain what was queued; release them and give up.
      for (int j = i; j < n; ++j) ran.DecrementCount();
      ran.Wait();
      release.Notify();
      return false;
    }
  }
  ran.Wait();
  release.Notify();
  return true;
}

void WorkerPool::Stop() {
  {
    absl::MutexLock lock(&mu_);
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
      absl::MutexLock lock(&mu_);
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
