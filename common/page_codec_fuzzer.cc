// Fuzz target for the page decoder: whatever bytes arrive, DecodePage either
// returns a page whose checksum matches or an error; it never reads or writes
// out of bounds (checked by the sanitizers the fuzzer is built with).
//
// Input layout: [encoding:1][checksum:8][payload...]
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/page_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  uint32_t encoding = data[0] % 5;  // includes unknown values 0 and 4
  uint64_t checksum;
  std::memcpy(&checksum, data + 1, sizeof(checksum));
  // The payload in a buffer of its own size, so that any over-read is caught.
  std::vector<uint8_t> payload(data + 9, data + size);
  std::vector<uint8_t> out(ramster::kPageSize);
  absl::Status s = ramster::DecodePage(encoding, payload, ramster::kPageSize,
                                       checksum, absl::MakeSpan(out));
  if (s.ok() && ramster::PageChecksum(out) != checksum) __builtin_trap();
  if (!s.ok() && s.code() != absl::StatusCode::kInvalidArgument &&
      s.code() != absl::StatusCode::kDataLoss) {
    __builtin_trap();
  }
  // Whatever decoded must re-encode and decode to the same bytes.
  if (s.ok()) {
    ramster::EncodedPage enc;
    if (!ramster::EncodePage(out, &enc).ok()) __builtin_trap();
    std::vector<uint8_t> again(ramster::kPageSize);
    if (!ramster::DecodePage(static_cast<uint32_t>(enc.encoding), enc.bytes(),
                             ramster::kPageSize, enc.checksum,
                             absl::MakeSpan(again))
             .ok() ||
        again != out) {
      __builtin_trap();
    }
  }
  return 0;
}
