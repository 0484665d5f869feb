// Small file helpers with Status errors that name the path.
#ifndef RECSERVE_ENGINE_FILE_UTIL_H_
#define RECSERVE_ENGINE_FILE_UTIL_H_

#include <fcntl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace recserve {

// An open file descriptor, closed when this goes away.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  int release();

 private:
  int fd_ = -1;
};

enum class Symlinks { kFollow, kRefuse };

// A regular file open for reading, with its size when it was opened.
class RegularFile {
 public:
  // Opens `name`, relative to the directory `dir_fd` (AT_FDCWD: the working directory),
  // `display` naming it in every error. The open never blocks (O_NONBLOCK: a FIFO with no
  // writer would wait forever) and, with Symlinks::kRefuse, refuses a symbolic link as
  // the last component (O_NOFOLLOW). Anything but a regular file (a FIFO, a device, a
  // socket, a directory, a refused link) is InvalidArgument naming what it is; so is a
  // file of more than `max_bytes`. Nothing is read.
  static absl::StatusOr<RegularFile> Open(int dir_fd, const std::string& name, std::string display,
                                          uint64_t max_bytes, Symlinks symlinks);

  uint64_t size() const { return size_; }
  const std::string& display() const { return display_; }
  // Reads the whole file, size() bytes, into `out`. A file that is shorter or longer by
  // now (changed since Open) is DataLoss.
  absl::Status ReadAll(char* out) const;

 private:
  RegularFile(UniqueFd fd, uint64_t size, std::string display)
      : fd_(std::move(fd)), size_(size), display_(std::move(display)) {}
  UniqueFd fd_;
  uint64_t size_ = 0;
  std::string display_;
};

// Reads a regular file whole (RegularFile, following symlinks). NotFound when missing;
// refuses files over `max_bytes` and anything that is not a regular file.
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             size_t max_bytes = size_t{1} << 32);

// An anonymous in-memory file (memfd) of a fixed size, written once through data() and
// then sealed: after Seal() nothing, this process included, can change, shrink or grow
// it. For libraries that read a file by name (hnswlib): path() names it, and every open
// of that path reads exactly the bytes written.
class MemoryFile {
 public:
  // `name` names the file in errors.
  static absl::StatusOr<std::unique_ptr<MemoryFile>> Create(std::string name, size_t size);
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  const std::string& name() const { return name_; }
  size_t size() const { return size_; }
  // size() writable bytes until Seal(); null after it.
  char* data() { return data_; }
  absl::Status Seal();
  // "/proc/self/fd/<n>": opening it opens this file, from its first byte.
  std::string path() const;

 private:
  MemoryFile(UniqueFd fd, std::string name, size_t size)
      : fd_(std::move(fd)), name_(std::move(name)), size_(size) {}
  UniqueFd fd_;
  std::string name_;
  size_t size_ = 0;
  char* data_ = nullptr;  // the writable mapping
};

// Writes path + ".tmp", fsyncs, renames onto `path`.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);
bool FileExists(const std::string& path);
absl::Status MakeDirs(const std::string& path);

}  // namespace recserve

#endif  // RECSERVE_ENGINE_FILE_UTIL_H_
