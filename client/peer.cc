#include "client/peer.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/busy_poll.h"
#include "common/client_identity.h"
#include "common/completion_queue.h"
#include "common/grpc_status.h"
#include "common/page_link_wire.h"
#include "common/socket_io.h"
#include "common/store_wire.h"
#include "common/thread_name.h"

namespace ramster {
namespace {

// Invalidations per request, and at most this many waiting: beyond that
// (a peer down for long) they are dropped; the copies they meant are
// unreachable anyway and the peer reclaims them with the lease or the next
// epoch.
constexpr size_t kMaxInvalidateBatch = 512;
constexpr size_t kMaxQueuedInvalidates = 1 << 16;
// A thread's page link buffers are kept between calls up to this size.
constexpr size_t kKeptFrameBytes = 512 << 10;

// The uids of the peers that exist: a thread drops its streams to peers
// that are gone when it next makes a stream.
struct LivePeers {
  Mutex mu;
  absl::flat_hash_set<uint64_t> uids ABSL_GUARDED_BY(mu);
  uint64_t next_uid ABSL_GUARDED_BY(mu) = 1;
};

LivePeers& Live() {
  static auto* live = new LivePeers;
  return *live;
}

uint64_t AddLivePeer() {
  LivePeers& live = Live();
  MutexLock lock(&live.mu);
  uint64_t uid = live.next_uid++;
  live.uids.insert(uid);
  return uid;
}

void RemoveLivePeer(uint64_t uid) {
  LivePeers& live = Live();
  MutexLock lock(&live.mu);
  live.uids.erase(uid);
}

}  // namespace

// One PageStore.Pages call to a peer, on one thread's queue. The client
// identity goes with its first request (corked initial metadata); no
// deadline: each request has its own (AwaitCalls).
class PageStream {
 public:
  PageStream(uint64_t peer_uid, std::shared_ptr<v1::PageStore::Stub> stub,
             const std::string& client_id, grpc::CompletionQueue* cq)
      : peer_uid(peer_uid), stub(std::move(stub)) {
    context.AddMetadata(kClientIdMetadataKey, client_id);
    context.set_initial_metadata_corked(true);
    rw = this->stub->PrepareAsyncPages(&context, cq);
    rw->StartCall(nullptr);  // corked: no operation, no completion
  }

  const uint64_t peer_uid;
  const std::shared_ptr<v1::PageStore::Stub> stub;  // its channel stays alive
  grpc::ClientContext context;
  // Lives in the call's memory: declared after the context, so that it
  // goes first. Destroyed with no operation pending, the call is cancelled.
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::PagesRequest, v1::PagesReply>> rw;
};

// One page link to a peer, on one thread: a connected socket, its hello
// sent. Closed with the object.
class PageLinkConnection {
 public:
  PageLinkConnection(uint64_t epoch, int fd) : epoch(epoch), fd(fd) {}
  ~PageLinkConnection() { close(fd); }
  PageLinkConnection(const PageLinkConnection&) = delete;
  PageLinkConnection& operator=(const PageLinkConnection&) = delete;

  const uint64_t epoch;  // the peer's link_epoch_ when it was made
  const int fd;
};

namespace {

enum class LinkRead { kOk, kClosed, kTimedOut, kFailed };

// Reads exactly `n` bytes by `deadline`.
LinkRead ReadAllBy(int fd, void* buf, size_t n, absl::Time deadline) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return LinkRead::kClosed;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return LinkRead::kFailed;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return LinkRead::kTimedOut;
    pollfd pfd{fd, POLLIN, 0};
    const int64_t ms = absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1)));
    if (poll(&pfd, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30))) < 0 && errno != EINTR) {
      return LinkRead::kFailed;
    }
  }
  return LinkRead::kOk;
}

