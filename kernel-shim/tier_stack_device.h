// TierStackDevice: a block device whose 4096-byte blocks are the slots of a
// TierStack. The whole pages of a request go to the stack as one range (one
// request per peer); the whole pages of all the requests of a batch go as
// one set of slots (TierStack::LoadSlots/StoreSlots: still one request per
// peer, and each request gets the status of its own pages). A partial page
// at either end is read, modified and written under a per-page lock. TRIM
// and WRITE_ZEROES of whole pages invalidate them (which also frees their
// remote copies).
//
// Every write acknowledged here was kept by some tier (the local swap file
// is the last, and it refuses only on a failing disk), so the kernel does
// not see errors because the cluster is full or down.
//
// Thread safety: all methods may be called concurrently.
#ifndef RAMSTER_KERNEL_SHIM_TIER_STACK_DEVICE_H_
#define RAMSTER_KERNEL_SHIM_TIER_STACK_DEVICE_H_

#include <mutex>
#include <vector>

#include "client/tier_stack.h"
#include "kernel-shim/block_device.h"

namespace ramster {

class TierStackDevice final : public BlockDevice {
 public:
  // `stack` must outlive the device.
  explicit TierStackDevice(TierStack* stack) : stack_(stack), page_locks_(1024) {}

  uint64_t size() const override { return stack_->slots() * kPageSize; }
  absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) override;
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Trim(uint64_t offset, uint64_t length) override;
  absl::Status WriteZeroes(uint64_t offset, uint64_t length) override;
  void ReadBatch(absl::Span<Io> ios) override;
  void WriteBatch(absl::Span<Io> ios) override;
  absl::Status Flush() override { return absl::OkStatus(); }
  bool can_multi_conn() const override { return true; }

 private:
  // Zeroes or trims [offset, offset + length): whole pages are invalidated,
  // the partial pages at either end are rewritten with zeros.
  absl::Status ZeroRange(uint64_t offset, uint64_t length);
  std::mutex& LockFor(uint64_t slot) { return page_locks_[slot % page_locks_.size()]; }

  TierStack* const stack_;
  std::vector<std::mutex> page_locks_;
};

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_TIER_STACK_DEVICE_H_
