// PageLink: a node's page link. PageStore's Pages method (store and load
// requests, each answered by one reply, in order) over a plain TCP
// connection instead of an HTTP/2 stream. A request then costs each side a
// read and a write system call and a protobuf parse, not gRPC's transport
// around them: bench/wire_probe puts a raw TCP round trip at about a fifth
// of a gRPC stream's CPU, and the page path of a swap-in is that round trip.
//
// The wire (proto/README.md, "Page link"): every frame is a 4-byte
// big-endian length and that many bytes. The client's first frame is a
// PageLinkHello; each frame after it is a PagesRequest, answered by one
// PagesReply frame, in order. A request that fails as a whole gets its
// status in the reply (code, message) and the link goes on. A refused hello
// or a frame longer than kMaxPageLinkFrameBytes (common/page_link_wire.h) gets a reply with its status, and the
// link is closed. A connection beyond the limit is closed unanswered (its
// client sends on a gRPC page stream instead).
//
// Identity: as on gRPC, the configured name the client sends
// (common/client_identity.h), once, in the hello. Clients learn the port from
// OpenSession (OpenSessionResponse.page_link_port) and reach it on the
// address they reach the node's gRPC port on.
//
// Threads: one per connection, blocking on its socket; a request that needs
// the disk tier is answered on its connection's thread.
//
// Thread safety: all methods may be called from any thread.
#ifndef RAMSTER_SERVER_PAGE_LINK_H_
#define RAMSTER_SERVER_PAGE_LINK_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "server/node.h"

namespace ramster {

class PageLink {
 public:
  // Listens on `host` (a name or a numeric address, IPv6 with or without
  // brackets; empty: every address) and `port` (0: one the kernel picks).
  static absl::StatusOr<std::unique_ptr<PageLink>> Start(Node* node, const std::string& host,
                                                         int port, int max_connections);
  // Shuts down.
  ~PageLink();
  PageLink(const PageLink&) = delete;
  PageLink& operator=(const PageLink&) = delete;

  int port() const { return port_; }
  // Connections open now.
  int connections() const;
  // Stops accepting and ends every connection (a request being answered
  // is answered first); returns once their threads are gone.
  void Shutdown();

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  PageLink(Node* node, int listen_fd, int port, int max_connections);
  void AcceptLoop();
  void Serve(Connection* conn);
  // Joins and closes the connections whose threads have ended.
  void ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Node* const node_;
  const int listen_fd_;
  const int port_;
  const int max_connections_;
  std::thread acceptor_;
  mutable Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_PAGE_LINK_H_
