// The NBD wire protocol as ramster-shim speaks it: fixed newstyle handshake,
// simple replies, no TLS, no structured replies. Every constant and every
// message layout is here (the reference is the NBD project's doc/proto.md);
// nbd_server.cc holds the behaviour.
//
// All integers on the wire are big-endian. Decoders take the bytes they were
// given and never read past them: a short or malformed message is an error,
// not a crash. Encoders write into caller-provided fixed-size arrays, so the
// reply path allocates nothing.
//
// Client-side encoders and decoders (requests, option headers, replies) are
// here too: tests and the fuzzer speak the client half of the protocol.
#ifndef RAMSTER_KERNEL_SHIM_NBD_PROTOCOL_H_
#define RAMSTER_KERNEL_SHIM_NBD_PROTOCOL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ramster::nbd {

// ---- handshake -------------------------------------------------------------

inline constexpr uint64_t kInitPasswd = 0x4e42444d41474943ull;  // "NBDMAGIC"
inline constexpr uint64_t kOptsMagic = 0x49484156454f5054ull;   // "IHAVEOPT"
inline constexpr uint64_t kOptionReplyMagic = 0x0003e889045565a9ull;

// Handshake flags (server -> client, 16 bits).
inline constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
inline constexpr uint16_t kFlagNoZeroes = 1 << 1;
// Client flags (client -> server, 32 bits). Any other bit: hard disconnect.
inline constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
inline constexpr uint32_t kClientFlagNoZeroes = 1 << 1;
inline constexpr uint32_t kKnownClientFlags = kClientFlagFixedNewstyle | kClientFlagNoZeroes;

// Transmission flags (16 bits, sent with the export's size).
inline constexpr uint16_t kFlagHasFlags = 1 << 0;
inline constexpr uint16_t kFlagReadOnly = 1 << 1;
inline constexpr uint16_t kFlagSendFlush = 1 << 2;
inline constexpr uint16_t kFlagSendFua = 1 << 3;
inline constexpr uint16_t kFlagRotational = 1 << 4;
inline constexpr uint16_t kFlagSendTrim = 1 << 5;
inline constexpr uint16_t kFlagSendWriteZeroes = 1 << 6;
inline constexpr uint16_t kFlagSendDf = 1 << 7;
inline constexpr uint16_t kFlagCanMultiConn = 1 << 8;

// Options.
inline constexpr uint32_t kOptExportName = 1;
inline constexpr uint32_t kOptAbort = 2;
inline constexpr uint32_t kOptList = 3;
inline constexpr uint32_t kOptStartTls = 5;
inline constexpr uint32_t kOptInfo = 6;
inline constexpr uint32_t kOptGo = 7;
inline constexpr uint32_t kOptStructuredReply = 8;
inline constexpr uint32_t kOptListMetaContext = 10;
inline constexpr uint32_t kOptSetMetaContext = 11;
inline constexpr uint32_t kOptExtendedHeaders = 16;

// Option reply types. Errors have bit 31 set.
inline constexpr uint32_t kRepAck = 1;
inline constexpr uint32_t kRepServer = 2;
inline constexpr uint32_t kRepInfo = 3;
inline constexpr uint32_t kRepFlagError = 1u << 31;
inline constexpr uint32_t kRepErrUnsup = kRepFlagError | 1;
inline constexpr uint32_t kRepErrPolicy = kRepFlagError | 2;
inline constexpr uint32_t kRepErrInvalid = kRepFlagError | 3;
inline constexpr uint32_t kRepErrPlatform = kRepFlagError | 4;
inline constexpr uint32_t kRepErrTlsReqd = kRepFlagError | 5;
inline constexpr uint32_t kRepErrUnknown = kRepFlagError | 6;
inline constexpr uint32_t kRepErrShutdown = kRepFlagError | 7;
inline constexpr uint32_t kRepErrBlockSizeReqd = kRepFlagError | 8;
inline constexpr uint32_t kRepErrTooBig = kRepFlagError | 9;

