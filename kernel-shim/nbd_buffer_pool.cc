#include "kernel-shim/nbd_buffer_pool.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace ramster {
namespace {
constexpr size_t kNpos = ~size_t{0};
}

NbdBufferPool::NbdBufferPool(size_t capacity_bytes)
    : units_(std::max<size_t>(1, (capacity_bytes + kUnit - 1) / kUnit)),
      arena_(new uint8_t[units_ * kUnit]) {
  // Touch every page now, so the memory is really there (and, once the shim
  // has called mlockall, locked) before the first request needs it.
  std::memset(arena_.get(), 0, units_ * kUnit);
  MutexLock lock(&mu_);
  used_.assign((units_ + 63) / 64, 0);
}

size_t NbdBufferPool::FindRun(size_t units) const {
  size_t i = 0;
  while (i + units <= units_) {
    if (used_[i / 64] == ~uint64_t{0}) {  // a full word: skip it whole
      i = (i / 64 + 1) * 64;
      continue;
    }
    if (Used(i)) {
      ++i;
      continue;
    }
    size_t n = 1;
    while (n < units && !Used(i + n)) ++n;
    if (n == units) return i;
    i += n + 1;  // unit i + n is used
  }
  return kNpos;
}

void NbdBufferPool::Mark(size_t first, size_t units, bool used) {
  for (size_t u = first; u < first + units; ++u) {
    if (used) {
      used_[u / 64] |= uint64_t{1} << (u % 64);
    } else {
      used_[u / 64] &= ~(uint64_t{1} << (u % 64));
    }
  }
}

NbdBufferPool::Buffer NbdBufferPool::Acquire(size_t bytes) {
  if (bytes == 0) return Buffer();
  const size_t units = (bytes + kUnit - 1) / kUnit;
  if (units > units_) std::abort();  // would wait forever: a caller's bug
  MutexLock lock(&mu_);
  const uint64_t ticket = next_ticket_++;
  size_t first = kNpos;
  bool waited = false;
  while (ticket != serving_ || (first = FindRun(units)) == kNpos) {
    waited = true;
    changed_.Wait();
  }
  if (waited) ++waits_;
  ++serving_;
  changed_.SignalAll();  // the next ticket may fit too
  return Take(first, units, bytes);
}

bool NbdBufferPool::TryAcquire(size_t bytes, Buffer* buffer) {
  if (bytes == 0) {
    *buffer = Buffer();
    return true;
  }
  const size_t units = (bytes + kUnit - 1) / kUnit;
  MutexLock lock(&mu_);
  if (next_ticket_ != serving_) return false;  // others wait: they are first
  const size_t first = units <= units_ ? FindRun(units) : kNpos;
  if (first == kNpos) return false;
  *buffer = Take(first, units, bytes);
  return true;
}

NbdBufferPool::Buffer NbdBufferPool::Take(size_t first, size_t units, size_t bytes) {
  Mark(first, units, true);
  units_in_use_ += units;
  Buffer b;
  b.data_ = arena_.get() + first * kUnit;
  b.size_ = bytes;
  b.first_unit_ = first;
  b.units_ = units;
  return b;
}

void NbdBufferPool::Release(Buffer* b) {
  if (b->units_ == 0) return;
  {
    MutexLock lock(&mu_);
    Mark(b->first_unit_, b->units_, false);
    units_in_use_ -= b->units_;
  }
  changed_.SignalAll();
  *b = Buffer();
}

size_t NbdBufferPool::bytes_in_use() const {
  MutexLock lock(&mu_);
  return units_in_use_ * kUnit;
}

uint64_t NbdBufferPool::waits() const {
  MutexLock lock(&mu_);
  return waits_;
}

uint64_t NbdBufferPool::waiting() const {
  MutexLock lock(&mu_);
  return next_ticket_ - serving_;
}

}  // namespace ramster
