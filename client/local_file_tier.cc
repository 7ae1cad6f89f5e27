#include "client/local_file_tier.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ramster {

absl::StatusOr<std::unique_ptr<LocalFileTier>> LocalFileTier::Open(const std::string& path,
                                                                   uint64_t slots) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open local swap file ", path, ": ", strerror(errno)));
  }
  // Fresh contents: a previous run's pages belong to a previous epoch.
  if (ftruncate(fd, 0) != 0 ||
      fallocate(fd, 0, 0, static_cast<off_t>(slots * kPageSize)) != 0) {
    int err = errno;
    close(fd);
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot reserve ", slots * kPageSize, " bytes for ", path, ": ", strerror(err)));
  }
  return std::unique_ptr<LocalFileTier>(new LocalFileTier(fd, slots));
}

LocalFileTier::~LocalFileTier() { close(fd_); }

absl::Status LocalFileTier::Store(const PageKey& key, absl::Span<const uint8_t> raw,
                                  const EncodedPage&, PageMeta* meta, bool* durable) {
  if (key.index >= slots_ || key.object != 0) {
    return absl::OutOfRangeError("slot beyond the local swap file");
  }
  ssize_t n = pwrite(fd_, raw.data(), kPageSize, static_cast<off_t>(key.index * kPageSize));
  if (n != static_cast<ssize_t>(kPageSize)) {
    return absl::UnavailableError(absl::StrCat("local swap file write: ",
                                               n < 0 ? strerror(errno) : "short write"));
  }
  meta->placement = 0;
  *durable = true;
  stored_++;
  return absl::OkStatus();
}

absl::Status LocalFileTier::Load(const PageKey& key, const PageMeta& meta,
                                 absl::Span<uint8_t> out) {
  if (key.index >= slots_ || key.object != 0) {
    return absl::OutOfRangeError("slot beyond the local swap file");
  }
  ssize_t n = pread(fd_, out.data(), kPageSize, static_cast<off_t>(key.index * kPageSize));
  if (n != static_cast<ssize_t>(kPageSize)) {
    return absl::UnavailableError(absl::StrCat("local swap file read: ",
                                               n < 0 ? strerror(errno) : "short read"));
  }
  if (PageChecksum(out.first(kPageSize)) != meta.checksum) {
    return absl::DataLossError("local swap file copy fails its checksum");
  }
  return absl::OkStatus();
}

}  // namespace ramster
