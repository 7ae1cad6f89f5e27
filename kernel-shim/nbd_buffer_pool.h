// NbdBufferPool: the NBD server's request buffers, carved out of one arena
// that is allocated and touched up front, so that the I/O path allocates
// nothing (the shim swaps for the kernel; it must not need memory to do so)
// and the server's buffer memory is a known number.
//
// A buffer is a contiguous run of 4096-byte units of the arena. Acquire
// blocks until a run of the requested size is free; waiters are served in
// arrival order, so a large request is not starved by a stream of small
// ones (while it waits, later requests wait behind it, and as in-flight
// requests finish the arena drains until the run fits).
//
// Thread safety: all methods may be called concurrently.
#ifndef RAMSTER_KERNEL_SHIM_NBD_BUFFER_POOL_H_
#define RAMSTER_KERNEL_SHIM_NBD_BUFFER_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/types/span.h"
#include "common/mutex.h"

namespace ramster {

class NbdBufferPool {
 public:
  static constexpr size_t kUnit = 4096;

  // A run of the arena. Empty (data() == nullptr) when default-constructed
  // or when zero bytes were asked for.
  class Buffer {
   public:
    Buffer() = default;
    uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    absl::Span<uint8_t> span() const { return absl::MakeSpan(data_, size_); }

   private:
    friend class NbdBufferPool;
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
    size_t first_unit_ = 0, units_ = 0;
  };

  // Preallocates `capacity_bytes` rounded up to a whole unit (at least one).
  explicit NbdBufferPool(size_t capacity_bytes);
  NbdBufferPool(const NbdBufferPool&) = delete;
  NbdBufferPool& operator=(const NbdBufferPool&) = delete;

  size_t capacity() const { return units_ * kUnit; }

  // A buffer of `bytes` bytes (0 gives an empty buffer at once).
  // REQUIRES: bytes <= capacity(); every buffer is eventually released.
  Buffer Acquire(size_t bytes);
  // Acquire without waiting: false (and nothing taken) when the run is not
  // free now or other callers are waiting for space (they come first).
  bool TryAcquire(size_t bytes, Buffer* buffer);
  void Release(Buffer* buffer);

  size_t bytes_in_use() const;
  // Acquire calls that had to wait for space, and those waiting now.
  uint64_t waits() const;
  uint64_t waiting() const;

 private:
  // First run of `units` free units, or npos. REQUIRES: mu_ held.
  size_t FindRun(size_t units) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Mark(size_t first, size_t units, bool used) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the run used and describes it. REQUIRES: mu_ held.
  Buffer Take(size_t first, size_t units, size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Used(size_t unit) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (used_[unit / 64] >> (unit % 64)) & 1;
  }

  // Constant after construction.
  const size_t units_;
  const std::unique_ptr<uint8_t[]> arena_;

  mutable Mutex mu_;
  CondVar changed_{&mu_};
  std::vector<uint64_t> used_ ABSL_GUARDED_BY(mu_);  // one bit a unit
  size_t units_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  // FIFO among waiters: each Acquire takes a ticket and proceeds when it is
  // the one being served.
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t serving_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t waits_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_NBD_BUFFER_POOL_H_
