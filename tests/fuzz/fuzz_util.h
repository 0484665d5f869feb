// Shared by the libFuzzer targets of tests/fuzz and their seed writer (fuzz_seeds.cc).
#ifndef RECSERVE_TESTS_FUZZ_FUZZ_UTIL_H_
#define RECSERVE_TESTS_FUZZ_FUZZ_UTIL_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace recserve::fuzz {

// Stops the run (libFuzzer saves the input as a crash) when a property the code promises
// does not hold; a refused input is not a failure, a wrong answer is.
#define FUZZ_CHECK(cond, what)                                                           \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "fuzz check failed: %s: %s\n", #cond, std::string(what).c_str()); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// A fuzz input as a file, for the readers that only take a path (hnswlib reads its graph
// from a path; the CSV importers read through zlib's gzopen, plain and gzip alike): an
// anonymous in-memory file (memfd), rewritten for each input and opened by its
// /proc/self/fd path, so a run writes nothing to disk.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(memfd_create(name, MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path_ = absl::StrCat("/proc/self/fd/", fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  ~MemFile() { close(fd_); }

  // Replaces the contents with `size` bytes at `data`; returns the path to open.
  const std::string& Set(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// Stops the process with a message when start-up (a fixed, valid input) fails.
inline void CheckStartup(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "fuzz target start-up: %s: %s\n", what, status.ToString().c_str());
    std::abort();
  }
}

}  // namespace recserve::fuzz

#endif  // RECSERVE_TESTS_FUZZ_FUZZ_UTIL_H_
