// TierStack: the front of the client. Offers each page to its tiers in
// order, remembers in the slot map where the current copy lives, and reads
// it back from there. This is what the shim's block device sits on; it does
// not know which tiers are below it.
//
//   store(slot):  same-filled page? keep the fill word, done. Otherwise
//                 encode once, then tier 1, tier 2, ... until one keeps it;
//                 a tier that keeps it without being durable alone (fewer
//                 cluster acks than replicas) is backed by the next tier
//                 that takes it. The previous copy is invalidated afterwards.
//   load(slot):   a slot never written (or trimmed) reads as zeros without
//                 asking anyone; otherwise its tier, then its backup tier.
//                 If no copy verifies, the load fails (kDataLoss) and says
//                 so loudly: it never returns wrong bytes.
//   invalidate:   forgets slots; the tiers free their copies.
//
// Batches: a range (StoreRange/LoadRange) or a set of scattered slots
// (StoreSlots/LoadSlots) goes to each tier as one batch, so that the
// cluster tier sends one request per peer for all of it.
//
// Thread safety: all methods may be called concurrently. Operations on one
// slot are serialized (the slot map's stripe lock is held across them; a
// batch holds the stripes of all its slots, taken in increasing stripe
// order, each once, so that two batches cannot deadlock).
#ifndef RAMSTER_CLIENT_TIER_STACK_H_
#define RAMSTER_CLIENT_TIER_STACK_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "client/slot_map.h"
#include "client/tier.h"

namespace ramster {

// Whether this is a ThreadSanitizer build: GCC defines __SANITIZE_THREAD__,
// Clang answers __has_feature(thread_sanitizer).
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderThreadSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kUnderThreadSanitizer = true;
#else
inline constexpr bool kUnderThreadSanitizer = false;
#endif
#else
inline constexpr bool kUnderThreadSanitizer = false;
#endif

class TierStack {
 public:
  struct Stats {
    uint64_t stores = 0, loads = 0, invalidates = 0;
    uint64_t same_filled = 0;       // stores kept as a fill word
    uint64_t zero_loads = 0;        // loads of never-written slots
    uint64_t backups = 0;           // stores that needed a backup copy
    uint64_t not_durable = 0;       // stores acknowledged without one
    uint64_t load_fallbacks = 0;    // loads served by the backup tier
    uint64_t load_failures = 0;     // loads with no good copy
    std::vector<uint64_t> stored_in;   // per tier: stores it kept
    std::vector<uint64_t> refused_by;  // per tier: stores it refused
    std::vector<uint64_t> slots_in;    // per tier: slots it holds now
    uint64_t slots_filled = 0;         // slots holding a fill word now
  };

  // `tiers` in order, at most SlotEntry::kMaxTiers. `pool` is the pool the
  // device's pages use (key = (pool, 0, slot)). The stack attaches the slot
  // map to tiers that want it (the cluster tier, for repairs).
  TierStack(uint64_t slots, uint32_t pool, std::vector<std::unique_ptr<Tier>> tiers,
            bool same_filled = true);
  TierStack(const TierStack&) = delete;
  TierStack& operator=(const TierStack&) = delete;

  uint64_t slots() const { return map_.slots(); }

  // `page` is 4096 bytes. kInvalidArgument for a slot beyond the device;
  // otherwise the last tier's refusal when every tier refused.
  absl::Status Store(uint64_t slot, absl::Span<const uint8_t> page);
  absl::Status Load(uint64_t slot, absl::Span<uint8_t> out);
  // Whole pages [first, first + n) at once: each tier gets them as one
  // batch (the cluster tier sends one request per peer). `pages`/`out` is a
  // whole number of pages. A failure leaves the pages stored before it.
  absl::Status StoreRange(uint64_t first, absl::Span<const uint8_t> pages);
  absl::Status LoadRange(uint64_t first, absl::Span<uint8_t> out);
  // One page of a scattered batch: its slot, its 4096 bytes, and its own
  // outcome (what Store/Load would have returned for it alone).
  struct SlotStore {
    uint64_t slot = 0;
    absl::Span<const uint8_t> page;
    absl::Status status;  // out
  };
  struct SlotLoad {
    uint64_t slot = 0;
    absl::Span<uint8_t> out;
    absl::Status status;  // out
  };
  // Pages at any slots, each tier getting them as one batch (up to
  // kBatchPages pages under one set of locks at a time). Every page gets its
  // own status: one that fails does not fail the others. A slot may appear
  // more than once; the operations then take effect in span order (a later
  // store of a slot wins). kInvalidArgument for a slot beyond the device or
  // a page that is not 4096 bytes.
  void StoreSlots(absl::Span<SlotStore> stores);
  void LoadSlots(absl::Span<SlotLoad> loads);
  // Forgets [first, first + count) (clipped to the device).
  void Invalidate(uint64_t first, uint64_t count);

  Stats stats();
  Tier* tier(size_t i) { return tiers_[i].get(); }
  size_t tier_count() const { return tiers_.size(); }
  SlotMap* slot_map() { return &map_; }

 private:
  // Pages handled under one set of locks, which the tiers then take as one
  // batch: a write-behind flush of 256 pages goes out in two round trips,
  // not eight. A/B with 32 (fio QD32 randwrite, 3 local servers): 2
  // replicas 97k-104k -> 123k-131k IOPS, 1 replica 118k-129k -> 127k-132k;
  // with 64, 118k-120k at 2 replicas. ThreadSanitizer's deadlock detector
  // lets a thread hold at most 64 mutexes, so TSan builds keep 32.
  static constexpr uint64_t kBatchPages = kUnderThreadSanitizer ? 32 : 128;

  PageKey Key(uint64_t slot) const { return PageKey{pool_, 0, slot}; }
  // One batch under one set of stripe locks: sets each page's status.
  // REQUIRES: at most kBatchPages pages, distinct slots, all valid.
  void StoreGroup(absl::Span<SlotStore* const> group);
  void LoadGroup(absl::Span<SlotLoad* const> group);
  // Frees the copies `old` describes. `kept_tier`: the tier now holding the
  // new copy under the same key (its copy replaced the old one in place).
  void Release(uint64_t slot, const SlotEntry& old, uint32_t kept_tier, uint32_t kept_backup);

  SlotMap map_;
  const uint32_t pool_;
  const std::vector<std::unique_ptr<Tier>> tiers_;
  const bool same_filled_;

  std::atomic<uint64_t> stores_{0}, loads_{0}, invalidates_{0}, same_filled_count_{0},
      zero_loads_{0}, backups_{0}, not_durable_{0}, load_fallbacks_{0}, load_failures_{0};
  std::unique_ptr<std::atomic<uint64_t>[]> stored_in_, refused_by_;
  // Slots whose entry names each location value (none, tier 1..6, fill),
  // kept as entries change so that stats() need not walk the slot map.
  std::atomic<uint64_t> slots_at_[8] = {};
  // REQUIRES: the slot's stripe locked; called once per location change.
  void Moved(uint32_t from, uint32_t to) {
    slots_at_[from & 7]--;
    slots_at_[to & 7]++;
  }
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_TIER_STACK_H_
