// The slot map: for every slot of a device, where its current copy lives and
// which generation it is. 16 bytes a slot, so a 64 GiB device (16 Mi slots)
// costs 256 MiB: the same as zram's per-slot table.
//
//   checksum  xxHash3-64 of the page, or the fill word of a same-filled page
//   generation  increases on every store to the slot (32 bits; see below)
//   location  which tier holds the page (and a second tier holding a backup
//             copy, when the first is not durable alone), plus 26 bits that
//             the holding tier uses for itself (the cluster tier: its peers)
//
// Thread safety: a slot's entry is read and written under its stripe's
// mutex (Lock). Operations on one slot are serialized by holding that lock
// for their whole duration, which is what the tier stack does.
//
// Generations are 32 bits per slot: a slot overwritten 4 billion times wraps
// to 1; a peer then refuses the lower generation and the page goes to the
// next tier (correct, only slower).
#ifndef RAMSTER_CLIENT_SLOT_MAP_H_
#define RAMSTER_CLIENT_SLOT_MAP_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace ramster {

struct SlotEntry {
  uint64_t checksum = 0;
  uint32_t generation = 0;
  uint32_t location = 0;

  // Location bits.
  static constexpr uint32_t kTierShift = 0;      // 3 bits: 0 none, 7 fill
  static constexpr uint32_t kBackupShift = 3;    // 3 bits: 0 none
  static constexpr uint32_t kPlacementShift = 6; // 26 bits: the tier's
  static constexpr uint32_t kNone = 0;
  static constexpr uint32_t kFill = 7;
  static constexpr uint32_t kMaxTiers = 6;  // tiers are numbered 1..6

  uint32_t tier() const { return location & 7; }
  uint32_t backup() const { return (location >> kBackupShift) & 7; }
  uint32_t placement() const { return location >> kPlacementShift; }
  void Set(uint32_t tier, uint32_t backup, uint32_t placement) {
    location = (tier & 7) | ((backup & 7) << kBackupShift) |
               (placement << kPlacementShift);
  }
};
static_assert(sizeof(SlotEntry) == 16, "the slot map promises 16 bytes a slot");

class SlotMap {
 public:
  explicit SlotMap(uint64_t slots)
      : entries_(new SlotEntry[slots]()), slots_(slots), stripes_(kStripes) {}

  uint64_t slots() const { return slots_; }
  // REQUIRES: slot < slots(); the slot's stripe locked.
  SlotEntry& at(uint64_t slot) { return entries_[slot]; }
  std::mutex& StripeFor(uint64_t slot) { return stripes_[slot % kStripes]; }
  // A range of slots locks its stripes in increasing index order (this
  // function's), so that two ranges cannot deadlock; everything else locks
  // one stripe at a time.
  static size_t StripeIndex(uint64_t slot) { return slot % kStripes; }
  std::mutex& Stripe(size_t index) { return stripes_[index]; }

  // Bytes used per slot, everything included.
  double BytesPerSlot() const {
    return static_cast<double>(slots_ * sizeof(SlotEntry) +
                               kStripes * sizeof(std::mutex) + sizeof(*this)) /
           static_cast<double>(slots_ == 0 ? 1 : slots_);
  }

 private:
  static constexpr size_t kStripes = 4096;
  std::unique_ptr<SlotEntry[]> entries_;
  const uint64_t slots_;
  std::vector<std::mutex> stripes_;
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_SLOT_MAP_H_
