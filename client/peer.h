// Peer: one remote ramster-server as the cluster tier sees it. Owns the gRPC
// channel, the session (boot epoch, pool), the peer's health, the calls
// that store and load pages, and a queue for background invalidations.
//
// Two ways to store. Queued (EnqueueStores): a sender thread takes up to
// max_batch_pages at a time, sends one Store with a deadline, and completes
// each caller. Direct (StartStore/FinishStore): the caller sends its pages
// itself, as one store request per max_batch_pages on its own page stream
// (below), without the two thread switches of the queue; the cluster tier
// stores this way, one request per peer for a whole batch, to all its
// peers at once. Both share one bound in bytes
// (max_queued_bytes, pages queued or sent and not yet answered): past it
// (a slow peer) a store is refused at once, so a slow peer never stalls
// stores meant for others. Loads are direct too (LoadMany, StartLoad).
// Invalidations are queued and sent in the background.
//
// Page calls go on the peer's page link (server/page_link.h: the same
// requests and replies on a plain TCP connection) when its session offers
// one and a health check could reach it; else, and whenever a new link
// fails before it answers, on page streams (gRPC).
//
// Thread safety: all public methods may be called concurrently.
#ifndef RAMSTER_CLIENT_PEER_H_
#define RAMSTER_CLIENT_PEER_H_

#include <google/protobuf/arena.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/tier.h"
#include "common/mutex.h"
#include "ramster/v1/page_store.grpc.pb.h"

namespace ramster {

struct PeerOptions {
  std::string client_id;  // sent as the call's identity
  uint64_t boot_epoch = 0;
  uint32_t pool = 0;
  v1::PoolKind pool_kind = v1::POOL_KIND_PERSISTENT;
  absl::Duration call_timeout = absl::Seconds(2);
  int max_batch_pages = 64;
  size_t max_queued_bytes = 4 << 20;
  // Consecutive failed calls that mark a peer down.
  int failures_to_down = 2;
  // A thread waiting for a Load reply polls for it this long before it
  // sleeps (common/busy_poll.h); zero: it sleeps at once.
  absl::Duration reply_poll = absl::ZeroDuration();
  // Send page calls on the peer's page link when it offers one.
  bool page_link = true;
};

// Direct calls (Peer::StartStore, Peer::StartLoad) are requests on page
// streams (PageStore.Pages): long-lived calls, one request answered at a
// time on each, which save the setup, headers and deadline timer a unary
// call costs on both sides. Each thread has its own streams to each peer,
// bound to that thread's completion queue, made when first needed and kept
// while they work (one per request the thread has in flight to that peer).
// The thread that starts a call takes its completions (AwaitCalls) before
// it returns from the operation that started it, so its queue is empty
// between operations.
class PageStream;
class PageLinkConnection;
class Peer;

// A request on one of this thread's page streams: what StoreCall and
// LoadCall share.
struct PageCall {
  Peer* peer = nullptr;
  std::unique_ptr<PageStream> stream;  // this thread's, while the call is open
  // Or this thread's page link to the peer: the call's request is sent on
  // it, and its reply read from it.
  std::unique_ptr<PageLinkConnection> link;
  absl::Time deadline;
  int pending = 0;         // completions still to come
  bool failed = false;     // a stream operation failed: the stream is done
  bool finishing = false;  // the stream's status is on its way
  bool timed_out = false;  // cancelled at its deadline
  // Made for this call; else taken idle, and then (once) sent again on a
  // new stream should it fail: an idle stream may have died unnoticed (the
  // peer restarted), and both requests may safely be repeated. The same for
  // a link; a new link that fails sends the call again on a page stream.
  bool fresh_stream = false;
  bool retried = false;
  grpc::Status status;  // the stream's, once failed
  v1::PagesReply* reply = nullptr;
  PageCall();
  virtual ~PageCall();
  // The call's request as one page link frame, in `out`; and as a message,
  // for a page stream.
  virtual void FrameRequest(std::string* out) = 0;
  virtual const v1::PagesRequest& Request() = 0;
  PageCall(const PageCall&) = delete;
  PageCall& operator=(const PageCall&) = delete;
};

// Takes the completions of every call this thread has started and not yet
// awaited, polling for each up to `poll` first (common/busy_poll.h);
// calls `finish` with each call as it completes. A call still open at its
// deadline is cancelled (its stream is dropped), so this returns in time.
void AwaitCalls(absl::Duration poll, absl::FunctionRef<void(PageCall*)> finish);

class Peer {
 public:
  Peer(int id, std::string address, PeerOptions options);
  // Stops the sender thread; queued stores fail with kUnavailable.
  ~Peer();
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;

  int id() const { return id_; }
  const std::string& address() const { return address_; }
  // Empty until the first session opens.
  std::string node_id() const;

