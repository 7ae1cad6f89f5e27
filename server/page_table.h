// PageTable: one index shard's map from (client, pool, object, index) to
// what the node knows about the page stored there. Built for the density of
// swap devices, where a client's pages fill runs of consecutive indexes:
//
//   key (client, pool, object, index)
//     -> block (client, pool, object, index / 64)     one hash-map slot
//     -> entry at rank(index % 64) in the block        20 bytes, packed
//
// A block holds only the entries present (a 64-bit presence mask says which
// and gives each entry's rank), grown and shrunk in steps of four entries,
// so a full block costs 20 bytes per page plus 1/64 of its header and map
// slot, and a lone page (keys scattered at random) about what a per-page
// hash-map entry would. Every byte the table allocates is reported through
// bytes_of()/the deltas that Insert and Erase return, so that the node can
// charge its index to its RAM budget and to the client it belongs to.
//
// Not thread-safe: the node holds the shard's lock around every call.
// Entry pointers stay valid until the next Insert or Erase on the table.
#ifndef RAMSTER_SERVER_PAGE_TABLE_H_
#define RAMSTER_SERVER_PAGE_TABLE_H_

#include <cstdint>
#include <cstring>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"

namespace ramster {

// Where a page is and what it is: 20 bytes. The slab handle is 40 bits
// (SlabAllocator handles fit), the payload length 13 bits (at most 4096),
// the encoding 3 bits, the generation 32 bits (the node refuses larger).
class PageEntry {
 public:
  static constexpr uint8_t kInRam = 1;
  static constexpr uint8_t kEphemeral = 2;
  static constexpr uint8_t kReferenced = 4;
  // The recompressor has seen this copy: its payload is the denser one, or
  // a denser one would not have been smaller (Node::RecompressSome).
  static constexpr uint8_t kRecompressed = 8;
  // A recompressor's walk has passed this copy; the next one recompresses
  // it (Node::RecompressSome).
  static constexpr uint8_t kWalked = 16;
  static constexpr uint64_t kMaxHandle = (uint64_t{1} << 40) - 1;
  static constexpr uint32_t kMaxLength = (1u << 13) - 1;
  static constexpr uint32_t kMaxEncoding = 7;

  PageEntry() = default;
  PageEntry(uint32_t generation, uint64_t checksum, uint32_t length,
            uint32_t encoding, uint8_t flags)
      : generation_(generation), flags_(flags) {
    set_checksum(checksum);
    length_encoding_ = static_cast<uint16_t>(length | encoding << 13);
  }

  uint32_t generation() const { return generation_; }
  uint64_t checksum() const {
    uint64_t c;
    std::memcpy(&c, checksum_, sizeof(c));
    return c;
  }
  uint32_t length() const { return length_encoding_ & kMaxLength; }
  uint8_t encoding() const { return static_cast<uint8_t>(length_encoding_ >> 13); }
  uint64_t handle() const { return uint64_t{handle_hi_} << 32 | handle_lo_; }
  uint8_t flags() const { return flags_; }
  bool in_ram() const { return flags_ & kInRam; }

  void set_checksum(uint64_t c) { std::memcpy(checksum_, &c, sizeof(c)); }
  void set_handle(uint64_t h) {
    handle_lo_ = static_cast<uint32_t>(h);
    handle_hi_ = static_cast<uint8_t>(h >> 32);
  }
  void set_length(uint32_t length) {
    length_encoding_ = static_cast<uint16_t>((length_encoding_ & ~kMaxLength) | length);
  }
  void set_flag(uint8_t f) { flags_ |= f; }
  void clear_flag(uint8_t f) { flags_ &= static_cast<uint8_t>(~f); }

 private:
  uint32_t generation_ = 0;
  uint32_t checksum_[2] = {0, 0};
  uint32_t handle_lo_ = 0;
  uint16_t length_encoding_ = 0;
  uint8_t handle_hi_ = 0;
  uint8_t flags_ = 0;
};
static_assert(sizeof(PageEntry) == 20, "an index entry is 20 bytes");

struct PageTableKey {
  uint32_t client = 0;
  uint32_t pool = 0;
  uint64_t object = 0;
  uint64_t index = 0;
};

class PageTable {
 public:
  static constexpr int kBlockShift = 6;
  static constexpr uint64_t kBlockPages = uint64_t{1} << kBlockShift;
  // Charged per block besides its entries: the block header, its hash-map
  // slot (key, pointer, control byte, at the map's average load) and the
  // allocator's own header.
  static constexpr uint64_t kBlockOverhead = 96;
  static constexpr uint32_t kGrowthStep = 4;
  // The most one Insert can add: a new block with room for kGrowthStep.
  static constexpr uint64_t kMaxInsertBytes =
      kBlockOverhead + kGrowthStep * sizeof(PageEntry);

