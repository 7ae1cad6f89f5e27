#include "kernel-shim/nbd_test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ramster {

using nbd::Request;

absl::StatusOr<std::unique_ptr<NbdTestClient>> NbdTestClient::ConnectUnix(
    const std::string& path) {
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError("path too long");
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(strerror(errno));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::string err = strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", path, ": ", err));
  }
  return std::make_unique<NbdTestClient>(fd);
}

absl::StatusOr<std::unique_ptr<NbdTestClient>> NbdTestClient::ConnectTcp(const std::string& host,
                                                                         int port) {
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 address: ", host));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(strerror(errno));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::string err = strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": ", err));
  }
  return std::make_unique<NbdTestClient>(fd);
}

NbdTestClient::NbdTestClient(int fd) : fd_(fd) {
  timeval tv = {10, 0};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

NbdTestClient::~NbdTestClient() { close(fd_); }

absl::Status NbdTestClient::SendBytes(absl::Span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status NbdTestClient::RecvBytes(void* out, size_t n) {
  auto* p = static_cast<uint8_t*>(out);
  while (n > 0) {
    ssize_t r = recv(fd_, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return absl::UnavailableError("recv: the server closed the connection");
    if (r < 0) return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
    p += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

bool NbdTestClient::ServerClosed(absl::Duration timeout) {
  pollfd p = {fd_, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <= 0) return false;
  uint8_t byte;
  ssize_t r = recv(fd_, &byte, 1, MSG_DONTWAIT);
  return r == 0 || (r < 0 && errno == ECONNRESET);
}

absl::Status NbdTestClient::Greet(bool no_zeroes) {
  uint8_t greeting[nbd::kGreetingBytes];
  if (absl::Status s = RecvBytes(greeting, sizeof(greeting)); !s.ok()) return s;
  nbd::WireReader r(greeting);
  uint64_t passwd, magic;
  r.U64(&passwd);
  r.U64(&magic);
  r.U16(&handshake_flags_);
  if (passwd != nbd::kInitPasswd || magic != nbd::kOptsMagic) {
    return absl::DataLossError("bad greeting");
  }
  uint32_t flags = nbd::kClientFlagFixedNewstyle | (no_zeroes ? nbd::kClientFlagNoZeroes : 0);
  uint8_t flag_bytes[4];
  nbd::PutU32(flag_bytes, flags);
  return SendBytes(flag_bytes);
}

absl::Status NbdTestClient::SendOption(uint32_t option, absl::Span<const uint8_t> data) {
  auto header = nbd::EncodeOptionHeader(option, static_cast<uint32_t>(data.size()));
  if (absl::Status s = SendBytes(header); !s.ok()) return s;
  return SendBytes(data);
}

absl::StatusOr<nbd::OptionReplyHeader> NbdTestClient::RecvOptionReply(std::vector<uint8_t>* data) {
  uint8_t bytes[nbd::kOptionReplyHeaderBytes];
  if (absl::Status s = RecvBytes(bytes, sizeof(bytes)); !s.ok()) return s;
  absl::StatusOr<nbd::OptionReplyHeader> h = nbd::DecodeOptionReplyHeader(bytes);
  if (!h.ok()) return h.status();
  if (h->length > (1 << 20)) return absl::DataLossError("option reply longer than 1 MiB");
  data->resize(h->length);
  if (absl::Status s = RecvBytes(data->data(), data->size()); !s.ok()) return s;
  return h;
}

absl::Status NbdTestClient::Handshake(absl::string_view name, bool use_go, bool no_zeroes) {
  if (absl::Status s = Greet(no_zeroes); !s.ok()) return s;
  if (!use_go) {
    auto n = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(name.data()), name.size());
    if (absl::Status s = SendOption(nbd::kOptExportName, n); !s.ok()) return s;
    uint8_t reply[nbd::kExportNameReplyBytes + nbd::kExportNameZeroes];
    size_t len = no_zeroes ? nbd::kExportNameReplyBytes : sizeof(reply);
    if (absl::Status s = RecvBytes(reply, len); !s.ok()) return s;
    nbd::WireReader r(reply);
    r.U64(&export_size_);
    r.U16(&transmission_flags_);
    return absl::OkStatus();
  }
  const uint16_t requests[] = {nbd::kInfoBlockSize};
  if (absl::Status s = SendOption(nbd::kOptGo, nbd::EncodeInfoRequest(name, requests)); !s.ok()) {
    return s;
  }
  for (;;) {
    std::vector<uint8_t> data;
    absl::StatusOr<nbd::OptionReplyHeader> h = RecvOptionReply(&data);
    if (!h.ok()) return h.status();
    if (h->option != nbd::kOptGo) return absl::DataLossError("reply to another option");
    if (h->type == nbd::kRepAck) return absl::OkStatus();
    if (h->type & nbd::kRepFlagError) {
      return absl::FailedPreconditionError(
          absl::StrCat("NBD_OPT_GO refused (", h->type & ~nbd::kRepFlagError, "): ",
                       std::string(data.begin(), data.end())));
    }
    nbd::WireReader r(data);
    uint16_t type;
    if (h->type == nbd::kRepInfo && r.U16(&type) && type == nbd::kInfoExport) {
      if (!r.U64(&export_size_) || !r.U16(&transmission_flags_)) {
        return absl::DataLossError("short NBD_INFO_EXPORT");
      }
    }
  }
}

absl::Status NbdTestClient::SendRequest(const Request& request,
                                        absl::Span<const uint8_t> payload) {
  if (absl::Status s = SendBytes(nbd::EncodeRequest(request)); !s.ok()) return s;
  return SendBytes(payload);
}

absl::StatusOr<nbd::SimpleReply> NbdTestClient::RecvReply() {
  uint8_t bytes[nbd::kSimpleReplyBytes];
  if (absl::Status s = RecvBytes(bytes, sizeof(bytes)); !s.ok()) return s;
  return nbd::DecodeSimpleReply(bytes);
}

namespace {
Request MakeRequest(uint16_t type, uint16_t flags, uint64_t handle, uint64_t offset,
                    uint32_t length) {
  Request q;
  q.magic = nbd::kRequestMagic;
  q.flags = flags;
  q.type = type;
  q.handle = handle;
  q.offset = offset;
  q.length = length;
  return q;
}
}  // namespace

absl::StatusOr<uint32_t> NbdTestClient::Write(uint64_t offset, absl::Span<const uint8_t> data,
                                              uint16_t flags) {
  const uint64_t handle = next_handle_++;
  Request q = MakeRequest(nbd::kCmdWrite, flags, handle, offset, static_cast<uint32_t>(data.size()));
  if (absl::Status s = SendRequest(q, data); !s.ok()) return s;
  absl::StatusOr<nbd::SimpleReply> reply = RecvReply();
  if (!reply.ok()) return reply.status();
  if (reply->handle != handle) return absl::DataLossError("reply for another handle");
  return reply->error;
}

absl::StatusOr<uint32_t> NbdTestClient::Read(uint64_t offset, uint32_t length,
                                             std::vector<uint8_t>* out, uint16_t flags) {
  const uint64_t handle = next_handle_++;
  if (absl::Status s = SendRequest(MakeRequest(nbd::kCmdRead, flags, handle, offset, length));
      !s.ok()) {
    return s;
  }
  absl::StatusOr<nbd::SimpleReply> reply = RecvReply();
  if (!reply.ok()) return reply.status();
  if (reply->handle != handle) return absl::DataLossError("reply for another handle");
  out->clear();
  if (reply->error == 0) {
    out->resize(length);
    if (absl::Status s = RecvBytes(out->data(), length); !s.ok()) return s;
  }
  return reply->error;
}

absl::StatusOr<uint32_t> NbdTestClient::Command(uint16_t type, uint64_t offset, uint32_t length,
                                                uint16_t flags) {
  const uint64_t handle = next_handle_++;
  if (absl::Status s = SendRequest(MakeRequest(type, flags, handle, offset, length)); !s.ok()) {
    return s;
  }
  absl::StatusOr<nbd::SimpleReply> reply = RecvReply();
  if (!reply.ok()) return reply.status();
  if (reply->handle != handle) return absl::DataLossError("reply for another handle");
  return reply->error;
}

std::vector<uint8_t> NbdClientPreamble(absl::string_view name) {
  const uint16_t requests[] = {nbd::kInfoBlockSize};
  std::vector<uint8_t> data = nbd::EncodeInfoRequest(name, requests);
  auto header = nbd::EncodeOptionHeader(nbd::kOptGo, static_cast<uint32_t>(data.size()));
  std::vector<uint8_t> out(4 + header.size() + data.size());
  nbd::PutU32(out.data(), nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes);
  std::memcpy(out.data() + 4, header.data(), header.size());
  std::memcpy(out.data() + 4 + header.size(), data.data(), data.size());
  return out;
}

std::vector<uint8_t> NbdRequestBytes(uint16_t type, uint16_t flags, uint64_t handle,
                                     uint64_t offset, uint32_t length,
                                     absl::Span<const uint8_t> payload) {
  auto header = nbd::EncodeRequest(MakeRequest(type, flags, handle, offset, length));
  std::vector<uint8_t> out(header.size() + payload.size());
  std::memcpy(out.data(), header.data(), header.size());
  if (!payload.empty()) std::memcpy(out.data() + header.size(), payload.data(), payload.size());
  return out;
}

}  // namespace ramster
