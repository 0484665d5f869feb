#include "server/model_manager.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#if defined(__SANITIZE_ADDRESS__)
// The AddressSanitizer runtime's (GCC ships no sanitizer/allocator_interface.h).
extern "C" size_t __sanitizer_get_current_allocated_bytes();
#endif

#include "engine/file_util.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class ModelManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = testing::TempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  void Write(int64_t version, int items = 64) {
    ASSERT_TRUE(WriteBundle(testing::TinyBundle(items), base_ + "/" + std::to_string(version)).ok());
  }
  std::unique_ptr<ModelManager> Start(ModelManagerOptions o = {}) {
    o.base_path = base_;
    o.poll_interval = absl::ZeroDuration();  // scans only when asked: deterministic
    o.warmup_requests = 5;
    auto m = ModelManager::Create(o);
    EXPECT_TRUE(m.ok()) << m.status();
    return *std::move(m);
  }
  v1::VersionStatus StatusOf(const ModelManager& m, int64_t version) {
    for (const v1::VersionStatus& v : m.Versions()) {
      if (v.version() == version) return v;
    }
    return {};
  }
  // Rewrites manifest entries of `file` to match its current bytes.
  void FixChecksum(int64_t version, const std::string& file) {
    const std::string dir = base_ + "/" + std::to_string(version);
    v1::Manifest m;
    ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(*ReadFileToString(dir + "/manifest.textproto"), &m));
    const std::string bytes = *ReadFileToString(dir + "/" + file);
    for (v1::FileEntry& e : *m.mutable_files()) {
      if (e.name() == file) {
        e.set_size(bytes.size());
        e.set_sha256(Sha256Hex(bytes));
      }
    }
    std::string text;
    google::protobuf::TextFormat::PrintToString(m, &text);
    ASSERT_TRUE(WriteFileAtomically(dir + "/manifest.textproto", text).ok());
  }
  std::string base_;
};

TEST_F(ModelManagerTest, ServesTheNewestReadyVersionAndIgnoresOthers) {
  Write(1);
  Write(2);
  Write(3);
  fs::remove(base_ + "/3/READY");              // still being copied
  fs::create_directories(base_ + "/07");       // not a plain positive integer
  fs::create_directories(base_ + "/latest");
  auto m = Start();
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  EXPECT_EQ(m->serving_version(), 2);
  EXPECT_EQ(m->Pin()->version(), 2);
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::SERVING);
  // READY appears: the next scan takes version 3.
  ASSERT_TRUE(WriteFileAtomically(base_ + "/3/READY", "").ok());
  auto serving = m->ReloadNow();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 3);
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::UNLOADED);
}