// Reads the reply of a call sent on a page link into call->reply, polling
// for it up to `poll` first (common/busy_poll.h), waiting no longer than the
// call's deadline. Marks the call failed (and how) when it cannot.
void ReadLinkReply(PageCall* call, absl::Duration poll_for) {
  const int fd = call->link->fd;
  BusyPoll::Poll(poll_for, [fd] {
    pollfd pfd{fd, POLLIN, 0};
    return poll(&pfd, 1, 0) > 0;
  });
  thread_local std::string body;
  uint32_t wire = 0;
  LinkRead r = ReadAllBy(fd, &wire, sizeof(wire), call->deadline);
  const uint32_t length = ntohl(wire);
  if (r == LinkRead::kOk) {
    if (length > kMaxPageLinkFrameBytes) {
      r = LinkRead::kFailed;
      errno = EMSGSIZE;
    } else {
      body.resize(length);
      r = ReadAllBy(fd, body.data(), length, call->deadline);
    }
  }
  call->pending = 0;
  switch (r) {
    case LinkRead::kOk:
      if (!call->reply->ParseFromString(body)) {
        call->failed = true;
        call->status = grpc::Status(grpc::StatusCode::INTERNAL, "page link reply does not parse");
      }
      break;
    case LinkRead::kClosed:
      call->failed = true;
      call->status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "page link closed by the peer");
      break;
    case LinkRead::kTimedOut:
      call->failed = call->timed_out = true;
      break;
    case LinkRead::kFailed:
      call->failed = true;
      call->status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                  absl::StrCat("page link: ", strerror(errno)));
      break;
  }
  if (body.capacity() > kKeptFrameBytes) std::string().swap(body);
}

// A thread's queue, its idle streams and its calls in flight.
struct ThreadCalls {
  ~ThreadCalls() {
    idle_links.clear();
    idle.clear();  // no operation pending on them: nothing comes back
    queue.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (queue.Next(&tag, &ok)) {
    }
  }

  // Drops the streams to peers that no longer exist.
  void SweepGonePeers() {
    LivePeers& live = Live();
    MutexLock lock(&live.mu);
    for (auto it = idle.begin(); it != idle.end();) {
      if (live.uids.contains(it->first)) {
        ++it;
      } else {
        idle.erase(it++);
      }
    }
    for (auto it = idle_links.begin(); it != idle_links.end();) {
      if (live.uids.contains(it->first)) {
        ++it;
      } else {
        idle_links.erase(it++);
      }
    }
  }

  grpc::CompletionQueue queue;
  // Peer uid -> streams to it with no request in flight.
  absl::flat_hash_map<uint64_t, std::vector<std::unique_ptr<PageStream>>> idle;
  // Peer uid -> page links to it with no request in flight.
  absl::flat_hash_map<uint64_t, std::vector<std::unique_ptr<PageLinkConnection>>> idle_links;
  // Started and not yet complete.
  std::vector<PageCall*> open;
};

ThreadCalls& Calls() {
  thread_local ThreadCalls calls;
  return calls;
}

// One completion of `call` (`ok`: its operation succeeded). True when the
// call is complete. A failed stream is asked for its status first.
bool Advance(PageCall* call, bool ok) {
  if (!ok) call->failed = true;
  if (--call->pending > 0) return false;
  if (call->failed && !call->finishing) {
    call->finishing = true;
    call->pending = 1;
    call->stream->rw->Finish(&call->status, call);
    return false;
  }
  return true;
}

}  // namespace

PageCall::PageCall() = default;
PageCall::~PageCall() = default;