  // Usable for new pages: up, in session, not draining, not known full.
  bool eligible() const {
    return up_.load() && session_.load() && !draining_.load() && !full_.load();
  }
  bool up() const { return up_.load(); }
  bool draining() const { return draining_.load(); }

  // Opens (or resumes) the session; then heartbeats. Updates health.
  void CheckHealth();

  // A store in flight: the caller keeps it alive until Wait returns.
  struct PendingStore {
    PageKey key;
    const EncodedPage* page = nullptr;
    uint32_t generation = 0;
    absl::Status result;
    bool done = false;
  };
  // Completion shared by the stores of one page to several peers.
  class Completion {
   public:
    explicit Completion(int expected) : remaining_(expected) {}
    void Done() {
      MutexLock lock(&mu_);
      if (--remaining_ == 0) cv_.SignalAll();
    }
    // Every store finishes within a bounded time: each RPC has a deadline,
    // and a peer that goes down fails its whole queue at once.
    void Wait() {
      MutexLock lock(&mu_);
      while (remaining_ > 0) cv_.Wait();
    }

   private:
    Mutex mu_;
    CondVar cv_{&mu_};
    int remaining_ ABSL_GUARDED_BY(mu_);
  };

  // Queues a store; `done->Done()` is called when it finishes (also on
  // refusal). Returns false (and calls nothing) when the queue is full or the
  // peer is down or stopping. `store` and `done` must live until then.
  bool EnqueueStore(PendingStore* store, Completion* done);
  // Queues several at once, so that the sender sees them together and sends
  // them in one request. Returns how many were queued (a prefix of
  // `stores`); the rest were refused as EnqueueStore refuses.
  size_t EnqueueStores(absl::Span<PendingStore* const> stores, Completion* done);

  // A direct Store call: StartStore sends one request with a prefix of
  // `stores` (at most max_batch_pages, as many as the byte bound allows)
  // on one of this thread's streams to the peer and returns how many it
  // took; when that is 0 nothing was sent and no completion comes.
  // Otherwise AwaitCalls completes the call (within the call timeout), and
  // FinishStore then sets each store's result. The caller keeps `call` and
  // the stores alive from StartStore until after FinishStore.
  //
  // On a page link the request's frame is written straight from `stores`
  // (common/store_wire.h): no message, no copy of a payload but the one
  // into the frame. The message is built only if a page stream carries it.
  static constexpr size_t kStoreReplyArenaBlockBytes = 8 << 10;  // ~160 results
  struct StoreCall : PageCall {
    absl::Span<PendingStore* const> stores;
    size_t bytes = 0;  // counted against max_queued_bytes until FinishStore
    uint64_t boot_epoch = 0;
    v1::PagesRequest request;  // empty until Request()
    alignas(16) char arena_block[kStoreReplyArenaBlockBytes];
    google::protobuf::Arena arena{arena_block, sizeof(arena_block)};
    StoreCall() { reply = google::protobuf::Arena::CreateMessage<v1::PagesReply>(&arena); }
    void FrameRequest(std::string* out) override;
    const v1::PagesRequest& Request() override;
  };
  size_t StartStore(StoreCall* call, absl::Span<PendingStore* const> stores);
  void FinishStore(StoreCall* call);

  // Loads one page synchronously (with the call deadline). Verifies the
  // reply: the generation and checksum must be the ones expected, and the
  // payload must decode to a page with that checksum.
  absl::Status Load(const PageKey& key, uint32_t generation, uint64_t checksum,
                    absl::Span<uint8_t> out);

  // Loads several pages (one request per 256), verifying each as Load
  // does; sets each item's status.
  void LoadMany(absl::Span<LoadItem* const> items);

  // LoadMany split in two, so that one thread can have requests to several
  // peers in flight at once (ClusterTier::LoadBatch): StartLoad sends one
  // request for `items` (at most kMaxLoadKeys) on one of this thread's
  // streams to the peer and returns; AwaitCalls completes the call (within
  // the call timeout); FinishLoad then verifies each page and sets its
  // status. The caller keeps `call` and `items` alive from StartLoad until
  // after FinishLoad.
  static constexpr size_t kMaxLoadKeys = 256;
  // A Load reply's messages live on an arena whose first block is this big
  // (room for those of ~128 pages): a reply costs a heap allocation per
  // payload, not five more per page for the messages around it.
  static constexpr size_t kReplyArenaBlockBytes = 32 << 10;
  struct LoadCall : PageCall {
    absl::Span<LoadItem* const> items;
    v1::PagesRequest request;
    alignas(16) char arena_block[kReplyArenaBlockBytes];
    google::protobuf::Arena arena{arena_block, sizeof(arena_block)};
    LoadCall() { reply = google::protobuf::Arena::CreateMessage<v1::PagesReply>(&arena); }
    void FrameRequest(std::string* out) override;
    const v1::PagesRequest& Request() override { return request; }
  };
  void StartLoad(LoadCall* call, absl::Span<LoadItem* const> items);
  void FinishLoad(LoadCall* call);

