#include "kernel-shim/nbd_protocol.h"

#include <vector>

#include "gtest/gtest.h"

namespace ramster::nbd {
namespace {

Request Req(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
  Request q;
  q.magic = kRequestMagic;
  q.type = type;
  q.flags = flags;
  q.handle = 0x1122334455667788ull;
  q.offset = offset;
  q.length = length;
  return q;
}

TEST(NbdWire, IntegersAreBigEndian) {
  uint8_t b[8];
  PutU64(b, 0x0102030405060708ull);
  EXPECT_EQ(std::vector<uint8_t>(b, b + 8), (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  WireReader r(b);
  uint16_t v16;
  uint32_t v32;
  ASSERT_TRUE(r.U16(&v16));
  ASSERT_TRUE(r.U32(&v32));
  EXPECT_EQ(v16, 0x0102);
  EXPECT_EQ(v32, 0x03040506u);
  EXPECT_EQ(r.remaining(), 2u);
}

TEST(NbdWire, ReaderRefusesToReadPastTheEndAndConsumesNothing) {
  const uint8_t b[3] = {1, 2, 3};
  WireReader r(b);
  uint32_t v32;
  uint64_t v64;
  absl::Span<const uint8_t> bytes;
  EXPECT_FALSE(r.U32(&v32));
  EXPECT_FALSE(r.U64(&v64));
  EXPECT_FALSE(r.Bytes(4, &bytes));
  EXPECT_EQ(r.remaining(), 3u);
  ASSERT_TRUE(r.Bytes(3, &bytes));
  EXPECT_EQ(bytes.size(), 3u);
  uint16_t v16;
  EXPECT_FALSE(r.U16(&v16));
}

TEST(NbdWire, GreetingLayout) {
  auto g = EncodeGreeting(kFlagFixedNewstyle | kFlagNoZeroes);
  EXPECT_EQ(std::string(g.begin(), g.begin() + 16), std::string("NBDMAGICIHAVEOPT"));
  EXPECT_EQ(g[16], 0);
  EXPECT_EQ(g[17], 3);
}

TEST(NbdWire, RequestRoundTrip) {
  Request q = Req(kCmdWrite, 0xABCDEF0123ull, 4096, kCmdFlagFua);
  auto bytes = EncodeRequest(q);
  absl::StatusOr<Request> back = DecodeRequest(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->type, kCmdWrite);
  EXPECT_EQ(back->flags, kCmdFlagFua);
  EXPECT_EQ(back->handle, q.handle);
  EXPECT_EQ(back->offset, q.offset);
  EXPECT_EQ(back->length, 4096u);
}

TEST(NbdWire, RequestWithBadMagicOrShortIsRejected) {
  Request q = Req(kCmdRead, 0, 512);
  q.magic = 0x25609514;
  auto bytes = EncodeRequest(q);
  EXPECT_EQ(DecodeRequest(bytes).status().code(), absl::StatusCode::kInvalidArgument);
  q.magic = kRequestMagic;
  bytes = EncodeRequest(q);
  EXPECT_EQ(DecodeRequest(absl::MakeConstSpan(bytes).first(27)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeRequest({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NbdWire, OptionHeaderRoundTripAndBadMagic) {
  auto bytes = EncodeOptionHeader(kOptGo, 77);
  absl::StatusOr<OptionHeader> h = DecodeOptionHeader(bytes);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->option, kOptGo);
  EXPECT_EQ(h->length, 77u);
  bytes[0] ^= 1;
  EXPECT_FALSE(DecodeOptionHeader(bytes).ok());
  EXPECT_FALSE(DecodeOptionHeader(absl::MakeConstSpan(bytes).first(15)).ok());
}

TEST(NbdWire, InfoRequestRoundTrip) {
  const uint16_t asked[] = {kInfoBlockSize, kInfoName};
  std::vector<uint8_t> data = EncodeInfoRequest("ramster", asked);
  absl::StatusOr<InfoRequest> r = DecodeInfoRequest(data);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->name, "ramster");
  EXPECT_EQ(r->requests, (std::vector<uint16_t>{kInfoBlockSize, kInfoName}));

  std::vector<uint8_t> empty = EncodeInfoRequest("", {});
  r = DecodeInfoRequest(empty);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->name, "");
  EXPECT_TRUE(r->requests.empty());
}

TEST(NbdWire, InfoRequestWhoseLengthsDisagreeIsRejected) {
  const uint16_t asked[] = {kInfoBlockSize};
  std::vector<uint8_t> good = EncodeInfoRequest("ramster", asked);
  // Every truncation is caught.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeInfoRequest(absl::MakeConstSpan(good).first(n)).ok()) << n;
  }
  // Trailing bytes too.
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_FALSE(DecodeInfoRequest(longer).ok());
  // A name length beyond the data.
  std::vector<uint8_t> bad = good;
  PutU32(bad.data(), 0xFFFFFFF0u);
  EXPECT_EQ(DecodeInfoRequest(bad).status().code(), absl::StatusCode::kInvalidArgument);
  // A request count beyond the data.
  bad = good;
  PutU16(bad.data() + 4 + 7, 100);
  EXPECT_FALSE(DecodeInfoRequest(bad).ok());
  // A name longer than the protocol allows, even if present.
  std::vector<uint8_t> huge = EncodeInfoRequest(std::string(kMaxStringBytes + 1, 'a'), {});
  EXPECT_FALSE(DecodeInfoRequest(huge).ok());
}

TEST(NbdWire, InfoPayloads) {
  auto e = EncodeInfoExport(0x1000, kFlagHasFlags | kFlagSendFlush);
  WireReader r(e);
  uint16_t type, flags;
  uint64_t size;
  ASSERT_TRUE(r.U16(&type) && r.U64(&size) && r.U16(&flags));
  EXPECT_EQ(type, kInfoExport);
  EXPECT_EQ(size, 0x1000u);
  EXPECT_EQ(flags, kFlagHasFlags | kFlagSendFlush);

  auto b = EncodeInfoBlockSize(1, 4096, 32 << 20);
  WireReader rb(b);
  uint32_t mn, pref, mx;
  ASSERT_TRUE(rb.U16(&type) && rb.U32(&mn) && rb.U32(&pref) && rb.U32(&mx));
  EXPECT_EQ(type, kInfoBlockSize);
  EXPECT_EQ(mn, 1u);
  EXPECT_EQ(pref, 4096u);
  EXPECT_EQ(mx, 32u << 20);
}

TEST(NbdWire, ExportNameReplyHonoursNoZeroes) {
  std::array<uint8_t, kExportNameReplyBytes + kExportNameZeroes> out;
  EXPECT_EQ(EncodeExportNameReply(1 << 20, kFlagHasFlags, true, &out), 10u);
  EXPECT_EQ(EncodeExportNameReply(1 << 20, kFlagHasFlags, false, &out), 134u);
  for (size_t i = 10; i < out.size(); ++i) EXPECT_EQ(out[i], 0);
}

TEST(NbdWire, ReplyRoundTrips) {
  auto s = EncodeSimpleReply(42, kEnospc);
  absl::StatusOr<SimpleReply> r = DecodeSimpleReply(s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->handle, 42u);
  EXPECT_EQ(r->error, kEnospc);
  auto o = EncodeOptionReplyHeader(kOptList, kRepErrInvalid, 5);
  absl::StatusOr<OptionReplyHeader> h = DecodeOptionReplyHeader(o);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->option, kOptList);
  EXPECT_EQ(h->type, kRepErrInvalid);
  EXPECT_EQ(h->length, 5u);
}

// ---- CheckRequest: validation before acting -----------------------------------

constexpr uint64_t kSize = 1 << 20;
constexpr uint32_t kMax = 64 << 10;

TEST(NbdCheckRequest, ValidRequestsPass) {
  EXPECT_EQ(CheckRequest(Req(kCmdRead, 0, 4096), kSize, kMax), 0u);
  EXPECT_EQ(CheckRequest(Req(kCmdRead, kSize - 1, 1), kSize, kMax), 0u);
  EXPECT_EQ(CheckRequest(Req(kCmdWrite, 4095, kMax, kCmdFlagFua), kSize, kMax), 0u);
  EXPECT_EQ(CheckRequest(Req(kCmdTrim, 0, kSize), kSize, kMax), 0u);  // not capped
  EXPECT_EQ(CheckRequest(Req(kCmdWriteZeroes, 0, kSize, kCmdFlagNoHole | kCmdFlagFua), kSize,
                         kMax),
            0u);
  EXPECT_EQ(CheckRequest(Req(kCmdFlush, 0, 0), kSize, kMax), 0u);
  EXPECT_EQ(CheckRequest(Req(kCmdRead, kSize, 0), kSize, kMax), 0u);  // empty, at the end
  EXPECT_EQ(CheckRequest(Req(kCmdDisc, 123, 456, 0xFFFF), kSize, kMax), 0u);
}

TEST(NbdCheckRequest, OutOfRange) {
  EXPECT_EQ(CheckRequest(Req(kCmdRead, kSize, 1), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdRead, kSize - 1, 2), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdTrim, 4096, kSize), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdWrite, kSize - 1, 2), kSize, kMax), kEnospc);
  EXPECT_EQ(CheckRequest(Req(kCmdWriteZeroes, kSize, 1), kSize, kMax), kEnospc);
  // offset + length overflowing 64 bits must not wrap into range.
  EXPECT_EQ(CheckRequest(Req(kCmdRead, ~uint64_t{0} - 10, 4096), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdWrite, ~uint64_t{0}, 1), kSize, kMax), kEnospc);
}

TEST(NbdCheckRequest, OversizeUnknownAndBadFlags) {
  EXPECT_EQ(CheckRequest(Req(kCmdRead, 0, kMax + 1), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdWrite, 0, kMax + 1), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdCache, 0, 4096), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdBlockStatus, 0, 4096), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(999, 0, 0), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdRead, 0, 4096, kCmdFlagDf), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdWrite, 0, 4096, kCmdFlagNoHole), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdWriteZeroes, 0, 4096, kCmdFlagFastZero), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdTrim, 0, 4096, 0x8000), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdFlush, 1, 0), kSize, kMax), kEinval);
  EXPECT_EQ(CheckRequest(Req(kCmdFlush, 0, 1), kSize, kMax), kEinval);
}

TEST(NbdWire, NamesForLogs) {
  EXPECT_EQ(CommandName(kCmdWriteZeroes), "WRITE_ZEROES");
  EXPECT_EQ(CommandName(77), "unknown");
  EXPECT_EQ(OptionName(kOptGo), "NBD_OPT_GO");
  EXPECT_EQ(OptionName(12345), "unknown");
}

}  // namespace
}  // namespace ramster::nbd
