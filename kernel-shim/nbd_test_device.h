// A real block device for the NBD server's tests, fuzzer and test binary:
// a TierStack with a LocalCacheTier (compressed pages in RAM) in front of a
// LocalFileTier (a preallocated file), behind a TierStackDevice. No mocks:
// these are the components ramster-shim serves in production, minus the
// cluster tier.
#ifndef RAMSTER_KERNEL_SHIM_NBD_TEST_DEVICE_H_
#define RAMSTER_KERNEL_SHIM_NBD_TEST_DEVICE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/tier_stack.h"
#include "kernel-shim/tier_stack_device.h"

namespace ramster {

struct NbdTestDevice {
  std::unique_ptr<TierStack> stack;  // the device borrows it: keep together
  std::unique_ptr<TierStackDevice> device;
};

// A device of `bytes` (rounded down to whole pages) whose pages go to a
// cache of `cache_bytes`, then to the file at `file_path` (created or
// truncated; empty: no file tier, so a full cache refuses writes with
// kResourceExhausted).
absl::StatusOr<NbdTestDevice> MakeNbdTestDevice(uint64_t bytes, uint64_t cache_bytes,
                                                const std::string& file_path);

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_NBD_TEST_DEVICE_H_
