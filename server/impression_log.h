// ImpressionLog: writes what the server answered, for a sampled share of Recommend calls,
// to rotating files of v1::Impression records (engine/impression_file.h) under a size and
// age budget. The one place that knows what each user was shown, in which position, by
// which model version: the training tools join it with what users did next.
//
// It promises:
//   - the request path never waits for the disk: Offer() samples, serializes the record
//     and appends it to a bounded in-memory queue under a lock that is only ever held for a
//     push or a swap; when the queue is full the record is dropped and counted;
//   - one writer thread owns the files: every flush_interval (sooner when the queue is
//     half full) it takes the whole queue and appends it with one write() to the active file
//     ("<name>.pb.part"), renames it to "<name>.pb" when it reaches max_file_bytes or
//     max_file_age, then deletes the oldest complete files while the directory's
//     impression files take more than max_total_bytes;
//   - a directory that cannot be created or written, or a full disk, is never an error
//     of the server: the records that could not be written are dropped and counted
//     (result "dropped_write_error"), the error is logged (rate-limited), the file that
//     failed is cut back to its last whole record and closed, and the writer tries a new
//     file at its next batch;
//   - Stop() writes what is queued, closes the active file (renamed complete) and joins.
//
// Metrics (prometheus-cpp, in the log's own registry(), which the server exposes):
//   recserve_impression_records_total{result="written"|"dropped_queue_full"|"dropped_write_error"}
//   recserve_impression_bytes_total{result="written"|"dropped"}
//   recserve_impression_files_deleted_total (by the budget)
//
// Thread-safety: Offer() from any thread; Stop() from one thread, after the last Offer().
#ifndef RECSERVE_SERVER_IMPRESSION_LOG_H_
#define RECSERVE_SERVER_IMPRESSION_LOG_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "recserve/v1/impression.pb.h"
#include "recserve/v1/recommender.pb.h"
#include "server/log_rate_limiter.h"
#include "server/sync.h"

namespace recserve {

struct ImpressionLogOptions {
  std::string dir;                                  // required; created when missing
  double share = 0.01;                              // of answered calls logged, in (0, 1]
  int queue_records = 4096;                         // records waiting for the writer, at most
  int64_t max_file_bytes = int64_t{64} << 20;       // a file is closed at this size ...
  absl::Duration max_file_age = absl::Minutes(10);  // ... or this age
  int64_t max_total_bytes = int64_t{1} << 30;       // the directory's impression files, at most
  bool hash_users = false;                          // store "h:" + salted SHA-256 of user_id
  std::string user_salt;                            // with hash_users
  bool full_events = true;                          // false: only the events' count and digest
  // The writer writes what is queued this often (one write() per batch; a queue half
  // full wakes it sooner), so a record reaches its file at most about this late.
  absl::Duration flush_interval = absl::Milliseconds(100);
};

class ImpressionLog {
 public:
  // Checks the options (INVALID_ARGUMENT naming the option) and starts the writer. The
  // directory is not required to be writable (see the contract).
  static absl::StatusOr<std::unique_ptr<ImpressionLog>> Create(ImpressionLogOptions options);
  ImpressionLog(const ImpressionLog&) = delete;
  ImpressionLog& operator=(const ImpressionLog&) = delete;
  ~ImpressionLog() { Stop(); }

  // Request path, after a successful answer: logs it with probability `share`.
  void Offer(const v1::RecommendRequest& request, const v1::RecommendResponse& response)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the queue, closes the active file and joins the writer. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  struct Counts {
    int64_t written = 0;
    int64_t dropped_queue_full = 0;
    int64_t dropped_write_error = 0;
    int64_t bytes_written = 0;
    int64_t bytes_dropped = 0;
    int64_t files_deleted = 0;
  };
  Counts counts() const;
  // The counters above, for the server's /metrics exposer.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Tests: runs on the writer thread before each batch is written (e.g. blocks it).
  void SetBeforeWriteForTest(std::function<void()> hook) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit ImpressionLog(ImpressionLogOptions options);
  // The serialized v1::Impression, built on the request thread in one string (the queue
  // and the writer then move bytes only, and each record is one allocation to free).
  std::string SerializeRecord(const v1::RecommendRequest& request, const v1::RecommendResponse& response) const;
  void Enqueue(std::string record) ABSL_LOCKS_EXCLUDED(mu_);
  void WriterLoop() ABSL_LOCKS_EXCLUDED(mu_);

  // Writer thread only (no lock: one thread owns them).
  void WriteBatch(std::deque<std::string>* batch);
  bool OpenFile(int64_t now_ms);
  void CloseFile();
  void DropBatch(std::deque<std::string>* batch, size_t from, const std::string& why);
  void EnforceBudget();

  const ImpressionLogOptions options_;
  const std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* written_ = nullptr;
  prometheus::Counter* dropped_queue_full_ = nullptr;
  prometheus::Counter* dropped_write_error_ = nullptr;
  prometheus::Counter* bytes_written_ = nullptr;
  prometheus::Counter* bytes_dropped_ = nullptr;
  prometheus::Counter* files_deleted_ = nullptr;
  LogRateLimiter error_log_;

  mutable Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> before_write_ ABSL_GUARDED_BY(mu_);
  std::thread writer_;

  // The active file (writer thread only).
  int fd_ = -1;
  std::string active_path_;
  int64_t file_bytes_ = 0;
  absl::Time file_opened_;
  int64_t sequence_ = 0;
};

}  // namespace recserve

#endif  // RECSERVE_SERVER_IMPRESSION_LOG_H_