TEST_F(ModelManagerTest, BadVersionsNeverReplaceTheServingVersion) {
  Write(1);
  int failures = 0;
  ModelManagerOptions o;
  o.on_load = [&failures](int64_t, const absl::Status& s) { failures += !s.ok(); };
  bool refuse_version_7 = true;
  o.check = [&refuse_version_7](const Model& model, v1::ModelFigures* figures) {
    figures->set_auc_delta(-0.5);
    if (model.version() == 7 && refuse_version_7) {
      return absl::FailedPreconditionError("accuracy gate: AUC dropped by 0.50000 (limit 0.00200)");
    }
    return absl::OkStatus();
  };
  auto m = Start(o);
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  ASSERT_EQ(m->serving_version(), 1);

  struct Case {
    int64_t version;
    std::function<void(const std::string& dir)> damage;
    std::string reason;
  } cases[] = {
      {2, [](const std::string& d) {  // corrupt file: a flipped byte
         std::string b = *ReadFileToString(d + "/items.safetensors");
         b[b.size() / 2] ^= 1;
         ASSERT_TRUE(WriteFileAtomically(d + "/items.safetensors", b).ok());
       }, "items.safetensors: checksum mismatch"},
      {3, [](const std::string& d) {  // manifest checksum that does not match
         std::string t = *ReadFileToString(d + "/manifest.textproto");
         const size_t at = t.find("sha256: \"") + 9;
         t[at] = t[at] == 'a' ? 'b' : 'a';
         ASSERT_TRUE(WriteFileAtomically(d + "/manifest.textproto", t).ok());
       }, "checksum mismatch"},
      {4, [this](const std::string& d) {  // truncated covisit file, checksum "fixed"
         std::string b = *ReadFileToString(d + "/covisit.safetensors");
         ASSERT_TRUE(WriteFileAtomically(d + "/covisit.safetensors", b.substr(0, 20)).ok());
         FixChecksum(4, "covisit.safetensors");
       }, "covisit.safetensors"},
      {5, [this](const std::string& d) {  // ONNX graph with an unsupported node
         std::string b = *ReadFileToString(d + "/ranker.onnx");
         const size_t at = b.find("Relu");
         ASSERT_NE(at, std::string::npos);
         b.replace(at, 4, "Tanh");
         ASSERT_TRUE(WriteFileAtomically(d + "/ranker.onnx", b).ok());
         FixChecksum(5, "ranker.onnx");
       }, "(Tanh): unsupported op"},
      {7, [](const std::string&) {}, "accuracy gate: AUC dropped"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.reason);
    const std::string dir = base_ + "/" + std::to_string(c.version);
    Write(c.version);
    c.damage(dir);
    auto result = m->ReloadNow();
    EXPECT_FALSE(result.ok());
    EXPECT_THAT(result.status().message(), HasSubstr(c.reason));
    EXPECT_EQ(m->serving_version(), 1);
    const v1::VersionStatus st = StatusOf(*m, c.version);
    EXPECT_EQ(st.state(), v1::FAILED);
    EXPECT_THAT(st.error(), HasSubstr(c.reason));
    fs::remove_all(dir);
  }
  EXPECT_EQ(failures, 5);

  // A symlink escaping the base path is refused without being read.
  const std::string outside = testing::TempDir("outside_model");
  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), outside + "/9").ok());
  fs::create_directory_symlink(outside + "/9", base_ + "/9");
  auto result = m->ReloadNow();
  EXPECT_EQ(m->serving_version(), 1);
  EXPECT_EQ(StatusOf(*m, 9).state(), v1::FAILED);
  EXPECT_THAT(StatusOf(*m, 9).error(), HasSubstr("outside the model base path"));

  // A failed version is not retried until its READY changes; then a good one serves.
  refuse_version_7 = false;
  Write(7);  // fresh content under the same number: READY rewritten
  result = m->ReloadNow();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, 7);
}

TEST_F(ModelManagerTest, AVersionScoringNonFiniteAtWarmUpIsRefused) {
  Write(1);
  auto m = Start();
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  // Within every value limit, but its ranker overflows to NaN on warm users' candidates
  // (the calibration rows, and so the accuracy gate, see nothing wrong): warm-up does.
  ASSERT_TRUE(WriteBundle(testing::OverflowingRankerBundle(), base_ + "/2").ok());
  auto result = m->ReloadNow();
  EXPECT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("not finite"));
  EXPECT_EQ(m->serving_version(), 1);
  const v1::VersionStatus st = StatusOf(*m, 2);
  EXPECT_EQ(st.state(), v1::FAILED);
  EXPECT_THAT(st.error(), HasSubstr("warm-up"));
}

