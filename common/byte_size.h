// Byte counts as people write them on command lines: 4096, 64K, 64M, 2G, 1T
// (powers of 1024; an optional trailing "B" or "iB" is accepted).
#ifndef RAMSTER_COMMON_BYTE_SIZE_H_
#define RAMSTER_COMMON_BYTE_SIZE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ramster {

// kInvalidArgument for anything that is not a whole number with an optional
// suffix, or that overflows 64 bits.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// "1.5 GiB", "512 KiB", "17 B": for tables meant to be read by people.
std::string FormatBytes(uint64_t bytes);

// An absl flag type that parses with ParseByteSize:
//   ABSL_FLAG(ramster::ByteSize, memory_limit, ramster::ByteSize(64 << 20), ...)
struct ByteSize {
  ByteSize() = default;
  explicit ByteSize(uint64_t v) : bytes(v) {}
  uint64_t bytes = 0;
};
bool AbslParseFlag(absl::string_view text, ByteSize* size, std::string* error);
std::string AbslUnparseFlag(ByteSize size);

}  // namespace ramster

#endif  // RAMSTER_COMMON_BYTE_SIZE_H_
