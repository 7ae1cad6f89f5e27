#include "kernel-shim/nbd_test_device.h"

#include <utility>
#include <vector>

#include "client/local_cache_tier.h"
#include "client/local_file_tier.h"

namespace ramster {

absl::StatusOr<NbdTestDevice> MakeNbdTestDevice(uint64_t bytes, uint64_t cache_bytes,
                                                const std::string& file_path) {
  const uint64_t slots = bytes / kPageSize;
  if (slots == 0) return absl::InvalidArgumentError("device smaller than a page");
  std::vector<std::unique_ptr<Tier>> tiers;
  tiers.push_back(std::make_unique<LocalCacheTier>(cache_bytes));
  if (!file_path.empty()) {
    absl::StatusOr<std::unique_ptr<LocalFileTier>> file = LocalFileTier::Open(file_path, slots);
    if (!file.ok()) return file.status();
    tiers.push_back(std::move(*file));
  }
  NbdTestDevice d;
  d.stack = std::make_unique<TierStack>(slots, /*pool=*/1, std::move(tiers));
  d.device = std::make_unique<TierStackDevice>(d.stack.get());
  return d;
}

}  // namespace ramster
