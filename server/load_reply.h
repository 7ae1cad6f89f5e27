// Where Node::Load puts a batch's results: a LoadSink takes them one key at
// a time, in request order. Two sinks:
//
//   LoadResponseSink  fills a v1::LoadResponse (tests, in-process callers);
//   LoadReplyEncoder  writes the same LoadResponse straight in its wire
//                     format into one buffer, which the gRPC service sends
//                     as it is.
//
// Why the encoder: built as a message, every page of a reply costs a heap
// string for its payload (protobuf 3.21 puts only the string object on the
// call's arena, not its bytes), a copy of the payload into it, a second copy
// when gRPC serializes the message, and the generic serializer's size pass.
// The encoder copies each payload once, from the slab into the buffer the
// reply is sent from. Its bytes are exactly what LoadResponse serialization
// gives for the same results (load_reply_test.cc checks), so clients see no
// difference.
//
// Thread safety: a sink belongs to one call; not thread-safe.
#ifndef RAMSTER_SERVER_LOAD_REPLY_H_
#define RAMSTER_SERVER_LOAD_REPLY_H_

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "ramster/v1/page_store.pb.h"

namespace ramster {

// One page found under a requested key: what a v1::Page carries.
struct LoadedPage {
  const v1::PageKey* key = nullptr;  // the key as requested
  v1::Encoding encoding = v1::ENCODING_UNSPECIFIED;
  uint32_t uncompressed_length = 0;
  uint64_t checksum = 0;
  uint64_t generation = 0;
  // Valid only during the AddPage call (it may be the node's RAM copy, read
  // under the page's lock).
  absl::Span<const uint8_t> payload;
};

class LoadSink {
 public:
  virtual ~LoadSink() = default;
  // The next key's page.
  virtual void AddPage(const LoadedPage& page) = 0;
  // The next key has no page to return. REQUIRES: !status.ok().
  virtual void AddMiss(const absl::Status& status) = 0;
};

// Appends results to `response`, which must outlive the sink.
class LoadResponseSink final : public LoadSink {
 public:
  explicit LoadResponseSink(v1::LoadResponse* response) : response_(response) {}
  void AddPage(const LoadedPage& page) override;
  void AddMiss(const absl::Status& status) override;

 private:
  v1::LoadResponse* const response_;
};

// Encodes a LoadResponse of the results added, in one malloc'd buffer.
class LoadReplyEncoder final : public LoadSink {
 public:
  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

  // `expected_pages`: how many results will be added (sizes the first
  // buffer; more may follow).
  explicit LoadReplyEncoder(size_t expected_pages);
  void AddPage(const LoadedPage& page) override;
  void AddMiss(const absl::Status& status) override;

  // The encoded reply so far, malloc'd (free() releases it); null when
  // empty. The encoder is empty afterwards.
  struct Encoded {
    Buffer data;
    size_t size = 0;
  };
  Encoded Release();

 private:
  // Makes room for `n` more bytes; returns where they go.
  uint8_t* Append(size_t n);

  Buffer buffer_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// PagesReply{load = <an encoded LoadResponse of `encoded_size` bytes>} is
// these bytes (the field's tag and length) followed by the encoded ones as
// they are. Writes them to `header` and returns how many.
inline constexpr size_t kMaxPagesReplyLoadHeader = 1 + 5;  // a tag byte, a varint32
size_t PagesReplyLoadHeader(size_t encoded_size, uint8_t header[kMaxPagesReplyLoadHeader]);

}  // namespace ramster

#endif  // RAMSTER_SERVER_LOAD_REPLY_H_
