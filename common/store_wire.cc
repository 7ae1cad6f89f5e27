#include "common/store_wire.h"

#include <arpa/inet.h>

#include <cstring>

namespace ramster {
namespace {

// Field numbers and wire types, as in proto/ramster/v1/page.proto and
// page_store.proto (store_wire_test.cc compares with the generated code).
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2;
constexpr uint32_t Tag(uint32_t field, uint32_t wire_type) { return field << 3 | wire_type; }

// PagesRequest.store, PagesReply.store.
constexpr uint32_t kRequestStore = Tag(1, kLengthDelimited);
constexpr uint32_t kReplyStore = Tag(3, kLengthDelimited);
// StoreRequest.
constexpr uint32_t kBootEpoch = Tag(1, kVarint);
constexpr uint32_t kPages = Tag(2, kLengthDelimited);
// Page.
constexpr uint32_t kKey = Tag(1, kLengthDelimited);
constexpr uint32_t kEncoding = Tag(2, kVarint);
constexpr uint32_t kPayload = Tag(3, kLengthDelimited);
constexpr uint32_t kUncompressedLength = Tag(4, kVarint);
constexpr uint32_t kChecksum = Tag(5, kFixed64);
constexpr uint32_t kGeneration = Tag(6, kVarint);
// PageKey.
constexpr uint32_t kPool = Tag(1, kVarint);
constexpr uint32_t kObject = Tag(2, kVarint);
constexpr uint32_t kIndex = Tag(3, kVarint);
// StoreResponse.results, PageStatus.
constexpr uint32_t kResults = Tag(1, kLengthDelimited);
constexpr uint32_t kCode = Tag(1, kVarint);
constexpr uint32_t kMessage = Tag(2, kLengthDelimited);

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

uint8_t* PutVarint(uint8_t* p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<uint8_t>(v);
  return p;
}

// Protobuf writes an int32 as the varint of its sign extension.
uint64_t Int32Wire(int32_t v) { return static_cast<uint64_t>(static_cast<int64_t>(v)); }

// A proto3 scalar is written only when it is not zero.
size_t VarintFieldSize(uint64_t v) { return v == 0 ? 0 : 1 + VarintSize(v); }

uint8_t* PutVarintField(uint8_t* p, uint32_t tag, uint64_t v) {
  if (v == 0) return p;
  *p++ = static_cast<uint8_t>(tag);
  return PutVarint(p, v);
}

size_t KeySize(const StorePageFields& f) {
  return VarintFieldSize(f.pool) + VarintFieldSize(f.object) + VarintFieldSize(f.index);
}

size_t PageSize(const StorePageFields& f) {
  const size_t key = KeySize(f);
  size_t n = 1 + VarintSize(key) + key;  // the key is a message: always written, if set
  n += VarintFieldSize(Int32Wire(f.encoding));
  if (!f.payload.empty()) n += 1 + VarintSize(f.payload.size()) + f.payload.size();
  n += VarintFieldSize(f.uncompressed_length);
  if (f.checksum != 0) n += 1 + 8;
  n += VarintFieldSize(f.generation);
  return n;
}

size_t StatusSize(const absl::Status& s) {
  size_t n = VarintFieldSize(Int32Wire(static_cast<int32_t>(s.code())));
  if (!s.ok() && !s.message().empty()) {
    n += 1 + VarintSize(s.message().size()) + s.message().size();
  }
  return n;
}

// Sizes `out` for a frame of a `message`-byte message (what it held is
// overwritten), writes the frame's length, and returns where the message
// starts.
uint8_t* StartFrame(size_t message, std::string* out) {
  out->resize(sizeof(uint32_t) + message);
  const uint32_t length = htonl(static_cast<uint32_t>(message));
  std::memcpy(out->data(), &length, sizeof(length));
  return reinterpret_cast<uint8_t*>(out->data()) + sizeof(uint32_t);
}

// A reader over one message's bytes: every read is bounds-checked, and a
// failed one leaves the reader failed.
class Reader {
 public:
  Reader(const uint8_t* p, const uint8_t* end) : p_(p), end_(end) {}
  bool done() const { return p_ == end_; }

