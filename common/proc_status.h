// What /proc says of a process's memory, for stats and benchmarks.
#ifndef RAMSTER_COMMON_PROC_STATUS_H_
#define RAMSTER_COMMON_PROC_STATUS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ramster {

// The value of a "Field:   N kB" line of a /proc file (status, smaps_rollup),
// in bytes; nullopt when the file cannot be read or has no such field.
std::optional<uint64_t> ProcKbField(const std::string& path, std::string_view field);

// The process's VmRSS (`pid` 0: this process), in bytes; 0 when unknown.
uint64_t RssBytes(int pid = 0);
// Of that, what it gave back lazily (MADV_FREE) and the kernel has not
// taken yet: smaps_rollup's LazyFree, in bytes; 0 when unknown.
uint64_t LazyFreeBytes(int pid = 0);

}  // namespace ramster

#endif  // RAMSTER_COMMON_PROC_STATUS_H_