void AwaitCalls(absl::Duration poll, absl::FunctionRef<void(PageCall*)> finish) {
  ThreadCalls& calls = Calls();
  while (!calls.open.empty()) {
    // Calls on page links first: their requests are out (the peers work on
    // them meanwhile), and each reply is read in turn.
    auto on_link = std::find_if(calls.open.begin(), calls.open.end(),
                                [](PageCall* call) { return call->link != nullptr; });
    if (on_link != calls.open.end()) {
      PageCall* call = *on_link;
      calls.open.erase(on_link);
      if (call->pending > 0) ReadLinkReply(call, poll);
      if (call->failed && !call->timed_out && !call->retried) {
        // Once more, within the same deadline: on a new link when an idle
        // one failed (it may have died unnoticed), on a page stream when a
        // new one did (the link is not used until a health check reaches
        // it again).
        Peer* peer = call->peer;
        if (call->fresh_stream) {
          peer->link_ok_ = false;
          peer->link_failures_++;
        } else {
          peer->stream_retries_++;
        }
        call->retried = true;
        call->link.reset();
        peer->StartPageCall(call, /*fresh=*/true);
        continue;
      }
      finish(call);
      continue;
    }
    absl::Time deadline = absl::InfiniteFuture();
    for (PageCall* call : calls.open) {
      if (!call->timed_out) deadline = std::min(deadline, call->deadline);
    }
    void* tag = nullptr;
    bool ok = false;
    switch (NextPolledUntil(&calls.queue, poll, deadline, &tag, &ok)) {
      case grpc::CompletionQueue::GOT_EVENT: {
        auto* call = static_cast<PageCall*>(tag);
        if (!Advance(call, ok)) break;
        calls.open.erase(std::find(calls.open.begin(), calls.open.end(), call));
        if (call->failed && !call->timed_out && !call->fresh_stream && !call->retried) {
          // Once more, on a new stream, within the same deadline.
          call->retried = true;
          call->peer->stream_retries_++;
          call->stream.reset();
          call->peer->StartPageCall(call, /*fresh=*/true);
          break;
        }
        finish(call);
        break;
      }
      case grpc::CompletionQueue::TIMEOUT: {
        // Cancelled, a call's operations fail at once; its stream is
        // dropped (EndPageCall).
        const absl::Time now = absl::Now();
        for (PageCall* call : calls.open) {
          if (!call->timed_out && call->deadline <= now && call->stream != nullptr) {
            call->timed_out = true;
            call->stream->context.TryCancel();
          }
        }
        break;
      }
      case grpc::CompletionQueue::SHUTDOWN:
        std::abort();  // shut down only when the thread ends
    }
  }
}

Peer::Peer(int id, std::string address, PeerOptions options)
    : id_(id), uid_(AddLivePeer()), address_(std::move(address)), options_(std::move(options)) {
  Connect();
  sender_ = std::thread([this] { SenderLoop(); });
}

void Peer::Connect() {
  grpc::ChannelArguments args;
  // Each peer its own connection, and fail fast while a peer is down: a
  // down peer is retried by health checks, not by stalled page calls.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(4 << 20);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // Addresses are resolved already (ClusterTier::Resolve); an ipv4:/ipv6:
  // target skips gRPC's DNS resolver.
  std::string target = address_;
  if (!target.empty() && target[0] == '[') {
    target = "ipv6:" + target;
  } else if (target.find_first_not_of("0123456789.:") == std::string::npos) {
    target = "ipv4:" + target;
  }
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  std::shared_ptr<v1::PageStore::Stub> stub = v1::PageStore::NewStub(channel);
  MutexLock lock(&mu_);
  stub_ = std::move(stub);
  link_epoch_++;  // links made before are dropped too
}

std::shared_ptr<v1::PageStore::Stub> Peer::stub() const {
  MutexLock lock(&mu_);
  return stub_;
}

Peer::~Peer() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  sender_.join();
  RemoveLivePeer(uid_);
}

std::string Peer::node_id() const {
  MutexLock lock(&mu_);
  return node_id_;
}

void Peer::Prepare(grpc::ClientContext* ctx) const {
  ctx->AddMetadata(kClientIdMetadataKey, options_.client_id);
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + options_.call_timeout));
}

void Peer::RecordCall(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::OK:
      consecutive_failures_ = 0;
      up_ = true;
      return;
    case grpc::StatusCode::FAILED_PRECONDITION:
      // The node lost our session (restart, expired lease): reopen it at the
      // next health check, and place nothing there until then.
      session_ = false;
      return;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      if (++consecutive_failures_ >= options_.failures_to_down) up_ = false;
      return;
    default:
      return;
  }
}

