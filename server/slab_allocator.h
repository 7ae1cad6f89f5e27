// Size-classed storage for compressed pages, in the spirit of zsmalloc but
// without its chunks: an object of n bytes takes the smallest class of
// 8-byte granularity that fits it, and each class is one array of equal
// objects laid end to end in its own reserved range of virtual memory.
// Objects may straddle page boundaries, so no page has a tail that no object
// fills; a page is committed (charged to the Budget and faulted in) when the
// first object touching it is allocated, and given back (uncharged) when the
// last one touching it is freed. Free slots are reused lowest first, so a
// class's live objects stay packed at the start of its array and its high
// pages are the ones that empty.
//
// What is charged, and resident, is therefore the pages that hold objects:
// per object its class size (3.5 bytes over its length on average) and, per
// class, at most the page at its high end partly used.
//
// An emptied page is kept committed (still charged: it is resident) in a
// small cache of at most kMaxCachedBytes while the budget is below 7/8 of
// its limit, so that a class at the boundary does not fault a page in and
// out on every store; the cache is dropped whenever the budget needs room.
//
// A page given back beyond the cache is given lazily (madvise MADV_FREE):
// the kernel takes it whenever it wants memory, without I/O, and until it
// does, a store that reuses the page writes to it without a page fault. A
// donor whose clients churn (swap-in, TRIM, swap-out) would otherwise pay a
// fault and a zeroed page for most of its stores (measured: a quarter of a
// batched store's CPU). Such pages still count in the process's RSS (and
// in /proc/<pid>/smaps_rollup's LazyFree) until the kernel takes them. When
// the node gives memory back because it must (an eviction, a lowered
// limit, a dropped cache: set_caching(false) or DropCache), it is given at
// once (MADV_DONTNEED); ReleaseLazyPages gives back at once what went
// lazily before.
//
// A handle names an object: class index << 31 | slot (at most 40 bits).
// Handles stay valid until Free; Resolve turns one into a pointer.
//
// Thread safety: Allocate and Free lock one class; Resolve (and PrepareWrite
// and Write) take no lock and are safe for a handle that the caller knows is
// not being freed concurrently (the node guarantees that with its
// index-shard locks).
//
// Left for later: compaction. A page is returned only when every object
// touching it is freed, so a class whose objects were freed at random keeps
// pages with holes (reused by its next stores; zsmalloc moves objects to
// close them; see the README).
#ifndef RAMSTER_SERVER_SLAB_ALLOCATOR_H_
#define RAMSTER_SERVER_SLAB_ALLOCATOR_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "server/memory_budget.h"

namespace ramster {

class SlabAllocator {
 public:
  static constexpr uint32_t kGranularity = 8;
  static constexpr uint32_t kMaxObjectSize = 4096;
  static constexpr uint32_t kNumClasses = kMaxObjectSize / kGranularity;
  static constexpr uint32_t kPage = 4096;
  static constexpr uint64_t kMaxCachedBytes = 4 << 20;

  // `budget` must outlive the allocator; pages are charged to it. Each class
  // reserves address space for the budget's limit at construction (at least
  // 64 MiB, at most 64 GiB): raising the limit beyond that later leaves the
  // classes at their reserved size.
  explicit SlabAllocator(Budget* budget);
  ~SlabAllocator();
  SlabAllocator(const SlabAllocator&) = delete;
  SlabAllocator& operator=(const SlabAllocator&) = delete;

  // The bytes an object of `size` bytes occupies in its class.
  static uint32_t ClassSize(uint32_t size);

  // kResourceExhausted when the object needs a page and the budget has no
  // room for it (or its class's range is full, or memory for bookkeeping
  // cannot be had); kInvalidArgument for a size over kMaxObjectSize.
  absl::StatusOr<uint64_t> Allocate(uint32_t size);
  void Free(uint64_t handle);
  uint8_t* Resolve(uint64_t handle) const;

