#include "common/page_codec.h"

#include <lz4.h>
#include <lz4hc.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/xxh3_avx2.h"

namespace ramster {

bool IsKnownEncoding(uint32_t wire_value) {
  return wire_value == static_cast<uint32_t>(Encoding::kSameFilled) ||
         wire_value == static_cast<uint32_t>(Encoding::kLz4) ||
         wire_value == static_cast<uint32_t>(Encoding::kRaw);
}

const char* EncodingName(Encoding encoding) {
  switch (encoding) {
    case Encoding::kSameFilled:
      return "same-filled";
    case Encoding::kLz4:
      return "lz4";
    case Encoding::kRaw:
      return "raw";
  }
  return "unknown";
}

uint64_t PageChecksum(absl::Span<const uint8_t> page) {
  // XXH3-64 either way: AVX2 where the CPU has it (common/xxh3_avx2.h says
  // why not libxxhash's own dispatch), libxxhash's SSE2 build elsewhere.
#if defined(__x86_64__)
  static const bool avx2 = Xxh3Avx2Supported();
  if (avx2) return Xxh3Avx2(page.data(), page.size());
#endif
  return XXH3_64bits(page.data(), page.size());
}

bool IsSameFilled(absl::Span<const uint8_t> page, uint64_t* word) {
  if (page.size() < sizeof(uint64_t) || page.size() % sizeof(uint64_t) != 0) {
    return false;
  }
  // The page repeats its first word exactly when it equals itself shifted by
  // one word. memcmp stops at the first difference, which for most pages is
  // within the first few bytes, and runs at vector speed over a filled page.
  if (std::memcmp(page.data(), page.data() + sizeof(uint64_t),
                  page.size() - sizeof(uint64_t)) != 0) {
    return false;
  }
  std::memcpy(word, page.data(), sizeof(*word));
  return true;
}

absl::Status EncodePage(absl::Span<const uint8_t> page, EncodedPage* out) {
  if (page.size() != kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page must be ", kPageSize, " bytes, got ", page.size()));
  }
  uint64_t word;
  if (IsSameFilled(page, &word)) {
    out->encoding = Encoding::kSameFilled;
    out->length = kSameFilledPayloadSize;
    std::memcpy(out->payload, &word, sizeof(word));
  } else {
    // LZ4 gets a full-bound destination: with less it runs its bounds-checked
    // loop, measurably slower on the pages that do compress, and it would not
    // give up much earlier on the ones that do not. The copy out of scratch
    // is cheap next to compression.
    char scratch[LZ4_COMPRESSBOUND(kPageSize)];
    int n = LZ4_compress_default(reinterpret_cast<const char*>(page.data()),
                                 scratch, static_cast<int>(kPageSize),
                                 static_cast<int>(sizeof(scratch)));
    if (n > 0 && n < static_cast<int>(kPageSize)) {
      out->encoding = Encoding::kLz4;
      out->length = static_cast<uint32_t>(n);
      std::memcpy(out->payload, scratch, static_cast<size_t>(n));
    } else {
      out->encoding = Encoding::kRaw;
      out->length = kPageSize;
      std::memcpy(out->payload, page.data(), kPageSize);
    }
  }
  // Last, when the page is in cache after the passes above.
  out->checksum = PageChecksum(page);
  return absl::OkStatus();
}

absl::Status ValidateEncodedShape(uint32_t encoding, size_t payload_size,
                                  uint32_t uncompressed_length) {
  if (uncompressed_length != kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("uncompressed length must be ", kPageSize, ", got ",
                     uncompressed_length));
  }
  switch (encoding) {
    case static_cast<uint32_t>(Encoding::kSameFilled):
      if (payload_size != kSameFilledPayloadSize) {
        return absl::InvalidArgumentError(absl::StrCat(
            "same-filled payload must be 8 bytes, got ", payload_size));
      }
      return absl::OkStatus();
    case static_cast<uint32_t>(Encoding::kLz4):
      if (payload_size == 0 || payload_size >= kPageSize) {
        return absl::InvalidArgumentError(absl::StrCat(
            "lz4 payload must be 1..", kPageSize - 1, " bytes, got ",
            payload_size));
      }
      return absl::OkStatus();
    case static_cast<uint32_t>(Encoding::kRaw):
      if (payload_size != kPageSize) {
        return absl::InvalidArgumentError(absl::StrCat(
            "raw payload must be ", kPageSize, " bytes, got ", payload_size));
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown page encoding ", encoding));
  }
}

absl::Status DecodePage(uint32_t encoding, absl::Span<const uint8_t> payload,
                        uint32_t uncompressed_length, uint64_t checksum,
                        absl::Span<uint8_t> out) {
  if (absl::Status s =
          ValidateEncodedShape(encoding, payload.size(), uncompressed_length);
      !s.ok()) {
    return s;
  }
  if (out.size() < kPageSize) {
    return absl::InvalidArgumentError("decode buffer smaller than a page");
  }
  switch (static_cast<Encoding>(encoding)) {
    case Encoding::kSameFilled: {
      uint64_t word;
      std::memcpy(&word, payload.data(), sizeof(word));
      for (size_t off = 0; off < kPageSize; off += sizeof(word)) {
        std::memcpy(out.data() + off, &word, sizeof(word));
      }
      break;
    }
    case Encoding::kLz4: {
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(payload.data()),
                                  reinterpret_cast<char*>(out.data()),
                                  static_cast<int>(payload.size()),
                                  static_cast<int>(kPageSize));
      if (n != static_cast<int>(kPageSize)) {
        return absl::DataLossError(
            n < 0 ? "corrupt lz4 payload"
                  : absl::StrCat("lz4 payload decodes to ", n,
                                 " bytes, not a page"));
      }
      break;
    }
    case Encoding::kRaw:
      // Checked below on the payload itself, then copied: hashing first
      // brings the payload into cache for the copy, twice as fast as the
      // other order.
      break;
  }
  const bool raw = static_cast<Encoding>(encoding) == Encoding::kRaw;
  uint64_t actual = PageChecksum(raw ? payload : out.first(kPageSize));
  if (actual != checksum) {
    return absl::DataLossError(absl::StrCat(
        "page checksum mismatch: expected ", absl::Hex(checksum, absl::kZeroPad16),
        ", got ", absl::Hex(actual, absl::kZeroPad16)));
  }
  if (raw) std::memcpy(out.data(), payload.data(), kPageSize);
  return absl::OkStatus();
}

