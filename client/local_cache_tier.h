// LocalCacheTier: a bounded cache of compressed pages in this host's own RAM
// (zcache's role). It keeps pages while it has room and refuses beyond its
// byte limit, so the next tier takes them; what it charges is the payload
// plus a fixed per-entry overhead.
//
// Left for later: demoting its coldest pages to the tiers below when new
// ones arrive (today the oldest stay and new pages go down).
//
// Thread safety: all methods may be called concurrently.
#ifndef RAMSTER_CLIENT_LOCAL_CACHE_TIER_H_
#define RAMSTER_CLIENT_LOCAL_CACHE_TIER_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "client/tier.h"
#include "common/mutex.h"

namespace ramster {

class LocalCacheTier final : public Tier {
 public:
  static constexpr uint64_t kEntryOverhead = 64;
  explicit LocalCacheTier(uint64_t limit_bytes) : limit_(limit_bytes) {}

  std::string_view name() const override { return "local-cache"; }
  absl::Status Store(const PageKey& key, absl::Span<const uint8_t> raw,
                     const EncodedPage& encoded, PageMeta* meta, bool* durable) override;
  absl::Status Load(const PageKey& key, const PageMeta& meta,
                    absl::Span<uint8_t> out) override;
  void Invalidate(const PageKey& key, const PageMeta& meta) override;

  uint64_t used_bytes() const;

 private:
  struct Key {
    uint32_t pool;
    uint64_t object, index;
    bool operator==(const Key& o) const {
      return pool == o.pool && object == o.object && index == o.index;
    }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.pool, k.object, k.index);
    }
  };
  struct Entry {
    Encoding encoding;
    uint32_t generation;
    std::string payload;
  };
  const uint64_t limit_;
  mutable Mutex mu_;
  absl::flat_hash_map<Key, Entry> pages_ ABSL_GUARDED_BY(mu_);
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_LOCAL_CACHE_TIER_H_
