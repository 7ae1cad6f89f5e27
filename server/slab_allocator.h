// Size-classed slabs for compressed pages, in the manner of zsmalloc: an
// object of n bytes takes the smallest class of 8-byte granularity that fits
// it, and each class carves chunks of 1 to 32 pages into equal objects. A
// class's chunk size is the one that wastes the fewest bytes per object (the
// chunk's tail that no object fills), preferring smaller chunks when the
// difference is under a byte (with 32-page chunks that would cost about 5
// bytes per LZ4-compressed page besides its own length). Every class may
// keep one chunk partly used, so the largest chunk is bounded by the
// budget's limit (all classes' partial chunks within 1/128 of it): a small
// node uses small chunks and wastes more per object, a large one the
// reverse. An empty chunk goes to a small cache of mapped chunks (at most
// kMaxCachedBytes, still charged: it is resident) for the next chunk of its
// size, so that a class at the boundary does not map and unmap, and fault
// in, a chunk per store; only while the budget is below 7/8 of its limit,
// and the cache is dropped whenever the budget needs the room. The RAM charged
// to the node's Budget is the chunks themselves (mmap'd, so freeing an empty
// chunk really returns it), which is what the process really uses for pages.
//
// A handle names an object: chunk id << 16 | slot (at most 40 bits). Handles stay valid until
// Free; Resolve turns one into a pointer.
//
// Thread safety: Allocate and Free lock one class; Resolve takes no lock and
// is safe for a handle that the caller knows is not being freed concurrently
// (the node guarantees that with its index-shard locks).
//
// Left for later: compaction. A chunk is returned only when all of its
// objects are freed, so a node whose pages were freed at random keeps
// partly-used chunks (zsmalloc compacts them; see the README).
#ifndef RAMSTER_SERVER_SLAB_ALLOCATOR_H_
#define RAMSTER_SERVER_SLAB_ALLOCATOR_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
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
  static constexpr size_t kMaxChunkSize = 128 * 1024;
  // At most this many chunks exist at once (handles stay within 40 bits).
  static constexpr uint32_t kMaxChunks = 1u << 24;

  // `budget` must outlive the allocator; chunks are charged to it. Chunk
  // sizes follow budget->limit() at construction.
  explicit SlabAllocator(Budget* budget);
  ~SlabAllocator();
  SlabAllocator(const SlabAllocator&) = delete;
  SlabAllocator& operator=(const SlabAllocator&) = delete;

  // The bytes an object of `size` bytes occupies in its class.
  static uint32_t ClassSize(uint32_t size);
  // The chunk size of the class of `size` (1 <= size <= kMaxObjectSize).
  uint32_t ChunkSizeFor(uint32_t size) const {
    return classes_[ClassSize(size) / kGranularity - 1].chunk_size;
  }

  // kResourceExhausted when a new chunk is needed and the budget has no room
  // for it (or mmap fails); kInvalidArgument for a size over kMaxObjectSize.
  absl::StatusOr<uint64_t> Allocate(uint32_t size);
  void Free(uint64_t handle);
  uint8_t* Resolve(uint64_t handle) const;

  // Bytes of chunks in use (holding at least one object).
  uint64_t chunk_bytes() const;
  // Unmaps the cached empty chunks and returns their charge.
  void DropCache();
  // While off, freed chunks are unmapped at once (an eviction in progress
  // must see every byte it frees).
  void set_caching(bool on) { caching_.store(on); }
  static constexpr uint64_t kMaxCachedBytes = 4 << 20;
  // Bytes of live objects (class sizes), for fragmentation figures.
  uint64_t object_bytes() const;

 private:
  struct Chunk;
  struct SizeClass {
    mutable Mutex mu;
    uint32_t object_size = 0;
    uint32_t chunk_size = 0;
    uint16_t objects_per_chunk = 0;
    // Chunks of this class with at least one free slot.
    std::vector<uint32_t> partial ABSL_GUARDED_BY(mu);
    uint64_t live_objects ABSL_GUARDED_BY(mu) = 0;
  };

  Chunk* NewChunk(SizeClass* cls, uint32_t class_index);
  // A mapped, charged chunk of `size` bytes: from the cache, or new. nullptr
  // when the budget has no room even after dropping the cache.
  void* MapChunk(uint32_t size);
  // Caches or unmaps (and uncharges) a chunk that no longer holds objects.
  void UnmapChunk(void* mem, uint32_t size);

  Budget* const budget_;
  SizeClass classes_[kNumClasses];
  // Chunk directory, indexed by chunk id. Lazily-touched anonymous mapping.
  Chunk** directory_;

  mutable Mutex ids_mu_;
  std::vector<uint32_t> free_ids_ ABSL_GUARDED_BY(ids_mu_);
  uint32_t next_id_ ABSL_GUARDED_BY(ids_mu_) = 1;  // 0 is never a chunk
  uint64_t chunk_bytes_ ABSL_GUARDED_BY(ids_mu_) = 0;

  std::atomic<bool> caching_{true};
  // Empty chunks kept mapped, by size in pages. A leaf lock.
  Mutex cache_mu_;
  std::vector<void*> cached_[kMaxChunkSize / 4096 + 1] ABSL_GUARDED_BY(cache_mu_);
  uint64_t cached_bytes_ ABSL_GUARDED_BY(cache_mu_) = 0;
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_SLAB_ALLOCATOR_H_
