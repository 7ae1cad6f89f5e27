#include "client/tier_stack.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace ramster {

TierStack::TierStack(uint64_t slots, uint32_t pool, std::vector<std::unique_ptr<Tier>> tiers,
                     bool same_filled)
    : map_(slots),
      pool_(pool),
      tiers_(std::move(tiers)),
      same_filled_(same_filled),
      stored_in_(new std::atomic<uint64_t>[tiers_.size()]()),
      refused_by_(new std::atomic<uint64_t>[tiers_.size()]()) {
  slots_at_[SlotEntry::kNone] = slots;
  for (size_t i = 0; i < tiers_.size() && i < SlotEntry::kMaxTiers; ++i) {
    tiers_[i]->AttachSlotMap(&map_, static_cast<uint32_t>(i + 1), pool_);
  }
}

absl::Status TierStack::Store(uint64_t slot, absl::Span<const uint8_t> page) {
  if (page.size() != kPageSize) return absl::InvalidArgumentError("a page is 4096 bytes");
  return StoreRange(slot, page);
}

namespace {

// Locks the stripes of up to `kMax` slots in increasing stripe order (see
// SlotMap::StripeIndex), each once, and unlocks them when it goes out of
// scope. Allocates nothing.
template <size_t kMax>
class StripeLock {
 public:
  StripeLock(SlotMap* map, absl::Span<const uint64_t> slots) : map_(map) {
    for (uint64_t s : slots) stripes_[n_++] = SlotMap::StripeIndex(s);
    std::sort(stripes_, stripes_ + n_);
    n_ = static_cast<size_t>(std::unique(stripes_, stripes_ + n_) - stripes_);
    for (size_t i = 0; i < n_; ++i) map_->Stripe(stripes_[i]).lock();
  }
  ~StripeLock() {
    for (size_t i = n_; i > 0; --i) map_->Stripe(stripes_[i - 1]).unlock();
  }
  StripeLock(const StripeLock&) = delete;
  StripeLock& operator=(const StripeLock&) = delete;

 private:
  SlotMap* const map_;
  size_t stripes_[kMax];
  size_t n_ = 0;
};

absl::Status CheckRange(uint64_t first, size_t bytes, uint64_t slots) {
  if (bytes == 0 || bytes % kPageSize != 0) {
    return absl::InvalidArgumentError("a range is a whole number of pages");
  }
  uint64_t n = bytes / kPageSize;
  if (first >= slots || n > slots - first) {
    return absl::InvalidArgumentError("slot beyond the device");
  }
  return absl::OkStatus();
}

size_t PageBytes(const TierStack::SlotStore& op) { return op.page.size(); }
size_t PageBytes(const TierStack::SlotLoad& op) { return op.out.size(); }

// Splits `ops` into groups of at most `kMax` with distinct slots, in order,
// and runs `run` on each: a slot seen again starts a new group, so that
// operations on one slot take effect in span order. Invalid operations
// (slot beyond the device, wrong size) get kInvalidArgument and join no group.
template <size_t kMax, typename Op, typename Run>
void ForEachGroup(absl::Span<Op> ops, uint64_t slots, Run run) {
  Op* group[kMax];
  size_t n = 0;
  for (Op& op : ops) {
    if (op.slot >= slots) {
      op.status = absl::InvalidArgumentError("slot beyond the device");
      continue;
    }
    if (PageBytes(op) != kPageSize) {
      op.status = absl::InvalidArgumentError("a page is 4096 bytes");
      continue;
    }
    bool repeated = false;
    for (size_t i = 0; i < n && !repeated; ++i) repeated = group[i]->slot == op.slot;
    if (repeated || n == kMax) {
      run(absl::MakeConstSpan(group, n));
      n = 0;
    }
    group[n++] = &op;
  }
  if (n > 0) run(absl::MakeConstSpan(group, n));
}

}  // namespace

