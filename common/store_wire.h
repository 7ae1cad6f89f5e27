// A page link's store request and its reply (proto/ramster/v1/
// page_store.proto: PagesRequest{store} and PagesReply{store}) written and
// read in protobuf's wire format directly, without message objects.
//
// Why: built as messages, every page of a store costs the client a heap
// Page, a heap string for its payload and a copy of the payload into it,
// then a serialization pass; and the server, parsing it, the same again.
// On fio QD32 randwrite with 2 replicas that was ~14% of the shim's CPU
// (malloc and free alone) and ~12% of the servers'. Here the client writes
// each payload once, into the frame it sends, and the server reads the
// payloads where they lie in the frame it received.
//
// The bytes written are exactly what protobuf's serializer gives for the
// same message (store_wire_test.cc checks), so either side may use
// messages instead. ParseStoreRequest takes only what such a serializer
// writes (every field at most once, known fields only, shortest varints
// not required); for anything else it returns false, and the caller parses
// the message with protobuf, which decides. So the fields it gives are
// always those protobuf would give.
//
// Thread safety: plain functions on the caller's buffers.
#ifndef RAMSTER_COMMON_STORE_WIRE_H_
#define RAMSTER_COMMON_STORE_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace ramster {

// One page of a StoreRequest: a v1::Page's fields, its payload a view.
struct StorePageFields {
  uint32_t pool = 0;
  uint64_t object = 0;
  uint64_t index = 0;
  int32_t encoding = 0;  // a v1::Encoding value, or any other from the wire
  absl::Span<const uint8_t> payload;
  uint32_t uncompressed_length = 0;
  uint64_t checksum = 0;
  uint64_t generation = 0;
};

// A page link frame (4-byte big-endian length, then the message) of
// PagesRequest{store: StoreRequest{boot_epoch, pages}}, in `out`
// (replacing what it held; its capacity is kept).
void FrameStoreRequest(uint64_t boot_epoch, absl::Span<const StorePageFields> pages,
                       std::string* out);

// Reads a PagesRequest message (a frame's body) that is a StoreRequest as
// a protobuf serializer writes it: sets `*boot_epoch` and `*pages` (their
// payloads point into `message`). False, with `*pages` unspecified, when
// the message is anything else or has more than `max_pages` pages.
bool ParseStoreRequest(absl::Span<const uint8_t> message, size_t max_pages,
                       uint64_t* boot_epoch, std::vector<StorePageFields>* pages);

// A page link frame of PagesReply{store: StoreResponse{results}}, one
// PageStatus per result (its code, and its message unless OK), in `out`.
void FrameStoreReply(absl::Span<const absl::Status> results, std::string* out);

}  // namespace ramster

#endif  // RAMSTER_COMMON_STORE_WIRE_H_
