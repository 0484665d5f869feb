#include "server/impression_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/bundle.h"
#include "engine/file_util.h"
#include "engine/impression_file.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace recserve {
namespace {

// Writes `message` as field `field` of the enclosing message (wire type 2).
void WriteMessageField(int field, const google::protobuf::MessageLite& message,
                       google::protobuf::io::CodedOutputStream* out) {
  out->WriteTag(static_cast<uint32_t>(field) << 3 | 2);
  out->WriteVarint32(static_cast<uint32_t>(message.ByteSizeLong()));
  message.SerializeWithCachedSizes(out);
}

// The first 8 bytes of a lowercase hex SHA-256 digest, as a number.
uint64_t DigestPrefix(absl::string_view hex) {
  uint64_t v = 0;
  for (int i = 0; i < 16 && i < static_cast<int>(hex.size()); ++i) {
    const char c = hex[i];
    v = (v << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  return v;
}

// Writes `bytes` to `fd`; returns how many were written before an error (all of them on
// success), with `error` set on failure.
size_t WriteAll(int fd, absl::string_view bytes, std::string* error) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = std::strerror(errno);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImpressionLog>> ImpressionLog::Create(ImpressionLogOptions options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("impression log: dir is empty");
  if (!(options.share > 0 && options.share <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("impression log: share ", options.share, " is not in (0, 1]"));
  }
  if (options.queue_records < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("impression log: queue_records ", options.queue_records, " must be at least 1"));
  }
  if (options.max_file_bytes < 1 || options.max_total_bytes < options.max_file_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("impression log: max_file_bytes ", options.max_file_bytes,
                                                   " must be at least 1 and at most max_total_bytes ",
                                                   options.max_total_bytes));
  }
  if (options.max_file_age <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("impression log: max_file_age ", absl::FormatDuration(options.max_file_age), " must be positive"));
  }
  if (options.hash_users && options.user_salt.empty()) {
    return absl::InvalidArgumentError("impression log: hash_users needs a user_salt (a hash without one is "
                                      "reversible by hashing known ids)");
  }
  std::unique_ptr<ImpressionLog> log(new ImpressionLog(std::move(options)));
  log->writer_ = std::thread([raw = log.get()] { raw->WriterLoop(); });
  return log;
}

ImpressionLog::ImpressionLog(ImpressionLogOptions options)
    : options_(std::move(options)),
      registry_(std::make_shared<prometheus::Registry>()),
      error_log_(absl::Seconds(10)) {
  prometheus::Registry* registry = registry_.get();
  auto& records = prometheus::BuildCounter()
                      .Name("recserve_impression_records_total")
                      .Help("Impression records by result: written, dropped_queue_full, dropped_write_error")
                      .Register(*registry);
  written_ = &records.Add({{"result", "written"}});
  dropped_queue_full_ = &records.Add({{"result", "dropped_queue_full"}});
  dropped_write_error_ = &records.Add({{"result", "dropped_write_error"}});
  auto& bytes = prometheus::BuildCounter()
                    .Name("recserve_impression_bytes_total")
                    .Help("Impression record bytes by result: written, dropped")
                    .Register(*registry);
  bytes_written_ = &bytes.Add({{"result", "written"}});
  bytes_dropped_ = &bytes.Add({{"result", "dropped"}});
  files_deleted_ = &prometheus::BuildCounter()
                        .Name("recserve_impression_files_deleted_total")
                        .Help("Impression log files deleted to keep the directory within its byte budget")
                        .Register(*registry)
                        .Add({});
}

void ImpressionLog::Offer(const v1::RecommendRequest& request, const v1::RecommendResponse& response) {
  thread_local absl::InsecureBitGen gen;
  if (options_.share < 1 && !absl::Bernoulli(gen, options_.share)) return;
  Enqueue(SerializeRecord(request, response));
}