  // Writing an object. A stored page's object is cold memory: written
  // once, read back much later if ever. An ordinary copy into it must
  // first read every cache line it writes from memory, and the next locked
  // instruction waits for all of that (measured: a third of a server's CPU
  // per stored page at QD32 randwrite). So:
  //
  // PrepareWrite asks the CPU now for the object's first and last cache
  // lines, the ones Write fills only in part (objects are 8-byte aligned,
  // not line-aligned), so that they arrive while the caller does other
  // work (takes its index lock, finds the key).
  void PrepareWrite(uint64_t handle, uint32_t size) const;
  // Copies `bytes` (at most the object's size) into the object: its whole
  // cache lines with streaming (non-temporal) stores, which write a line
  // without reading it first and leave it out of the cache, the partial
  // lines at its ends with ordinary stores; then a store fence, so that a
  // thread that synchronizes with this one afterwards (a mutex) sees every
  // byte.
  void Write(uint64_t handle, const uint8_t* bytes, uint32_t size);

  // Bytes of pages holding at least one object.
  uint64_t page_bytes() const;
  // Gives back the cached empty pages and their charge.
  void DropCache();
  // Gives the kernel at once (MADV_DONTNEED) every page given back lazily
  // so far, so that the process's RSS drops now (a lowered limit).
  void ReleaseLazyPages();
  // While off, emptied pages are given back at once (an eviction in
  // progress must see every byte it frees).
  void set_caching(bool on) { caching_.store(on); }
  // Bytes of the empty pages kept committed in the cache.
  uint64_t cached_bytes() const { return cached_bytes_.load(std::memory_order_relaxed); }
  // Bytes of live objects (class sizes), for fragmentation figures.
  uint64_t object_bytes() const;

 private:
  // Per page of a class's range: how many objects touch it, and whether it
  // is committed but empty (in the cache).
  static constexpr uint16_t kCachedBit = 0x8000;

  struct SizeClass {
    mutable Mutex mu;
    uint32_t object_size = 0;
    uint8_t* base = nullptr;  // reserved range; nullptr if mmap failed
    uint64_t max_slots = 0;
    // Slots [0, top) have been handed out at some time; below top, a set bit
    // in `free_bits` is a free slot, and a set bit in `free_words` says that
    // word of free_bits has one.
    uint64_t top ABSL_GUARDED_BY(mu) = 0;
    std::vector<uint64_t> free_bits ABSL_GUARDED_BY(mu);
    std::vector<uint64_t> free_words ABSL_GUARDED_BY(mu);
    std::vector<uint16_t> pages ABSL_GUARDED_BY(mu);
    std::vector<uint32_t> cached ABSL_GUARDED_BY(mu);  // page numbers
    uint64_t live_objects ABSL_GUARDED_BY(mu) = 0;
    uint64_t committed_pages ABSL_GUARDED_BY(mu) = 0;  // cached ones included
  };

  // Allocation within one class; kUnavailable (internally) when it needs
  // `*pages_needed` more pages than the budget would give.
  absl::StatusOr<uint64_t> AllocateIn(uint32_t class_index, bool* budget_short);
  // Lowest free slot below top, or top. REQUIRES: cls->mu held.
  static uint64_t FindSlot(SizeClass* cls);
  // Pages [first, last] that slot `slot` touches.
  static void PagesOf(const SizeClass& cls, uint64_t slot, uint64_t* first, uint64_t* last);
  // The page emptied: cache it or give it back. REQUIRES: cls->mu held.
  void PageEmptied(SizeClass* cls, uint64_t page);
  // Uncharges the page and gives it back: lazily (MADV_FREE), or `at_once`
  // (MADV_DONTNEED).
  void Uncommit(SizeClass* cls, uint64_t page, bool at_once);

  Budget* const budget_;
  uint64_t class_bytes_ = 0;  // reserved per class
  SizeClass classes_[kNumClasses];
  std::atomic<bool> caching_{true};
  std::atomic<uint64_t> cached_bytes_{0};
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_SLAB_ALLOCATOR_H_
