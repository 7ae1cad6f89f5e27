// The page link's framing (server/page_link.h, proto/README.md "Page
// link"): every frame is a 4-byte big-endian length and that many bytes of
// a message. What the server, the client and the bench share; frames go out
// and come in with common/socket_io.h.
#ifndef RAMSTER_COMMON_PAGE_LINK_WIRE_H_
#define RAMSTER_COMMON_PAGE_LINK_WIRE_H_

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <string>

#include "common/socket_io.h"

namespace ramster {

// The longest frame either side sends or accepts: the gRPC message limit
// on the node's other port.
inline constexpr uint32_t kMaxPageLinkFrameBytes = 4 << 20;

// `message` as one frame, in `out` (replacing what it held).
void FrameMessage(const google::protobuf::MessageLite& message, std::string* out);

}  // namespace ramster

#endif  // RAMSTER_COMMON_PAGE_LINK_WIRE_H_
