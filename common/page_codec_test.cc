#include "common/page_codec.h"

#include <cstring>
#include <random>
#include <vector>

#include <lz4.h>
#include <xxhash.h>

#include "common/xxh3_avx2.h"
#include "gtest/gtest.h"

namespace ramster {
namespace {

std::vector<uint8_t> TextPage() {
  std::vector<uint8_t> page(kPageSize);
  const char* words[] = {"swap ", "page ", "tier ", "peer ", "cold ", "ram "};
  std::mt19937 rng(7);
  size_t off = 0;
  while (off < kPageSize) {
    const char* w = words[rng() % 6];
    for (size_t i = 0; w[i] && off < kPageSize; ++i) page[off++] = w[i];
  }
  return page;
}

std::vector<uint8_t> RandomPage(uint64_t seed) {
  std::vector<uint8_t> page(kPageSize);
  std::mt19937_64 rng(seed);
  for (auto& b : page) b = static_cast<uint8_t>(rng());
  return page;
}

std::vector<uint8_t> FilledPage(uint64_t word) {
  std::vector<uint8_t> page(kPageSize);
  for (size_t off = 0; off < kPageSize; off += 8) std::memcpy(&page[off], &word, 8);
  return page;
}

absl::Status Decode(const EncodedPage& enc, std::vector<uint8_t>* out) {
  out->assign(kPageSize, 0xAA);
  return DecodePage(static_cast<uint32_t>(enc.encoding), enc.bytes(), kPageSize,
                    enc.checksum, absl::MakeSpan(*out));
}

TEST(PageCodec, ZeroPageIsSameFilled) {
  auto page = FilledPage(0);
  EncodedPage enc;
  ASSERT_TRUE(EncodePage(page, &enc).ok());
  EXPECT_EQ(enc.encoding, Encoding::kSameFilled);
  EXPECT_EQ(enc.length, 8u);
  std::vector<uint8_t> out;
  ASSERT_TRUE(Decode(enc, &out).ok());
  EXPECT_EQ(out, page);
}

TEST(PageCodec, RepeatedWordIsSameFilled) {
  auto page = FilledPage(0x0123456789abcdefULL);
  uint64_t word = 0;
  EXPECT_TRUE(IsSameFilled(page, &word));
  EXPECT_EQ(word, 0x0123456789abcdefULL);
  EncodedPage enc;
  ASSERT_TRUE(EncodePage(page, &enc).ok());
  EXPECT_EQ(enc.encoding, Encoding::kSameFilled);
  std::vector<uint8_t> out;
  ASSERT_TRUE(Decode(enc, &out).ok());
  EXPECT_EQ(out, page);
}

TEST(PageCodec, OneDifferentByteIsNotSameFilled) {
  auto page = FilledPage(0);
  page[kPageSize - 1] = 1;
  uint64_t word;
  EXPECT_FALSE(IsSameFilled(page, &word));
  EncodedPage enc;
  ASSERT_TRUE(EncodePage(page, &enc).ok());
  EXPECT_EQ(enc.encoding, Encoding::kLz4);
  std::vector<uint8_t> out;
  ASSERT_TRUE(Decode(enc, &out).ok());
  EXPECT_EQ(out, page);
}

TEST(PageCodec, TextCompressesWithLz4) {
  auto page = TextPage();
  EncodedPage enc;
  ASSERT_TRUE(EncodePage(page, &enc).ok());
  EXPECT_EQ(enc.encoding, Encoding::kLz4);
  EXPECT_LT(enc.length, kPageSize * 3 / 4);
  EXPECT_EQ(enc.checksum, PageChecksum(page));
  std::vector<uint8_t> out;
  ASSERT_TRUE(Decode(enc, &out).ok());
  EXPECT_EQ(out, page);
}

TEST(PageCodec, Lz4HcMakesSmallerBlocksThatDecodeAsLz4) {
  auto page = TextPage();
  EncodedPage fast;
  ASSERT_TRUE(EncodePage(page, &fast).ok());
  ASSERT_EQ(fast.encoding, Encoding::kLz4);
  for (int level : {0, 1, 2, 9, 12, 99}) {  // out-of-range levels are clamped
    Lz4HcEncoder hc(level);
    EncodedPage dense;
    dense.encoding = Encoding::kLz4;
    dense.checksum = fast.checksum;
    dense.length = static_cast<uint32_t>(hc.Encode(page, absl::MakeSpan(dense.payload)));
    ASSERT_GT(dense.length, 0u) << level;
    EXPECT_LT(dense.length, fast.length) << level;
    std::vector<uint8_t> out;
    ASSERT_TRUE(Decode(dense, &out).ok()) << level;
    EXPECT_EQ(out, page) << level;
    // A destination one byte too small: no block at all.
    EXPECT_EQ(hc.Encode(page, absl::MakeSpan(dense.payload, dense.length - 1)), 0u) << level;
    EXPECT_EQ(hc.Encode(page, absl::MakeSpan(dense.payload, dense.length)), dense.length);
  }
  Lz4HcEncoder hc(2);
  uint8_t out[kPageSize];
  EXPECT_EQ(hc.Encode(absl::MakeConstSpan(page).first(100), absl::MakeSpan(out)), 0u);
  EXPECT_EQ(hc.Encode(page, absl::Span<uint8_t>()), 0u);
  // A random page does not fit in less than itself.
  EXPECT_EQ(hc.Encode(RandomPage(3), absl::MakeSpan(out, kPageSize - 1)), 0u);
}

TEST(PageCodec, RandomPageStaysRaw) {
  auto page = RandomPage(1);
  EncodedPage enc;
  ASSERT_TRUE(EncodePage(page, &enc).ok());
  EXPECT_EQ(enc.encoding, Encoding::kRaw);
  EXPECT_EQ(enc.length, kPageSize);
  std::vector<uint8_t> out;
  ASSERT_TRUE(Decode(enc, &out).ok());
  EXPECT_EQ(out, page);
}

// The checksum is XXH3-64 whichever implementation computes it: a page
// checksummed on one host verifies on any other.
TEST(PageCodec, ChecksumIsXxh3) {
  for (uint64_t seed : {1, 2, 3}) {
    std::vector<uint8_t> page = RandomPage(seed);
    EXPECT_EQ(PageChecksum(page), XXH3_64bits(page.data(), page.size()));
  }
  std::vector<uint8_t> text = TextPage();
  EXPECT_EQ(PageChecksum(text), XXH3_64bits(text.data(), text.size()));
}

#if defined(__x86_64__)
// Every length class of XXH3 (short inputs, the mid sizes, the long loop
// with and without a partial stripe and block), at unaligned addresses.
TEST(Xxh3Avx2, SameHashAsLibxxhash) {
  if (!Xxh3Avx2Supported()) GTEST_SKIP() << "this CPU has no AVX2";
  std::vector<uint8_t> buf(3 * kPageSize);
  std::mt19937_64 rng(11);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (size_t size = 0; size <= 2 * kPageSize + 70; size += size < 300 ? 1 : 61) {
    for (size_t offset : {size_t{0}, size_t{1}, size_t{13}, size_t{64}}) {
      const uint8_t* p = buf.data() + offset;
      ASSERT_EQ(Xxh3Avx2(p, size), XXH3_64bits(p, size)) << size << " bytes at +" << offset;
    }
  }
}
#endif

TEST(PageCodec, EncodeRejectsWrongSize) {
  std::vector<uint8_t> small(100);
  EncodedPage enc;
  EXPECT_EQ(EncodePage(small, &enc).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageCodec, ChecksumMismatchIsDataLoss) {
  for (auto page : {FilledPage(3), TextPage(), RandomPage(2)}) {
    EncodedPage enc;
    ASSERT_TRUE(EncodePage(page, &enc).ok());
    enc.checksum ^= 1;
    std::vector<uint8_t> out;
    EXPECT_EQ(Decode(enc, &out).code(), absl::StatusCode::kDataLoss)
        << EncodingName(enc.encoding);
  }
}

TEST(PageCodec, FlippedPayloadByteIsDataLoss) {
  for (auto page : {TextPage(), RandomPage(3)}) {
    EncodedPage enc;
    ASSERT_TRUE(EncodePage(page, &enc).ok());
    for (uint32_t pos : {0u, enc.length / 2, enc.length - 1}) {
      EncodedPage bad = enc;
      bad.payload[pos] ^= 0x40;
      std::vector<uint8_t> out;
      EXPECT_EQ(Decode(bad, &out).code(), absl::StatusCode::kDataLoss)
          << EncodingName(enc.encoding) << " byte " << pos;
    }
  }
}

TEST(PageCodec, TruncatedLz4IsRejected) {
  auto page = TextPage();
  EncodedPage enc;
  ASSERT_TRUE(EncodePage(page, &enc).ok());
  ASSERT_EQ(enc.encoding, Encoding::kLz4);
  std::vector<uint8_t> out(kPageSize);
  for (uint32_t len = 1; len < enc.length; len += 7) {
    absl::Status s = DecodePage(static_cast<uint32_t>(Encoding::kLz4),
                                absl::MakeConstSpan(enc.payload, len), kPageSize,
                                enc.checksum, absl::MakeSpan(out));
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << "length " << len;
  }
}

TEST(PageCodec, Lz4StreamOfWrongDecodedLengthIsDataLoss) {
  // A valid LZ4 stream of half a page: decodes fine, but is not a page.
  std::vector<uint8_t> half(kPageSize / 2, 'x');
  std::vector<uint8_t> stream(LZ4_COMPRESSBOUND(kPageSize));
  int n = LZ4_compress_default(reinterpret_cast<const char*>(half.data()),
                               reinterpret_cast<char*>(stream.data()),
                               static_cast<int>(half.size()),
                               static_cast<int>(stream.size()));
  ASSERT_GT(n, 0);
  std::vector<uint8_t> out(kPageSize);
  absl::Status s = DecodePage(static_cast<uint32_t>(Encoding::kLz4),
                              absl::MakeConstSpan(stream.data(), n), kPageSize,
                              0, absl::MakeSpan(out));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
}

TEST(PageCodec, WrongShapesAreInvalidArgument) {
  std::vector<uint8_t> payload(kPageSize + 1, 0);
  std::vector<uint8_t> out(kPageSize);
  auto decode = [&](uint32_t encoding, size_t len, uint32_t ulen) {
    return DecodePage(encoding, absl::MakeConstSpan(payload.data(), len), ulen,
                      0, absl::MakeSpan(out))
        .code();
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(decode(0, 8, kPageSize), kInvalid);           // unspecified
  EXPECT_EQ(decode(4, 8, kPageSize), kInvalid);           // unknown
  EXPECT_EQ(decode(99, 8, kPageSize), kInvalid);          // unknown
  EXPECT_EQ(decode(1, 7, kPageSize), kInvalid);           // same-filled short
  EXPECT_EQ(decode(1, 9, kPageSize), kInvalid);           // same-filled long
  EXPECT_EQ(decode(2, 0, kPageSize), kInvalid);           // lz4 empty
  EXPECT_EQ(decode(2, kPageSize, kPageSize), kInvalid);   // lz4 not smaller
  EXPECT_EQ(decode(3, kPageSize - 1, kPageSize), kInvalid);  // raw short
  EXPECT_EQ(decode(3, kPageSize + 1, kPageSize), kInvalid);  // raw long
  EXPECT_EQ(decode(3, kPageSize, 0), kInvalid);           // length 0
  EXPECT_EQ(decode(3, kPageSize, 8192), kInvalid);        // not a page
  std::vector<uint8_t> small(100);
  EXPECT_EQ(DecodePage(3, absl::MakeConstSpan(payload.data(), kPageSize),
                       kPageSize, 0, absl::MakeSpan(small))
                .code(),
            kInvalid);
}

TEST(PageCodec, KnownEncodings) {
  EXPECT_FALSE(IsKnownEncoding(0));
  EXPECT_TRUE(IsKnownEncoding(1));
  EXPECT_TRUE(IsKnownEncoding(2));
  EXPECT_TRUE(IsKnownEncoding(3));
  EXPECT_FALSE(IsKnownEncoding(4));
}

}  // namespace
}  // namespace ramster