absl::Status TierStack::StoreRange(uint64_t first, absl::Span<const uint8_t> pages) {
  if (absl::Status s = CheckRange(first, pages.size(), map_.slots()); !s.ok()) return s;
  const uint64_t n = pages.size() / kPageSize;
  SlotStore ops[kBatchPages];
  SlotStore* group[kBatchPages];
  for (uint64_t done = 0; done < n; done += kBatchPages) {
    const size_t count = static_cast<size_t>(std::min<uint64_t>(kBatchPages, n - done));
    for (size_t i = 0; i < count; ++i) {
      ops[i] = SlotStore{first + done + i, pages.subspan((done + i) * kPageSize, kPageSize), {}};
      group[i] = &ops[i];
    }
    StoreGroup(absl::MakeConstSpan(group, count));
    for (size_t i = 0; i < count; ++i) {
      if (!ops[i].status.ok()) return ops[i].status;
    }
  }
  return absl::OkStatus();
}

void TierStack::StoreSlots(absl::Span<SlotStore> stores) {
  ForEachGroup<kBatchPages>(stores, map_.slots(),
               [this](absl::Span<SlotStore* const> group) { StoreGroup(group); });
}

void TierStack::StoreGroup(absl::Span<SlotStore* const> group) {
  const size_t n = group.size();
  // Encoding happens before any lock is taken; the buffers are kept per
  // thread so that the store path allocates nothing in steady state.
  thread_local std::vector<EncodedPage> encoded;
  thread_local std::vector<StoreItem> items;
  thread_local std::vector<size_t> op_of;  // items[k] is group[op_of[k]]
  thread_local std::vector<SlotEntry> old;
  if (encoded.size() < kBatchPages) encoded.resize(kBatchPages);
  items.clear();
  op_of.clear();
  old.resize(n);
  uint64_t slots[kBatchPages];
  for (size_t i = 0; i < n; ++i) {
    slots[i] = group[i]->slot;
    group[i]->status = EncodePage(group[i]->page, &encoded[i]);
  }
  stores_ += n;

  StripeLock<kBatchPages> lock(&map_, absl::MakeConstSpan(slots, n));
  thread_local std::vector<StoreItem*> pending, refused;
  pending.clear();
  items.reserve(n);
  op_of.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (!group[i]->status.ok()) continue;  // could not encode: nothing changes
    const uint64_t slot = slots[i];
    SlotEntry& e = map_.at(slot);
    old[i] = e;
    uint32_t generation = e.generation + 1;
    if (generation == 0) generation = 1;
    if (same_filled_ && encoded[i].encoding == Encoding::kSameFilled) {
      uint64_t word;
      std::memcpy(&word, encoded[i].payload, sizeof(word));
      e.checksum = word;
      e.generation = generation;
      e.Set(SlotEntry::kFill, SlotEntry::kNone, 0);
      Moved(old[i].tier(), SlotEntry::kFill);
      same_filled_count_++;
      Release(slot, old[i], SlotEntry::kNone, SlotEntry::kNone);
      continue;
    }
    StoreItem item;
    item.key = Key(slot);
    item.raw = group[i]->page;
    item.encoded = &encoded[i];
    item.meta = PageMeta{generation, encoded[i].checksum, 0};
    items.push_back(item);
    op_of.push_back(i);
  }
  for (StoreItem& item : items) pending.push_back(&item);

  for (size_t t = 0; t < tiers_.size() && t < SlotEntry::kMaxTiers && !pending.empty(); ++t) {
    tiers_[t]->StoreBatch(absl::MakeSpan(pending));
    refused.clear();
    for (StoreItem* item : pending) {
      if (!item->status.ok()) {
        refused_by_[t]++;
        refused.push_back(item);
        continue;
      }
      stored_in_[t]++;
      uint32_t backup = SlotEntry::kNone;
      if (!item->durable) {
        // Fewer copies than the durability policy wants: one more, below.
        for (size_t b = t + 1; b < tiers_.size() && b < SlotEntry::kMaxTiers; ++b) {
          PageMeta bmeta{item->meta.generation, item->meta.checksum, 0};
          bool bdurable = true;
          if (tiers_[b]->Store(item->key, item->raw, *item->encoded, &bmeta, &bdurable).ok()) {
            backup = static_cast<uint32_t>(b + 1);
            backups_++;
            break;
          }
        }
        if (backup == SlotEntry::kNone) not_durable_++;
      }
      const size_t i = op_of[static_cast<size_t>(item - items.data())];
      const uint64_t slot = item->key.index;
      SlotEntry& e = map_.at(slot);
      e.checksum = item->meta.checksum;
      e.generation = item->meta.generation;
      e.Set(static_cast<uint32_t>(t + 1), backup, item->meta.placement);
      Moved(old[i].tier(), static_cast<uint32_t>(t + 1));
      Release(slot, old[i], static_cast<uint32_t>(t + 1), backup);
    }
    pending.swap(refused);
  }
  // Pages every tier refused keep their old contents: their write failed
  // with the last tier's refusal.
  for (StoreItem* item : pending) {
    group[op_of[static_cast<size_t>(item - items.data())]]->status = item->status;
  }
}

