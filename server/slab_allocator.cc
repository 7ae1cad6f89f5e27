#include "server/slab_allocator.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_cat.h"

namespace ramster {
namespace {

constexpr uint64_t kMaxSlot = (uint64_t{1} << 31) - 1;
constexpr uintptr_t kLine = 64;

// A prefetch for writing (PREFETCHW: the line arrives owned, ready for a
// store); a CPU without it takes the instruction as a no-op.
#if defined(__x86_64__)
void PrefetchForWrite(const uint8_t* p) { asm volatile("prefetchw %0" : : "m"(*p)); }
#else
void PrefetchForWrite(const uint8_t* p) { __builtin_prefetch(p, 1, 3); }
#endif

}  // namespace

SlabAllocator::SlabAllocator(Budget* budget) : budget_(budget) {
  class_bytes_ = std::clamp<uint64_t>(budget->limit(), uint64_t{64} << 20, uint64_t{64} << 30);
  class_bytes_ = (class_bytes_ + kPage - 1) / kPage * kPage;
  for (uint32_t i = 0; i < kNumClasses; ++i) {
    SizeClass& cls = classes_[i];
    cls.object_size = (i + 1) * kGranularity;
    cls.max_slots = std::min<uint64_t>(class_bytes_ / cls.object_size, kMaxSlot);
    void* mem = mmap(nullptr, class_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    cls.base = mem == MAP_FAILED ? nullptr : static_cast<uint8_t*>(mem);
  }
}

SlabAllocator::~SlabAllocator() {
  for (SizeClass& cls : classes_) {
    if (cls.base == nullptr) continue;
    MutexLock lock(&cls.mu);
    munmap(cls.base, class_bytes_);
    budget_->Release(cls.committed_pages * kPage);
  }
}

uint32_t SlabAllocator::ClassSize(uint32_t size) {
  if (size == 0) size = 1;
  return (size + kGranularity - 1) / kGranularity * kGranularity;
}

void SlabAllocator::PagesOf(const SizeClass& cls, uint64_t slot, uint64_t* first,
                            uint64_t* last) {
  const uint64_t start = slot * cls.object_size;
  *first = start / kPage;
  *last = (start + cls.object_size - 1) / kPage;
}

uint64_t SlabAllocator::FindSlot(SizeClass* cls) {
  for (size_t w2 = 0; w2 < cls->free_words.size(); ++w2) {
    if (cls->free_words[w2] == 0) continue;
    const size_t w = w2 * 64 + std::countr_zero(cls->free_words[w2]);
    return w * 64 + std::countr_zero(cls->free_bits[w]);
  }
  return cls->top;
}

absl::StatusOr<uint64_t> SlabAllocator::AllocateIn(uint32_t class_index, bool* budget_short) {
  SizeClass* cls = &classes_[class_index];
  MutexLock lock(&cls->mu);
  if (cls->base == nullptr) return absl::ResourceExhaustedError("slab class has no memory");
  const uint64_t slot = FindSlot(cls);
  if (slot >= cls->max_slots) {
    return absl::ResourceExhaustedError(
        absl::StrCat("slab class of ", cls->object_size, "-byte objects is full"));
  }
  uint64_t first, last;
  PagesOf(*cls, slot, &first, &last);
  const bool at_top = slot == cls->top;
  if (at_top) {
    try {
      if (cls->pages.size() <= last) cls->pages.resize(last + 1, 0);
      const size_t words = slot / 64 + 1;
      if (cls->free_bits.size() < words) cls->free_bits.resize(words, 0);
      if (cls->free_words.size() < (words + 63) / 64) cls->free_words.resize((words + 63) / 64, 0);
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError("out of memory (slab bookkeeping)");
    }
  }
  uint64_t need = 0;
  for (uint64_t p = first; p <= last; ++p) need += cls->pages[p] == 0;
  if (need > 0 && !budget_->TryCharge(need * kPage)) {
    *budget_short = true;
    return absl::ResourceExhaustedError("node RAM limit reached");
  }
  for (uint64_t p = first; p <= last; ++p) {
    uint16_t& count = cls->pages[p];
    if (count == kCachedBit) {
      // An empty page kept committed: it is this object's now.
      auto it = std::find(cls->cached.begin(), cls->cached.end(), static_cast<uint32_t>(p));
      if (it != cls->cached.end()) {
        *it = cls->cached.back();
        cls->cached.pop_back();
      }
      cached_bytes_.fetch_sub(kPage);
      count = 0;
    } else if (count == 0) {
      cls->committed_pages++;
    }
    count++;
  }
  if (at_top) {
    cls->top++;
  } else {
    const size_t w = slot / 64;
    cls->free_bits[w] &= ~(uint64_t{1} << (slot % 64));
    if (cls->free_bits[w] == 0) cls->free_words[w / 64] &= ~(uint64_t{1} << (w % 64));
  }
  cls->live_objects++;
  return uint64_t{class_index} << 31 | slot;
}

absl::StatusOr<uint64_t> SlabAllocator::Allocate(uint32_t size) {
  if (size > kMaxObjectSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("object of ", size, " bytes exceeds the largest slab class"));
  }
  const uint32_t class_index = ClassSize(size) / kGranularity - 1;
  bool budget_short = false;
  absl::StatusOr<uint64_t> h = AllocateIn(class_index, &budget_short);
  if (!h.ok() && budget_short && cached_bytes_.load() > 0) {
    DropCache();
    h = AllocateIn(class_index, &budget_short);
  }
  return h;
}

void SlabAllocator::Uncommit(SizeClass* cls, uint64_t page, bool at_once) {
  // MADV_FREE: the kernel takes the page when it wants memory; until then a
  // store that reuses it writes to it without a fault (and a zeroed page).
  madvise(cls->base + page * kPage, kPage, at_once ? MADV_DONTNEED : MADV_FREE);
  budget_->Release(kPage);
  cls->committed_pages--;
  cls->pages[page] = 0;
}

void SlabAllocator::PageEmptied(SizeClass* cls, uint64_t page) {
  // Only with room to spare: near its limit the budget needs every byte
  // that a freed page gives back (eviction counts on it).
  if (caching_.load() && cached_bytes_.load() + kPage <= kMaxCachedBytes &&
      budget_->used() <= budget_->limit() / 8 * 7) {
    try {
      cls->cached.push_back(static_cast<uint32_t>(page));
      cls->pages[page] = kCachedBit;
      cached_bytes_.fetch_add(kPage);
      return;
    } catch (const std::bad_alloc&) {
      // Give it back instead.
    }
  }
  Uncommit(cls, page, /*at_once=*/!caching_.load());
}

void SlabAllocator::Free(uint64_t handle) {
  SizeClass* cls = &classes_[handle >> 31];
  const uint64_t slot = handle & kMaxSlot;
  MutexLock lock(&cls->mu);
  uint64_t first, last;
  PagesOf(*cls, slot, &first, &last);
  for (uint64_t p = first; p <= last; ++p) {
    if (--cls->pages[p] == 0) PageEmptied(cls, p);
  }
  cls->live_objects--;
  if (slot + 1 == cls->top) {
    // The array shrinks from its end, past every free slot there.
    cls->top--;
    while (cls->top > 0) {
      const uint64_t s = cls->top - 1;
      const size_t w = s / 64;
      if (!(cls->free_bits[w] >> (s % 64) & 1)) break;
      cls->free_bits[w] &= ~(uint64_t{1} << (s % 64));
      if (cls->free_bits[w] == 0) cls->free_words[w / 64] &= ~(uint64_t{1} << (w % 64));
      cls->top--;
    }
    return;
  }
  const size_t w = slot / 64;
  cls->free_bits[w] |= uint64_t{1} << (slot % 64);
  cls->free_words[w / 64] |= uint64_t{1} << (w % 64);
}

void SlabAllocator::DropCache() {
  for (SizeClass& cls : classes_) {
    MutexLock lock(&cls.mu);
    for (uint32_t page : cls.cached) {
      Uncommit(&cls, page, /*at_once=*/true);
      cached_bytes_.fetch_sub(kPage);
    }
    cls.cached.clear();
  }
}

void SlabAllocator::ReleaseLazyPages() {
  for (SizeClass& cls : classes_) {
    MutexLock lock(&cls.mu);
    if (cls.base == nullptr) continue;
    // Below pages.size() every page was committed once; those at 0 now were
    // given back (lazily, or already at once: then this costs nothing
    // more). Runs of them go in one call each.
    const uint64_t n = cls.pages.size();
    uint64_t run = 0;
    for (uint64_t p = 0; p <= n; ++p) {
      if (p < n && cls.pages[p] == 0) continue;
      if (p > run) madvise(cls.base + run * kPage, (p - run) * kPage, MADV_DONTNEED);
      run = p + 1;
    }
  }
}

uint8_t* SlabAllocator::Resolve(uint64_t handle) const {
  const SizeClass& cls = classes_[handle >> 31];
  return cls.base + (handle & kMaxSlot) * cls.object_size;
}

void SlabAllocator::PrepareWrite(uint64_t handle, uint32_t size) const {
  if (size == 0) return;
  const uint8_t* object = Resolve(handle);
  PrefetchForWrite(object);
  PrefetchForWrite(object + size - 1);
}

void SlabAllocator::Write(uint64_t handle, const uint8_t* bytes, uint32_t size) {
  uint8_t* dst = Resolve(handle);
#if defined(__SSE2__)
  const uintptr_t head = (kLine - reinterpret_cast<uintptr_t>(dst) % kLine) % kLine;
  // Streaming pays from a few whole lines on; below that, one copy.
  if (size >= head + 2 * kLine) {
    std::memcpy(dst, bytes, head);
    dst += head;
    bytes += head;
    size -= head;
    for (; size >= kLine; size -= kLine, dst += kLine, bytes += kLine) {
      const __m128i* from = reinterpret_cast<const __m128i*>(bytes);
      __m128i* to = reinterpret_cast<__m128i*>(dst);
      const __m128i a = _mm_loadu_si128(from);
      const __m128i b = _mm_loadu_si128(from + 1);
      const __m128i c = _mm_loadu_si128(from + 2);
      const __m128i d = _mm_loadu_si128(from + 3);
      _mm_stream_si128(to, a);
      _mm_stream_si128(to + 1, b);
      _mm_stream_si128(to + 2, c);
      _mm_stream_si128(to + 3, d);
    }
    std::memcpy(dst, bytes, size);
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(dst, bytes, size);
}

uint64_t SlabAllocator::page_bytes() const {
  uint64_t total = 0;
  for (const SizeClass& cls : classes_) {
    MutexLock lock(&cls.mu);
    total += (cls.committed_pages - cls.cached.size()) * kPage;
  }
  return total;
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
