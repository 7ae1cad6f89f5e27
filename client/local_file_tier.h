// LocalFileTier: the last resort. A preallocated file on local disk with one
// 4096-byte place per slot (slot s at offset s * 4096), holding the page
// itself. It refuses only keys outside the device or a failing disk; reads
// are verified against the slot map's checksum.
//
// Thread safety: all methods may be called concurrently (pread/pwrite).
#ifndef RAMSTER_CLIENT_LOCAL_FILE_TIER_H_
#define RAMSTER_CLIENT_LOCAL_FILE_TIER_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/tier.h"

namespace ramster {

class LocalFileTier final : public Tier {
 public:
  // Creates (or reuses) `path` and reserves slots * 4096 bytes for it, so
  // that a later write cannot fail for lack of space.
  static absl::StatusOr<std::unique_ptr<LocalFileTier>> Open(const std::string& path,
                                                             uint64_t slots);
  ~LocalFileTier() override;

  std::string_view name() const override { return "local-file"; }
  absl::Status Store(const PageKey& key, absl::Span<const uint8_t> raw,
                     const EncodedPage& encoded, PageMeta* meta, bool* durable) override;
  absl::Status Load(const PageKey& key, const PageMeta& meta,
                    absl::Span<uint8_t> out) override;
  // Nothing to do: the slot's place stays reserved (punching a hole would
  // free disk space that a later write might then not find), and the slot
  // map no longer points at it.
  void Invalidate(const PageKey&, const PageMeta&) override {}

  uint64_t pages_stored() const { return stored_.load(); }

 private:
  LocalFileTier(int fd, uint64_t slots) : fd_(fd), slots_(slots) {}
  const int fd_;
  const uint64_t slots_;
  std::atomic<uint64_t> stored_{0};
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_LOCAL_FILE_TIER_H_
