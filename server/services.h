// The gRPC face of a Node: PageStore for clients, Admin for operators, and
// the standard health check (grpc.health.v1.Health/Check), all served with
// gRPC's completion-queue (async) API.
//
// Why not the callback API: its threads take turns polling (gRPC's epoll
// engine hands the poller role to another waiting thread on every wakeup),
// so each request hopped between two or three threads, and on a small
// machine every hop is a cross-CPU wakeup that costs more than the handler.
// Here each completion queue is drained by exactly one io thread, which also
// runs the handlers that only touch memory (Node::ServesFromRam): such a
// request costs the server one wakeup. This only holds while no other
// thread polls, so nothing on this server may use the callback API (the
// default health service does; hence the health check here).
//
// Requests that may touch the disk tier, and every Admin call, go to the
// WorkQueue and are finished from a worker; their last completion comes
// back to the io thread, which frees the call. A full queue answers
// UNAVAILABLE.
//
// Each call owns its request and reply on a per-call arena, so a request of
// many pages is a few block allocations rather than several per page. Load
// replies are not built as messages at all: the node encodes its results
// straight into the buffer gRPC sends (server/load_reply.h), each payload
// copied once, from the slab.
//
// Identity: see common/client_identity.h. Admin calls need the admin token
// when the node has one (--admin-token-file).
//
// Lifetime: Register before the server is built, Start after, CloseStreams
// before grpc::Server::Shutdown, and Shutdown after it has returned: it waits for the calls still
// being answered (a call the server gave up on may still wait in the work
// queue), then shuts the queues down, drains them and joins the io threads.
// The io threads run until then: a call is freed only once its last
// completion is taken off its queue.
//
// Thread safety: Register, Start, CloseStreams and Shutdown are called by
// one thread, in that order.
#ifndef RAMSTER_SERVER_SERVICES_H_
#define RAMSTER_SERVER_SERVICES_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "ramster/v1/admin.grpc.pb.h"
#include "ramster/v1/page_store.grpc.pb.h"
#include "server/node.h"
#include "server/work_queue.h"

namespace ramster {

// The client identity of a call: kInvalidArgument/kUnauthenticated when
// absent or malformed.
absl::StatusOr<std::string> CallerIdentity(const grpc::ServerContextBase& ctx);

namespace services_internal {
struct Shared;
}  // namespace services_internal

class Services {
 public:
  // Bounds of --io-threads.
  static constexpr int kMinIoThreads = 1;
  static constexpr int kMaxIoThreads = 64;

  // `node` and `work` must outlive this object. Empty `admin_token`: Admin
  // needs no credential (trusted deployments). REQUIRES: io_threads within
  // [kMinIoThreads, kMaxIoThreads].
  Services(Node* node, WorkQueue* work, std::string admin_token, int io_threads);
  // REQUIRES: Shutdown has been called if Start was.
  ~Services();
  Services(const Services&) = delete;
  Services& operator=(const Services&) = delete;

  // Before Start: how long an io thread polls its queue before it sleeps
  // (zero, the default: it sleeps at once).
  void set_request_poll(absl::Duration poll) { request_poll_ = poll; }
  // Adds the services and one completion queue per io thread to `builder`.
  void Register(grpc::ServerBuilder* builder);
  // REQUIRES: the server built from that builder has started. Waits for the
  // first call of every method on every queue; starts the io threads.
  void Start();
  // Ends the page streams (PageStore.Pages) and refuses new ones: clients
  // keep theirs open as long as they run, so grpc::Server::Shutdown would
  // wait for them until its deadline. A request being answered loses its
  // reply; the client sees its stream fail and treats the request as failed.
  // Call before grpc::Server::Shutdown.
  void CloseStreams();
  // REQUIRES: grpc::Server::Shutdown has returned.
  void Shutdown();

 private:
  const int io_threads_;
  absl::Duration request_poll_ = absl::ZeroDuration();
  // What the calls share: the node, the work queue, the token, the
  // generated services.
  const std::unique_ptr<services_internal::Shared> shared_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs_;
  std::vector<std::thread> threads_;
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_SERVICES_H_
