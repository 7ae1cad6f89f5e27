#include "server/page_link.h"

#include <google/protobuf/arena.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/client_identity.h"
#include "common/page_link_wire.h"
#include "common/socket_io.h"
#include "common/store_wire.h"
#include "common/thread_name.h"
#include "server/load_reply.h"

namespace ramster {
namespace {

// A reply that cannot be sent within this long (the client stopped
// reading) ends the connection.
constexpr int kSendTimeoutSeconds = 10;
// A client that vanished without closing (its host died) is noticed by TCP
// keepalive: probes after this long idle, every interval, this many.
constexpr int kKeepaliveIdleSeconds = 60;
constexpr int kKeepaliveIntervalSeconds = 10;
constexpr int kKeepaliveProbes = 3;
// A connection keeps its request buffer up to this size (a shim's largest
// store, 64 pages, is ~270 KiB), so that its requests do not reallocate it
// each time; a larger one is given back after its request. (Given back
// above 64 KiB, the first fill of server_bench grew the server's RSS by
// 4-6 B more per page: the buffer was reallocated by every store.)
constexpr size_t kKeptBufferBytes = 512 << 10;

// Writes one frame: the length of `a` and `b` together, then both.
bool WriteFrame(int fd, const void* a, size_t a_size, const void* b, size_t b_size) {
  const uint32_t length = htonl(static_cast<uint32_t>(a_size + b_size));
  iovec iov[3] = {{const_cast<uint32_t*>(&length), sizeof(length)},
                  {const_cast<void*>(a), a_size},
                  {const_cast<void*>(b), b_size}};
  return SendAll(fd, iov, b_size > 0 ? 3 : 2);
}

bool WriteMessage(int fd, const google::protobuf::MessageLite& message, std::string* scratch) {
  FrameMessage(message, scratch);
  return SendAll(fd, scratch->data(), scratch->size());
}

// A reply that says why a request failed as a whole.
bool WriteStatus(int fd, const absl::Status& status, std::string* scratch) {
  v1::PagesReply reply;
  reply.set_code(static_cast<int32_t>(status.code()));
  reply.set_message(std::string(status.message()));
  return WriteMessage(fd, reply, scratch);
}

// Reads one frame's length. False at end of stream; an over-long frame is
// `*too_long` (and false).
bool ReadLength(int fd, uint32_t* length, bool* too_long) {
  uint32_t wire = 0;
  if (!ReadFull(fd, &wire, sizeof(wire))) return false;
  *length = ntohl(wire);
  *too_long = *length > kMaxPageLinkFrameBytes;
  return !*too_long;
}

absl::Status ReadHello(int fd, std::string* caller, std::string* buffer) {
  uint32_t length = 0;
  bool too_long = false;
  if (!ReadLength(fd, &length, &too_long)) {
    return too_long ? absl::InvalidArgumentError("hello frame too long")
                    : absl::CancelledError("closed before its hello");
  }
  buffer->resize(length);
  if (!ReadFull(fd, buffer->data(), length)) return absl::CancelledError("closed in its hello");
  v1::PageLinkHello hello;
  if (!hello.ParseFromString(*buffer)) {
    return absl::InvalidArgumentError("the first frame is not a PageLinkHello");
  }
  if (hello.client_id().empty()) {
    return absl::UnauthenticatedError("no client identity in the hello");
  }
  if (!IsValidClientId(hello.client_id())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "client identity must be 1..", kMaxClientIdLength, " characters of [A-Za-z0-9._:@-]"));
  }
  *caller = hello.client_id();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PageLink>> PageLink::Start(Node* node, const std::string& host,
                                                          int port, int max_connections) {
  if (port < 0 || port > 65535) return absl::InvalidArgumentError("page link port out of range");
  if (max_connections < 1) return absl::InvalidArgumentError("max_connections must be positive");
  std::string name = host;
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(name.empty() ? nullptr : name.c_str(), service.c_str(), &hints, &found);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page link address ", host, ": ", gai_strerror(rc)));
  }
  int fd = -1;
  int error = 0;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = errno;
      continue;
    }
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0) {
      error = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("page link cannot listen on ", host, ":", port, ": ", strerror(error)));
  }
  sockaddr_storage bound{};
  socklen_t bound_size = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_size);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  std::unique_ptr<PageLink> link(new PageLink(node, fd, bound_port, max_connections));
  link->acceptor_ = std::thread([l = link.get()] { l->AcceptLoop(); });
  return link;
}

PageLink::PageLink(Node* node, int listen_fd, int port, int max_connections)
    : node_(node), listen_fd_(listen_fd), port_(port), max_connections_(max_connections) {}

PageLink::~PageLink() {
  Shutdown();
  close(listen_fd_);
}

int PageLink::connections() const {
  MutexLock lock(&mu_);
  int open = 0;
  for (const auto& c : connections_) open += c->done.load() ? 0 : 1;
  return open;
}

void PageLink::Shutdown() {
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    // Wakes the acceptor and every connection's blocked read; the fds stay
    // open (and so are not reused) until their threads are joined.
    shutdown(listen_fd_, SHUT_RDWR);
    for (const auto& c : connections_) shutdown(c->fd, SHUT_RDWR);
  }
  acceptor_.join();
  MutexLock lock(&mu_);
  for (auto& c : connections_) {
    c->thread.join();
    close(c->fd);
  }
  connections_.clear();
}

