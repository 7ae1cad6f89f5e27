#include "kernel-shim/write_behind_device.h"

#include <sys/mman.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/thread_name.h"

namespace ramster {

absl::StatusOr<std::unique_ptr<WriteBehindDevice>> WriteBehindDevice::Create(
    BlockDevice* inner, WriteBehindOptions options) {
  if (options.capacity_bytes % kPageSize != 0 || options.capacity_bytes < 2 * kPageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "write-behind area of ", options.capacity_bytes, " bytes: need whole pages, at least 2"));
  }
  const size_t frames = options.capacity_bytes / kPageSize;
  if (frames > (1u << 30)) {
    return absl::InvalidArgumentError("write-behind area too large (at most 2^30 pages)");
  }
  if (options.max_flush_pages < 1 || options.flushers < 1 || options.flushers > 64) {
    return absl::InvalidArgumentError("write-behind: max_flush_pages >= 1, flushers 1..64");
  }
  if (options.coalesce_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("write-behind: coalesce_delay < 0");
  }
  // Faulted in now: the frames are part of what the swap path preallocates
  // (the shim locks its memory after setting up).
  void* p = mmap(nullptr, options.capacity_bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot allocate a write-behind area of ", options.capacity_bytes, " bytes"));
  }
  return std::unique_ptr<WriteBehindDevice>(
      new WriteBehindDevice(inner, options, static_cast<uint8_t*>(p), frames));
}

WriteBehindDevice::WriteBehindDevice(BlockDevice* inner, WriteBehindOptions options,
                                     uint8_t* frames, size_t frame_count)
    : inner_(inner), options_(options), frames_(frames), frame_count_(frame_count) {
  MutexLock l(&mu_);
  frame_info_.resize(frame_count_);
  free_.reserve(frame_count_);
  for (size_t i = frame_count_; i > 0; --i) free_.push_back(static_cast<int32_t>(i - 1));
  // Every staged slot holds a frame, so the table never needs more than
  // this; twice the room keeps it from growing on tombstones too.
  slots_.reserve(2 * frame_count_);
  stats_.capacity_pages = frame_count_;
  for (int i = 0; i < options_.flushers; ++i) flushers_.emplace_back([this] { FlusherLoop(); });
}

WriteBehindDevice::~WriteBehindDevice() {
  {
    MutexLock l(&mu_);
    stop_ = true;
    work_.SignalAll();
  }
  for (std::thread& t : flushers_) t.join();
  munmap(frames_, frame_count_ * kPageSize);
}

// ---- the flush queue --------------------------------------------------------

void WriteBehindDevice::Unlink(FrameList* list, int32_t f) {
  Frame& fr = frame_info_[f];
  (fr.prev == kNone ? list->head : frame_info_[fr.prev].next) = fr.next;
  (fr.next == kNone ? list->tail : frame_info_[fr.next].prev) = fr.prev;
  fr.prev = fr.next = kNone;
  --list->size;
}

void WriteBehindDevice::Append(FrameList* list, int32_t f) {
  Frame& fr = frame_info_[f];
  fr.prev = list->tail;
  fr.next = kNone;
  (list->tail == kNone ? list->head : frame_info_[list->tail].next) = f;
  list->tail = f;
  ++list->size;
}

void WriteBehindDevice::Enqueue(int32_t f) {
  frame_info_[f].state = FrameState::kQueued;
  Append(&queue_, f);
}

void WriteBehindDevice::Free(int32_t f) {
  frame_info_[f].state = FrameState::kFree;
  free_.push_back(f);
}

void WriteBehindDevice::DropRetained(SlotFrames* s) {
  Unlink(&retained_, s->latest);
  Free(s->latest);
  s->latest = kNone;
}

int32_t WriteBehindDevice::TakeRoom() {
  if (free_.empty()) {
    // The oldest retained page: behind already, so only its frame is taken.
    auto it = slots_.find(frame_info_[retained_.head].slot);
    DropRetained(&it->second);
    if (it->second.in_flight == kNone) slots_.erase(it);
  }
  const int32_t f = free_.back();
  free_.pop_back();
  return f;
}

bool WriteBehindDevice::PendingUpTo(uint64_t seq) const {
  for (const Frame& fr : frame_info_) {
    if ((fr.state == FrameState::kQueued || fr.state == FrameState::kInFlight) && fr.seq <= seq) {
      return true;
    }
  }
  return false;
}