TEST_F(ModelManagerTest, InflightRequestFinishesOnPinnedVersionThenItIsFreedOffTheRequestThread) {
  Write(1);
  Notification freed;
  std::atomic<pid_t> freed_on{0};
  ModelManagerOptions o;
  o.on_unloaded = [&](int64_t version) {
    if (version == 1) {
      freed_on = static_cast<pid_t>(::gettid());
      freed.Notify();
    }
  };
  auto m = Start(o);
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  std::shared_ptr<const Model> pinned = m->Pin();  // an in-flight request's handle
  std::weak_ptr<const Model> watch = pinned;
  Write(2);
  ASSERT_EQ(*m->ReloadNow(), 2);
  EXPECT_EQ(m->Pin()->version(), 2);
  // The request still works on version 1, which is alive while pinned.
  EXPECT_EQ(pinned->version(), 1);
  EXPECT_FALSE(watch.expired());
  EXPECT_FALSE(freed.HasBeenNotified());
  pinned.reset();  // the request finishes
  ASSERT_TRUE(freed.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_TRUE(watch.expired());
  EXPECT_NE(freed_on.load(), static_cast<pid_t>(::gettid()));  // not this (request) thread
}

TEST_F(ModelManagerTest, PinRollsBackAndUnpinReturnsToNewest) {
  Write(1);
  Write(2);
  std::atomic<int> loads{0};
  ModelManagerOptions o;
  o.keep_previous = true;
  o.on_load = [&loads](int64_t, const absl::Status&) { ++loads; };
  auto m = Start(o);
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  ASSERT_EQ(m->serving_version(), 2);
  ASSERT_EQ(*m->SetServingVersion(1), 1);  // rollback
  EXPECT_EQ(m->Pin()->version(), 1);
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::AVAILABLE);  // kept loaded
  Write(3);
  ASSERT_EQ(*m->ReloadNow(), 1);  // pinned: a newer version does not take over
  EXPECT_EQ(m->SetServingVersion(8).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->serving_version(), 1);
  ASSERT_EQ(*m->SetServingVersion(0), 3);  // unpin: newest
  EXPECT_LE(m->loaded_count(), 3);
  // Version 1 was kept loaded as the previous one: rolling back to it loads nothing.
  const int loads_before = loads.load();
  ASSERT_EQ(*m->SetServingVersion(1), 1);
  EXPECT_EQ(loads.load(), loads_before);
  EXPECT_EQ(StatusOf(*m, 3).state(), v1::AVAILABLE);
  EXPECT_LE(m->loaded_count(), 2);
}

TEST_F(ModelManagerTest, RefusedPinLeavesThePreviousPinInForce) {
  Write(1);
  Write(2);
  auto m = Start();
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  ASSERT_EQ(m->serving_version(), 2);

  // No pin in force: a pin to a version that does not exist is refused and changes nothing.
  EXPECT_EQ(m->SetServingVersion(8).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->pinned_version(), 0);
  EXPECT_EQ(m->serving_version(), 2);
  Write(3);
  auto serving = m->ReloadNow();  // the newest-version policy still holds
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 3);

  // A pin in force stays in force when another pin is refused.
  ASSERT_EQ(*m->SetServingVersion(1), 1);
  EXPECT_EQ(m->SetServingVersion(8).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m->pinned_version(), 1);
  EXPECT_EQ(m->serving_version(), 1);
  Write(4);
  serving = m->ReloadNow();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 1);  // still pinned: version 4 does not take over

  // A version that exists but fails to load is refused the same way.
  Write(5);
  ASSERT_TRUE(WriteFileAtomically(base_ + "/5/items.safetensors", "not safetensors").ok());
  const absl::Status refused = m->SetServingVersion(5).status();
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.message(), HasSubstr("version 5"));
  EXPECT_EQ(m->pinned_version(), 1);
  EXPECT_EQ(m->serving_version(), 1);
  EXPECT_EQ(StatusOf(*m, 5).state(), v1::FAILED);
  serving = m->ReloadNow();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 1);

  // Unpinning is never refused: the newest loadable version (4; 5 is FAILED) serves.
  serving = m->SetServingVersion(0);
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 4);
  EXPECT_EQ(m->pinned_version(), 0);
}

TEST_F(ModelManagerTest, AVersionWithAFifoForAFileIsRefusedAndTheServingVersionStays) {
  Write(1);
  auto m = Start();
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  Write(2);
  const std::string fifo = base_ + "/2/items.safetensors";
  fs::remove(fifo);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  absl::StatusOr<int64_t> result;
  Notification reloaded;
  std::thread admin([&] {
    result = m->ReloadNow();
    reloaded.Notify();
  });
  // A loader blocked opening the FIFO waits for a writer for ever. After a minute (this
  // version loads in well under a second) the test becomes that writer and closes at
  // once, so the blocked open returns, and reports the hang.
  if (!reloaded.WaitForNotificationWithTimeout(absl::Minutes(1))) {
    ADD_FAILURE() << "ReloadNow has not returned after a minute: the loader hangs on the FIFO";
    const int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (writer >= 0) ::close(writer);
  }
  admin.join();
  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("items.safetensors: is a FIFO"));
  EXPECT_EQ(m->serving_version(), 1);
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::FAILED);
}