void TierStack::Release(uint64_t slot, const SlotEntry& old, uint32_t kept_tier,
                        uint32_t kept_backup) {
  const PageKey key = Key(slot);
  for (uint32_t t : {old.tier(), old.backup()}) {
    if (t == SlotEntry::kNone || t == SlotEntry::kFill || t > tiers_.size()) continue;
    // Same key in the same tier: the new copy overwrote it in place (peers
    // that took the new copy keep it: generation-bounded invalidation).
    if ((t == kept_tier || t == kept_backup) && tiers_[t - 1]->overwrites_in_place()) {
      continue;
    }
    PageMeta meta{old.generation, old.checksum, t == old.tier() ? old.placement() : 0};
    if (t == kept_tier) {
      const SlotEntry& now = map_.at(slot);  // REQUIRES: the stripe locked
      tiers_[t - 1]->InvalidateReplaced(key, meta,
                                        PageMeta{now.generation, now.checksum, now.placement()});
    } else {
      tiers_[t - 1]->Invalidate(key, meta);
    }
  }
}

absl::Status TierStack::Load(uint64_t slot, absl::Span<uint8_t> out) {
  if (out.size() < kPageSize) return absl::InvalidArgumentError("buffer smaller than a page");
  return LoadRange(slot, out.first(kPageSize));
}

absl::Status TierStack::LoadRange(uint64_t first, absl::Span<uint8_t> out) {
  if (absl::Status s = CheckRange(first, out.size(), map_.slots()); !s.ok()) return s;
  const uint64_t n = out.size() / kPageSize;
  SlotLoad ops[kBatchPages];
  SlotLoad* group[kBatchPages];
  for (uint64_t done = 0; done < n; done += kBatchPages) {
    const size_t count = static_cast<size_t>(std::min<uint64_t>(kBatchPages, n - done));
    for (size_t i = 0; i < count; ++i) {
      ops[i] = SlotLoad{first + done + i, out.subspan((done + i) * kPageSize, kPageSize), {}};
      group[i] = &ops[i];
    }
    LoadGroup(absl::MakeConstSpan(group, count));
    for (size_t i = 0; i < count; ++i) {
      if (!ops[i].status.ok()) return ops[i].status;
    }
  }
  return absl::OkStatus();
}

void TierStack::LoadSlots(absl::Span<SlotLoad> loads) {
  ForEachGroup<kBatchPages>(loads, map_.slots(),
               [this](absl::Span<SlotLoad* const> group) { LoadGroup(group); });
}