Lz4HcEncoder::Lz4HcEncoder(int level)
    : level_(std::clamp(level, kMinLevel, kMaxLevel)), state_(LZ4_createStreamHC()) {
  if (state_ == nullptr) throw std::bad_alloc();
}

Lz4HcEncoder::~Lz4HcEncoder() { LZ4_freeStreamHC(static_cast<LZ4_streamHC_t*>(state_)); }

size_t Lz4HcEncoder::Encode(absl::Span<const uint8_t> page, absl::Span<uint8_t> out) {
  if (page.size() != kPageSize || out.empty()) return 0;
  // Each page its own stream. The fast reset leaves the state's tables as
  // they are (LZ4HC tells their stale entries by position) instead of
  // clearing them, as LZ4_compress_HC_extStateHC does for every page: 5-8%
  // less time a page at level 2 here. With a destination smaller than
  // LZ4_compressBound, LZ4HC stops (0) once the block cannot fit.
  auto* stream = static_cast<LZ4_streamHC_t*>(state_);
  LZ4_resetStreamHC_fast(stream, level_);
  int n = LZ4_compress_HC_continue(stream, reinterpret_cast<const char*>(page.data()),
                                   reinterpret_cast<char*>(out.data()),
                                   static_cast<int>(kPageSize),
                                   static_cast<int>(std::min<size_t>(out.size(), INT32_MAX)));
  return n > 0 ? static_cast<size_t>(n) : 0;
}

}  // namespace ramster
