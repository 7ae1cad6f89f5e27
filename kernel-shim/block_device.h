// BlockDevice: what the NBD front end serves. It knows nothing of tiers; a
// TierStackDevice (tier_stack_device.h) puts the tier stack behind it.
// Offsets and lengths are bytes; the NBD server checks them against size()
// before calling.
//
// Error codes map to NBD errors in one place (nbd_server.cc):
//   kInvalidArgument/kOutOfRange -> EINVAL, kResourceExhausted -> ENOSPC,
//   everything else -> EIO.
//
// Batches: the NBD server hands a device the READs (or WRITEs) that are
// waiting together as one ReadBatch (WriteBatch) call, so that a device
// with a network behind it can send them in one round trip. Each request of
// a batch has its own outcome. The defaults run them one at a time.
//
// Thread safety: all methods may be called concurrently (NBD clients keep
// many requests in flight).
#ifndef RAMSTER_KERNEL_SHIM_BLOCK_DEVICE_H_
#define RAMSTER_KERNEL_SHIM_BLOCK_DEVICE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace ramster {

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  virtual uint64_t size() const = 0;
  // REQUIRES for all: offset + length <= size().
  virtual absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) = 0;
  virtual absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) = 0;
  // Discard: afterwards the range reads as zeros and its storage is freed.
  virtual absl::Status Trim(uint64_t offset, uint64_t length) = 0;
  virtual absl::Status WriteZeroes(uint64_t offset, uint64_t length) = 0;
  // One READ or WRITE of a batch: for a READ `data` is filled, for a WRITE
  // it holds the bytes to write (and is not modified).
  struct Io {
    uint64_t offset = 0;
    absl::Span<uint8_t> data;
    absl::Status status;  // out: what Read/Write would have returned
  };
  // True when `io` covers whole 4096-byte pages (at least one).
  static bool WholePages(const Io& io) {
    return io.offset % 4096 == 0 && io.data.size() % 4096 == 0 && !io.data.empty();
  }
  // REQUIRES: every offset + size <= size(); no two requests of a batch
  // overlap (so they may run in any order, or all at once).
  virtual void ReadBatch(absl::Span<Io> ios) {
    for (Io& io : ios) io.status = Read(io.offset, io.data);
  }
  virtual void WriteBatch(absl::Span<Io> ios) {
    for (Io& io : ios) io.status = Write(io.offset, io.data);
  }
  // True when a WRITE of whole pages normally returns without waiting for
  // any I/O (it may still wait under back-pressure): the NBD server then
  // runs a burst of such writes on the connection's reader instead of
  // handing them to a worker.
  virtual bool quick_writes() const { return false; }
  // Everything acknowledged so far is as durable as the device promises.
  virtual absl::Status Flush() = 0;
  // True when writes through one connection are visible to reads through
  // every other connection (NBD_FLAG_CAN_MULTI_CONN).
  virtual bool can_multi_conn() const = 0;
};

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_BLOCK_DEVICE_H_
