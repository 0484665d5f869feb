// ImpressionLog: records round-trip, the request path never waits for a stalled writer,
// an unwritable directory or a full disk turns into counted drops, rotation keeps the
// budget, and a served answer is logged as it was served.
#include "server/impression_log.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/impression_file.h"
#include "engine/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "server/sync.h"

namespace recserve {
namespace {

using ::testing::HasSubstr;

v1::RecommendRequest Request(const std::string& user, int events) {
  v1::RecommendRequest r;
  r.set_user_id(user);
  r.set_n(3);
  r.mutable_context()->set_hour(7);
  for (int i = 0; i < events; ++i) {
    v1::Event* e = r.add_events();
    e->set_item_id(100 + i);
    e->set_type(v1::CLICK);
    e->set_timestamp_ms(1700000000000 + i);
  }
  return r;
}

v1::RecommendResponse Response(const std::string& request_id, int items) {
  v1::RecommendResponse r;
  r.set_request_id(request_id);
  r.set_model_name("m");
  r.set_model_version(7);
  r.set_model_role(v1::ROLE_SERVING);
  r.mutable_timings()->set_rank_ms(1.5);
  for (int i = 0; i < items; ++i) {
    v1::RecommendedItem* item = r.add_items();
    item->set_item_id(1000 + i);
    item->set_score(0.9f - 0.1f * i);
    item->set_sources(1);
  }
  return r;
}

ImpressionLogOptions Options(const std::string& dir) {
  ImpressionLogOptions o;
  o.dir = dir;
  o.share = 1;
  o.flush_interval = absl::Milliseconds(5);
  return o;
}

// Every record in the directory's complete files, oldest first; fails the test on a file
// that does not read back whole.
std::vector<v1::Impression> ReadAll(const std::string& dir) {
  std::vector<v1::Impression> out;
  absl::StatusOr<std::vector<ImpressionFileInfo>> files = ListImpressionFiles(dir, /*include_active=*/true);
  EXPECT_TRUE(files.ok()) << files.status();
  if (!files.ok()) return out;
  for (const ImpressionFileInfo& f : *files) {
    EXPECT_FALSE(f.active) << f.path << " was left open";
    absl::StatusOr<ImpressionFileContents> contents = ReadImpressionFile(f.path);
    EXPECT_TRUE(contents.ok()) << contents.status();
    if (!contents.ok()) continue;
    EXPECT_FALSE(contents->truncated_tail) << f.path;
    for (v1::Impression& r : contents->records) out.push_back(std::move(r));
  }
  return out;
}

TEST(ImpressionLogTest, RecordsRoundTripWithEventsUsersAndTheAnswerAsServed) {
  const std::string dir = testing::TempDir("impressions_roundtrip");
  auto log = ImpressionLog::Create(Options(dir));
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 3; ++i) {
    (*log)->Offer(Request(absl::StrCat("user", i), i + 1), Response(absl::StrCat("req", i), i + 2));
  }
  (*log)->Stop();
  const std::vector<v1::Impression> records = ReadAll(dir);
  ASSERT_EQ(records.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const v1::Impression& r = records[i];
    EXPECT_EQ(r.user(), absl::StrCat("user", i));
    EXPECT_EQ(r.context().hour(), 7);
    ASSERT_EQ(r.events_size(), i + 1);
    EXPECT_EQ(r.events(i).item_id(), static_cast<uint64_t>(100 + i));
    EXPECT_EQ(r.events_count(), i + 1);
    EXPECT_GT(r.time_unix_ms(), 0);
    EXPECT_EQ(r.response().SerializeAsString(), Response(absl::StrCat("req", i), i + 2).SerializeAsString());
  }
  const ImpressionLog::Counts c = (*log)->counts();
  EXPECT_EQ(c.written, 3);
  EXPECT_EQ(c.dropped_queue_full + c.dropped_write_error, 0);
  EXPECT_EQ(c.bytes_written, static_cast<int64_t>(std::filesystem::file_size(
                                 ListImpressionFiles(dir, false).value().front().path)));
}

TEST(ImpressionLogTest, HashedUsersAndEventDigestsKeepNoRawIds) {
  const std::string dir = testing::TempDir("impressions_hashed");
  ImpressionLogOptions o = Options(dir);
  o.hash_users = true;
  o.user_salt = "pepper";
  o.full_events = false;
  auto log = ImpressionLog::Create(o);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->Offer(Request("alice", 4), Response("a", 1));
  (*log)->Offer(Request("alice", 4), Response("b", 1));
  (*log)->Offer(Request("bob", 5), Response("c", 1));
  (*log)->Stop();
  const std::vector<v1::Impression> records = ReadAll(dir);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_THAT(records[0].user(), ::testing::StartsWith("h:"));
  EXPECT_EQ(records[0].user().size(), 18u);
  EXPECT_EQ(records[0].user(), records[1].user());  // still joinable
  EXPECT_NE(records[0].user(), records[2].user());
  EXPECT_EQ(records[0].events_size(), 0);
  EXPECT_EQ(records[0].events_count(), 4);
  EXPECT_NE(records[0].events_digest(), 0u);
  EXPECT_EQ(records[0].events_digest(), records[1].events_digest());
  EXPECT_NE(records[0].events_digest(), records[2].events_digest());
}

TEST(ImpressionLogTest, AStalledWriterMakesOffersDropAndCountNeverWait) {
  const std::string dir = testing::TempDir("impressions_stalled");
  ImpressionLogOptions o = Options(dir);
  o.queue_records = 4;
  auto log = ImpressionLog::Create(o);
  ASSERT_TRUE(log.ok()) << log.status();
  Notification stalled, release;
  (*log)->SetBeforeWriteForTest([&] {
    if (!stalled.HasBeenNotified()) stalled.Notify();
    release.WaitForNotification();
  });
  (*log)->Offer(Request("u", 1), Response("first", 1));
  stalled.WaitForNotification();  // the writer holds the first record and waits
  // The writer is stuck: 4 records fit the queue, the other 10 are dropped, and every
  // Offer returns (the test would hang here otherwise).
  for (int i = 0; i < 14; ++i) (*log)->Offer(Request("u", 1), Response(absl::StrCat("r", i), 1));
  ImpressionLog::Counts c = (*log)->counts();
  EXPECT_EQ(c.dropped_queue_full, 10);
  EXPECT_GT(c.bytes_dropped, 0);
  EXPECT_EQ(c.written, 0);
  release.Notify();
  (*log)->Stop();
  c = (*log)->counts();
  EXPECT_EQ(c.written, 5);
  EXPECT_EQ(ReadAll(dir).size(), 5u);
}

TEST(ImpressionLogTest, AnUnwritableDirectoryDegradesToCountedDrops) {
  const std::string base = testing::TempDir("impressions_unwritable");
  std::ofstream(base + "/file") << "not a directory";
  auto log = ImpressionLog::Create(Options(base + "/file/impressions"));
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 5; ++i) (*log)->Offer(Request("u", 1), Response("r", 2));
  (*log)->Stop();
  const ImpressionLog::Counts c = (*log)->counts();
  EXPECT_EQ(c.written, 0);
  EXPECT_EQ(c.dropped_write_error, 5);
  EXPECT_GT(c.bytes_dropped, 0);
}

