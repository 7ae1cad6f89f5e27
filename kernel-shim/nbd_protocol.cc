#include "kernel-shim/nbd_protocol.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ramster::nbd {

// ---- reading and writing integers -----------------------------------------

bool WireReader::U16(uint16_t* v) {
  if (remaining() < 2) return false;
  const uint8_t* p = data_.data() + pos_;
  *v = static_cast<uint16_t>((p[0] << 8) | p[1]);
  pos_ += 2;
  return true;
}

bool WireReader::U32(uint32_t* v) {
  if (remaining() < 4) return false;
  const uint8_t* p = data_.data() + pos_;
  *v = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  pos_ += 4;
  return true;
}

bool WireReader::U64(uint64_t* v) {
  if (remaining() < 8) return false;
  uint32_t hi, lo;
  U32(&hi);
  U32(&lo);
  *v = (uint64_t{hi} << 32) | lo;
  return true;
}

bool WireReader::Bytes(size_t n, absl::Span<const uint8_t>* out) {
  if (remaining() < n) return false;
  *out = data_.subspan(pos_, n);
  pos_ += n;
  return true;
}

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

void PutU64(uint8_t* p, uint64_t v) {
  PutU32(p, static_cast<uint32_t>(v >> 32));
  PutU32(p + 4, static_cast<uint32_t>(v));
}

// ---- server side -----------------------------------------------------------

std::array<uint8_t, kGreetingBytes> EncodeGreeting(uint16_t handshake_flags) {
  std::array<uint8_t, kGreetingBytes> out;
  PutU64(out.data(), kInitPasswd);
  PutU64(out.data() + 8, kOptsMagic);
  PutU16(out.data() + 16, handshake_flags);
  return out;
}

absl::StatusOr<OptionHeader> DecodeOptionHeader(absl::Span<const uint8_t> bytes) {
  WireReader r(bytes);
  OptionHeader h;
  if (!r.U64(&h.magic) || !r.U32(&h.option) || !r.U32(&h.length)) {
    return absl::InvalidArgumentError("option header: short read");
  }
  if (h.magic != kOptsMagic) {
    return absl::InvalidArgumentError(absl::StrCat("option header: bad magic 0x", absl::Hex(h.magic)));
  }
  return h;
}

absl::StatusOr<InfoRequest> DecodeInfoRequest(absl::Span<const uint8_t> data) {
  WireReader r(data);
  uint32_t name_length;
  if (!r.U32(&name_length)) return absl::InvalidArgumentError("info request: no name length");
  if (name_length > kMaxStringBytes) {
    return absl::InvalidArgumentError(absl::StrCat("info request: name of ", name_length, " bytes"));
  }
  absl::Span<const uint8_t> name;
  if (!r.Bytes(name_length, &name)) {
    return absl::InvalidArgumentError("info request: name longer than the option");
  }
  uint16_t count;
  if (!r.U16(&count)) return absl::InvalidArgumentError("info request: no request count");
  if (r.remaining() != size_t{count} * 2) {
    return absl::InvalidArgumentError(absl::StrCat("info request: ", count, " requests in ",
                                                   r.remaining(), " bytes"));
  }
  InfoRequest req;
  req.name = absl::string_view(reinterpret_cast<const char*>(name.data()), name.size());
  req.requests.resize(count);
  for (uint16_t& t : req.requests) r.U16(&t);
  return req;
}

std::array<uint8_t, kOptionReplyHeaderBytes> EncodeOptionReplyHeader(uint32_t option,
                                                                     uint32_t type,
                                                                     uint32_t length) {
  std::array<uint8_t, kOptionReplyHeaderBytes> out;
  PutU64(out.data(), kOptionReplyMagic);
  PutU32(out.data() + 8, option);
  PutU32(out.data() + 12, type);
  PutU32(out.data() + 16, length);
  return out;
}

std::array<uint8_t, 12> EncodeInfoExport(uint64_t size, uint16_t transmission_flags) {
  std::array<uint8_t, 12> out;
  PutU16(out.data(), kInfoExport);
  PutU64(out.data() + 2, size);
  PutU16(out.data() + 10, transmission_flags);
  return out;
}

std::array<uint8_t, 14> EncodeInfoBlockSize(uint32_t minimum, uint32_t preferred,
                                            uint32_t maximum) {
  std::array<uint8_t, 14> out;
  PutU16(out.data(), kInfoBlockSize);
  PutU32(out.data() + 2, minimum);
  PutU32(out.data() + 6, preferred);
  PutU32(out.data() + 10, maximum);
  return out;
}

size_t EncodeExportNameReply(uint64_t size, uint16_t transmission_flags, bool no_zeroes,
                             std::array<uint8_t, kExportNameReplyBytes + kExportNameZeroes>* out) {
  out->fill(0);
  PutU64(out->data(), size);
  PutU16(out->data() + 8, transmission_flags);
  return no_zeroes ? kExportNameReplyBytes : out->size();
}

absl::StatusOr<Request> DecodeRequest(absl::Span<const uint8_t> bytes) {
  WireReader r(bytes);
  Request q;
  if (!r.U32(&q.magic) || !r.U16(&q.flags) || !r.U16(&q.type) || !r.U64(&q.handle) ||
      !r.U64(&q.offset) || !r.U32(&q.length)) {
    return absl::InvalidArgumentError("request: short read");
  }
  if (q.magic != kRequestMagic) {
    return absl::InvalidArgumentError(absl::StrCat("request: bad magic 0x", absl::Hex(q.magic)));
  }
  return q;
}