TEST_F(ModelManagerTest, ReloadAndPinReturnAtTheirDeadlineWhileALoadHangs) {
  Write(1);
  Notification loading, release;
  ModelManagerOptions o;
  o.check = [&](const Model& model, v1::ModelFigures*) {
    if (model.version() == 2 && !release.HasBeenNotified()) {  // a load that hangs until released
      loading.Notify();
      release.WaitForNotification();
    }
    return absl::OkStatus();
  };
  auto m = Start(o);
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  Write(2);
  m->RequestScan();
  ASSERT_TRUE(loading.WaitForNotificationWithTimeout(absl::Minutes(1)));

  auto reload = m->ReloadNow(absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(reload.status().code(), absl::StatusCode::kDeadlineExceeded) << reload.status();
  EXPECT_THAT(reload.status().message(), HasSubstr("a model load is in progress: version 2 has been loading for"));
  EXPECT_THAT(reload.status().message(), HasSubstr("the scan asked for runs once it is done"));
  auto pin = m->SetServingVersion(1, absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(pin.status().code(), absl::StatusCode::kDeadlineExceeded) << pin.status();
  EXPECT_THAT(pin.status().message(), HasSubstr("the pin to version 1 is tried once it is done"));
  // The next pin waits for that one's turn; at its deadline it has asked for nothing.
  auto second = m->SetServingVersion(2, absl::Now() + absl::Milliseconds(100));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kDeadlineExceeded) << second.status();
  EXPECT_THAT(second.status().message(), HasSubstr("so version 2 was not asked for"));
  // Status never waits for the load.
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::LOADING);
  EXPECT_EQ(m->serving_version(), 1);

  release.Notify();
  // The pin that timed out is still tried after the load it waited on (which served 2).
  auto serving = m->ReloadNow();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 1);
  EXPECT_EQ(m->pinned_version(), 1);
}

// The memory the process holds: resident pages, or under AddressSanitizer the bytes
// allocated and not yet freed (its quarantine keeps up to 256 MB of freed blocks
// resident on purpose, which would read as a leak of every version loaded).
int64_t ResidentBytes() {
#if defined(__SANITIZE_ADDRESS__)
  return static_cast<int64_t>(__sanitizer_get_current_allocated_bytes());
#endif
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

TEST_F(ModelManagerTest, IdleLoaderStillLoadsWhileEveryCoreIsBusy) {
  if (!CanLeaveSchedIdle()) GTEST_SKIP() << "no CAP_SYS_NICE or RLIMIT_NICE >= 20: the idle loader is off here";
  // Busy threads at normal priority on every core leave a SCHED_IDLE loader next to no
  // CPU (weight 3 against 1024 each): such a load took 20 s here without the watchdog.
  // The watchdog moves the cycle back to the normal policy after the patience.
  Write(1, 64);
  ModelManagerOptions o;
  o.load_thread_idle = true;
  o.idle_load_patience = absl::Milliseconds(1);  // shorter than any load: the watchdog always acts
  auto m = Start(o);
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(60)));
  // A full cycle after the first load: its watchdog has been joined, so the count is final.
  ASSERT_TRUE(m->ReloadNow().ok());
  const int escalations_before = m->idle_escalations();
  Write(2, 30000);  // long enough a load that the watchdog, however late it wakes, finds it running
  std::atomic<bool> stop{false};
  std::atomic<unsigned> spinning{0};
  std::vector<std::thread> busy;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  const unsigned cores = ::sched_getaffinity(0, sizeof(allowed), &allowed) == 0
                             ? std::max(1, CPU_COUNT(&allowed))
                             : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < cores; ++i) {
    busy.emplace_back([&] {
      spinning.fetch_add(1);
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) x = x + 1;
    });
  }
  while (spinning.load() < cores) std::this_thread::yield();
  auto serving = m->ReloadNow();
  stop = true;
  for (auto& t : busy) t.join();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_EQ(*serving, 2);
  EXPECT_EQ(m->idle_escalations() - escalations_before, 1);  // the watchdog moved the starved cycle
}