void WriteBehindDevice::Take(int32_t f, std::vector<int32_t>* frames, std::vector<Io>* ios) {
  Frame& fr = frame_info_[f];
  Unlink(&queue_, f);
  fr.state = FrameState::kInFlight;
  slots_[fr.slot].in_flight = f;
  ++in_flight_;
  frames->push_back(f);
  ios->push_back({fr.slot * kPageSize, absl::MakeSpan(FrameData(f), kPageSize), {}});
}

void WriteBehindDevice::TakeBatch(size_t max, std::vector<int32_t>* frames,
                                  std::vector<Io>* ios) {
  // A queued frame is its slot's newest copy; it waits while an older copy
  // of the slot is in flight, so that the device sees them in order.
  for (int32_t f = queue_.head; f != kNone && frames->size() < max;) {
    const int32_t next = frame_info_[f].next;
    if (slots_.find(frame_info_[f].slot)->second.in_flight == kNone) Take(f, frames, ios);
    f = next;
  }
}

absl::Status WriteBehindDevice::FlushFrames(const std::vector<int32_t>& frames,
                                            absl::Span<Io> ios) {
  mu_.Unlock();
  inner_->WriteBatch(ios);
  mu_.Lock();
  const bool retain = options_.retain && read_since_flush_;
  read_since_flush_ = false;
  absl::Status first_error;
  for (size_t i = 0; i < frames.size(); ++i) {
    const int32_t f = frames[i];
    auto it = slots_.find(frame_info_[f].slot);
    SlotFrames& s = it->second;
    s.in_flight = kNone;
    --in_flight_;
    if (ios[i].status.ok()) {
      ++stats_.flushed_pages;
      if (s.latest == f && retain) {
        frame_info_[f].state = FrameState::kRetained;
        Append(&retained_, f);
      } else {
        if (s.latest == f) s.latest = kNone;
        Free(f);
      }
    } else {
      ++stats_.flush_failures;
      if (first_error.ok()) first_error = ios[i].status;
      if (s.latest == f) {
        Enqueue(f);  // still the newest copy: stays readable, tried again later
      } else {
        Free(f);  // a newer copy is queued already
      }
    }
    if (s.latest == kNone && s.in_flight == kNone) slots_.erase(it);
  }
  ++stats_.flush_batches;
  failing_ = first_error;
  if (!first_error.ok()) retry_at_ = absl::Now() + options_.retry_delay;
  settled_.SignalAll();
  if (queue_.head != kNone) work_.SignalAll();  // copies that waited for these
  return first_error;
}

void WriteBehindDevice::FlusherLoop() {
  NameThisThread("wb-flusher");
  std::vector<int32_t> frames;
  std::vector<Io> ios;
  frames.reserve(options_.max_flush_pages);
  ios.reserve(options_.max_flush_pages);
  mu_.Lock();
  while (true) {
    // After a failure, wait a little before trying again (unless stopping:
    // then one more try each, and what still fails stays).
    if (!failing_.ok() && !stop_) {
      const absl::Time now = absl::Now();
      if (now < retry_at_) {
        work_.WaitFor(retry_at_ - now);
        continue;
      }
    }
    // Let a few pages gather (see the header), unless someone waits.
    if (queue_.size > 0 && queue_.size < options_.coalesce_pages && waiters_ == 0 && !stop_ &&
        failing_.ok()) {
      const absl::Time due =
          absl::FromUnixNanos(frame_info_[queue_.head].queued_ns) + options_.coalesce_delay;
      const absl::Time now = absl::Now();
      if (now < due) {
        work_.WaitFor(due - now);
        continue;
      }
    }
    frames.clear();
    ios.clear();
    TakeBatch(options_.max_flush_pages, &frames, &ios);
    if (frames.empty()) {
      if (stop_ && (queue_.head == kNone || !failing_.ok())) break;
      work_.Wait();
      continue;
    }
    const bool ok = FlushFrames(frames, absl::MakeSpan(ios)).ok();
    if (!ok && stop_) break;
  }
  mu_.Unlock();
}

// ---- writes -----------------------------------------------------------------