uint32_t CheckRequest(const Request& q, uint64_t export_size, uint32_t max_payload) {
  uint16_t allowed_flags = kCmdFlagFua;  // clients set FUA on anything; harmless
  switch (q.type) {
    case kCmdDisc:
      return 0;
    case kCmdFlush:
      if (q.offset != 0 || q.length != 0) return kEinval;
      break;
    case kCmdRead:
    case kCmdWrite:
      if (q.length > max_payload) return kEinval;
      break;
    case kCmdTrim:
      break;
    case kCmdWriteZeroes:
      allowed_flags |= kCmdFlagNoHole;
      break;
    default:
      return kEinval;
  }
  if ((q.flags & ~allowed_flags) != 0) return kEinval;
  if (q.type != kCmdFlush &&
      (q.offset > export_size || q.length > export_size - q.offset)) {
    return q.type == kCmdWrite || q.type == kCmdWriteZeroes ? kEnospc : kEinval;
  }
  return 0;
}

std::array<uint8_t, kSimpleReplyBytes> EncodeSimpleReply(uint64_t handle, uint32_t error) {
  std::array<uint8_t, kSimpleReplyBytes> out;
  PutU32(out.data(), kSimpleReplyMagic);
  PutU32(out.data() + 4, error);
  PutU64(out.data() + 8, handle);
  return out;
}

// ---- client side -----------------------------------------------------------

std::array<uint8_t, kOptionHeaderBytes> EncodeOptionHeader(uint32_t option, uint32_t length) {
  std::array<uint8_t, kOptionHeaderBytes> out;
  PutU64(out.data(), kOptsMagic);
  PutU32(out.data() + 8, option);
  PutU32(out.data() + 12, length);
  return out;
}

std::array<uint8_t, kRequestBytes> EncodeRequest(const Request& q) {
  std::array<uint8_t, kRequestBytes> out;
  PutU32(out.data(), q.magic);
  PutU16(out.data() + 4, q.flags);
  PutU16(out.data() + 6, q.type);
  PutU64(out.data() + 8, q.handle);
  PutU64(out.data() + 16, q.offset);
  PutU32(out.data() + 24, q.length);
  return out;
}

absl::StatusOr<OptionReplyHeader> DecodeOptionReplyHeader(absl::Span<const uint8_t> bytes) {
  WireReader r(bytes);
  OptionReplyHeader h;
  if (!r.U64(&h.magic) || !r.U32(&h.option) || !r.U32(&h.type) || !r.U32(&h.length)) {
    return absl::InvalidArgumentError("option reply: short read");
  }
  if (h.magic != kOptionReplyMagic) {
    return absl::InvalidArgumentError(absl::StrCat("option reply: bad magic 0x", absl::Hex(h.magic)));
  }
  return h;
}

absl::StatusOr<SimpleReply> DecodeSimpleReply(absl::Span<const uint8_t> bytes) {
  WireReader r(bytes);
  SimpleReply s;
  if (!r.U32(&s.magic) || !r.U32(&s.error) || !r.U64(&s.handle)) {
    return absl::InvalidArgumentError("reply: short read");
  }
  if (s.magic != kSimpleReplyMagic) {
    return absl::InvalidArgumentError(absl::StrCat("reply: bad magic 0x", absl::Hex(s.magic)));
  }
  return s;
}

std::vector<uint8_t> EncodeInfoRequest(absl::string_view name,
                                       absl::Span<const uint16_t> requests) {
  std::vector<uint8_t> out(4 + name.size() + 2 + 2 * requests.size());
  PutU32(out.data(), static_cast<uint32_t>(name.size()));
  std::memcpy(out.data() + 4, name.data(), name.size());
  uint8_t* p = out.data() + 4 + name.size();
  PutU16(p, static_cast<uint16_t>(requests.size()));
  for (size_t i = 0; i < requests.size(); ++i) PutU16(p + 2 + 2 * i, requests[i]);
  return out;
}

absl::string_view CommandName(uint16_t type) {
  switch (type) {
    case kCmdRead: return "READ";
    case kCmdWrite: return "WRITE";
    case kCmdDisc: return "DISC";
    case kCmdFlush: return "FLUSH";
    case kCmdTrim: return "TRIM";
    case kCmdCache: return "CACHE";
    case kCmdWriteZeroes: return "WRITE_ZEROES";
    case kCmdBlockStatus: return "BLOCK_STATUS";
    default: return "unknown";
  }
}

absl::string_view OptionName(uint32_t option) {
  switch (option) {
    case kOptExportName: return "NBD_OPT_EXPORT_NAME";
    case kOptAbort: return "NBD_OPT_ABORT";
    case kOptList: return "NBD_OPT_LIST";
    case kOptStartTls: return "NBD_OPT_STARTTLS";
    case kOptInfo: return "NBD_OPT_INFO";
    case kOptGo: return "NBD_OPT_GO";
    case kOptStructuredReply: return "NBD_OPT_STRUCTURED_REPLY";
    case kOptListMetaContext: return "NBD_OPT_LIST_META_CONTEXT";
    case kOptSetMetaContext: return "NBD_OPT_SET_META_CONTEXT";
    case kOptExtendedHeaders: return "NBD_OPT_EXTENDED_HEADERS";
    default: return "unknown";
  }
}

}  // namespace ramster::nbd