std::string ImpressionLog::SerializeRecord(const v1::RecommendRequest& request,
                                           const v1::RecommendResponse& response) const {
  v1::Impression head;
  head.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
  if (options_.hash_users && !request.user_id().empty()) {
    head.set_user(absl::StrCat("h:", Sha256Hex(absl::StrCat(options_.user_salt, request.user_id())).substr(0, 16)));
  } else {
    head.set_user(request.user_id());
  }
  *head.mutable_context() = request.context();
  head.set_events_count(request.events_size());
  if (!options_.full_events && request.events_size() > 0) {
    std::string bytes;
    for (const v1::Event& e : request.events()) e.AppendToString(&bytes);
    head.set_events_digest(DigestPrefix(Sha256Hex(bytes)));
  }
  // The rest is appended as encoded fields: a message's serialization is the
  // concatenation of its fields', so the events and the response are not copied into a
  // v1::Impression first.
  std::string out;
  head.AppendToString(&out);
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    if (options_.full_events) {
      for (const v1::Event& e : request.events()) {
        WriteMessageField(v1::Impression::kEventsFieldNumber, e, &coded);
      }
    }
    WriteMessageField(v1::Impression::kResponseFieldNumber, response, &coded);
  }  // the stream gives back what it did not fill
  return out;
}

void ImpressionLog::Enqueue(std::string record) {
  {
    MutexLock lock(&mu_);
    if (!stopping_ && static_cast<int>(queue_.size()) < options_.queue_records) {
      queue_.push_back(std::move(record));
      return;
    }
  }
  dropped_queue_full_->Increment();
  bytes_dropped_->Increment(static_cast<double>(record.size()));
}

void ImpressionLog::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (writer_.joinable()) writer_.join();
}

ImpressionLog::Counts ImpressionLog::counts() const {
  Counts c;
  c.written = static_cast<int64_t>(written_->Value());
  c.dropped_queue_full = static_cast<int64_t>(dropped_queue_full_->Value());
  c.dropped_write_error = static_cast<int64_t>(dropped_write_error_->Value());
  c.bytes_written = static_cast<int64_t>(bytes_written_->Value());
  c.bytes_dropped = static_cast<int64_t>(bytes_dropped_->Value());
  c.files_deleted = static_cast<int64_t>(files_deleted_->Value());
  return c;
}

void ImpressionLog::SetBeforeWriteForTest(std::function<void()> hook) {
  MutexLock lock(&mu_);
  before_write_ = std::move(hook);
}

void ImpressionLog::WriterLoop() {
  for (;;) {
    std::deque<std::string> batch;
    std::function<void()> hook;
    bool stopping;
    {
      MutexLock lock(&mu_);
      // Batches: an Offer wakes the writer only when the queue is half full, not per record.
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return 2 * static_cast<int>(queue_.size()) >= options_.queue_records || stopping_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), options_.flush_interval);
      batch.swap(queue_);
      stopping = stopping_;
      hook = before_write_;
    }
    if (fd_ >= 0 && absl::Now() - file_opened_ >= options_.max_file_age) {
      CloseFile();
      EnforceBudget();
    }
    if (!batch.empty()) {
      if (hook) hook();
      WriteBatch(&batch);
    } else if (stopping) {
      break;
    }
  }
  CloseFile();
  EnforceBudget();
}

