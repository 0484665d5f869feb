#include "server/load_thread.h"

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;

// A Work that records its cycles and can hold one until released.
class FakeWork : public LoadThread::Work {
 public:
  CycleResult RunCycle(std::optional<int64_t> pin) override {
    {
      MutexLock lock(&mu_);
      pins_.push_back(pin);
      ++cycles_;
    }
    if (hold_next_.exchange(false)) {
      holding_.Notify();
      release_.WaitForNotification();
    }
    CycleResult result;
    result.scans = scans_answer_;
    if (pin) result.pin = absl::NotFoundError(absl::StrCat("pin ", *pin, " refused"));
    return result;
  }
  bool ReapRetired() override {
    const int call = reaps_.fetch_add(1) + 1;
    if (call == reaps_until_done_) reaped_.Notify();
    return call < reaps_until_done_;  // held by a request until then
  }
  std::string DescribeBusy() const override { return "fake cycle in progress"; }

  int cycles() const {
    MutexLock lock(&mu_);
    return cycles_;
  }
  std::vector<std::optional<int64_t>> pins() const {
    MutexLock lock(&mu_);
    return pins_;
  }

  // Set before the thread starts.
  absl::Status scans_answer_ = absl::OkStatus();
  int reaps_until_done_ = 0;  // 0: nothing retired
  std::atomic<bool> hold_next_{false};
  Notification holding_, release_, reaped_;

 private:
  mutable Mutex mu_;
  int cycles_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::optional<int64_t>> pins_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> reaps_{0};
};

LoadThreadOptions NoPolling() {
  LoadThreadOptions o;
  o.poll_interval = absl::ZeroDuration();  // cycles only when asked
  o.load_thread_nice = 0;
  return o;
}

TEST(LoadThreadTest, EachAdminCallGetsTheAnswerOfTheCycleThatHandledIt) {
  FakeWork work;
  work.scans_answer_ = absl::DataLossError("version 4: checksum mismatch");
  LoadThread thread(NoPolling(), &work);
  thread.Start();
  const absl::Status scan = thread.ScanAndWait(absl::InfiniteFuture());
  EXPECT_EQ(scan.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(scan.message(), HasSubstr("version 4"));
  const absl::Status pin = thread.PinAndWait(7, absl::InfiniteFuture());
  EXPECT_EQ(pin.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(pin.message(), "pin 7 refused");  // the pin's own answer, not the scans'
  // The first scan (at start) and the admin scan had no pin; the pin cycle had 7.
  EXPECT_THAT(work.pins().back(), Optional(7));
  EXPECT_EQ(work.pins().front(), std::nullopt);
}

TEST(LoadThreadTest, AtTheDeadlineCallsSayWhatKeepsTheThreadAndALaterPinWaitsItsTurn) {
  FakeWork work;
  work.hold_next_ = true;  // the first cycle hangs until released
  LoadThread thread(NoPolling(), &work);
  thread.Start();
  ASSERT_TRUE(work.holding_.WaitForNotificationWithTimeout(absl::Minutes(1)));

  const absl::Status scan = thread.ScanAndWait(absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(scan.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(scan.message(), "fake cycle in progress; the scan asked for runs once it is done");
  const absl::Status first = thread.PinAndWait(1, absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(first.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(first.message(), HasSubstr("the pin to version 1 is tried once it is done"));
  const absl::Status second = thread.PinAndWait(2, absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(second.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(second.message(), HasSubstr("an earlier pin waits for it, so version 2 was not asked for"));

  work.release_.Notify();
  // The timed-out pin is still tried, in the next cycle, before the turn of a new one;
  // pin 2 was never handed over.
  EXPECT_EQ(thread.PinAndWait(3, absl::InfiniteFuture()).message(), "pin 3 refused");
  EXPECT_THAT(work.pins(), ElementsAre(std::nullopt, Optional(1), Optional(3)));
}

TEST(LoadThreadTest, RequestStopWakesACallWaitingOnAHungCycle) {
  FakeWork work;
  work.hold_next_ = true;
  LoadThread thread(NoPolling(), &work);
  thread.Start();
  ASSERT_TRUE(work.holding_.WaitForNotificationWithTimeout(absl::Minutes(1)));
  absl::Status waited;
  // A call that is not woken returns only at its deadline (DEADLINE_EXCEEDED), since the
  // cycle it waits for hangs until released below.
  std::thread admin([&] { waited = thread.ScanAndWait(absl::Now() + absl::Minutes(1)); });
  thread.RequestStop();
  admin.join();
  work.release_.Notify();
  EXPECT_EQ(waited.code(), absl::StatusCode::kUnavailable);
  thread.Stop();
  EXPECT_EQ(work.cycles(), 1);  // stopped: no cycle after the hung one
}

TEST(LoadThreadTest, RetiredVersionsStillHeldAreReapedOnATickWithoutAnyScan) {
  FakeWork work;
  work.reaps_until_done_ = 5;  // the last request lets go of the retired version by the 5th try
  LoadThread thread(NoPolling(), &work);  // no polling: only the reap tick wakes the thread
  thread.Start();
  // Generous: without the tick the thread sleeps for an hour after the first cycle.
  EXPECT_TRUE(work.reaped_.WaitForNotificationWithTimeout(absl::Minutes(1)));
  EXPECT_EQ(work.cycles(), 1);  // the ticks reaped; they did not scan
}

}  // namespace
}  // namespace recserve