// NBD_REP_INFO payload types (NBD_OPT_INFO / NBD_OPT_GO).
inline constexpr uint16_t kInfoExport = 0;
inline constexpr uint16_t kInfoName = 1;
inline constexpr uint16_t kInfoDescription = 2;
inline constexpr uint16_t kInfoBlockSize = 3;

// ---- transmission ----------------------------------------------------------

inline constexpr uint32_t kRequestMagic = 0x25609513;
inline constexpr uint32_t kSimpleReplyMagic = 0x67446698;

// Commands.
inline constexpr uint16_t kCmdRead = 0;
inline constexpr uint16_t kCmdWrite = 1;
inline constexpr uint16_t kCmdDisc = 2;
inline constexpr uint16_t kCmdFlush = 3;
inline constexpr uint16_t kCmdTrim = 4;
inline constexpr uint16_t kCmdCache = 5;
inline constexpr uint16_t kCmdWriteZeroes = 6;
inline constexpr uint16_t kCmdBlockStatus = 7;

// Command flags.
inline constexpr uint16_t kCmdFlagFua = 1 << 0;
inline constexpr uint16_t kCmdFlagNoHole = 1 << 1;
inline constexpr uint16_t kCmdFlagDf = 1 << 2;
inline constexpr uint16_t kCmdFlagReqOne = 1 << 3;
inline constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Error values in replies (the protocol's own, which happen to be Linux's).
inline constexpr uint32_t kEperm = 1;
inline constexpr uint32_t kEio = 5;
inline constexpr uint32_t kEnomem = 12;
inline constexpr uint32_t kEinval = 22;
inline constexpr uint32_t kEnospc = 28;
inline constexpr uint32_t kEoverflow = 75;
inline constexpr uint32_t kEnotsup = 95;
inline constexpr uint32_t kEshutdown = 108;

// ---- message sizes ---------------------------------------------------------

inline constexpr size_t kGreetingBytes = 18;        // passwd, opts magic, flags
inline constexpr size_t kOptionHeaderBytes = 16;    // magic, option, length
inline constexpr size_t kOptionReplyHeaderBytes = 20;
inline constexpr size_t kExportNameReplyBytes = 10; // size, flags (+124 zeroes)
inline constexpr size_t kExportNameZeroes = 124;
inline constexpr size_t kRequestBytes = 28;
inline constexpr size_t kSimpleReplyBytes = 16;
// Export names and other strings: the protocol's own upper bound.
inline constexpr size_t kMaxStringBytes = 4096;

// ---- decoded messages ------------------------------------------------------

struct OptionHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t length = 0;  // bytes of option data that follow
};

struct OptionReplyHeader {
  uint64_t magic = 0;
  uint32_t option = 0;
  uint32_t type = 0;
  uint32_t length = 0;
};

// NBD_OPT_INFO / NBD_OPT_GO data: the export name and the information types
// the client asks for. `name` points into the decoded bytes.
struct InfoRequest {
  absl::string_view name;
  std::vector<uint16_t> requests;
};

struct Request {
  uint32_t magic = 0;
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t handle = 0;  // opaque to the server, echoed in the reply
  uint64_t offset = 0;
  uint32_t length = 0;
};

struct SimpleReply {
  uint32_t magic = 0;
  uint32_t error = 0;
  uint64_t handle = 0;
};

// ---- bounds-checked reading ------------------------------------------------

// Reads big-endian integers and byte runs from a span. Each call either
// consumes what it returns or, when too few bytes remain, returns false and
// consumes nothing.
class WireReader {
 public:
  explicit WireReader(absl::Span<const uint8_t> data) : data_(data) {}

