#include "server/page_table.h"

#include <bit>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

namespace ramster {

// A block: a presence mask over 64 consecutive indexes and the entries
// present, in index order, right after the header.
struct PageTable::Block {
  uint64_t mask;
  uint32_t count;
  uint32_t capacity;

  PageEntry* entries() { return reinterpret_cast<PageEntry*>(this + 1); }
  // Position of `offset`'s entry among the present ones.
  int RankOf(int offset) const {
    return std::popcount(mask & ((uint64_t{1} << offset) - 1));
  }
};

void PageTable::BlockDeleter::operator()(Block* b) const { std::free(b); }

PageTable::~PageTable() = default;

PageTable::Block* PageTable::NewBlock(uint32_t capacity) {
  static_assert(sizeof(Block) == 16, "entries follow a 16-byte header");
  void* mem = std::malloc(sizeof(Block) + capacity * sizeof(PageEntry));
  if (mem == nullptr) return nullptr;
  Block* b = static_cast<Block*>(mem);
  b->mask = 0;
  b->count = 0;
  b->capacity = capacity;
  return b;
}

PageTable::Block* PageTable::Resize(Block* b, uint32_t capacity) {
  void* mem = std::realloc(b, sizeof(Block) + capacity * sizeof(PageEntry));
  if (mem == nullptr) return nullptr;
  b = static_cast<Block*>(mem);
  b->capacity = capacity;
  return b;
}

PageTableKey PageTable::KeyOf(const BlockKey& bk, int offset) {
  return PageTableKey{bk.client, bk.pool, bk.object,
                      bk.block << kBlockShift | static_cast<uint64_t>(offset)};
}

PageEntry* PageTable::Find(const PageTableKey& k) {
  auto it = blocks_.find(BlockKey{k.client, k.pool, k.object, k.index >> kBlockShift});
  if (it == blocks_.end()) return nullptr;
  Block* b = it->second.get();
  const int offset = static_cast<int>(k.index & (kBlockPages - 1));
  if (!(b->mask >> offset & 1)) return nullptr;
  return &b->entries()[b->RankOf(offset)];
}

int64_t PageTable::Insert(const PageTableKey& k, const PageEntry& e) {
  const BlockKey bk{k.client, k.pool, k.object, k.index >> kBlockShift};
  const int offset = static_cast<int>(k.index & (kBlockPages - 1));
  int64_t grew = 0;
  auto it = blocks_.find(bk);
  if (it == blocks_.end()) {
    Block* b = NewBlock(kGrowthStep);
    if (b == nullptr) return -1;
    try {
      it = blocks_.emplace(bk, BlockPtr(b)).first;
    } catch (const std::bad_alloc&) {
      return -1;  // the BlockPtr freed the block
    }
    grew = static_cast<int64_t>(BlockBytes(kGrowthStep));
  }
  Block* b = it->second.get();
  if (b->count == b->capacity) {
    Block* bigger = Resize(b, b->capacity + kGrowthStep);
    if (bigger == nullptr) return -1;  // the block has room only if it is not new
    (void)it->second.release();
    it->second.reset(bigger);
    b = bigger;
    grew += kGrowthStep * sizeof(PageEntry);
  }
  const int rank = b->RankOf(offset);
  PageEntry* entries = b->entries();
  std::memmove(&entries[rank + 1], &entries[rank], (b->count - rank) * sizeof(PageEntry));
  entries[rank] = e;
  b->mask |= uint64_t{1} << offset;
  b->count++;
  entries_++;
  bytes_ += grew;
  return grew;
}

uint64_t PageTable::RemoveAt(BlockPtr& b, int offset) {
  Block* blk = b.get();
  const int rank = blk->RankOf(offset);
  PageEntry* entries = blk->entries();
  std::memmove(&entries[rank], &entries[rank + 1],
               (blk->count - rank - 1) * sizeof(PageEntry));
  blk->mask &= ~(uint64_t{1} << offset);
  blk->count--;
  if (blk->count == 0) return BlockBytes(blk->capacity);  // caller drops it
  if (blk->capacity - blk->count >= 2 * kGrowthStep) {
    const uint32_t capacity = (blk->count + kGrowthStep - 1) / kGrowthStep * kGrowthStep;
    const uint64_t freed = (blk->capacity - capacity) * sizeof(PageEntry);
    Block* smaller = Resize(blk, capacity);
    if (smaller != nullptr) {
      (void)b.release();
      b.reset(smaller);
      return freed;
    }
    // Keeping the larger block is fine; its bytes stay charged.
  }
  return 0;
}

uint64_t PageTable::Erase(const PageTableKey& k) {
  auto it = blocks_.find(BlockKey{k.client, k.pool, k.object, k.index >> kBlockShift});
  if (it == blocks_.end()) return 0;
  const int offset = static_cast<int>(k.index & (kBlockPages - 1));
  if (!(it->second->mask >> offset & 1)) return 0;
  uint64_t freed = RemoveAt(it->second, offset);
  entries_--;
  if (it->second->count == 0) blocks_.erase(it);
  bytes_ -= freed;
  return freed;
}

void PageTable::ForEach(absl::FunctionRef<void(const PageTableKey&, PageEntry&)> fn) {
  Cursor whole;  // fresh: from the first block, to the end in one piece
  ForEachFrom(&whole, std::numeric_limits<int>::max(), fn);
}

bool PageTable::ForEachFrom(Cursor* cursor, int max_blocks,
                            absl::FunctionRef<void(const PageTableKey&, PageEntry&)> fn) {
  auto it = blocks_.begin();
  if (cursor->started_) {
    const PageTableKey& last = cursor->last_block_;
    it = blocks_.find(BlockKey{last.client, last.pool, last.object, last.index});
    if (it == blocks_.end()) {
      it = blocks_.begin();  // its block is gone: start over
    } else {
      ++it;
    }
  }
  for (int n = 0; n < max_blocks && it != blocks_.end(); ++n, ++it) {
    const BlockKey& bk = it->first;
    PageEntry* entries = it->second->entries();
    int rank = 0;
    for (uint64_t m = it->second->mask; m != 0; m &= m - 1, ++rank) {
      fn(KeyOf(bk, std::countr_zero(m)), entries[rank]);
    }
    cursor->started_ = true;
    cursor->last_block_ = PageTableKey{bk.client, bk.pool, bk.object, bk.block};
  }
  if (it == blocks_.end()) {
    cursor->started_ = false;
    return false;
  }
  return true;
}

void PageTable::RemoveIf(absl::FunctionRef<bool(const PageTableKey&, PageEntry&)> fn,
                         absl::FunctionRef<void(uint32_t client, uint64_t bytes)> freed) {
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    const BlockKey bk = it->first;
    // Decide first, then remove from the highest offset down, so that ranks
    // of the entries still to remove do not move.
    uint64_t remove = 0;
    {
      Block* b = it->second.get();
      int rank = 0;
      for (uint64_t m = b->mask; m != 0; m &= m - 1, ++rank) {
        const int offset = std::countr_zero(m);
        if (fn(KeyOf(bk, offset), b->entries()[rank])) remove |= uint64_t{1} << offset;
      }
    }
    uint64_t bytes = 0;
    for (uint64_t m = remove; m != 0;) {
      const int offset = 63 - std::countl_zero(m);
      m &= ~(uint64_t{1} << offset);
      bytes += RemoveAt(it->second, offset);
      entries_--;
    }
    bytes_ -= bytes;
    if (bytes > 0) freed(bk.client, bytes);
    if (it->second->count == 0) {
      blocks_.erase(it++);
    } else {
      ++it;
    }
  }
}

uint64_t PageTable::RemoveRange(uint32_t client, int depth, uint32_t pool, uint64_t object,
                                absl::FunctionRef<void(const PageTableKey&, PageEntry&)> fn) {
  uint64_t bytes = 0;
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    const BlockKey& bk = it->first;
    const bool match = bk.client == client && (depth < 1 || bk.pool == pool) &&
                       (depth < 2 || bk.object == object);
    if (!match) {
      ++it;
      continue;
    }
    Block* b = it->second.get();
    int rank = 0;
    for (uint64_t m = b->mask; m != 0; m &= m - 1, ++rank) {
      fn(KeyOf(bk, std::countr_zero(m)), b->entries()[rank]);
    }
    entries_ -= b->count;
    bytes += BlockBytes(b->capacity);
    blocks_.erase(it++);
  }
  bytes_ -= bytes;
  return bytes;
}

}  // namespace ramster