void Peer::CheckHealth() {
  // A down peer gets a fresh connection at every check: gRPC's own
  // reconnection backs off for seconds, far longer than a restart takes.
  if (!up_.load()) Connect();
  if (!session_.load()) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::OpenSessionRequest req;
    req.set_boot_epoch(options_.boot_epoch);
    auto* pool = req.add_pools();
    pool->set_id(options_.pool);
    pool->set_kind(options_.pool_kind);
    v1::OpenSessionResponse resp;
    grpc::Status s = stub()->OpenSession(&ctx, req, &resp);
    RecordCall(s);
    if (!s.ok()) return;
    {
      MutexLock lock(&mu_);
      node_id_ = resp.node_id();
    }
    session_ = true;
  }
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::HeartbeatRequest req;
  req.set_boot_epoch(options_.boot_epoch);
  v1::HeartbeatResponse resp;
  grpc::Status s = stub()->Heartbeat(&ctx, req, &resp);
  RecordCall(s);
  if (!s.ok()) return;
  draining_ = resp.draining();
  const uint32_t link_port = options_.page_link ? resp.page_link_port() : 0;
  if (link_port_.exchange(link_port) != link_port) {
    link_epoch_++;
    link_ok_ = false;
  }
  // A page link not in use (never reached, or a new one failed) is tried
  // here, so that page calls never wait for a connect that may not come.
  if (options_.page_link && link_port_.load() != 0 && !link_ok_.load()) {
    if (const int fd = ConnectLink(); fd >= 0) {
      close(fd);
      link_ok_ = true;
    }
  }
  // Room for at least a few pages, or it counts as full until it has room.
  full_ = resp.client_free_bytes() < 16 * kPageSize || resp.ram_free_bytes() == 0;
}

bool Peer::EnqueueStore(PendingStore* store, Completion* done) {
  PendingStore* one[] = {store};
  return EnqueueStores(one, done) == 1;
}

size_t Peer::EnqueueStores(absl::Span<PendingStore* const> stores, Completion* done) {
  size_t queued = 0;
  {
    MutexLock lock(&mu_);
    if (stop_ || !up_.load()) return 0;
    for (PendingStore* store : stores) {
      if (queued_bytes_ + store->page->length > options_.max_queued_bytes) break;
      queued_bytes_ += store->page->length;
      stores_.emplace_back(store, done);
      ++queued;
    }
  }
  if (queued > 0) cv_.Signal();
  return queued;
}

void Peer::EnqueueInvalidate(const PageKey& key, uint32_t generation) {
  v1::InvalidateRange r;
  r.mutable_page()->set_pool(key.pool);
  r.mutable_page()->set_object(key.object);
  r.mutable_page()->set_index(key.index);
  r.set_up_to_generation(generation);
  {
    MutexLock lock(&mu_);
    if (stop_ || invalidates_.size() >= kMaxQueuedInvalidates) return;
    invalidates_.push_back(std::move(r));
  }
  cv_.Signal();
}

void Peer::SenderLoop() {
  NameThisThread("peer-sender");
  for (;;) {
    std::vector<std::pair<PendingStore*, Completion*>> batch;
    std::vector<v1::InvalidateRange> ranges;
    {
      MutexLock lock(&mu_);
      while (!stop_ && stores_.empty() && invalidates_.empty()) cv_.Wait();
      if (stop_) break;
      while (!stores_.empty() && batch.size() < static_cast<size_t>(options_.max_batch_pages)) {
        batch.push_back(stores_.front());
        queued_bytes_ -= stores_.front().first->page->length;
        stores_.pop_front();
      }
      if (batch.empty()) {
        size_t n = std::min(invalidates_.size(), kMaxInvalidateBatch);
        ranges.assign(std::make_move_iterator(invalidates_.begin()),
                      std::make_move_iterator(invalidates_.begin() + n));
        invalidates_.erase(invalidates_.begin(), invalidates_.begin() + n);
      }
    }
    if (!batch.empty()) SendStores(&batch);
    if (!ranges.empty()) SendInvalidates(&ranges);
    if (!up_.load()) FailQueued(absl::UnavailableError("peer is down"));
  }
  // Fail what is still queued so that no caller waits for nothing.
  FailQueued(absl::UnavailableError("client shutting down"));
}

void Peer::FailQueued(const absl::Status& why) {
  std::deque<std::pair<PendingStore*, Completion*>> failed;
  {
    MutexLock lock(&mu_);
    failed.swap(stores_);
    for (auto& [store, done] : failed) queued_bytes_ -= store->page->length;
  }
  for (auto& [store, done] : failed) {
    store->result = why;
    store->done = true;
    done->Done();
  }
}

namespace {

void FillStoreRequest(uint64_t boot_epoch, absl::Span<Peer::PendingStore* const> stores,
                      v1::StoreRequest* req) {
  req->set_boot_epoch(boot_epoch);
  for (Peer::PendingStore* store : stores) {
    v1::Page* p = req->add_pages();
    p->mutable_key()->set_pool(store->key.pool);
    p->mutable_key()->set_object(store->key.object);
    p->mutable_key()->set_index(store->key.index);
    p->set_encoding(static_cast<v1::Encoding>(store->page->encoding));
    p->set_payload(store->page->payload, store->page->length);
    p->set_uncompressed_length(kPageSize);
    p->set_checksum(store->page->checksum);
    p->set_generation(store->generation);
  }
}

}  // namespace