  bool U16(uint16_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool Bytes(size_t n, absl::Span<const uint8_t>* out);
  size_t remaining() const { return data_.size() - pos_; }

 private:
  absl::Span<const uint8_t> data_;
  size_t pos_ = 0;
};

// Big-endian stores into a buffer the caller sized.
void PutU16(uint8_t* p, uint16_t v);
void PutU32(uint8_t* p, uint32_t v);
void PutU64(uint8_t* p, uint64_t v);

// ---- server side -----------------------------------------------------------

// The 18-byte newstyle greeting with the given handshake flags.
std::array<uint8_t, kGreetingBytes> EncodeGreeting(uint16_t handshake_flags);

// kInvalidArgument when `bytes` is shorter than a header or its magic is
// wrong. The caller bounds `length` before reading the data.
absl::StatusOr<OptionHeader> DecodeOptionHeader(absl::Span<const uint8_t> bytes);

// Decodes NBD_OPT_INFO / NBD_OPT_GO data: [u32 name length][name]
// [u16 count][count x u16]. kInvalidArgument if the lengths disagree with
// the data (too short, or bytes left over) or the name is longer than
// kMaxStringBytes.
absl::StatusOr<InfoRequest> DecodeInfoRequest(absl::Span<const uint8_t> data);

std::array<uint8_t, kOptionReplyHeaderBytes> EncodeOptionReplyHeader(uint32_t option,
                                                                     uint32_t type,
                                                                     uint32_t length);

// NBD_REP_INFO payloads.
std::array<uint8_t, 12> EncodeInfoExport(uint64_t size, uint16_t transmission_flags);
std::array<uint8_t, 14> EncodeInfoBlockSize(uint32_t minimum, uint32_t preferred,
                                            uint32_t maximum);

// The reply to NBD_OPT_EXPORT_NAME, with or without the 124 zero bytes.
// Returns the number of bytes of `out` to send.
size_t EncodeExportNameReply(uint64_t size, uint16_t transmission_flags, bool no_zeroes,
                             std::array<uint8_t, kExportNameReplyBytes + kExportNameZeroes>* out);

// kInvalidArgument when `bytes` is shorter than a request or its magic is
// wrong (the stream cannot be resynchronized: hard disconnect).
absl::StatusOr<Request> DecodeRequest(absl::Span<const uint8_t> bytes);

// Everything a server checks before acting on a request, given the export
// size and the largest READ/WRITE payload it accepts. Returns 0 when the
// request may be executed, otherwise the NBD error to reply with:
//   unknown command, a flag the command does not take, FLUSH with a
//   nonzero offset or length, a READ/WRITE longer than max_payload: EINVAL;
//   a range past the end: ENOSPC for WRITE and WRITE_ZEROES (they would
//   write there), EINVAL for READ and TRIM.
// NBD_CMD_DISC is always valid (its fields are ignored).
uint32_t CheckRequest(const Request& request, uint64_t export_size, uint32_t max_payload);

// True for the commands whose request is followed by `length` bytes of data.
inline bool HasPayload(const Request& r) { return r.type == kCmdWrite; }

std::array<uint8_t, kSimpleReplyBytes> EncodeSimpleReply(uint64_t handle, uint32_t error);

// ---- client side (tests, fuzzer) -------------------------------------------

std::array<uint8_t, kOptionHeaderBytes> EncodeOptionHeader(uint32_t option, uint32_t length);
std::array<uint8_t, kRequestBytes> EncodeRequest(const Request& request);
absl::StatusOr<OptionReplyHeader> DecodeOptionReplyHeader(absl::Span<const uint8_t> bytes);
absl::StatusOr<SimpleReply> DecodeSimpleReply(absl::Span<const uint8_t> bytes);
// NBD_OPT_INFO / NBD_OPT_GO data asking for `requests` about `name`.
std::vector<uint8_t> EncodeInfoRequest(absl::string_view name,
                                       absl::Span<const uint16_t> requests);

// Names for logs: "READ", "NBD_OPT_GO", ... ("unknown" otherwise).
absl::string_view CommandName(uint16_t type);
absl::string_view OptionName(uint32_t option);

}  // namespace ramster::nbd

#endif  // RAMSTER_KERNEL_SHIM_NBD_PROTOCOL_H_
