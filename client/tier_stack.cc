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

// Locks the stripes of [first, first + n) in increasing stripe order (see
// SlotMap::StripeIndex), and unlocks them when it goes out of scope.
class RangeLock {
 public:
  RangeLock(SlotMap* map, uint64_t first, uint64_t n) {
    std::vector<size_t> stripes;
    stripes.reserve(n);
    for (uint64_t s = first; s < first + n; ++s) stripes.push_back(SlotMap::StripeIndex(s));
    std::sort(stripes.begin(), stripes.end());
    stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
    locks_.reserve(stripes.size());
    for (size_t i : stripes) locks_.emplace_back(map->Stripe(i));
  }

 private:
  std::vector<std::unique_lock<std::mutex>> locks_;
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

}  // namespace

absl::Status TierStack::StoreRange(uint64_t first, absl::Span<const uint8_t> pages) {
  if (absl::Status s = CheckRange(first, pages.size(), map_.slots()); !s.ok()) return s;
  const uint64_t n = pages.size() / kPageSize;
  for (uint64_t done = 0; done < n; done += kBatchPages) {
    uint64_t count = std::min<uint64_t>(kBatchPages, n - done);
    absl::Status s = StoreChunk(first + done, pages.subspan(done * kPageSize, count * kPageSize));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TierStack::StoreChunk(uint64_t first, absl::Span<const uint8_t> pages) {
  const size_t n = pages.size() / kPageSize;
  // Encoding happens before any lock is taken; the buffers are kept per
  // thread so that the store path allocates nothing in steady state.
  thread_local std::vector<EncodedPage> encoded;
  thread_local std::vector<StoreItem> items;
  thread_local std::vector<SlotEntry> old;
  if (encoded.size() < n) encoded.resize(kBatchPages);
  items.clear();
  old.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (absl::Status s = EncodePage(pages.subspan(i * kPageSize, kPageSize), &encoded[i]);
        !s.ok()) {
      return s;
    }
  }
  stores_ += n;

  RangeLock lock(&map_, first, n);
  thread_local std::vector<StoreItem*> pending, refused;
  pending.clear();
  items.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t slot = first + i;
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
    item.raw = pages.subspan(i * kPageSize, kPageSize);
    item.encoded = &encoded[i];
    item.meta = PageMeta{generation, encoded[i].checksum, 0};
    items.push_back(item);
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
      const uint64_t slot = item->key.index;
      SlotEntry& e = map_.at(slot);
      e.checksum = item->meta.checksum;
      e.generation = item->meta.generation;
      e.Set(static_cast<uint32_t>(t + 1), backup, item->meta.placement);
      Moved(old[slot - first].tier(), static_cast<uint32_t>(t + 1));
      Release(slot, old[slot - first], static_cast<uint32_t>(t + 1), backup);
    }
    pending.swap(refused);
  }
  // Pages every tier refused keep their old contents: the write failed.
  return pending.empty() ? absl::OkStatus() : pending.front()->status;
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
    tiers_[t - 1]->Invalidate(key, meta);
  }
}

absl::Status TierStack::Load(uint64_t slot, absl::Span<uint8_t> out) {
  if (out.size() < kPageSize) return absl::InvalidArgumentError("buffer smaller than a page");
  return LoadRange(slot, out.first(kPageSize));
}

absl::Status TierStack::LoadRange(uint64_t first, absl::Span<uint8_t> out) {
  if (absl::Status s = CheckRange(first, out.size(), map_.slots()); !s.ok()) return s;
  const uint64_t n = out.size() / kPageSize;
  for (uint64_t done = 0; done < n; done += kBatchPages) {
    uint64_t count = std::min<uint64_t>(kBatchPages, n - done);
    absl::Status s = LoadChunk(first + done, out.subspan(done * kPageSize, count * kPageSize));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status TierStack::LoadChunk(uint64_t first, absl::Span<uint8_t> out) {
  const size_t n = out.size() / kPageSize;
  loads_ += n;
  RangeLock lock(&map_, first, n);
  thread_local std::vector<LoadItem> items;
  items.clear();
  items.reserve(n);
  thread_local std::vector<std::vector<LoadItem*>> by_tier;
  by_tier.resize(tiers_.size());
  for (auto& v : by_tier) v.clear();
  for (size_t i = 0; i < n; ++i) {
    const uint64_t slot = first + i;
    const SlotEntry& e = map_.at(slot);
    absl::Span<uint8_t> page = out.subspan(i * kPageSize, kPageSize);
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
    item.key = Key(slot);
    item.meta = PageMeta{e.generation, e.checksum, e.placement()};
    item.out = page;
    item.status = absl::DataLossError("slot names no tier");
    items.push_back(item);
  }
  for (LoadItem& item : items) {
    uint32_t t = map_.at(item.key.index).tier();
    if (t <= tiers_.size()) by_tier[t - 1].push_back(&item);
  }
  for (size_t t = 0; t < tiers_.size(); ++t) {
    if (!by_tier[t].empty()) tiers_[t]->LoadBatch(absl::MakeSpan(by_tier[t]));
  }
  absl::Status result;
  for (LoadItem& item : items) {
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
    if (result.ok()) {
      result = absl::DataLossError(
          absl::StrCat("no good copy of slot ", item.key.index, ": ", item.status.message()));
    }
  }
  return result;
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
