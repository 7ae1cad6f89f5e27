#include "server/slab_allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ramster {

// Chunk header: lives outside the chunk's memory so that the chunk is
// exactly its class's chunk_size of mmap'd pages.
struct SlabAllocator::Chunk {
  uint8_t* mem = nullptr;
  uint32_t class_index = 0;
  uint16_t free_count = 0;
  uint16_t free_head = 0;  // slot index; a free slot stores the next one
  bool in_partial = false;
};

namespace {
constexpr uint16_t kNoSlot = 0xFFFF;
// Charged per chunk besides its memory: its header and directory entry.
constexpr uint64_t kChunkOverhead = sizeof(void*) + 32;
}  // namespace

SlabAllocator::SlabAllocator(Budget* budget) : budget_(budget) {
  // Each class may hold one partly used chunk: all of them together stay
  // within 1/128 of the budget's limit. (Measured with bench/server_bench,
  // 200k pages in a 2 GiB node: 1/16 allowed 32-page chunks and cost 103
  // bytes per page over the payload, 1/64 77, 1/128 75, 1/256 131.)
  const uint32_t limit_pages = static_cast<uint32_t>(std::clamp<uint64_t>(
      budget->limit() / 128 / kNumClasses / 4096, 1, kMaxChunkSize / 4096));
  for (uint32_t i = 0; i < kNumClasses; ++i) {
    const uint32_t size = (i + 1) * kGranularity;
    // Bytes lost per object with a chunk of `pages` pages.
    auto waste = [size](uint32_t pages) {
      const uint32_t bytes = pages * 4096;
      const uint32_t objects = bytes / size;
      return static_cast<double>(bytes % size) / objects;
    };
    const uint32_t min_pages = (size + 4095) / 4096;
    uint32_t max_pages = std::max(min_pages, limit_pages);
    // Slots are 16 bits.
    while (max_pages > min_pages && max_pages * 4096 / size > 0xFFFE) --max_pages;
    double best = waste(min_pages);
    for (uint32_t p = min_pages + 1; p <= max_pages; ++p) best = std::min(best, waste(p));
    uint32_t pages = min_pages;
    while (waste(pages) > best + 1.0) ++pages;
    classes_[i].object_size = size;
    classes_[i].chunk_size = pages * 4096;
    classes_[i].objects_per_chunk = static_cast<uint16_t>(classes_[i].chunk_size / size);
  }
  void* dir = mmap(nullptr, sizeof(Chunk*) * kMaxChunks, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  directory_ = dir == MAP_FAILED ? nullptr : static_cast<Chunk**>(dir);
}

SlabAllocator::~SlabAllocator() {
  DropCache();
  if (directory_ == nullptr) return;
  MutexLock lock(&ids_mu_);
  for (uint32_t id = 1; id < next_id_; ++id) {
    Chunk* c = directory_[id];
    if (c == nullptr) continue;
    uint32_t size = classes_[c->class_index].chunk_size;
    munmap(c->mem, size);
    budget_->Release(size + kChunkOverhead);
    delete c;
  }
  munmap(directory_, sizeof(Chunk*) * kMaxChunks);
}

uint32_t SlabAllocator::ClassSize(uint32_t size) {
  if (size == 0) size = 1;
  return (size + kGranularity - 1) / kGranularity * kGranularity;
}

SlabAllocator::Chunk* SlabAllocator::NewChunk(SizeClass* cls,
                                              uint32_t class_index) {
  if (directory_ == nullptr) return nullptr;
  void* mem = MapChunk(cls->chunk_size);
  if (mem == nullptr) return nullptr;
  uint32_t id;
  {
    MutexLock lock(&ids_mu_);
    if (!free_ids_.empty()) {
      id = free_ids_.back();
      free_ids_.pop_back();
    } else if (next_id_ < kMaxChunks) {
      id = next_id_++;
    } else {
      UnmapChunk(mem, cls->chunk_size);
      return nullptr;
    }
    chunk_bytes_ += cls->chunk_size;
  }
  auto* c = new (std::nothrow) Chunk;
  if (c == nullptr) {
    UnmapChunk(mem, cls->chunk_size);
    MutexLock lock(&ids_mu_);
    free_ids_.push_back(id);
    chunk_bytes_ -= cls->chunk_size;
    return nullptr;
  }
  c->mem = static_cast<uint8_t*>(mem);
  c->class_index = class_index;
  c->free_count = cls->objects_per_chunk;
  // Thread the free list through the slots.
  for (uint16_t s = 0; s < cls->objects_per_chunk; ++s) {
    uint16_t next = s + 1 < cls->objects_per_chunk ? s + 1 : kNoSlot;
    std::memcpy(c->mem + static_cast<size_t>(s) * cls->object_size, &next,
                sizeof(next));
  }
  c->free_head = 0;
  directory_[id] = c;
  cls->partial.push_back(id);
  c->in_partial = true;
  return c;
}

absl::StatusOr<uint64_t> SlabAllocator::Allocate(uint32_t size) {
  if (size > kMaxObjectSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("object of ", size, " bytes exceeds the largest slab class"));
  }
  uint32_t class_index = ClassSize(size) / kGranularity - 1;
  SizeClass* cls = &classes_[class_index];
  MutexLock lock(&cls->mu);
  if (cls->partial.empty() && NewChunk(cls, class_index) == nullptr) {
    return absl::ResourceExhaustedError("node RAM limit reached");
  }
  uint32_t id = cls->partial.back();
  Chunk* c = directory_[id];
  uint16_t slot = c->free_head;
  uint8_t* obj = c->mem + static_cast<size_t>(slot) * cls->object_size;
  std::memcpy(&c->free_head, obj, sizeof(c->free_head));
  if (--c->free_count == 0) {
    cls->partial.pop_back();
    c->in_partial = false;
  }
  ++cls->live_objects;
  return (static_cast<uint64_t>(id) << 16) | slot;
}

