#include "client/local_cache_tier.h"

namespace ramster {

absl::Status LocalCacheTier::Store(const PageKey& k, absl::Span<const uint8_t>,
                                   const EncodedPage& encoded, PageMeta* meta, bool* durable) {
  const Key key{k.pool, k.object, k.index};
  MutexLock lock(&mu_);
  auto it = pages_.find(key);
  uint64_t freed = it == pages_.end() ? 0 : it->second.payload.size() + kEntryOverhead;
  uint64_t need = encoded.length + kEntryOverhead;
  if (used_ - freed + need > limit_) {
    return absl::ResourceExhaustedError("local cache full");
  }
  Entry e{encoded.encoding, meta->generation,
          std::string(reinterpret_cast<const char*>(encoded.payload), encoded.length)};
  if (it == pages_.end()) {
    pages_.emplace(key, std::move(e));
  } else {
    it->second = std::move(e);
  }
  used_ = used_ - freed + need;
  meta->placement = 0;
  *durable = true;
  return absl::OkStatus();
}

absl::Status LocalCacheTier::Load(const PageKey& k, const PageMeta& meta,
                                  absl::Span<uint8_t> out) {
  const Key key{k.pool, k.object, k.index};
  MutexLock lock(&mu_);
  auto it = pages_.find(key);
  if (it == pages_.end()) return absl::NotFoundError("not in the local cache");
  if (it->second.generation != meta.generation) {
    return absl::DataLossError("local cache holds another generation");
  }
  const std::string& p = it->second.payload;
  return DecodePage(static_cast<uint32_t>(it->second.encoding),
                    absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.data()), p.size()),
                    kPageSize, meta.checksum, out);
}

void LocalCacheTier::Invalidate(const PageKey& k, const PageMeta& meta) {
  const Key key{k.pool, k.object, k.index};
  MutexLock lock(&mu_);
  auto it = pages_.find(key);
  if (it == pages_.end() || it->second.generation > meta.generation) return;
  used_ -= it->second.payload.size() + kEntryOverhead;
  pages_.erase(it);
}

uint64_t LocalCacheTier::used_bytes() const {
  MutexLock lock(&mu_);
  return used_;
}

}  // namespace ramster