void Peer::StoreCall::FrameRequest(std::string* out) {
  thread_local std::vector<StorePageFields> fields;
  fields.resize(stores.size());
  for (size_t i = 0; i < stores.size(); ++i) {
    const PendingStore& store = *stores[i];
    StorePageFields& f = fields[i];
    f.pool = store.key.pool;
    f.object = store.key.object;
    f.index = store.key.index;
    f.encoding = static_cast<int32_t>(store.page->encoding);
    f.payload = absl::MakeConstSpan(store.page->payload, store.page->length);
    f.uncompressed_length = kPageSize;
    f.checksum = store.page->checksum;
    f.generation = store.generation;
  }
  FrameStoreRequest(boot_epoch, fields, out);
}

const v1::PagesRequest& Peer::StoreCall::Request() {
  if (!request.has_store()) FillStoreRequest(boot_epoch, stores, request.mutable_store());
  return request;
}

void Peer::LoadCall::FrameRequest(std::string* out) { FrameMessage(request, out); }

void Peer::TakeStoreResponse(const grpc::Status& s, const v1::StoreResponse& resp,
                             absl::Span<PendingStore* const> stores) {
  RecordCall(s);
  store_batches_++;
  bool any_full = false;
  for (size_t i = 0; i < stores.size(); ++i) {
    PendingStore* store = stores[i];
    if (!s.ok()) {
      store->result = FromGrpcStatus(s);
    } else if (static_cast<int>(i) >= resp.results_size()) {
      store->result = absl::InternalError("peer replied with too few results");
    } else {
      store->result = FromPageStatus(resp.results(i));
      any_full |= store->result.code() == absl::StatusCode::kResourceExhausted;
      if (store->result.code() == absl::StatusCode::kUnavailable) draining_ = true;
    }
    if (store->result.ok()) stores_sent_++;
  }
  // Full: place nothing more there until a heartbeat says it has room.
  if (any_full) full_ = true;
}

void Peer::SendStores(std::vector<std::pair<PendingStore*, Completion*>>* batch) {
  std::vector<PendingStore*> stores;
  stores.reserve(batch->size());
  for (auto& [store, done] : *batch) stores.push_back(store);
  v1::StoreRequest req;
  FillStoreRequest(options_.boot_epoch, stores, &req);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::StoreResponse resp;
  grpc::Status s = stub()->Store(&ctx, req, &resp);
  TakeStoreResponse(s, resp, stores);
  for (auto& [store, done] : *batch) {
    store->done = true;
    done->Done();
  }
}

size_t Peer::StartStore(StoreCall* call, absl::Span<PendingStore* const> stores) {
  size_t n = 0, bytes = 0;
  {
    MutexLock lock(&mu_);
    if (stop_ || !up_.load()) return 0;
    const size_t max = std::min(stores.size(), static_cast<size_t>(options_.max_batch_pages));
    while (n < max &&
           queued_bytes_ + bytes + stores[n]->page->length <= options_.max_queued_bytes) {
      bytes += stores[n++]->page->length;
    }
    queued_bytes_ += bytes;
  }
  if (n == 0) return 0;
  call->stores = stores.first(n);
  call->bytes = bytes;
  call->boot_epoch = options_.boot_epoch;
  StartPageCall(call);
  return n;
}

void Peer::FinishStore(StoreCall* call) {
  {
    MutexLock lock(&mu_);
    queued_bytes_ -= call->bytes;
  }
  call->bytes = 0;
  grpc::Status s = EndPageCall(call, *call->reply, v1::PagesReply::kStore);
  TakeStoreResponse(s, call->reply->store(), call->stores);
}

