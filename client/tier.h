// The tier interface: something that can hold pages and may refuse to.
//
// This is the seed's "stackable" API (swapper -> zcache -> frontswap): a
// TierStack (tier_stack.h) offers a page to its tiers in order; a tier that
// refuses (any non-OK status: kResourceExhausted when full, kUnavailable when
// its backing is down) passes the page to the next. A fault-injecting tier
// wraps another in a dozen lines (fault_tier.h).
//
// Thread safety: every method may be called concurrently for different keys.
// The stack never runs two operations on the same key at once.
#ifndef RAMSTER_CLIENT_TIER_H_
#define RAMSTER_CLIENT_TIER_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/page_codec.h"

namespace ramster {

class SlotMap;

// (pool, object, index), as in transcendent memory. The shim uses one pool
// per device with object 0 and index = slot.
struct PageKey {
  uint32_t pool = 0;
  uint64_t object = 0;
  uint64_t index = 0;
};

// What the slot map keeps about the copy a tier holds. The tier may use the
// 26 low bits of `placement` for itself (the cluster tier records its
// peers there); generation and checksum are the stack's.
struct PageMeta {
  uint32_t generation = 0;
  uint64_t checksum = 0;
  uint32_t placement = 0;
};
inline constexpr uint32_t kPlacementBits = 26;

// One page of a batch (Tier::StoreBatch / LoadBatch): inputs, then what the
// tier says about it.
struct StoreItem {
  PageKey key;
  absl::Span<const uint8_t> raw;
  const EncodedPage* encoded = nullptr;
  PageMeta meta;          // generation and checksum in; placement out
  bool durable = true;    // out
  absl::Status status;    // out: OK, or this tier's refusal
};
struct LoadItem {
  PageKey key;
  PageMeta meta;
  absl::Span<uint8_t> out;
  absl::Status status;    // out
};

class Tier {
 public:
  virtual ~Tier() = default;

  virtual std::string_view name() const = 0;

  // Stores a page: `raw` is its 4096 bytes, `encoded` the same page encoded
  // (the tier keeps whichever suits it). `meta` carries the generation and
  // checksum in; on success the tier may set meta->placement.
  // A non-OK status is a refusal: nothing is kept.
  // `durable` is set false when the tier kept the page but wants another
  // copy elsewhere (the cluster tier with fewer acks than replicas).
  virtual absl::Status Store(const PageKey& key, absl::Span<const uint8_t> raw,
                             const EncodedPage& encoded, PageMeta* meta,
                             bool* durable) = 0;

  // Fills `out` (4096 bytes) with the page stored under `meta`, verified
  // against its generation and checksum. kNotFound: not here (any more);
  // kDataLoss: every copy failed verification; kUnavailable: cannot reach it.
  virtual absl::Status Load(const PageKey& key, const PageMeta& meta,
                            absl::Span<uint8_t> out) = 0;

  // Many pages at once, each with its own outcome. The defaults call Store
  // and Load page by page; a tier with a network behind it sends them
  // together.
  virtual void StoreBatch(absl::Span<StoreItem* const> items) {
    for (StoreItem* i : items) {
      i->status = Store(i->key, i->raw, *i->encoded, &i->meta, &i->durable);
    }
  }
  virtual void LoadBatch(absl::Span<LoadItem* const> items) {
    for (LoadItem* i : items) i->status = Load(i->key, i->meta, i->out);
  }

  // Forgets the page stored under `meta`. May finish in the background.
  virtual void Invalidate(const PageKey& key, const PageMeta& meta) = 0;

  // Forgets the copy stored under `old` now that this tier holds a newer
  // copy of the same key, stored under `now` (only called for tiers that do
  // not overwrite in place). The default is Invalidate(key, old); a tier
  // may skip what the new copy replaced already (the cluster tier: the
  // peers that took the new copy, whose old copy it overwrote).
  virtual void InvalidateReplaced(const PageKey& key, const PageMeta& old, const PageMeta& now) {
    (void)now;
    Invalidate(key, old);
  }

  // Whole objects and pools (applications using the library directly).
  virtual void InvalidateObject(uint32_t pool, uint64_t object) {
    (void)pool;
    (void)object;
  }
  virtual void InvalidatePool(uint32_t pool) { (void)pool; }

  // True when storing a key replaces that key's previous copy in this tier
  // (a file slot, a cache entry), so the stack must not invalidate the old
  // copy afterwards. False for tiers that invalidate by generation (the
  // cluster: other peers may hold the old copy).
  virtual bool overwrites_in_place() const { return true; }

  // Called once by the stack: the slot map the tier's pages are recorded
  // in (must outlive the tier), this tier's number in it, and the pool whose
  // slot s is key (pool, 0, s). Tiers that repair in the background use it.
  virtual void AttachSlotMap(SlotMap* slots, uint32_t tier_number, uint32_t pool) {
    (void)slots;
    (void)tier_number;
    (void)pool;
  }
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_TIER_H_