void ImpressionLog::WriteBatch(std::deque<std::string>* batch) {
  std::string pending;
  std::vector<size_t> ends;  // where each pending record ends in `pending`
  // Writes `pending` to the active file. When the write stops part-way (a full disk), the
  // file is cut back to the last whole record written, closed, and the records after it
  // are counted as dropped.
  auto flush = [&]() -> bool {
    if (pending.empty()) return true;
    std::string error;
    const size_t written = WriteAll(fd_, pending, &error);
    const size_t kept_records =
        static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), written) - ends.begin());
    const size_t lost = ends.size() - kept_records;
    const size_t kept_bytes = kept_records == 0 ? 0 : ends[kept_records - 1];
    file_bytes_ += static_cast<int64_t>(kept_bytes);
    written_->Increment(static_cast<double>(kept_records));
    bytes_written_->Increment(static_cast<double>(kept_bytes));
    const bool ok = written == pending.size();
    if (!ok) {
      if (::ftruncate(fd_, file_bytes_) != 0) {
        error += absl::StrCat("; cutting it back to ", file_bytes_, " bytes failed too");
      }
      const std::string path = active_path_;
      CloseFile();
      dropped_write_error_->Increment(static_cast<double>(lost));
      bytes_dropped_->Increment(static_cast<double>(pending.size() - kept_bytes));
      int64_t held_back = 0;
      if (error_log_.Allow(absl::Now(), &held_back)) {
        std::fprintf(stderr, "recserve: impression log: writing %s failed: %s; %zu records dropped\n", path.c_str(),
                     error.c_str(), lost);
      }
    }
    pending.clear();
    ends.clear();
    return ok;
  };
  std::string record;
  for (size_t i = 0; i < batch->size(); ++i) {
    record.clear();
    AppendImpressionBytes((*batch)[i], &record);
    if (fd_ >= 0 && file_bytes_ + static_cast<int64_t>(pending.size() + record.size()) > options_.max_file_bytes &&
        file_bytes_ + static_cast<int64_t>(pending.size()) > 0) {
      if (flush()) {
        CloseFile();
        EnforceBudget();
      }
    }
    if (fd_ < 0 && !OpenFile(absl::ToUnixMillis(absl::Now()))) {
      DropBatch(batch, i, "the impression log file could not be opened");
      return;
    }
    pending += record;
    ends.push_back(pending.size());
  }
  flush();
}

void ImpressionLog::DropBatch(std::deque<std::string>* batch, size_t from, const std::string& why) {
  double bytes = 0;
  for (size_t i = from; i < batch->size(); ++i) bytes += static_cast<double>((*batch)[i].size());
  dropped_write_error_->Increment(static_cast<double>(batch->size() - from));
  bytes_dropped_->Increment(bytes);
  int64_t held_back = 0;
  if (error_log_.Allow(absl::Now(), &held_back)) {
    std::fprintf(stderr, "recserve: impression log: %s; %zu records dropped\n", why.c_str(), batch->size() - from);
  }
}

bool ImpressionLog::OpenFile(int64_t now_ms) {
  absl::Status made = MakeDirs(options_.dir);
  if (made.ok()) {
    active_path_ = absl::StrCat(options_.dir, "/", ImpressionFileName(now_ms, sequence_++, /*active=*/true));
    fd_ = ::open(active_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ >= 0) {
      file_bytes_ = 0;
      file_opened_ = absl::Now();
      return true;
    }
    made = absl::UnavailableError(absl::StrCat("cannot create ", active_path_, ": ", std::strerror(errno)));
  }
  int64_t held_back = 0;
  if (error_log_.Allow(absl::Now(), &held_back)) {
    std::fprintf(stderr, "recserve: impression log: %s\n", made.ToString().c_str());
  }
  return false;
}

void ImpressionLog::CloseFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  if (file_bytes_ == 0) {
    ::unlink(active_path_.c_str());
    return;
  }
  const std::string complete(absl::StripSuffix(active_path_, ".part"));
  if (::rename(active_path_.c_str(), complete.c_str()) != 0) {
    int64_t held_back = 0;
    if (error_log_.Allow(absl::Now(), &held_back)) {
      std::fprintf(stderr, "recserve: impression log: renaming %s complete failed: %s\n", active_path_.c_str(),
                   std::strerror(errno));
    }
  }
}

void ImpressionLog::EnforceBudget() {
  absl::StatusOr<std::vector<ImpressionFileInfo>> files = ListImpressionFiles(options_.dir, /*include_active=*/true);
  if (!files.ok()) return;  // nothing written there yet, or unreadable: nothing to delete
  int64_t total = 0;
  for (const ImpressionFileInfo& f : *files) total += f.bytes;
  for (const ImpressionFileInfo& f : *files) {
    if (total <= options_.max_total_bytes) break;
    if (f.path == active_path_ && fd_ >= 0) continue;  // the file being written
    if (::unlink(f.path.c_str()) == 0) {
      total -= f.bytes;
      files_deleted_->Increment();
    }
  }
}

}  // namespace recserve