TEST_F(ModelManagerTest, HundredLoadUnloadCyclesLeaveResidentMemoryFlat) {
  // Versions alternate between two directories' worth of content; every reload loads,
  // swaps and frees a ~3 MB model.
  Write(1, 20000);
  auto m = Start();
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  auto cycle = [&](int64_t version) {
    ASSERT_TRUE(WriteBundle(testing::TinyBundle(20000), base_ + "/" + std::to_string(version)).ok());
    ASSERT_EQ(*m->ReloadNow(), version);
    fs::remove_all(base_ + "/" + std::to_string(version - 1));
  };
  for (int64_t v = 2; v <= 11; ++v) cycle(v);  // warm the allocator
  const int64_t before = ResidentBytes();
  for (int64_t v = 12; v <= 111; ++v) cycle(v);
  const int64_t after = ResidentBytes();
  std::printf("resident after 10 cycles %.1f MB, after 110 cycles %.1f MB\n", before / 1e6, after / 1e6);
  // A leaked version would add ~3 MB per cycle (300 MB); allow allocator noise.
  EXPECT_LT(after - before, 40 << 20);
  EXPECT_LE(m->loaded_count(), 2);
}

// ---- roll-outs ----

// Options for a canary roll-out whose rules judge after `min_requests` calls; the window
// is long unless given.
ModelManagerOptions CanaryOptions(int64_t min_requests, absl::Duration window = absl::Hours(1)) {
  ModelManagerOptions o;
  o.rollout.mode = RolloutMode::kCanary;
  o.rollout.share = 0.3;
  o.rollout.rules.min_requests = min_requests;
  o.rollout.rules.window = window;
  return o;
}

// `calls` calls recorded on the member in `role` of the set serving now, `errors` of
// them failed, as the request path records them.
void Record(const ModelManager& m, ServingRole role, int calls, int errors) {
  std::shared_ptr<const ServingSet> set = m.PinSet();
  ASSERT_TRUE(set && set->Find(role));
  for (int i = 0; i < calls; ++i) {
    set->Find(role)->stats->RecordCall(i < errors ? absl::StatusCode::kInternal : absl::StatusCode::kOk,
                                       absl::Milliseconds(1), nullptr);
  }
}

TEST_F(ModelManagerTest, CanaryServesBesideTheServingVersionAndNewerVersionsWaitForIt) {
  Write(1);
  auto m = Start(CanaryOptions(1000000));
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  ASSERT_EQ(m->serving_version(), 1);  // the first version serves at once: nothing to compare with
  Write(2);
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(m->serving_version(), 1);
  v1::VersionStatus canary = StatusOf(*m, 2);
  EXPECT_EQ(canary.state(), v1::SERVING);
  EXPECT_EQ(canary.role(), v1::ROLE_CANARY);
  EXPECT_EQ(canary.share(), 0.3);
  EXPECT_EQ(canary.rollout().mode(), v1::ROLE_CANARY);
  EXPECT_THAT(canary.rollout().verdict(), HasSubstr("observing"));
  EXPECT_EQ(StatusOf(*m, 1).role(), v1::ROLE_SERVING);
  std::shared_ptr<const ServingSet> set = m->PinSet();
  ASSERT_EQ(set->members.size(), 2u);
  EXPECT_EQ(set->Find(ServingRole::kCanary)->version, 2);
  EXPECT_EQ(set->Find(ServingRole::kCanary)->share, 0.3);

  Write(3);  // waits: one roll-out at a time
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(StatusOf(*m, 3).version(), 0) << "version 3 was looked at during the roll-out of 2";
  EXPECT_EQ(m->PinSet()->Find(ServingRole::kCanary)->version, 2);
}

