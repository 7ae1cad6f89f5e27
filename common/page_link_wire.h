// The page link's framing (server/page_link.h, proto/README.md "Page
// link"): every frame is a 4-byte big-endian length and that many bytes of
// a message. What the server, the client and the bench share.
#ifndef RAMSTER_COMMON_PAGE_LINK_WIRE_H_
#define RAMSTER_COMMON_PAGE_LINK_WIRE_H_

#include <google/protobuf/message_lite.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace ramster {

// The longest frame either side sends or accepts: the gRPC message limit
// on the node's other port.
inline constexpr uint32_t kMaxPageLinkFrameBytes = 4 << 20;

// `message` as one frame, in `out` (replacing what it held).
void FrameMessage(const google::protobuf::MessageLite& message, std::string* out);

// Sends all `n` bytes, blocking (up to the socket's send timeout); never
// raises SIGPIPE. False on an error (errno says which).
bool SendAll(int fd, const void* data, size_t n);

// Reads exactly `n` bytes, blocking. False at end of stream or on an error.
bool ReadFull(int fd, void* data, size_t n);

}  // namespace ramster

#endif  // RAMSTER_COMMON_PAGE_LINK_WIRE_H_