bool WriteBehindDevice::Stage(uint64_t offset, absl::Span<const uint8_t> data) {
  const size_t n = data.size() / kPageSize;
  thread_local std::vector<int32_t> got;
  got.clear();
  {
    MutexLock l(&mu_);
    bool waited = false;
    while (Room() < n) {
      // Full while the device behind fails: stop absorbing writes.
      if (!failing_.ok() || stop_) {
        if (waited) --waiters_;
        return false;
      }
      if (!waited) {
        ++stats_.room_waits;
        ++waiters_;
        work_.SignalAll();  // no more gathering: room is wanted
      }
      waited = true;
      settled_.Wait();
    }
    if (waited) --waiters_;
    for (size_t i = 0; i < n; ++i) {
      got.push_back(TakeRoom());
      frame_info_[got.back()].state = FrameState::kFilling;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(FrameData(got[i]), data.data() + i * kPageSize, kPageSize);
  }
  const int64_t now = absl::GetCurrentTimeNanos();
  MutexLock l(&mu_);
  const size_t queued_before = queue_.size;
  for (size_t i = 0; i < n; ++i) {
    const int32_t f = got[i];
    Frame& fr = frame_info_[f];
    fr.slot = offset / kPageSize + i;
    fr.seq = next_seq_++;
    fr.queued_ns = now;
    SlotFrames& s = slots_[fr.slot];
    if (Retained(s)) {
      DropRetained(&s);  // behind already; this copy replaces it
    } else if (s.latest != kNone) {
      ++stats_.superseded;
      // A queued older copy is simply replaced; one in flight is freed when
      // its flush ends.
      if (s.latest != s.in_flight) {
        Unlink(&queue_, s.latest);
        Free(s.latest);
      }
    }
    s.latest = f;
    Enqueue(f);
  }
  stats_.staged_writes += n;
  // A flusher needs to hear of the first page (it starts the clock) and of
  // the one that completes a batch; in between it is not woken for nothing.
  if (queued_before == 0 ||
      (queued_before < options_.coalesce_pages && queue_.size >= options_.coalesce_pages)) {
    work_.Signal();
  }
  return true;
}

template <typename Drop>
absl::Status WriteBehindDevice::Settle(uint64_t first, uint64_t last, Drop drop) {
  thread_local std::vector<uint64_t> candidates;
  thread_local std::vector<int32_t> frames;
  thread_local std::vector<Io> ios;
  MutexLock l(&mu_);
  while (true) {
    candidates.clear();
    if (last - first + 1 <= slots_.size()) {
      for (uint64_t slot = first; slot <= last; ++slot) {
        if (slots_.contains(slot)) candidates.push_back(slot);
      }
    } else {
      for (const auto& [slot, s] : slots_) {
        if (slot >= first && slot <= last) candidates.push_back(slot);
      }
    }
    if (candidates.empty()) return absl::OkStatus();
    frames.clear();
    ios.clear();
    bool wait = false;
    for (uint64_t slot : candidates) {
      auto it = slots_.find(slot);
      SlotFrames& s = it->second;
      // The caller is about to change the page behind: a retained copy of
      // it would be stale.
      if (Retained(s)) DropRetained(&s);
      const bool queued = s.latest != kNone && s.latest != s.in_flight;
      if (queued && drop(slot)) {
        Unlink(&queue_, s.latest);
        Free(s.latest);
        s.latest = kNone;
        ++stats_.superseded;
      } else if (queued && s.in_flight == kNone) {
        Take(s.latest, &frames, &ios);  // write it behind now, in order
      }
      if (s.in_flight != kNone && (frames.empty() || frames.back() != s.in_flight)) wait = true;
      if (s.latest == kNone && s.in_flight == kNone) slots_.erase(it);
    }
    if (!frames.empty()) {
      absl::Status s = FlushFrames(frames, absl::MakeSpan(ios));
      if (!s.ok()) return s;
      continue;
    }
    if (wait) {
      settled_.Wait();
      continue;
    }
    return absl::OkStatus();
  }
}

absl::Status WriteBehindDevice::SettleBytes(uint64_t offset, uint64_t length) {
  if (length == 0) return absl::OkStatus();
  const uint64_t end = offset + length;
  return Settle(offset / kPageSize, (end - 1) / kPageSize, [&](uint64_t slot) {
    return slot * kPageSize >= offset && (slot + 1) * kPageSize <= end;
  });
}

absl::Status WriteBehindDevice::WriteThrough(uint64_t offset, absl::Span<const uint8_t> data) {
  {
    MutexLock l(&mu_);
    ++stats_.written_through;
  }
  if (absl::Status s = SettleBytes(offset, data.size()); !s.ok()) return s;
  return inner_->Write(offset, data);
}

void WriteBehindDevice::WriteBatch(absl::Span<Io> ios) {
  for (Io& io : ios) {
    if (WholePages(io) && io.data.size() / kPageSize <= frame_count_ / 2 &&
        Stage(io.offset, io.data)) {
      io.status = absl::OkStatus();
    } else {
      io.status = WriteThrough(io.offset, io.data);
    }
  }
}

absl::Status WriteBehindDevice::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  Io io{offset, absl::MakeSpan(const_cast<uint8_t*>(data.data()), data.size()), {}};
  WriteBatch(absl::MakeSpan(&io, 1));  // only reads io.data
  return io.status;
}