TEST(ImpressionLogTest, AFullDiskCutsTheFileBackToWholeRecordsAndCountsTheRest) {
  const std::string dir = testing::TempDir("impressions_full");
  // A file size limit stands in for a full disk: write() stops part-way with EFBIG.
  struct sigaction ignore = {}, old_action = {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGXFSZ, &ignore, &old_action), 0);
  rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit limit = old_limit;
  limit.rlim_cur = 3000;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limit), 0);
  ImpressionLogOptions o = Options(dir);
  o.queue_records = 1000;
  auto log = ImpressionLog::Create(o);
  ASSERT_TRUE(log.ok()) << log.status();
  constexpr int kOffered = 200;  // ~60 bytes each: several times the limit
  for (int i = 0; i < kOffered; ++i) (*log)->Offer(Request("u", 1), Response(absl::StrCat("r", i), 2));
  (*log)->Stop();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  ASSERT_EQ(sigaction(SIGXFSZ, &old_action, nullptr), 0);
  const ImpressionLog::Counts c = (*log)->counts();
  EXPECT_GT(c.dropped_write_error, 0);
  EXPECT_GT(c.written, 0);
  EXPECT_EQ(c.written + c.dropped_write_error, kOffered);
  EXPECT_EQ(static_cast<int64_t>(ReadAll(dir).size()), c.written);  // and no file ends mid-record
}

TEST(ImpressionLogTest, RotationKeepsTheDirectoryWithinItsBudgetAndKeepsTheNewest) {
  const std::string dir = testing::TempDir("impressions_budget");
  ImpressionLogOptions o = Options(dir);
  o.max_file_bytes = 1000;
  o.max_total_bytes = 3000;
  auto log = ImpressionLog::Create(o);
  ASSERT_TRUE(log.ok()) << log.status();
  constexpr int kOffered = 300;
  for (int i = 0; i < kOffered; ++i) {
    (*log)->Offer(Request("u", 1), Response(absl::StrCat("r", i), 2));
    if (i % 50 == 49) absl::SleepFor(absl::Milliseconds(20));  // several batches
  }
  (*log)->Stop();
  absl::StatusOr<std::vector<ImpressionFileInfo>> files = ListImpressionFiles(dir, true);
  ASSERT_TRUE(files.ok());
  int64_t total = 0;
  for (const ImpressionFileInfo& f : *files) {
    EXPECT_LE(f.bytes, o.max_file_bytes) << f.path;
    total += f.bytes;
  }
  EXPECT_LE(total, o.max_total_bytes);
  EXPECT_GE(files->size(), 2u);
  const ImpressionLog::Counts c = (*log)->counts();
  EXPECT_EQ(c.written, kOffered);
  EXPECT_GT(c.files_deleted, 0);
  const std::vector<v1::Impression> kept = ReadAll(dir);
  ASSERT_FALSE(kept.empty());
  EXPECT_LT(kept.size(), static_cast<size_t>(kOffered));
  EXPECT_EQ(kept.back().response().request_id(), absl::StrCat("r", kOffered - 1));  // the newest stay
}

