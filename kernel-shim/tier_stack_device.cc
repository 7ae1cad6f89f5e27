#include "kernel-shim/tier_stack_device.h"

#include <cstring>

namespace ramster {

absl::Status TierStackDevice::Read(uint64_t offset, absl::Span<uint8_t> out) {
  uint8_t page[kPageSize];
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t pos = offset + done;
    const uint64_t slot = pos / kPageSize;
    const size_t in_page = pos % kPageSize;
    const size_t left = out.size() - done;
    if (in_page == 0 && left >= kPageSize) {
      // Every whole page from here on, as one batch.
      const size_t whole = left / kPageSize * kPageSize;
      if (absl::Status s = stack_->LoadRange(slot, out.subspan(done, whole)); !s.ok()) return s;
      done += whole;
      continue;
    }
    const size_t n = std::min(left, kPageSize - in_page);
    if (absl::Status s = stack_->Load(slot, absl::MakeSpan(page, kPageSize)); !s.ok()) return s;
    std::memcpy(out.data() + done, page + in_page, n);
    done += n;
  }
  return absl::OkStatus();
}

absl::Status TierStackDevice::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  uint8_t page[kPageSize];
  size_t done = 0;
  while (done < data.size()) {
    const uint64_t pos = offset + done;
    const uint64_t slot = pos / kPageSize;
    const size_t in_page = pos % kPageSize;
    const size_t left = data.size() - done;
    if (in_page == 0 && left >= kPageSize) {
      // Every whole page from here on, as one batch (one request per peer).
      const size_t whole = left / kPageSize * kPageSize;
      if (absl::Status s = stack_->StoreRange(slot, data.subspan(done, whole)); !s.ok()) return s;
      done += whole;
      continue;
    }
    // Read-modify-write inside the page, under the page's lock so that two
    // partial writes to one page cannot lose each other's bytes.
    const size_t n = std::min(left, kPageSize - in_page);
    std::lock_guard<std::mutex> lock(LockFor(slot));
    if (absl::Status s = stack_->Load(slot, absl::MakeSpan(page, kPageSize)); !s.ok()) return s;
    std::memcpy(page + in_page, data.data() + done, n);
    if (absl::Status s = stack_->Store(slot, absl::MakeConstSpan(page, kPageSize)); !s.ok()) {
      return s;
    }
    done += n;
  }
  return absl::OkStatus();
}

namespace {

// The whole pages of every request together, as one `together(pages)` call
// (TierStack::LoadSlots or StoreSlots); a request with a partial page goes
// alone through `alone(io)`. A request fails with the first failure of its
// pages.
template <typename SlotOp, typename Alone, typename Together>
void RunBatch(absl::Span<BlockDevice::Io> ios, Alone alone, Together together) {
  thread_local std::vector<SlotOp> pages;
  thread_local std::vector<BlockDevice::Io*> owner;  // pages[i] belongs to *owner[i]
  pages.clear();
  owner.clear();
  for (BlockDevice::Io& io : ios) {
    if (!BlockDevice::WholePages(io)) {
      io.status = alone(io);
      continue;
    }
    io.status = absl::OkStatus();
    for (size_t off = 0; off < io.data.size(); off += kPageSize) {
      pages.push_back({(io.offset + off) / kPageSize, io.data.subspan(off, kPageSize), {}});
      owner.push_back(&io);
    }
  }
  if (pages.empty()) return;
  together(absl::MakeSpan(pages));
  for (size_t i = 0; i < pages.size(); ++i) {
    if (!pages[i].status.ok() && owner[i]->status.ok()) owner[i]->status = pages[i].status;
  }
}

}  // namespace

void TierStackDevice::ReadBatch(absl::Span<Io> ios) {
  RunBatch<TierStack::SlotLoad>(
      ios, [this](Io& io) { return Read(io.offset, io.data); },
      [this](absl::Span<TierStack::SlotLoad> pages) { stack_->LoadSlots(pages); });
}

void TierStackDevice::WriteBatch(absl::Span<Io> ios) {
  RunBatch<TierStack::SlotStore>(
      ios, [this](Io& io) { return Write(io.offset, io.data); },  // read-modify-write
      [this](absl::Span<TierStack::SlotStore> pages) { stack_->StoreSlots(pages); });
}

absl::Status TierStackDevice::ZeroRange(uint64_t offset, uint64_t length) {
  static const uint8_t kZeros[kPageSize] = {};
  const uint64_t end = offset + length;
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t slot = pos / kPageSize;
    const uint64_t n = std::min<uint64_t>(end - pos, kPageSize - pos % kPageSize);
    if (n == kPageSize) {
      // A whole page: forget it (a never-written slot reads as zeros).
      std::lock_guard<std::mutex> lock(LockFor(slot));
      stack_->Invalidate(slot, 1);
    } else if (absl::Status s = Write(pos, absl::MakeConstSpan(kZeros, n)); !s.ok()) {
      return s;
    }
    pos += n;
  }
  return absl::OkStatus();
}

absl::Status TierStackDevice::Trim(uint64_t offset, uint64_t length) {
  return ZeroRange(offset, length);
}

absl::Status TierStackDevice::WriteZeroes(uint64_t offset, uint64_t length) {
  return ZeroRange(offset, length);
}

}  // namespace ramster
