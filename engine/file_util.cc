#include "engine/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace recserve {
namespace {

absl::Status Errno(const std::string& what, const std::string& path) {
  const int err = errno;
  std::string msg = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(msg) : absl::UnavailableError(msg);
}

// What a file that should be regular is instead, as an error naming it.
absl::Status NotRegular(const std::string& path, mode_t mode) {
  const char* what = S_ISFIFO(mode)   ? "a FIFO (named pipe)"
                     : S_ISCHR(mode)  ? "a character device"
                     : S_ISBLK(mode)  ? "a block device"
                     : S_ISSOCK(mode) ? "a socket"
                     : S_ISDIR(mode)  ? "a directory"
                     : S_ISLNK(mode)  ? "a symbolic link"
                                      : "of an unknown type";
  return absl::InvalidArgumentError(absl::StrCat(path, ": is ", what, "; it must be a regular file"));
}

// Larger reads are split: Linux returns at most about 2 GiB per read(2).
constexpr uint64_t kMaxReadBytes = uint64_t{1} << 30;

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int UniqueFd::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

absl::StatusOr<RegularFile> RegularFile::Open(int dir_fd, const std::string& name, std::string display,
                                              uint64_t max_bytes, Symlinks symlinks) {
  // O_NONBLOCK only matters for the open itself (and for a FIFO, refused below): reads of
  // a regular file ignore it.
  const int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | (symlinks == Symlinks::kRefuse ? O_NOFOLLOW : 0);
  UniqueFd fd(::openat(dir_fd, name.c_str(), flags));
  if (fd.get() < 0) {
    const int err = errno;
    struct stat st;
    if (err == ELOOP && symlinks == Symlinks::kRefuse &&
        ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(display, ": is a symbolic link; it must be a regular file"));
    }
    if (err == ENXIO && ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      return NotRegular(display, st.st_mode);  // a socket
    }
    errno = err;
    return Errno("cannot open", display);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Errno("cannot stat", display);
  if (!S_ISREG(st.st_mode)) return NotRegular(display, st.st_mode);
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(display, ": ", st.st_size, " bytes, more than the limit of ", max_bytes));
  }
  return RegularFile(std::move(fd), static_cast<uint64_t>(st.st_size), std::move(display));
}

absl::Status RegularFile::ReadAll(char* out) const {
  uint64_t done = 0;
  while (done < size_) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(size_ - done, kMaxReadBytes));
    const ssize_t r = ::pread(fd_.get(), out + done, want, static_cast<off_t>(done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno("read failed", display_);
    if (r == 0) {
      return absl::DataLossError(absl::StrCat(display_, ": ends after ", done, " of its ", size_,
                                              " bytes; it changed while being read"));
    }
    done += static_cast<uint64_t>(r);
  }
  char extra;
  ssize_t r;
  do {
    r = ::pread(fd_.get(), &extra, 1, static_cast<off_t>(size_));
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Errno("read failed", display_);
  if (r > 0) {
    return absl::DataLossError(
        absl::StrCat(display_, ": longer than its ", size_, " bytes; it changed while being read"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes) {
  absl::StatusOr<RegularFile> file = RegularFile::Open(AT_FDCWD, path, path, max_bytes, Symlinks::kFollow);
  if (!file.ok()) return file.status();
  std::string out(static_cast<size_t>(file->size()), '\0');
  if (absl::Status s = file->ReadAll(out.data()); !s.ok()) return s;
  return out;
}

absl::StatusOr<std::unique_ptr<MemoryFile>> MemoryFile::Create(std::string name, size_t size) {
  // The kernel's name (at most 249 bytes) only shows in /proc/self/fd links: a fixed one.
  UniqueFd fd(::memfd_create("recserve-memory-file", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd.get() < 0) return Errno("cannot create an in-memory copy", name);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return Errno(absl::StrCat("cannot size an in-memory copy of ", size, " bytes"), name);
  }
  std::unique_ptr<MemoryFile> file(new MemoryFile(std::move(fd), std::move(name), size));
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, file->fd_.get(), 0);
    if (m == MAP_FAILED) return Errno("cannot map an in-memory copy", file->name_);
    file->data_ = static_cast<char*>(m);
  }
  return file;
}

MemoryFile::~MemoryFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

absl::Status MemoryFile::Seal() {
  // F_SEAL_WRITE needs the writable mapping gone.
  if (data_ != nullptr) {
    ::munmap(data_, size_);
    data_ = nullptr;
  }
  if (::fcntl(fd_.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return Errno("cannot seal the in-memory copy", name_);
  }
  return absl::OkStatus();
}

std::string MemoryFile::path() const { return absl::StrCat("/proc/self/fd/", fd_.get()); }

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", tmp);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t w = ::write(fd, contents.data() + done, contents.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      ::close(fd);
      return Errno("write failed", tmp);
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    return Errno("fsync failed", tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return Errno("rename failed", path);
  return absl::OkStatus();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::Status MakeDirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(path, ": cannot create: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace recserve
