#include "common/page_link_wire.h"

#include <arpa/inet.h>
#include <cstring>

namespace ramster {

void FrameMessage(const google::protobuf::MessageLite& message, std::string* out) {
  out->assign(sizeof(uint32_t), '\0');
  message.AppendToString(out);
  const uint32_t length = htonl(static_cast<uint32_t>(out->size() - sizeof(uint32_t)));
  std::memcpy(out->data(), &length, sizeof(length));
}

}  // namespace ramster
