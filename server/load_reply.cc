#include "server/load_reply.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "common/page_codec.h"

namespace ramster {
namespace {

using google::protobuf::io::CodedOutputStream;

// Wire types and the one-byte tags of fields 1..15.
constexpr uint8_t kVarint = 0;
constexpr uint8_t kFixed64 = 1;
constexpr uint8_t kLengthDelimited = 2;
constexpr uint8_t Tag(int field, uint8_t wire_type) {
  return static_cast<uint8_t>(field << 3 | wire_type);
}

// Sizes of fields as proto3 writes them: a scalar at its default value and
// an empty string are left out; a message field that is set is written even
// when empty.
size_t VarintFieldSize(uint64_t v) {
  return v == 0 ? 0 : 1 + CodedOutputStream::VarintSize64(v);
}
size_t Int32FieldSize(int32_t v) {
  return v == 0 ? 0 : 1 + CodedOutputStream::VarintSize32SignExtended(v);
}
size_t Fixed64FieldSize(uint64_t v) { return v == 0 ? 0 : 1 + 8; }
size_t MessageFieldSize(size_t size) {
  return 1 + CodedOutputStream::VarintSize32(static_cast<uint32_t>(size)) + size;
}
size_t BytesFieldSize(size_t size) { return size == 0 ? 0 : MessageFieldSize(size); }

uint8_t* WriteVarintField(int field, uint64_t v, uint8_t* out) {
  if (v == 0) return out;
  *out++ = Tag(field, kVarint);
  return CodedOutputStream::WriteVarint64ToArray(v, out);
}
uint8_t* WriteInt32Field(int field, int32_t v, uint8_t* out) {
  if (v == 0) return out;
  *out++ = Tag(field, kVarint);
  return CodedOutputStream::WriteVarint32SignExtendedToArray(v, out);
}
uint8_t* WriteFixed64Field(int field, uint64_t v, uint8_t* out) {
  if (v == 0) return out;
  *out++ = Tag(field, kFixed64);
  return CodedOutputStream::WriteLittleEndian64ToArray(v, out);
}
// The tag and length of a message (or bytes) field; its contents follow.
uint8_t* WriteLengthPrefix(int field, size_t size, uint8_t* out) {
  *out++ = Tag(field, kLengthDelimited);
  return CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(size), out);
}
uint8_t* WriteBytesField(int field, absl::Span<const uint8_t> bytes, uint8_t* out) {
  if (bytes.empty()) return out;
  out = WriteLengthPrefix(field, bytes.size(), out);
  std::memcpy(out, bytes.data(), bytes.size());
  return out + bytes.size();
}

// Field numbers, as the generated code names them.
constexpr int kResponseResults = v1::LoadResponse::kResultsFieldNumber;
constexpr int kResultStatus = v1::LoadResult::kStatusFieldNumber;
constexpr int kResultPage = v1::LoadResult::kPageFieldNumber;
constexpr int kStatusCode = v1::PageStatus::kCodeFieldNumber;
constexpr int kStatusMessage = v1::PageStatus::kMessageFieldNumber;
constexpr int kPageKey = v1::Page::kKeyFieldNumber;
constexpr int kPageEncoding = v1::Page::kEncodingFieldNumber;
constexpr int kPagePayload = v1::Page::kPayloadFieldNumber;
constexpr int kPageUncompressedLength = v1::Page::kUncompressedLengthFieldNumber;
constexpr int kPageChecksum = v1::Page::kChecksumFieldNumber;
constexpr int kPageGeneration = v1::Page::kGenerationFieldNumber;
constexpr int kKeyPool = v1::PageKey::kPoolFieldNumber;
constexpr int kKeyObject = v1::PageKey::kObjectFieldNumber;
constexpr int kKeyIndex = v1::PageKey::kIndexFieldNumber;
// Every tag above fits one byte.
static_assert(kPageGeneration < 16 && kKeyIndex < 16 && kResultPage < 16 &&
              kStatusMessage < 16);

}  // namespace

void LoadResponseSink::AddPage(const LoadedPage& page) {
  v1::LoadResult* r = response_->add_results();
  r->mutable_status();  // OK: set, and empty
  v1::Page* p = r->mutable_page();
  v1::PageKey* k = p->mutable_key();
  k->set_pool(page.key->pool());
  k->set_object(page.key->object());
  k->set_index(page.key->index());
  p->set_encoding(page.encoding);
  p->set_payload(page.payload.data(), page.payload.size());
  p->set_uncompressed_length(page.uncompressed_length);
  p->set_checksum(page.checksum);
  p->set_generation(page.generation);
}