void PageLink::ReapLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->done.load()) {
      (*it)->thread.join();
      close((*it)->fd);
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void PageLink::AcceptLoop() {
  NameThisThread("link-accept");
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    MutexLock lock(&mu_);
    if (stopping_) {
      if (fd >= 0) close(fd);
      return;
    }
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors or memory: give the connections time to end.
        mu_.Unlock();
        usleep(10000);
        mu_.Lock();
      }
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepaliveIdleSeconds, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepaliveIntervalSeconds, sizeof(int));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepaliveProbes, sizeof(int));
    timeval send_timeout{kSendTimeoutSeconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));
    ReapLocked();
    if (static_cast<int>(connections_.size()) >= max_connections_) {
      // Closed unanswered: the client sends its request on gRPC instead.
      node_->CountRejected();
      close(fd);
      continue;
    }
    auto conn = std::make_unique<Connection>();
    conn->fd = fd;
    Connection* c = conn.get();
    connections_.push_back(std::move(conn));
    c->thread = std::thread([this, c] {
      Serve(c);
      // The client sees the end now; the fd is closed (and its number
      // reused) only once the thread is joined.
      shutdown(c->fd, SHUT_RDWR);
      c->done.store(true);
    });
  }
}

void PageLink::Serve(Connection* conn) {
  NameThisThread("link");
  const int fd = conn->fd;
  std::string hello_buffer;
  std::string scratch;  // the reply being written
  std::string caller;
  if (absl::Status hello = ReadHello(fd, &caller, &hello_buffer); !hello.ok()) {
    if (hello.code() != absl::StatusCode::kCancelled) {
      node_->CountRejected();
      WriteStatus(fd, hello, &scratch);
    }
    return;
  }
  // The request being read: grown when a request needs more, never filled
  // with zeros first (each request is read into it whole before use).
  std::unique_ptr<uint8_t[]> buffer;
  size_t capacity = 0;
  // A store request read in place (common/store_wire.h), and its results.
  std::vector<StorePageFields> pages;
  std::vector<absl::Status> results;
  pages.reserve(kMaxPagesPerBatch);
  // Each request parsed as a message, and its store reply, live on the
  // arena, reset for the next.
  alignas(16) char arena_block[1024];
  google::protobuf::Arena arena(arena_block, sizeof(arena_block));
  for (;;) {
    uint32_t length = 0;
    bool too_long = false;
    if (!ReadLength(fd, &length, &too_long)) {
      if (too_long) {
        node_->CountRejected();
        WriteStatus(fd,
                    absl::InvalidArgumentError(absl::StrCat(
                        "frame of ", length, " bytes; at most ", kMaxPageLinkFrameBytes)),
                    &scratch);
      }
      return;
    }
    if (length > capacity) {
      capacity = std::max<size_t>(length, 64 << 10);
      buffer.reset(new uint8_t[capacity]);
    }
    if (!ReadFull(fd, buffer.get(), length)) return;
    absl::Status status;
    bool sent = false;
    uint64_t boot_epoch = 0;
    if (ParseStoreRequest(absl::MakeConstSpan(buffer.get(), length), kMaxPagesPerBatch,
                          &boot_epoch, &pages)) {
      results.resize(pages.size());
      status = node_->Store(caller, boot_epoch, pages, absl::MakeSpan(results));
      if (status.ok()) {
        FrameStoreReply(results, &scratch);
        if (!SendAll(fd, scratch.data(), scratch.size())) return;
        sent = true;
      }
    } else {
      arena.Reset();
      auto* request = google::protobuf::Arena::CreateMessage<v1::PagesRequest>(&arena);
      if (!request->ParseFromArray(buffer.get(), static_cast<int>(length))) {
        node_->CountRejected();
        status = absl::InvalidArgumentError("request does not parse as a PagesRequest");
      } else if (request->op_case() == v1::PagesRequest::kStore) {
        auto* reply = google::protobuf::Arena::CreateMessage<v1::PagesReply>(&arena);
        status = node_->Store(caller, request->store(), reply->mutable_store());
        if (status.ok()) {
          if (!WriteMessage(fd, *reply, &scratch)) return;
          sent = true;
        }
      } else if (request->op_case() == v1::PagesRequest::kLoad) {
        LoadReplyEncoder encoder(request->load().keys_size());
        status = node_->Load(caller, request->load(), &encoder);
        if (status.ok()) {
          LoadReplyEncoder::Encoded encoded = encoder.Release();
          uint8_t header[kMaxPagesReplyLoadHeader];
          if (!WriteFrame(fd, header, PagesReplyLoadHeader(encoded.size, header),
                          encoded.data.get(), encoded.size)) {
            return;
          }
          sent = true;
        }
      } else {
        node_->CountRejected();
        status = absl::InvalidArgumentError("request has neither store nor load");
      }
    }
    if (!sent && !WriteStatus(fd, status, &scratch)) return;
    if (capacity > kKeptBufferBytes) {
      buffer.reset();
      capacity = 0;
    }
    if (scratch.capacity() > kKeptBufferBytes) std::string().swap(scratch);
  }
}

}  // namespace ramster
