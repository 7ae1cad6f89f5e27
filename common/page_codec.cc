#include "common/page_codec.h"

#include <lz4.h>
#include <xxhash.h>

#include <cstring>

#include "absl/strings/str_cat.h"

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
  return XXH3_64bits(page.data(), page.size());
}

bool IsSameFilled(absl::Span<const uint8_t> page, uint64_t* word) {
  if (page.size() < sizeof(uint64_t) || page.size() % sizeof(uint64_t) != 0) {
    return false;
  }
  uint64_t first;
  std::memcpy(&first, page.data(), sizeof(first));
  // Most pages differ within the first few words; check those before the
  // whole page so that the common case costs almost nothing.
  for (size_t off = sizeof(uint64_t); off < page.size();
       off += sizeof(uint64_t)) {
    uint64_t w;
    std::memcpy(&w, page.data() + off, sizeof(w));
    if (w != first) return false;
  }
  *word = first;
  return true;
}

absl::Status EncodePage(absl::Span<const uint8_t> page, EncodedPage* out) {
  if (page.size() != kPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page must be ", kPageSize, " bytes, got ", page.size()));
  }
  out->checksum = PageChecksum(page);
  uint64_t word;
  if (IsSameFilled(page, &word)) {
    out->encoding = Encoding::kSameFilled;
    out->length = kSameFilledPayloadSize;
    std::memcpy(out->payload, &word, sizeof(word));
    return absl::OkStatus();
  }
  // A destination one byte short of the page makes LZ4 give up as soon as
  // compression cannot pay, instead of finishing a useless stream.
  int n = LZ4_compress_default(reinterpret_cast<const char*>(page.data()),
                               reinterpret_cast<char*>(out->payload),
                               static_cast<int>(kPageSize),
                               static_cast<int>(kPageSize - 1));
  if (n > 0) {
    out->encoding = Encoding::kLz4;
    out->length = static_cast<uint32_t>(n);
    return absl::OkStatus();
  }
  out->encoding = Encoding::kRaw;
  out->length = kPageSize;
  std::memcpy(out->payload, page.data(), kPageSize);
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
      std::memcpy(out.data(), payload.data(), kPageSize);
      break;
  }
  uint64_t actual = PageChecksum(out.first(kPageSize));
  if (actual != checksum) {
    return absl::DataLossError(absl::StrCat(
        "page checksum mismatch: expected ", absl::Hex(checksum, absl::kZeroPad16),
        ", got ", absl::Hex(actual, absl::kZeroPad16)));
  }
  return absl::OkStatus();
}

}  // namespace ramster
