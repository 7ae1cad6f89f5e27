#include "client/tier_stack.h"

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
  for (size_t i = 0; i < tiers_.size() && i < SlotEntry::kMaxTiers; ++i) {
    tiers_[i]->AttachSlotMap(&map_, static_cast<uint32_t>(i + 1), pool_);
  }
}

absl::Status TierStack::Store(uint64_t slot, absl::Span<const uint8_t> page) {
  if (slot >= map_.slots()) return absl::InvalidArgumentError("slot beyond the device");
  if (page.size() != kPageSize) return absl::InvalidArgumentError("a page is 4096 bytes");
  EncodedPage enc;
  if (absl::Status s = EncodePage(page, &enc); !s.ok()) return s;
  stores_++;

  std::lock_guard<std::mutex> lock(map_.StripeFor(slot));
  SlotEntry& e = map_.at(slot);
  const SlotEntry old = e;
  uint32_t generation = old.generation + 1;
  if (generation == 0) generation = 1;

  if (same_filled_ && enc.encoding == Encoding::kSameFilled) {
    uint64_t word;
    std::memcpy(&word, enc.payload, sizeof(word));
    e.checksum = word;
    e.generation = generation;
    e.Set(SlotEntry::kFill, SlotEntry::kNone, 0);
    same_filled_count_++;
    Release(slot, old, SlotEntry::kNone, SlotEntry::kNone);
    return absl::OkStatus();
  }

  const PageKey key = Key(slot);
  absl::Status last = absl::ResourceExhaustedError("no tier to store in");
  for (size_t i = 0; i < tiers_.size() && i < SlotEntry::kMaxTiers; ++i) {
    PageMeta meta{generation, enc.checksum, 0};
    bool durable = true;
    absl::Status s = tiers_[i]->Store(key, page, enc, &meta, &durable);
    if (!s.ok()) {
      refused_by_[i]++;
      last = s;
      continue;
    }
    stored_in_[i]++;
    uint32_t backup = SlotEntry::kNone;
    if (!durable) {
      // Fewer copies than the durability policy wants: one more, below.
      for (size_t j = i + 1; j < tiers_.size() && j < SlotEntry::kMaxTiers; ++j) {
        PageMeta bmeta{generation, enc.checksum, 0};
        bool bdurable = true;
        if (tiers_[j]->Store(key, page, enc, &bmeta, &bdurable).ok()) {
          backup = static_cast<uint32_t>(j + 1);
          backups_++;
          break;
        }
      }
      if (backup == SlotEntry::kNone) not_durable_++;
    }
    e.checksum = enc.checksum;
    e.generation = generation;
    e.Set(static_cast<uint32_t>(i + 1), backup, meta.placement);
    Release(slot, old, static_cast<uint32_t>(i + 1), backup);
    return absl::OkStatus();
  }
  // Every tier refused: the slot keeps its old contents (the write failed).
  return last;
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
  if (slot >= map_.slots()) return absl::InvalidArgumentError("slot beyond the device");
  if (out.size() < kPageSize) return absl::InvalidArgumentError("buffer smaller than a page");
  loads_++;
  std::lock_guard<std::mutex> lock(map_.StripeFor(slot));
  const SlotEntry& e = map_.at(slot);
  if (e.tier() == SlotEntry::kNone) {
    std::memset(out.data(), 0, kPageSize);
    zero_loads_++;
    return absl::OkStatus();
  }
  if (e.tier() == SlotEntry::kFill) {
    for (size_t off = 0; off < kPageSize; off += 8) std::memcpy(out.data() + off, &e.checksum, 8);
    return absl::OkStatus();
  }
  const PageKey key = Key(slot);
  absl::Status s = absl::DataLossError("slot names no tier");
  if (e.tier() <= tiers_.size()) {
    s = tiers_[e.tier() - 1]->Load(key, PageMeta{e.generation, e.checksum, e.placement()}, out);
    if (s.ok()) return s;
  }
  if (e.backup() != SlotEntry::kNone && e.backup() <= tiers_.size()) {
    absl::Status b = tiers_[e.backup() - 1]->Load(key, PageMeta{e.generation, e.checksum, 0}, out);
    if (b.ok()) {
      load_fallbacks_++;
      return b;
    }
    s = b;
  }
  load_failures_++;
  fprintf(stderr, "ramster: LOAD FAILED for slot %llu (generation %u): no good copy: %s\n",
          static_cast<unsigned long long>(slot), e.generation, s.ToString().c_str());
  return absl::DataLossError(absl::StrCat("no good copy of slot ", slot, ": ", s.message()));
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
  st.slots_in.assign(tiers_.size(), 0);
  for (size_t i = 0; i < tiers_.size(); ++i) {
    st.stored_in[i] = stored_in_[i];
    st.refused_by[i] = refused_by_[i];
  }
  for (uint64_t s = 0; s < map_.slots(); ++s) {
    std::lock_guard<std::mutex> lock(map_.StripeFor(s));
    uint32_t t = map_.at(s).tier();
    if (t == SlotEntry::kFill) {
      st.slots_filled++;
    } else if (t != SlotEntry::kNone && t <= tiers_.size()) {
      st.slots_in[t - 1]++;
    }
  }
  return st;
}

}  // namespace ramster