void TierStack::LoadGroup(absl::Span<SlotLoad* const> group) {
  const size_t n = group.size();
  loads_ += n;
  uint64_t slots[kBatchPages];
  for (size_t i = 0; i < n; ++i) slots[i] = group[i]->slot;
  StripeLock<kBatchPages> lock(&map_, absl::MakeConstSpan(slots, n));
  thread_local std::vector<LoadItem> items;
  thread_local std::vector<size_t> op_of;  // items[k] is group[op_of[k]]
  items.clear();
  op_of.clear();
  items.reserve(n);
  op_of.reserve(n);
  thread_local std::vector<std::vector<LoadItem*>> by_tier;
  by_tier.resize(tiers_.size());
  for (auto& v : by_tier) v.clear();
  for (size_t i = 0; i < n; ++i) {
    const SlotEntry& e = map_.at(slots[i]);
    absl::Span<uint8_t> page = group[i]->out;
    group[i]->status = absl::OkStatus();
    if (e.tier() == SlotEntry::kNone) {
      std::memset(page.data(), 0, kPageSize);
      zero_loads_++;
      continue;
    }
    if (e.tier() == SlotEntry::kFill) {
      for (size_t off = 0; off < kPageSize; off += 8) std::memcpy(page.data() + off, &e.checksum, 8);
      continue;
    }
    LoadItem item;
    item.key = Key(slots[i]);
    item.meta = PageMeta{e.generation, e.checksum, e.placement()};
    item.out = page;
    item.status = absl::DataLossError("slot names no tier");
    items.push_back(item);
    op_of.push_back(i);
  }
  for (LoadItem& item : items) {
    uint32_t t = map_.at(item.key.index).tier();
    if (t <= tiers_.size()) by_tier[t - 1].push_back(&item);
  }
  for (size_t t = 0; t < tiers_.size(); ++t) {
    if (!by_tier[t].empty()) tiers_[t]->LoadBatch(absl::MakeSpan(by_tier[t]));
  }
  for (size_t k = 0; k < items.size(); ++k) {
    LoadItem& item = items[k];
    if (item.status.ok()) continue;
    const SlotEntry& e = map_.at(item.key.index);
    if (e.backup() != SlotEntry::kNone && e.backup() <= tiers_.size()) {
      absl::Status b = tiers_[e.backup() - 1]->Load(
          item.key, PageMeta{e.generation, e.checksum, 0}, item.out);
      if (b.ok()) {
        load_fallbacks_++;
        continue;
      }
      item.status = b;
    }
    load_failures_++;
    fprintf(stderr, "ramster: LOAD FAILED for slot %llu (generation %u): no good copy: %s\n",
            static_cast<unsigned long long>(item.key.index), e.generation,
            item.status.ToString().c_str());
    group[op_of[k]]->status = absl::DataLossError(
        absl::StrCat("no good copy of slot ", item.key.index, ": ", item.status.message()));
  }
}

void TierStack::Invalidate(uint64_t first, uint64_t count) {
  uint64_t end = first + count;
  if (end < first || end > map_.slots()) end = map_.slots();
  for (uint64_t slot = first; slot < end; ++slot) {
    std::lock_guard<std::mutex> lock(map_.StripeFor(slot));
    SlotEntry& e = map_.at(slot);
    if (e.tier() == SlotEntry::kNone) continue;
    const SlotEntry old = e;
    // The generation stays: the next store must still outrank old copies.
    e.checksum = 0;
    e.Set(SlotEntry::kNone, SlotEntry::kNone, 0);
    Moved(old.tier(), SlotEntry::kNone);
    Release(slot, old, SlotEntry::kNone, SlotEntry::kNone);
    invalidates_++;
  }
}

TierStack::Stats TierStack::stats() {
  Stats st;
  st.stores = stores_;
  st.loads = loads_;
  st.invalidates = invalidates_;
  st.same_filled = same_filled_count_;
  st.zero_loads = zero_loads_;
  st.backups = backups_;
  st.not_durable = not_durable_;
  st.load_fallbacks = load_fallbacks_;
  st.load_failures = load_failures_;
  st.stored_in.resize(tiers_.size());
  st.refused_by.resize(tiers_.size());
  st.slots_in.resize(tiers_.size());
  for (size_t i = 0; i < tiers_.size(); ++i) {
    st.stored_in[i] = stored_in_[i];
    st.refused_by[i] = refused_by_[i];
    st.slots_in[i] = slots_at_[i + 1].load();
  }
  st.slots_filled = slots_at_[SlotEntry::kFill].load();
  return st;
}

}  // namespace ramster