  // Queues a background invalidation of the copy with generation at most
  // `generation`.
  void EnqueueInvalidate(const PageKey& key, uint32_t generation);
  // Sends an object or pool invalidation now (best effort).
  void InvalidateObject(uint32_t pool, uint64_t object);
  void InvalidatePool(uint32_t pool);

  // Counters for status and tests.
  uint64_t stores_sent() const { return stores_sent_.load(); }
  uint64_t store_batches() const { return store_batches_.load(); }
  uint64_t invalidates_sent() const { return invalidates_sent_.load(); }
  uint64_t stream_retries() const { return stream_retries_.load(); }
  // Page calls sent on the page link; new links that failed (the calls
  // went on page streams instead).
  uint64_t link_calls() const { return link_calls_.load(); }
  uint64_t link_failures() const { return link_failures_.load(); }
  // The page link is in use: offered by the session, reached by a health
  // check, and no new link has failed since.
  bool link_usable() const {
    return options_.page_link && link_port_.load() != 0 && link_ok_.load();
  }

 private:
  // (Re)creates the channel and stub.
  void Connect();
  // Sends the call's request on this thread's page link to this peer, or
  // on one of its streams (made if it has none idle, or if `fresh`); the
  // reply will be read into call->reply.
  void StartPageCall(PageCall* call, bool fresh = false);
  // StartPageCall on this thread's page link: sends the request (the call
  // may have failed already: call->failed). False when no link could be
  // made; nothing was sent then.
  bool StartLinkCall(PageCall* call, bool fresh);
  // A new page link to the peer, its hello sent; -1 when it cannot be made.
  int ConnectLink() const;
  friend void AwaitCalls(absl::Duration poll, absl::FunctionRef<void(PageCall*)> finish);
  // The status of a completed page call: the stream's when it failed, the
  // reply's own when the request failed as a whole, or kInternal when the
  // reply is not of `expected` kind. A stream that still works goes back
  // to the thread's idle streams.
  grpc::Status EndPageCall(PageCall* call, const v1::PagesReply& reply,
                           v1::PagesReply::OpCase expected);
  std::shared_ptr<v1::PageStore::Stub> stub() const;
  void Prepare(grpc::ClientContext* ctx) const;
  absl::Status Verify(const v1::LoadResult& r, uint32_t generation, uint64_t checksum,
                      absl::Span<uint8_t> out) const;
  void FillLoadRequest(absl::Span<LoadItem* const> items, v1::LoadRequest* req) const;
  // Sets each item's status from a Load reply (or the call's failure).
  void TakeLoadResponse(const grpc::Status& s, const v1::LoadResponse& resp,
                        absl::Span<LoadItem* const> items);
  void RecordCall(const grpc::Status& s);
  void SenderLoop();
  void FailQueued(const absl::Status& why);
  void SendStores(std::vector<std::pair<PendingStore*, Completion*>>* batch);
  // Sets each store's result from a Store reply (or the call's failure),
  // and notes a full or draining peer.
  void TakeStoreResponse(const grpc::Status& s, const v1::StoreResponse& resp,
                         absl::Span<PendingStore* const> stores);
  void SendInvalidates(std::vector<v1::InvalidateRange>* ranges);

  const int id_;
  // Unique among all peers a process ever has: names this peer's streams in
  // the threads' stream lists (an address may be reused).
  const uint64_t uid_;
  const std::string address_;
  const PeerOptions options_;

  std::atomic<bool> up_{false};
  std::atomic<bool> session_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> full_{false};
  std::atomic<int> consecutive_failures_{0};
  std::atomic<uint64_t> stores_sent_{0}, store_batches_{0}, invalidates_sent_{0};
  std::atomic<uint64_t> stream_retries_{0};
  std::atomic<uint64_t> link_calls_{0}, link_failures_{0};
  // From the session; 0: none.
  std::atomic<uint32_t> link_port_{0};
  std::atomic<bool> link_ok_{false};
  // Changes when links made before must not be used again (the peer was
  // reconnected, or its session names another port).
  std::atomic<uint64_t> link_epoch_{0};

  mutable Mutex mu_;
  CondVar cv_{&mu_};
  std::string node_id_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<v1::PageStore::Stub> stub_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<PendingStore*, Completion*>> stores_ ABSL_GUARDED_BY(mu_);
  // Encoded bytes of the queued stores and of the direct calls in flight.
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::InvalidateRange> invalidates_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sender_;
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_PEER_H_