  PageTable() = default;
  ~PageTable();
  PageTable(const PageTable&) = delete;
  PageTable& operator=(const PageTable&) = delete;

  // nullptr when there is no entry.
  PageEntry* Find(const PageTableKey& k);
  // Adds an entry for a key that has none. Returns the bytes the table grew
  // by (0 .. kMaxInsertBytes), or -1 when memory could not be had (nothing
  // changed then).
  int64_t Insert(const PageTableKey& k, const PageEntry& e);
  // Removes the entry of `k` if there is one; returns the bytes the table
  // shrank by (0 when it did not shrink or there was no entry).
  uint64_t Erase(const PageTableKey& k);

  // Calls fn for every entry, block by block. `fn` may change the entry but
  // not the table.
  void ForEach(absl::FunctionRef<void(const PageTableKey&, PageEntry&)> fn);

  // Where a walk of the table in pieces (ForEachFrom) stands.
  class Cursor {
   public:
    Cursor() = default;

   private:
    friend class PageTable;
    bool started_ = false;
    PageTableKey last_block_;  // index: the block number
  };
  // Calls fn for the entries of at most `max_blocks` blocks, those after
  // the block where the last call with `cursor` stopped (from the first
  // block for a fresh cursor). Returns true while blocks remain; false when
  // the walk reached the end, and the cursor starts over. Between calls the
  // table may change: a walk across an insert that rehashed the map, or
  // past a removed block, may skip blocks or see some twice (it starts over
  // when the block it stopped at is gone). `fn` may change the entry but
  // not the table.
  bool ForEachFrom(Cursor* cursor, int max_blocks,
                   absl::FunctionRef<void(const PageTableKey&, PageEntry&)> fn);
  // Calls fn for every entry; removes those for which it returns true.
  // Returns the bytes the table shrank by, per client, through `freed`.
  void RemoveIf(absl::FunctionRef<bool(const PageTableKey&, PageEntry&)> fn,
                absl::FunctionRef<void(uint32_t client, uint64_t bytes)> freed);
  // Removes every block of `client` (and of `pool` when depth >= 1, of
  // `object` when depth >= 2), calling fn for each entry first. Returns the
  // bytes freed.
  uint64_t RemoveRange(uint32_t client, int depth, uint32_t pool, uint64_t object,
                       absl::FunctionRef<void(const PageTableKey&, PageEntry&)> fn);

  uint64_t entries() const { return entries_; }
  uint64_t bytes() const { return bytes_; }

 private:
  struct BlockKey {
    uint32_t client;
    uint32_t pool;
    uint64_t object;
    uint64_t block;
    bool operator==(const BlockKey& o) const {
      return client == o.client && pool == o.pool && object == o.object &&
             block == o.block;
    }
    template <typename H>
    friend H AbslHashValue(H h, const BlockKey& k) {
      return H::combine(std::move(h), k.client, k.pool, k.object, k.block);
    }
  };
  struct Block;
  struct BlockDeleter {
    void operator()(Block* b) const;
  };
  using BlockPtr = std::unique_ptr<Block, BlockDeleter>;

  static uint64_t BlockBytes(uint32_t capacity) {
    return kBlockOverhead + uint64_t{capacity} * sizeof(PageEntry);
  }
  // A block with room for `capacity` entries, or nullptr.
  static Block* NewBlock(uint32_t capacity);
  // The same entries in a block of `capacity`; nullptr (and `b` untouched)
  // when memory could not be had.
  static Block* Resize(Block* b, uint32_t capacity);
  static PageTableKey KeyOf(const BlockKey& bk, int offset);
  // Removes rank `rank` (offset `offset`) from `b`, shrinking it when a
  // growth step or more is unused. Returns the bytes freed.
  static uint64_t RemoveAt(BlockPtr& b, int offset);

  absl::flat_hash_map<BlockKey, BlockPtr> blocks_;
  uint64_t entries_ = 0;
  uint64_t bytes_ = 0;
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_PAGE_TABLE_H_