void Peer::StartPageCall(PageCall* call, bool fresh) {
  if (!call->retried) {
    call->peer = this;
    call->deadline = absl::Now() + options_.call_timeout;
  }
  call->failed = call->finishing = call->timed_out = false;
  call->status = grpc::Status();
  ThreadCalls& calls = Calls();
  if (link_usable() && StartLinkCall(call, fresh)) {
    calls.open.push_back(call);
    return;
  }
  std::shared_ptr<v1::PageStore::Stub> current = stub();
  std::vector<std::unique_ptr<PageStream>>& idle = calls.idle[uid_];
  // A stream made before the peer was reconnected (CheckHealth) is dropped.
  while (!idle.empty() && idle.back()->stub != current) idle.pop_back();
  call->fresh_stream = fresh || idle.empty();
  if (!call->fresh_stream) {
    call->stream = std::move(idle.back());
    idle.pop_back();
  } else {
    calls.SweepGonePeers();
    call->stream = std::make_unique<PageStream>(uid_, std::move(current), options_.client_id,
                                                &calls.queue);
  }
  call->pending = 2;
  call->stream->rw->Write(call->Request(), call);
  call->stream->rw->Read(call->reply, call);
  calls.open.push_back(call);
}

bool Peer::StartLinkCall(PageCall* call, bool fresh) {
  ThreadCalls& calls = Calls();
  const uint64_t epoch = link_epoch_.load();
  std::vector<std::unique_ptr<PageLinkConnection>>& idle = calls.idle_links[uid_];
  while (!idle.empty() && idle.back()->epoch != epoch) idle.pop_back();
  call->fresh_stream = fresh || idle.empty();
  if (!call->fresh_stream) {
    call->link = std::move(idle.back());
    idle.pop_back();
  } else {
    calls.SweepGonePeers();
    const int fd = ConnectLink();
    if (fd < 0) {
      link_ok_ = false;
      link_failures_++;
      return false;
    }
    call->link = std::make_unique<PageLinkConnection>(epoch, fd);
  }
  thread_local std::string frame;
  call->FrameRequest(&frame);
  link_calls_++;
  if (SendAll(call->link->fd, frame.data(), frame.size())) {
    call->pending = 1;
  } else {
    call->pending = 0;
    call->failed = true;
    call->status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                absl::StrCat("page link: ", strerror(errno)));
  }
  // Kept for the next call up to a store's largest frame (64 raw pages,
  // ~270 KiB): given back after each, it cost a malloc and a free of that
  // size per call, the free consolidating the heap.
  if (frame.capacity() > kKeptFrameBytes) std::string().swap(frame);
  return true;
}

int Peer::ConnectLink() const {
  const uint32_t port = link_port_.load();
  if (port == 0) return -1;
  std::string host = address_.substr(0, address_.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return -1;
  // Bounds the connect and every send; reads are bounded by each call's
  // deadline (ReadLinkReply).
  const timeval timeout = absl::ToTimeval(options_.call_timeout);
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(found);
  if (fd < 0) return -1;
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  v1::PageLinkHello hello;
  hello.set_client_id(options_.client_id);
  std::string frame;
  FrameMessage(hello, &frame);
  if (!SendAll(fd, frame.data(), frame.size())) {
    close(fd);
    return -1;
  }
  return fd;
}

grpc::Status Peer::EndPageCall(PageCall* call, const v1::PagesReply& reply,
                               v1::PagesReply::OpCase expected) {
  grpc::Status s;
  bool keep = !call->timed_out;
  if (call->failed) {
    keep = false;
    if (call->timed_out) {
      s = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                       absl::StrCat("peer ", address_, " did not answer within ",
                                    absl::FormatDuration(options_.call_timeout)));
    } else if (call->status.ok()) {
      s = grpc::Status(grpc::StatusCode::UNAVAILABLE, "page stream ended");
    } else {
      s = call->status;
    }
  } else if (reply.code() != 0) {
    const bool known = reply.code() > 0 && reply.code() <= grpc::StatusCode::UNAUTHENTICATED;
    s = grpc::Status(known ? static_cast<grpc::StatusCode>(reply.code())
                           : grpc::StatusCode::UNKNOWN,
                     reply.message());
  } else if (reply.op_case() != expected) {
    // Out of step with the peer: the stream is not used again.
    keep = false;
    s = grpc::Status(grpc::StatusCode::INTERNAL, "peer answered another kind of request");
  }
  if (call->link != nullptr) {
    if (keep) {
      Calls().idle_links[uid_].push_back(std::move(call->link));
    } else {
      call->link.reset();
    }
    return s;
  }
  if (keep) {
    Calls().idle[uid_].push_back(std::move(call->stream));
  } else {
    call->stream.reset();
  }
  return s;
}

