// FaultTier: wraps a tier and injects failures, for tests (LevelDB's
// ErrorEnv, nbdkit's error and delay filters). Every Nth call of a kind
// fails or is delayed; a "corrupt" load flips a byte of the result, which
// must be caught. Wrapped around the cluster tier it acts on the peers'
// answers; hangs are tested with real stopped servers (tests/cluster_test).
#ifndef RAMSTER_CLIENT_FAULT_TIER_H_
#define RAMSTER_CLIENT_FAULT_TIER_H_

#include <atomic>
#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/tier.h"

namespace ramster {

class FaultTier final : public Tier {
 public:
  struct Faults {
    int refuse_store_every = 0;  // kResourceExhausted
    int fail_store_every = 0;    // kUnavailable
    int fail_load_every = 0;     // kUnavailable
    int corrupt_load_every = 0;  // wrong bytes, reported OK by the inner tier
    int delay_every = 0;         // sleep `delay` before the call (store or load)
    absl::Duration delay = absl::Milliseconds(20);
    bool refuse_all_stores = false;
  };
  FaultTier(std::unique_ptr<Tier> inner, Faults faults)
      : inner_(std::move(inner)), faults_(faults), refuse_all_(faults.refuse_all_stores) {}

  std::string_view name() const override { return inner_->name(); }
  absl::Status Store(const PageKey& key, absl::Span<const uint8_t> raw, const EncodedPage& enc,
                     PageMeta* meta, bool* durable) override {
    int n = ++stores_;
    if (refuse_all_ || Every(n, faults_.refuse_store_every)) {
      return absl::ResourceExhaustedError("injected: full");
    }
    if (Every(n, faults_.fail_store_every)) return absl::UnavailableError("injected: down");
    if (Every(n, faults_.delay_every)) absl::SleepFor(faults_.delay);
    return inner_->Store(key, raw, enc, meta, durable);
  }
  absl::Status Load(const PageKey& key, const PageMeta& meta, absl::Span<uint8_t> out) override {
    int n = ++loads_;
    if (Every(n, faults_.fail_load_every)) return absl::UnavailableError("injected: down");
    if (Every(n, faults_.delay_every)) absl::SleepFor(faults_.delay);
    absl::Status s = inner_->Load(key, meta, out);
    // A corrupted copy is only harmful if nobody checks: re-verify as a
    // real tier must, so that the corruption shows as kDataLoss.
    if (s.ok() && Every(n, faults_.corrupt_load_every)) {
      out[n % kPageSize] ^= 0x5A;
      if (PageChecksum(out.first(kPageSize)) != meta.checksum) {
        return absl::DataLossError("injected: corrupt copy detected");
      }
    }
    return s;
  }
  void Invalidate(const PageKey& key, const PageMeta& meta) override {
    inner_->Invalidate(key, meta);
  }
  bool overwrites_in_place() const override { return inner_->overwrites_in_place(); }
  void AttachSlotMap(SlotMap* slots, uint32_t tier_number, uint32_t pool) override {
    inner_->AttachSlotMap(slots, tier_number, pool);
  }
  void set_refuse_all_stores(bool v) { refuse_all_ = v; }

 private:
  static bool Every(int n, int every) { return every > 0 && n % every == 0; }
  std::unique_ptr<Tier> inner_;
  Faults faults_;
  std::atomic<bool> refuse_all_;
  std::atomic<int> stores_{0}, loads_{0};
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_FAULT_TIER_H_
