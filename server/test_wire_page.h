// WirePage: a page as a client puts it on the wire (encoded with the page
// codec, its checksum, length and generation set), for the server's tests.
#ifndef RAMSTER_SERVER_TEST_WIRE_PAGE_H_
#define RAMSTER_SERVER_TEST_WIRE_PAGE_H_

#include <cstdint>
#include <vector>

#include "common/page_codec.h"
#include "gtest/gtest.h"
#include "ramster/v1/page_store.pb.h"

namespace ramster {

inline v1::Page WirePage(uint32_t pool, uint64_t index, const std::vector<uint8_t>& bytes,
                         uint64_t generation = 1) {
  EncodedPage enc;
  EXPECT_TRUE(EncodePage(bytes, &enc).ok());
  v1::Page p;
  p.mutable_key()->set_pool(pool);
  p.mutable_key()->set_index(index);
  p.set_encoding(static_cast<v1::Encoding>(enc.encoding));
  p.set_payload(enc.payload, enc.length);
  p.set_uncompressed_length(kPageSize);
  p.set_checksum(enc.checksum);
  p.set_generation(generation);
  return p;
}

}  // namespace ramster

#endif  // RAMSTER_SERVER_TEST_WIRE_PAGE_H_