void Peer::SendInvalidates(std::vector<v1::InvalidateRange>* ranges) {
  v1::InvalidateRequest req;
  req.set_boot_epoch(options_.boot_epoch);
  for (auto& r : *ranges) *req.add_ranges() = std::move(r);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::InvalidateResponse resp;
  grpc::Status s = stub()->Invalidate(&ctx, req, &resp);
  RecordCall(s);
  // A lost invalidation leaves an unreachable copy on the peer (its
  // generation is older than the slot's); the lease or the next epoch
  // reclaims it.
  if (s.ok()) invalidates_sent_ += req.ranges_size();
}

// Checks one page of a Load reply against what the slot map expects.
absl::Status Peer::Verify(const v1::LoadResult& r, uint32_t generation, uint64_t checksum,
                          absl::Span<uint8_t> out) const {
  if (absl::Status st = FromPageStatus(r.status()); !st.ok()) return st;
  const v1::Page& p = r.page();
  if (p.generation() != generation) {
    return absl::DataLossError(absl::StrCat("peer ", address_, " has generation ",
                                            p.generation(), ", expected ", generation));
  }
  if (p.checksum() != checksum) {
    return absl::DataLossError(absl::StrCat("peer ", address_, " has another checksum"));
  }
  return DecodePage(
      p.encoding(),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.payload().data()),
                          p.payload().size()),
      p.uncompressed_length(), checksum, out);
}

absl::Status Peer::Load(const PageKey& key, uint32_t generation, uint64_t checksum,
                        absl::Span<uint8_t> out) {
  LoadItem item;
  item.key = key;
  item.meta.generation = generation;
  item.meta.checksum = checksum;
  item.out = out;
  LoadItem* items[] = {&item};
  LoadMany(items);
  return item.status;
}

void Peer::FillLoadRequest(absl::Span<LoadItem* const> items, v1::LoadRequest* req) const {
  req->set_boot_epoch(options_.boot_epoch);
  for (LoadItem* item : items) {
    v1::PageKey* k = req->add_keys();
    k->set_pool(item->key.pool);
    k->set_object(item->key.object);
    k->set_index(item->key.index);
  }
}

void Peer::TakeLoadResponse(const grpc::Status& s, const v1::LoadResponse& resp,
                            absl::Span<LoadItem* const> items) {
  RecordCall(s);
  for (size_t i = 0; i < items.size(); ++i) {
    LoadItem* item = items[i];
    if (!s.ok()) {
      item->status = FromGrpcStatus(s);
    } else if (static_cast<int>(i) >= resp.results_size()) {
      item->status = absl::DataLossError("peer replied with too few results");
    } else {
      item->status = Verify(resp.results(i), item->meta.generation, item->meta.checksum,
                            item->out);
    }
  }
}

void Peer::LoadMany(absl::Span<LoadItem* const> items) {
  for (size_t start = 0; start < items.size(); start += kMaxLoadKeys) {
    LoadCall call;
    StartLoad(&call, items.subspan(start, kMaxLoadKeys));
    AwaitCalls(options_.reply_poll, [](PageCall*) {});
    FinishLoad(&call);
  }
}

void Peer::StartLoad(LoadCall* call, absl::Span<LoadItem* const> items) {
  call->items = items.first(std::min(items.size(), kMaxLoadKeys));
  FillLoadRequest(call->items, call->request.mutable_load());
  StartPageCall(call);
}

void Peer::FinishLoad(LoadCall* call) {
  grpc::Status s = EndPageCall(call, *call->reply, v1::PagesReply::kLoad);
  TakeLoadResponse(s, call->reply->load(), call->items);
}

void Peer::InvalidateObject(uint32_t pool, uint64_t object) {
  std::vector<v1::InvalidateRange> ranges(1);
  ranges[0].mutable_object()->set_pool(pool);
  ranges[0].mutable_object()->set_object(object);
  SendInvalidates(&ranges);
}

void Peer::InvalidatePool(uint32_t pool) {
  std::vector<v1::InvalidateRange> ranges(1);
  ranges[0].set_pool(pool);
  SendInvalidates(&ranges);
}

}  // namespace ramster