void LoadResponseSink::AddMiss(const absl::Status& status) {
  v1::PageStatus* s = response_->add_results()->mutable_status();
  s->set_code(static_cast<int32_t>(status.code()));
  s->set_message(std::string(status.message()));
}

LoadReplyEncoder::LoadReplyEncoder(size_t expected_pages) {
  // Room for pages that compressed to half a page, with their fields;
  // larger ones grow the buffer.
  capacity_ = expected_pages * (kPageSize / 2 + 64);
  if (capacity_ > 0) {
    buffer_.reset(static_cast<uint8_t*>(std::malloc(capacity_)));
    if (buffer_ == nullptr) std::abort();  // as operator new would
  }
}

uint8_t* LoadReplyEncoder::Append(size_t n) {
  if (size_ + n > capacity_) {
    const size_t capacity = std::max(capacity_ * 2, size_ + n);
    auto* grown = static_cast<uint8_t*>(std::realloc(buffer_.get(), capacity));
    if (grown == nullptr) std::abort();  // as operator new would
    (void)buffer_.release();
    buffer_.reset(grown);
    capacity_ = capacity;
  }
  uint8_t* out = buffer_.get() + size_;
  size_ += n;
  return out;
}

void LoadReplyEncoder::AddPage(const LoadedPage& page) {
  const v1::PageKey& key = *page.key;
  const size_t key_size = VarintFieldSize(key.pool()) + VarintFieldSize(key.object()) +
                          VarintFieldSize(key.index());
  const size_t page_size = MessageFieldSize(key_size) + Int32FieldSize(page.encoding) +
                           BytesFieldSize(page.payload.size()) +
                           VarintFieldSize(page.uncompressed_length) +
                           Fixed64FieldSize(page.checksum) + VarintFieldSize(page.generation);
  const size_t result_size = MessageFieldSize(0) + MessageFieldSize(page_size);
  const size_t total = MessageFieldSize(result_size);

  uint8_t* out = Append(total);
  uint8_t* const end = out + total;
  out = WriteLengthPrefix(kResponseResults, result_size, out);
  out = WriteLengthPrefix(kResultStatus, 0, out);
  out = WriteLengthPrefix(kResultPage, page_size, out);
  out = WriteLengthPrefix(kPageKey, key_size, out);
  out = WriteVarintField(kKeyPool, key.pool(), out);
  out = WriteVarintField(kKeyObject, key.object(), out);
  out = WriteVarintField(kKeyIndex, key.index(), out);
  out = WriteInt32Field(kPageEncoding, page.encoding, out);
  out = WriteBytesField(kPagePayload, page.payload, out);
  out = WriteVarintField(kPageUncompressedLength, page.uncompressed_length, out);
  out = WriteFixed64Field(kPageChecksum, page.checksum, out);
  out = WriteVarintField(kPageGeneration, page.generation, out);
  if (out != end) std::abort();  // the sizes above are wrong: a bug here
}

void LoadReplyEncoder::AddMiss(const absl::Status& status) {
  const int32_t code = static_cast<int32_t>(status.code());
  const absl::string_view message = status.message();
  const size_t status_size = Int32FieldSize(code) + BytesFieldSize(message.size());
  const size_t result_size = MessageFieldSize(status_size);
  const size_t total = MessageFieldSize(result_size);

  uint8_t* out = Append(total);
  uint8_t* const end = out + total;
  out = WriteLengthPrefix(kResponseResults, result_size, out);
  out = WriteLengthPrefix(kResultStatus, status_size, out);
  out = WriteInt32Field(kStatusCode, code, out);
  out = WriteBytesField(
      kStatusMessage,
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(message.data()), message.size()),
      out);
  if (out != end) std::abort();  // the sizes above are wrong: a bug here
}

LoadReplyEncoder::Encoded LoadReplyEncoder::Release() {
  Encoded encoded{std::move(buffer_), size_};
  size_ = 0;
  capacity_ = 0;
  return encoded;
}

size_t PagesReplyLoadHeader(size_t encoded_size, uint8_t header[kMaxPagesReplyLoadHeader]) {
  header[0] = static_cast<uint8_t>(google::protobuf::internal::WireFormatLite::MakeTag(
      v1::PagesReply::kLoadFieldNumber,
      google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
      static_cast<uint32_t>(encoded_size), header + 1);
  return static_cast<size_t>(end - header);
}

}  // namespace ramster