absl::Status WriteBehindDevice::Trim(uint64_t offset, uint64_t length) {
  if (absl::Status s = SettleBytes(offset, length); !s.ok()) return s;
  return inner_->Trim(offset, length);
}

absl::Status WriteBehindDevice::WriteZeroes(uint64_t offset, uint64_t length) {
  if (absl::Status s = SettleBytes(offset, length); !s.ok()) return s;
  return inner_->WriteZeroes(offset, length);
}

absl::Status WriteBehindDevice::Flush() {
  {
    MutexLock l(&mu_);
    const uint64_t seq = next_seq_ - 1;
    const uint64_t batches = stats_.flush_batches;
    if (!failing_.ok()) {  // try again now rather than after the delay
      retry_at_ = absl::InfinitePast();
      work_.SignalAll();
    }
    ++waiters_;  // no more gathering: a FLUSH waits
    work_.SignalAll();
    while (PendingUpTo(seq)) {
      // Pages that the device keeps refusing (in a flush tried since this
      // call) are not durable: say so.
      if (!failing_.ok() && in_flight_ == 0 && stats_.flush_batches > batches) {
        --waiters_;
        return failing_;
      }
      settled_.Wait();
    }
    --waiters_;
  }
  return inner_->Flush();
}

// ---- reads ------------------------------------------------------------------

void WriteBehindDevice::ReadBatch(absl::Span<Io> ios) {
  thread_local std::vector<Io> behind;
  thread_local std::vector<size_t> owner;  // behind[j] is part of ios[owner[j]]
  behind.clear();
  owner.clear();
  {
    MutexLock l(&mu_);
    read_since_flush_ = true;
    for (size_t i = 0; i < ios.size(); ++i) {
      Io& io = ios[i];
      io.status = absl::OkStatus();
      const uint64_t end = io.offset + io.data.size();
      uint64_t run = io.offset;  // start of the part not staged
      for (uint64_t pos = io.offset; pos < end && !slots_.empty();) {
        const uint64_t slot = pos / kPageSize;
        const uint64_t n = std::min<uint64_t>(end - pos, kPageSize - pos % kPageSize);
        auto it = slots_.find(slot);
        if (it != slots_.end() && it->second.latest != kNone) {
          if (Retained(it->second)) ++stats_.retained_hits;
          if (pos > run) {
            behind.push_back({run, io.data.subspan(run - io.offset, pos - run), {}});
            owner.push_back(i);
          }
          std::memcpy(io.data.data() + (pos - io.offset),
                      FrameData(it->second.latest) + pos % kPageSize, n);
          ++stats_.read_hits;
          run = pos + n;
        }
        pos += n;
      }
      if (end > run || io.data.empty()) {
        behind.push_back({run, io.data.subspan(run - io.offset), {}});
        owner.push_back(i);
      }
    }
  }
  if (behind.empty()) return;
  inner_->ReadBatch(absl::MakeSpan(behind));
  for (size_t j = 0; j < behind.size(); ++j) {
    if (!behind[j].status.ok() && ios[owner[j]].status.ok()) {
      ios[owner[j]].status = std::move(behind[j].status);
    }
  }
}

absl::Status WriteBehindDevice::Read(uint64_t offset, absl::Span<uint8_t> out) {
  Io io{offset, out, {}};
  ReadBatch(absl::MakeSpan(&io, 1));
  return io.status;
}

WriteBehindDevice::Stats WriteBehindDevice::stats() const {
  MutexLock l(&mu_);
  Stats s = stats_;
  s.staged_pages = frame_count_ - free_.size() - retained_.size;
  s.retained_pages = retained_.size;
  return s;
}

}  // namespace ramster