  // Up to 10 bytes, as protobuf reads them; the bits beyond 64 must be 0.
  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (p_ == end_) return false;
      const uint8_t b = *p_++;
      if (shift == 63 && b > 1) return false;
      result |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (b < 0x80) {
        *v = result;
        return true;
      }
    }
    return false;
  }
  bool Fixed64(uint64_t* v) {
    if (end_ - p_ < 8) return false;
    uint64_t x = 0;
    for (int i = 7; i >= 0; --i) x = x << 8 | p_[i];
    p_ += 8;
    *v = x;
    return true;
  }
  // A length-delimited field's bytes.
  bool Bytes(Reader* inner) {
    uint64_t n = 0;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *inner = Reader(p_, p_ + n);
    p_ += n;
    return true;
  }
  // A tag that fits one byte (every field here does; a longer one is a
  // field this parser does not know).
  bool Tag(uint32_t* tag) {
    if (p_ == end_ || *p_ >= 0x80) return false;
    *tag = *p_++;
    return true;
  }
  absl::Span<const uint8_t> span() const {
    return absl::MakeConstSpan(p_, static_cast<size_t>(end_ - p_));
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// Sets `*seen` for `field` and says whether it was set already.
bool Repeated(uint32_t field, uint32_t* seen) {
  const uint32_t bit = 1u << field;
  if (*seen & bit) return true;
  *seen |= bit;
  return false;
}

bool ParseKey(Reader r, StorePageFields* f) {
  uint32_t seen = 0;
  while (!r.done()) {
    uint32_t tag = 0;
    uint64_t v = 0;
    if (!r.Tag(&tag) || Repeated(tag >> 3, &seen) || !r.Varint(&v)) return false;
    switch (tag) {
      case kPool: f->pool = static_cast<uint32_t>(v); break;
      case kObject: f->object = v; break;
      case kIndex: f->index = v; break;
      default: return false;
    }
  }
  return true;
}

bool ParsePage(Reader r, StorePageFields* f) {
  uint32_t seen = 0;
  while (!r.done()) {
    uint32_t tag = 0;
    if (!r.Tag(&tag) || Repeated(tag >> 3, &seen)) return false;
    uint64_t v = 0;
    Reader inner(nullptr, nullptr);
    switch (tag) {
      case kKey:
        if (!r.Bytes(&inner) || !ParseKey(inner, f)) return false;
        break;
      case kEncoding:
        if (!r.Varint(&v)) return false;
        f->encoding = static_cast<int32_t>(static_cast<uint32_t>(v));
        break;
      case kPayload:
        if (!r.Bytes(&inner)) return false;
        f->payload = inner.span();
        break;
      case kUncompressedLength:
        if (!r.Varint(&v)) return false;
        f->uncompressed_length = static_cast<uint32_t>(v);
        break;
      case kChecksum:
        if (!r.Fixed64(&f->checksum)) return false;
        break;
      case kGeneration:
        if (!r.Varint(&f->generation)) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

}  // namespace

void FrameStoreRequest(uint64_t boot_epoch, absl::Span<const StorePageFields> pages,
                       std::string* out) {
  size_t store = VarintFieldSize(boot_epoch);
  for (const StorePageFields& f : pages) {
    const size_t page = PageSize(f);
    store += 1 + VarintSize(page) + page;
  }
  uint8_t* p = StartFrame(1 + VarintSize(store) + store, out);
  *p++ = kRequestStore;
  p = PutVarint(p, store);
  p = PutVarintField(p, kBootEpoch, boot_epoch);
  for (const StorePageFields& f : pages) {
    *p++ = kPages;
    p = PutVarint(p, PageSize(f));
    *p++ = kKey;
    p = PutVarint(p, KeySize(f));
    p = PutVarintField(p, kPool, f.pool);
    p = PutVarintField(p, kObject, f.object);
    p = PutVarintField(p, kIndex, f.index);
    p = PutVarintField(p, kEncoding, Int32Wire(f.encoding));
    if (!f.payload.empty()) {
      *p++ = kPayload;
      p = PutVarint(p, f.payload.size());
      std::memcpy(p, f.payload.data(), f.payload.size());
      p += f.payload.size();
    }
    p = PutVarintField(p, kUncompressedLength, f.uncompressed_length);
    if (f.checksum != 0) {
      *p++ = kChecksum;
      for (int i = 0; i < 8; ++i) *p++ = static_cast<uint8_t>(f.checksum >> (8 * i));
    }
    p = PutVarintField(p, kGeneration, f.generation);
  }
}

bool ParseStoreRequest(absl::Span<const uint8_t> message, size_t max_pages,
                       uint64_t* boot_epoch, std::vector<StorePageFields>* pages) {
  pages->clear();
  *boot_epoch = 0;
  Reader r(message.data(), message.data() + message.size());
  uint32_t tag = 0;
  Reader store(nullptr, nullptr);
  // Exactly one field: the store request.
  if (!r.Tag(&tag) || tag != kRequestStore || !r.Bytes(&store) || !r.done()) return false;
  bool epoch_seen = false;
  while (!store.done()) {
    if (!store.Tag(&tag)) return false;
    if (tag == kBootEpoch) {
      if (epoch_seen || !store.Varint(boot_epoch)) return false;
      epoch_seen = true;
    } else if (tag == kPages) {
      Reader page(nullptr, nullptr);
      if (pages->size() == max_pages || !store.Bytes(&page)) return false;
      pages->emplace_back();
      if (!ParsePage(page, &pages->back())) return false;
    } else {
      return false;
    }
  }
  return true;
}

void FrameStoreReply(absl::Span<const absl::Status> results, std::string* out) {
  size_t response = 0;
  for (const absl::Status& s : results) {
    const size_t status = StatusSize(s);
    response += 1 + VarintSize(status) + status;
  }
  uint8_t* p = StartFrame(1 + VarintSize(response) + response, out);
  *p++ = kReplyStore;
  p = PutVarint(p, response);
  for (const absl::Status& s : results) {
    *p++ = kResults;
    p = PutVarint(p, StatusSize(s));
    p = PutVarintField(p, kCode, Int32Wire(static_cast<int32_t>(s.code())));
    if (!s.ok() && !s.message().empty()) {
      *p++ = kMessage;
      p = PutVarint(p, s.message().size());
      std::memcpy(p, s.message().data(), s.message().size());
      p += s.message().size();
    }
  }
}

}  // namespace ramster
