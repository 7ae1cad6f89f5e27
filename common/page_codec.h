// The page codec: how a 4096-byte page is encoded for the wire and for a
// node's memory, shared by client and server.
//
//   same-filled  the page repeats one 8-byte word (zram's trick): 8 bytes
//   LZ4          LZ4 block format, only when it is shorter than the page
//   raw          the page itself
//
// Every encoded page carries the xxHash3-64 checksum of its uncompressed
// bytes; decoding verifies it.
//
// Thread safety: the functions are pure; call them from any thread.
#ifndef RAMSTER_COMMON_PAGE_CODEC_H_
#define RAMSTER_COMMON_PAGE_CODEC_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace ramster {

inline constexpr size_t kPageSize = 4096;
// The largest payload any encoding produces (raw).
inline constexpr size_t kMaxPayloadSize = kPageSize;
inline constexpr size_t kSameFilledPayloadSize = 8;

// Values match ramster.v1.Encoding on the wire.
enum class Encoding : uint8_t {
  kSameFilled = 1,
  kLz4 = 2,
  kRaw = 3,
};

// True for the values above; anything else from the wire is rejected.
bool IsKnownEncoding(uint32_t wire_value);
const char* EncodingName(Encoding encoding);

// An encoded page in a fixed buffer: encoding never allocates.
struct EncodedPage {
  Encoding encoding = Encoding::kRaw;
  uint32_t length = 0;    // payload bytes in use
  uint64_t checksum = 0;  // xxHash3-64 of the uncompressed page
  uint8_t payload[kMaxPayloadSize];

  absl::Span<const uint8_t> bytes() const { return {payload, length}; }
};

// The checksum every copy carries.
uint64_t PageChecksum(absl::Span<const uint8_t> page);

// If the page repeats one 8-byte word, stores it in *word and returns true.
bool IsSameFilled(absl::Span<const uint8_t> page, uint64_t* word);

// Encodes `page`, which must be kPageSize bytes (kInvalidArgument otherwise).
absl::Status EncodePage(absl::Span<const uint8_t> page, EncodedPage* out);

// Decodes `payload` into `out` (kPageSize bytes) and verifies `checksum`.
//   kInvalidArgument: unknown encoding, wrong uncompressed length, a payload
//                     whose size does not fit its encoding, `out` too small.
//   kDataLoss:        the LZ4 stream is corrupt or does not produce exactly
//                     one page, or the checksum does not match.
// On error `out` may hold garbage; the caller must not use it.
absl::Status DecodePage(uint32_t encoding, absl::Span<const uint8_t> payload,
                        uint32_t uncompressed_length, uint64_t checksum,
                        absl::Span<uint8_t> out);

// Checks everything DecodePage checks except the bytes themselves
// (encoding, lengths); cheap enough to run on every request.
absl::Status ValidateEncodedShape(uint32_t encoding, size_t payload_size,
                                  uint32_t uncompressed_length);

}  // namespace ramster

#endif  // RAMSTER_COMMON_PAGE_CODEC_H_
