// The server's locks: absl's Mutex, MutexLock, ReaderMutexLock, Notification and
// BlockingCounter, except in ThreadSanitizer builds.
//
// Debian's libabsl is not built with -fsanitize=thread, so TSAN cannot see the
// happens-before that an absl::Mutex gives (absl annotates its mutex for TSAN only when
// absl itself is compiled with it) and reports every access the mutex guards as a race.
// The TSAN build therefore gets the same interface over std::mutex and
// std::condition_variable, which TSAN understands through pthreads. Both forms are
// the same for how we use them: Await re-checks its condition whenever another thread
// Unlocks (the TSAN form notifies on every Unlock). Differences, none of which our code
// relies on: the TSAN form does not wake waiters when a thread changes state and then
// Awaits in the same critical section, and its Notification and BlockingCounter do not
// abort on a second Notify or an extra decrement as absl's do.
#ifndef RECSERVE_SERVER_SYNC_H_
#define RECSERVE_SERVER_SYNC_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define RECSERVE_TSAN_SYNC 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RECSERVE_TSAN_SYNC 1
#endif
#endif

#ifdef RECSERVE_TSAN_SYNC
#include <chrono>
#include <condition_variable>
#include <mutex>
#endif

namespace recserve {

#ifndef RECSERVE_TSAN_SYNC

using Mutex = absl::Mutex;
using MutexLock = absl::MutexLock;
using ReaderMutexLock = absl::ReaderMutexLock;
using Notification = absl::Notification;
using BlockingCounter = absl::BlockingCounter;

#else

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    // Notify while still holding the lock: a waiter woken by this may destroy the
    // object (a Notification on its stack) as soon as it gets the lock back.
    cv_.notify_all();  // any waiter's condition may have changed
    mu_.unlock();
  }
  // Called with the mutex held; returns with it held once `cond` is true.
  void Await(const absl::Condition& cond) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    cv_.wait(lock, [&] { return cond.Eval(); });
    lock.release();
  }
  bool AwaitWithTimeout(const absl::Condition& cond, absl::Duration timeout) {
    return AwaitWithDeadline(cond, absl::Now() + timeout);
  }
  bool AwaitWithDeadline(const absl::Condition& cond, absl::Time deadline) {
    if (deadline == absl::InfiniteFuture()) {  // the chrono time_point would overflow in wait_until
      Await(cond);
      return true;
    }
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    const bool met = cv_.wait_until(lock, absl::ToChronoTime(deadline), [&] { return cond.Eval(); });
    lock.release();
    return met;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// Exclusive in the TSAN build: a stricter lock, the same guarantees for readers.
class ABSL_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(Mutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~ReaderMutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  Mutex* const mu_;
};

class Notification {
 public:
  void Notify() {
    MutexLock lock(&mu_);
    notified_ = true;
  }
  bool HasBeenNotified() const {
    MutexLock lock(&mu_);
    return notified_;
  }
  void WaitForNotification() const {
    MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&notified_));
  }
  bool WaitForNotificationWithTimeout(absl::Duration timeout) const {
    MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&notified_), timeout);
  }

 private:
  mutable Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
};

class BlockingCounter {
 public:
  explicit BlockingCounter(int count) : count_(count) {}
  bool DecrementCount() {
    MutexLock lock(&mu_);
    return --count_ == 0;
  }
  void Wait() {
    MutexLock lock(&mu_);
    auto zero = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ <= 0; };
    mu_.Await(absl::Condition(&zero));
  }

 private:
  Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_);
};

#endif

}  // namespace recserve

#endif  // RECSERVE_SERVER_SYNC_H_
