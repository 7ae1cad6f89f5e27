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

// LZ4HC: the same LZ4 block format (DecodePage reads it as kLz4, at the
// same speed), 7-25% smaller on the pages measured below and 3-4x slower to
// make. For a node's spare CPU (server/node.h: recompression), not for the
// store path. Measured on this machine, level 2 against LZ4_compress_default:
// the swap workload's text pages 1.87 -> 2.48 (~22 us a page), files from
// /usr 2.03 -> 2.17 (~19 us).
//
// Thread safety: one encoder per thread (it owns LZ4HC's ~256 KiB state).
class Lz4HcEncoder {
 public:
  static constexpr int kMinLevel = 1;
  static constexpr int kMaxLevel = 12;

  // `level` is clamped to kMinLevel..kMaxLevel.
  explicit Lz4HcEncoder(int level);
  ~Lz4HcEncoder();
  Lz4HcEncoder(const Lz4HcEncoder&) = delete;
  Lz4HcEncoder& operator=(const Lz4HcEncoder&) = delete;

  // Compresses `page` (kPageSize bytes) into `out`; returns the length of
  // the LZ4 block, or 0 when it does not fit in out.size() bytes (or `page`
  // is not a page).
  size_t Encode(absl::Span<const uint8_t> page, absl::Span<uint8_t> out);

 private:
  const int level_;
  void* state_;  // LZ4_streamHC_t, from LZ4_createStreamHC
};

}  // namespace ramster

#endif  // RAMSTER_COMMON_PAGE_CODEC_H_