TEST_F(ModelManagerTest, CanaryBreakingARuleIsRolledBackAndNotRetriedUntilReadyChanges) {
  Write(1);
  std::vector<std::string> verdicts;
  ModelManagerOptions o = CanaryOptions(100);
  o.on_rollout_end = [&verdicts](int64_t, const std::string& verdict) { verdicts.push_back(verdict); };
  auto m = Start(o);
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  Write(2);
  ASSERT_TRUE(m->ReloadNow().ok());
  std::shared_ptr<const ServingSet> pinned = m->PinSet();  // an in-flight request's set
  Record(*m, ServingRole::kServing, 1000, 0);
  Record(*m, ServingRole::kCanary, 99, 50);
  ASSERT_TRUE(m->ReloadNow().ok());  // each cycle judges: 99 calls are not enough
  EXPECT_EQ(StatusOf(*m, 2).role(), v1::ROLE_CANARY);
  EXPECT_THAT(StatusOf(*m, 2).rollout().verdict(), HasSubstr("observing: 99 of 100 calls"));
  Record(*m, ServingRole::kCanary, 1, 0);
  ASSERT_TRUE(m->ReloadNow().ok());
  const v1::VersionStatus failed = StatusOf(*m, 2);
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_EQ(failed.role(), v1::ROLE_NONE);
  EXPECT_THAT(failed.error(), HasSubstr("rollout: error rate 50.00% is 50.0x serving's 0.00% (floor 1.00%) > 2x "
                                        "(canary 100 calls, serving 1000)"));
  EXPECT_THAT(failed.rollout().verdict(), HasSubstr("rolled back: error rate"));
  EXPECT_EQ(failed.rollout().canary().calls(), 100);
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(m->serving_version(), 1);
  EXPECT_EQ(m->PinSet()->members.size(), 1u);
  // The request that pinned the set before still has its canary's model.
  EXPECT_EQ(pinned->Find(ServingRole::kCanary)->model->version(), 2);
  pinned.reset();

  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::FAILED);  // not retried
  // A new READY: loaded again, a canary again.
  absl::SleepFor(absl::Milliseconds(20));
  ASSERT_TRUE(WriteFileAtomically(base_ + "/2/READY", "again").ok());
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(StatusOf(*m, 2).role(), v1::ROLE_CANARY);
  EXPECT_EQ(StatusOf(*m, 2).rollout().canary().calls(), 0);  // a new window
}

TEST_F(ModelManagerTest, CanaryHoldingEveryRuleForTheWindowIsPromoted) {
  Write(1);
  auto m = Start(CanaryOptions(10, absl::ZeroDuration()));
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  Write(2);
  ASSERT_TRUE(m->ReloadNow().ok());
  Record(*m, ServingRole::kServing, 10, 0);
  Record(*m, ServingRole::kCanary, 9, 0);
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(m->serving_version(), 1);
  Record(*m, ServingRole::kCanary, 1, 0);
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(m->serving_version(), 2);
  EXPECT_EQ(StatusOf(*m, 2).role(), v1::ROLE_SERVING);
  EXPECT_THAT(StatusOf(*m, 2).rollout().verdict(), HasSubstr("promoted: every rule held"));
  EXPECT_EQ(StatusOf(*m, 1).state(), v1::UNLOADED);
  EXPECT_EQ(m->PinSet()->members.size(), 1u);
}