void SlabAllocator::Free(uint64_t handle) {
  uint32_t id = static_cast<uint32_t>(handle >> 16);
  uint16_t slot = static_cast<uint16_t>(handle & 0xFFFF);
  Chunk* c = directory_[id];
  SizeClass* cls = &classes_[c->class_index];
  bool release = false;
  {
    MutexLock lock(&cls->mu);
    uint8_t* obj = c->mem + static_cast<size_t>(slot) * cls->object_size;
    std::memcpy(obj, &c->free_head, sizeof(c->free_head));
    c->free_head = slot;
    ++c->free_count;
    --cls->live_objects;
    if (c->free_count == cls->objects_per_chunk) {
      // Empty: give it back.
      for (size_t i = 0; i < cls->partial.size(); ++i) {
        if (cls->partial[i] == id) {
          cls->partial[i] = cls->partial.back();
          cls->partial.pop_back();
          break;
        }
      }
      directory_[id] = nullptr;
      release = true;
    } else if (!c->in_partial) {
      cls->partial.push_back(id);
      c->in_partial = true;
    }
  }
  if (release) {
    UnmapChunk(c->mem, cls->chunk_size);
    delete c;
    MutexLock lock(&ids_mu_);
    free_ids_.push_back(id);
    chunk_bytes_ -= cls->chunk_size;
  }
}

void* SlabAllocator::MapChunk(uint32_t size) {
  {
    MutexLock lock(&cache_mu_);
    std::vector<void*>& list = cached_[size / 4096];
    if (!list.empty()) {
      void* mem = list.back();
      list.pop_back();
      cached_bytes_ -= size;
      return mem;  // still charged
    }
  }
  const uint64_t charge = size + kChunkOverhead;
  if (!budget_->TryCharge(charge)) {
    DropCache();
    if (!budget_->TryCharge(charge)) return nullptr;
  }
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    budget_->Release(charge);
    return nullptr;
  }
  return mem;
}

void SlabAllocator::UnmapChunk(void* mem, uint32_t size) {
  {
    // Only with room to spare: near its limit the budget needs every byte
    // that a freed chunk gives back (eviction counts on it).
    MutexLock lock(&cache_mu_);
    if (caching_.load() && cached_bytes_ + size <= kMaxCachedBytes &&
        budget_->used() <= budget_->limit() / 8 * 7) {
      cached_[size / 4096].push_back(mem);
      cached_bytes_ += size;
      return;
    }
  }
  munmap(mem, size);
  budget_->Release(size + kChunkOverhead);
}

void SlabAllocator::DropCache() {
  std::vector<std::pair<void*, uint32_t>> drop;
  {
    MutexLock lock(&cache_mu_);
    for (uint32_t pages = 1; pages <= kMaxChunkSize / 4096; ++pages) {
      for (void* mem : cached_[pages]) drop.emplace_back(mem, pages * 4096);
      cached_[pages].clear();
    }
    cached_bytes_ = 0;
  }
  for (auto [mem, size] : drop) {
    munmap(mem, size);
    budget_->Release(size + kChunkOverhead);
  }
}

uint8_t* SlabAllocator::Resolve(uint64_t handle) const {
  uint32_t id = static_cast<uint32_t>(handle >> 16);
  uint16_t slot = static_cast<uint16_t>(handle & 0xFFFF);
  const Chunk* c = directory_[id];
  return c->mem + static_cast<size_t>(slot) * classes_[c->class_index].object_size;
}

uint64_t SlabAllocator::chunk_bytes() const {
  MutexLock lock(&ids_mu_);
  return chunk_bytes_;
}

uint64_t SlabAllocator::object_bytes() const {
  uint64_t total = 0;
  for (const SizeClass& cls : classes_) {
    MutexLock lock(&cls.mu);
    total += cls.live_objects * cls.object_size;
  }
  return total;
}

}  // namespace ramster
