#include "client/peer.h"

#include <algorithm>

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

}  // namespace

Peer::Peer(int id, std::string address, PeerOptions options)
    : id_(id), address_(std::move(address)), options_(std::move(options)) {
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
  call->peer = this;
  call->stores = stores.first(n);
  call->bytes = bytes;
  call->stub = stub();
  FillStoreRequest(call->stores, &call->request);
  Prepare(&call->context);
  call->reader = call->stub->AsyncStore(&call->context, call->request, ThreadQueue());
  call->reader->Finish(&call->response, &call->status, call);
  return n;
}

void Peer::FinishStore(StoreCall* call) {
  {
    MutexLock lock(&mu_);
    queued_bytes_ -= call->bytes;
  }
  call->bytes = 0;
  TakeStoreResponse(call->status, call->response, call->stores);
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
    AwaitCall(options_.reply_poll);
    FinishLoad(&call);
  }
}

grpc::CompletionQueue* ThreadQueue() {
  thread_local grpc::CompletionQueue queue;
  return &queue;
}

void* AwaitCall(absl::Duration poll) {
  void* tag = nullptr;
  bool ok = false;
  NextPolled(ThreadQueue(), poll, &tag, &ok);  // never shut down: always a tag
  return tag;
}

void Peer::StartLoad(LoadCall* call, absl::Span<LoadItem* const> items) {
  call->peer = this;
  call->items = items.first(std::min(items.size(), kMaxLoadKeys));
  call->stub = stub();
  FillLoadRequest(call->items, &call->request);
  Prepare(&call->context);
  call->reader = call->stub->AsyncLoad(&call->context, call->request, ThreadQueue());
  call->reader->Finish(call->response, &call->status, call);
}

void Peer::FinishLoad(LoadCall* call) {
  TakeLoadResponse(call->status, *call->response, call->items);
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