TEST(ImpressionLogTest, AFileIsClosedCompleteOnceItIsOld) {
  const std::string dir = testing::TempDir("impressions_age");
  ImpressionLogOptions o = Options(dir);
  o.max_file_age = absl::Milliseconds(30);
  auto log = ImpressionLog::Create(o);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->Offer(Request("u", 1), Response("old", 1));
  // Without a further record the writer closes the file by age alone.
  absl::StatusOr<std::vector<ImpressionFileInfo>> files;
  for (int i = 0; i < 2000; ++i) {
    files = ListImpressionFiles(dir, /*include_active=*/false);
    if (files.ok() && !files->empty()) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 1u);
  (*log)->Offer(Request("u", 1), Response("new", 1));
  (*log)->Stop();
  EXPECT_EQ(ListImpressionFiles(dir, true).value().size(), 2u);
}

TEST(ImpressionLogTest, SamplingLogsItsShareWithinBinomialBounds) {
  const std::string dir = testing::TempDir("impressions_share");
  ImpressionLogOptions o = Options(dir);
  o.share = 0.25;
  o.queue_records = 100000;
  auto log = ImpressionLog::Create(o);
  ASSERT_TRUE(log.ok()) << log.status();
  constexpr int kOffered = 8000;
  for (int i = 0; i < kOffered; ++i) (*log)->Offer(Request("u", 0), Response("r", 1));
  (*log)->Stop();
  const ImpressionLog::Counts c = (*log)->counts();
  const double sigma = std::sqrt(kOffered * 0.25 * 0.75);
  EXPECT_EQ(c.dropped_queue_full, 0);
  EXPECT_NEAR(static_cast<double>(c.written), kOffered * 0.25, 5 * sigma);
}

TEST(ImpressionLogTest, BadOptionsAreRefusedByName) {
  ImpressionLogOptions o = Options("/tmp/x");
  o.share = 0;
  EXPECT_THAT(ImpressionLog::Create(o).status().message(), HasSubstr("share 0"));
  o = Options("/tmp/x");
  o.max_file_bytes = 10;
  o.max_total_bytes = 5;
  EXPECT_THAT(ImpressionLog::Create(o).status().message(), HasSubstr("max_total_bytes 5"));
  o = Options("/tmp/x");
  o.hash_users = true;
  EXPECT_THAT(ImpressionLog::Create(o).status().message(), HasSubstr("user_salt"));
  o = Options("");
  EXPECT_THAT(ImpressionLog::Create(o).status().message(), HasSubstr("dir"));
}

TEST(ImpressionLogTest, TheServerLogsEachAnswerAsItWasServed) {
  const std::string models = testing::TempDir("impressions_server_models");
  const std::string dir = testing::TempDir("impressions_server_log");
  ASSERT_TRUE(WriteBundle(testing::TinyBundle(), models + "/1").ok());
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.admin_address = "";
  options.worker_threads = 1;
  options.manager.base_path = models;
  options.manager.warmup_requests = 1;
  options.impressions = Options(dir);
  auto server = RecserveServer::Create(std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->manager().WaitUntilServing(absl::Seconds(60)));
  auto stub = v1::Recommender::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                                           grpc::InsecureChannelCredentials()));
  std::vector<v1::RecommendResponse> answers;
  for (int i = 0; i < 4; ++i) {
    v1::RecommendRequest request = Request(absl::StrCat("user", i), 2);
    request.set_n(5);
    grpc::ClientContext context;
    v1::RecommendResponse response;
    ASSERT_TRUE(stub->Recommend(&context, request, &response).ok());
    answers.push_back(response);
  }
  {  // an invalid request is answered with an error and not logged
    v1::RecommendRequest bad = Request("bad", 1);
    bad.set_n(0);
    grpc::ClientContext context;
    v1::RecommendResponse response;
    EXPECT_EQ(stub->Recommend(&context, bad, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  server->reset();  // stops the log: what was queued is written
  const std::vector<v1::Impression> records = ReadAll(dir);
  ASSERT_EQ(records.size(), answers.size());
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].user(), absl::StrCat("user", i));
    EXPECT_EQ(records[i].events_size(), 2);
    EXPECT_EQ(records[i].response().SerializeAsString(), answers[i].SerializeAsString());
    EXPECT_EQ(records[i].response().model_version(), 1);
    EXPECT_EQ(records[i].response().items_size(), 5);
  }
}

}  // namespace
}  // namespace recserve
