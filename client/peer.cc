#include "client/peer.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/client_identity.h"
#include "common/completion_queue.h"
#include "common/grpc_status.h"

namespace ramster {
namespace {

// Invalidations per request, and at most this many waiting: beyond that
// (a peer down for long) they are dropped; the copies they meant are
// unreachable anyway and the peer reclaims them with the lease or the next
// epoch.
constexpr size_t kMaxInvalidateBatch = 512;
constexpr size_t kMaxQueuedInvalidates = 1 << 16;

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

namespace {

// A thread's queue, its idle streams and its calls in flight.
struct ThreadCalls {
  ~ThreadCalls() {
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
  }

  grpc::CompletionQueue queue;
  // Peer uid -> streams to it with no request in flight.
  absl::flat_hash_map<uint64_t, std::vector<std::unique_ptr<PageStream>>> idle;
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
          call->peer->StartPageCall(call, *call->request, call->reply, /*fresh=*/true);
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
          if (!call->timed_out && call->deadline <= now) {
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

void Peer::FillStoreRequest(absl::Span<PendingStore* const> stores,
                            v1::StoreRequest* req) const {
  req->set_boot_epoch(options_.boot_epoch);
  for (PendingStore* store : stores) {
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
  FillStoreRequest(stores, &req);
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
  FillStoreRequest(call->stores, call->request.mutable_store());
  StartPageCall(call, call->request, &call->reply);
  return n;
}

void Peer::FinishStore(StoreCall* call) {
  {
    MutexLock lock(&mu_);
    queued_bytes_ -= call->bytes;
  }
  call->bytes = 0;
  grpc::Status s = EndPageCall(call, call->reply, v1::PagesReply::kStore);
  TakeStoreResponse(s, call->reply.store(), call->stores);
}

void Peer::StartPageCall(PageCall* call, const v1::PagesRequest& request,
                         v1::PagesReply* reply, bool fresh) {
  ThreadCalls& calls = Calls();
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
  if (!call->retried) {
    call->peer = this;
    call->deadline = absl::Now() + options_.call_timeout;
  }
  call->request = &request;
  call->reply = reply;
  call->pending = 2;
  call->failed = call->finishing = call->timed_out = false;
  call->status = grpc::Status();
  call->stream->rw->Write(request, call);
  call->stream->rw->Read(reply, call);
  calls.open.push_back(call);
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
  StartPageCall(call, call->request, call->reply);
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
