#include "common/page_link_wire.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ramster {

void FrameMessage(const google::protobuf::MessageLite& message, std::string* out) {
  out->assign(sizeof(uint32_t), '\0');
  message.AppendToString(out);
  const uint32_t length = htonl(static_cast<uint32_t>(out->size() - sizeof(uint32_t)));
  std::memcpy(out->data(), &length, sizeof(length));
}

bool SendAll(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return false;
    p += sent;
    n -= static_cast<size_t>(sent);
  }
  return true;
}

bool ReadFull(int fd, void* data, size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

}  // namespace ramster