TEST_F(ModelManagerTest, SetRolloutChangesPromotesOrAbortsTheRolloutAndNamesBadCalls) {
  Write(1);
  auto m = Start(CanaryOptions(1000000));
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  EXPECT_THAT(m->SetRollout(1, v1::ROLLOUT_PROMOTE, 0).status().message(),
              HasSubstr("version 1 is not rolling out (none is)"));
  Write(2);
  ASSERT_TRUE(m->ReloadNow().ok());
  struct Bad {
    int64_t version;
    v1::RolloutAction action;
    double share;
    absl::StatusCode code;
    const char* message;
  } bad[] = {
      {2, v1::ROLLOUT_ACTION_UNSPECIFIED, 0, absl::StatusCode::kInvalidArgument, "action: 0 is not a roll-out action"},
      {2, v1::ROLLOUT_CANARY, 1.5, absl::StatusCode::kInvalidArgument, "share: 1.5 is outside [0, 1]"},
      {2, v1::ROLLOUT_CANARY, 1, absl::StatusCode::kInvalidArgument, "share: 1 is not a canary share"},
      {-2, v1::ROLLOUT_ABORT, 0, absl::StatusCode::kInvalidArgument, "version: -2 is not a version"},
      {9, v1::ROLLOUT_ABORT, 0, absl::StatusCode::kNotFound, "version 9 has not been seen"},
      {1, v1::ROLLOUT_ABORT, 0, absl::StatusCode::kFailedPrecondition, "version 1 is not rolling out (version 2 is)"},
  };
  for (const Bad& b : bad) {
    absl::StatusOr<v1::VersionStatus> r = m->SetRollout(b.version, b.action, b.share);
    EXPECT_EQ(r.status().code(), b.code) << b.message;
    EXPECT_THAT(r.status().message(), HasSubstr(b.message));
  }
  absl::StatusOr<v1::VersionStatus> r = m->SetRollout(2, v1::ROLLOUT_CANARY, 0.5);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->share(), 0.5);
  EXPECT_EQ(m->PinSet()->Find(ServingRole::kCanary)->share, 0.5);
  r = m->SetRollout(2, v1::ROLLOUT_SHADOW, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->role(), v1::ROLE_SHADOW);
  EXPECT_EQ(m->PinSet()->Find(ServingRole::kCanary), nullptr);
  EXPECT_EQ(m->PinSet()->Find(ServingRole::kShadow)->version, 2);
  r = m->SetRollout(2, v1::ROLLOUT_ABORT, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->state(), v1::FAILED);
  EXPECT_EQ(r->error(), "rollout: aborted by SetRollout");
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::FAILED);  // not retried

  Write(3);
  ASSERT_TRUE(m->ReloadNow().ok());
  ASSERT_EQ(StatusOf(*m, 3).role(), v1::ROLE_CANARY);
  r = m->SetRollout(3, v1::ROLLOUT_PROMOTE, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(m->serving_version(), 3);
  EXPECT_EQ(r->role(), v1::ROLE_SERVING);
  EXPECT_EQ(r->rollout().verdict(), "promoted by SetRollout");
}

TEST_F(ModelManagerTest, PinEndsTheRolloutAndManifestRolloutOverridesTheFlags) {
  Write(1);
  auto m = Start();  // immediate by flag
  ASSERT_TRUE(m->WaitUntilServing(absl::Seconds(30)));
  BundleContents canary = testing::TinyBundle();
  canary.manifest.mutable_rollout()->set_mode("canary");
  canary.manifest.mutable_rollout()->set_share(0.2);
  ASSERT_TRUE(WriteBundle(canary, base_ + "/2").ok());
  ASSERT_TRUE(m->ReloadNow().ok());
  EXPECT_EQ(StatusOf(*m, 2).role(), v1::ROLE_CANARY);
  EXPECT_EQ(StatusOf(*m, 2).share(), 0.2);
  ASSERT_TRUE(m->SetServingVersion(1).ok());
  EXPECT_EQ(StatusOf(*m, 2).state(), v1::UNLOADED);
  EXPECT_EQ(StatusOf(*m, 2).rollout().verdict(), "ended: version 1 was pinned");
  EXPECT_EQ(m->PinSet()->members.size(), 1u);
  ASSERT_TRUE(m->SetServingVersion(0).ok());  // the newest policy: 2 rolls out again
  EXPECT_EQ(StatusOf(*m, 2).role(), v1::ROLE_CANARY);

  canary.manifest.mutable_rollout()->set_share(1);
  ASSERT_TRUE(WriteBundle(canary, base_ + "/3").ok());
  ASSERT_TRUE(m->SetRollout(2, v1::ROLLOUT_PROMOTE, 0).ok());
  EXPECT_THAT(m->ReloadNow().status().message(), HasSubstr("version 3: rollout.share: 1 is not a canary share"));
  EXPECT_EQ(StatusOf(*m, 3).state(), v1::FAILED);
  EXPECT_EQ(m->serving_version(), 2);
}

}  // namespace
}  // namespace recserve
