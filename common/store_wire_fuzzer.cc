// Fuzz target for the page link's in-place store request reader
// (common/store_wire.h): whatever bytes arrive, ParseStoreRequest either
// declines them or gives pages whose payloads lie within them, and what it
// gives, written again with FrameStoreRequest, reads back the same. It never
// reads out of bounds (checked by the sanitizers the fuzzer is built with).
// That it agrees with protobuf's parser is store_wire_test.cc's part.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/store_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The message in a buffer of its own size, so that any over-read is caught.
  const std::vector<uint8_t> message(data, data + size);
  uint64_t epoch = 0;
  std::vector<ramster::StorePageFields> pages;
  if (!ramster::ParseStoreRequest(message, 256, &epoch, &pages)) return 0;
  if (pages.size() > 256) __builtin_trap();
  for (const ramster::StorePageFields& f : pages) {
    if (!f.payload.empty() && (f.payload.data() < message.data() ||
                               f.payload.data() + f.payload.size() >
                                   message.data() + message.size())) {
      __builtin_trap();
    }
  }
  std::string frame;
  ramster::FrameStoreRequest(epoch, pages, &frame);
  const std::vector<uint8_t> again(frame.begin() + 4, frame.end());
  uint64_t epoch2 = 0;
  std::vector<ramster::StorePageFields> pages2;
  if (!ramster::ParseStoreRequest(again, 256, &epoch2, &pages2) || epoch2 != epoch ||
      pages2.size() != pages.size()) {
    __builtin_trap();
  }
  for (size_t i = 0; i < pages.size(); ++i) {
    const ramster::StorePageFields& a = pages[i];
    const ramster::StorePageFields& b = pages2[i];
    if (a.pool != b.pool || a.object != b.object || a.index != b.index ||
        a.encoding != b.encoding || a.payload != b.payload ||
        a.uncompressed_length != b.uncompressed_length || a.checksum != b.checksum ||
        a.generation != b.generation) {
      __builtin_trap();
    }
  }
  return 0;
}
