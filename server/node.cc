#include "server/node.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/page_codec.h"
#include "common/thread_name.h"

namespace ramster {

// A client as this node knows it. Created on its first session and kept for
// the node's life (its id is part of every disk key).
struct Node::Client {
  uint32_t id = 0;
  std::string name;

  // Shared by every page operation of this client; exclusive for whatever
  // removes the client's pages wholesale (new epoch, expired lease, pool or
  // object invalidation) and for changing the fields below it.
  std::shared_mutex reclaim_mu;
  uint64_t epoch = 0;  // 0: never opened a session
  bool expired = false;
  absl::flat_hash_map<uint32_t, v1::PoolKind> pools;

  std::atomic<uint64_t> quota{0};  // 0: unlimited
  std::atomic<int64_t> lease_deadline_ns{0};

  std::atomic<uint64_t> charged{0};
  std::atomic<uint64_t> pages_ram{0}, pages_disk{0};
  std::atomic<uint64_t> ram_bytes{0}, disk_bytes{0};
  std::atomic<uint64_t> index_bytes{0};

  bool TryChargeQuota(uint64_t bytes) {
    uint64_t q = quota.load(std::memory_order_relaxed);
    uint64_t used = charged.load(std::memory_order_relaxed);
    do {
      if (q != 0 && (bytes > q || used > q - bytes)) return false;
    } while (!charged.compare_exchange_weak(used, used + bytes,
                                            std::memory_order_relaxed));
    return true;
  }
  void Renew(absl::Duration lease) {
    lease_deadline_ns.store(absl::ToUnixNanos(absl::Now() + lease),
                            std::memory_order_relaxed);
  }
};

namespace {

thread_local uint8_t tls_scratch[kPageSize];

constexpr uint32_t kCacheLine = 64;

DiskPageHeader HeaderOf(uint8_t encoding, uint16_t length, uint64_t generation,
                        uint64_t checksum) {
  DiskPageHeader h;
  h.encoding = encoding;
  h.length = length;
  h.generation = generation;
  h.checksum = checksum;
  return h;
}

absl::Status ValidatePoolKind(v1::PoolKind kind) {
  if (kind != v1::POOL_KIND_PERSISTENT && kind != v1::POOL_KIND_EPHEMERAL) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool kind must be PERSISTENT or EPHEMERAL, got ", kind));
  }
  return absl::OkStatus();
}

}  // namespace

Node::Node(NodeOptions options)
    : options_(std::move(options)),
      started_(absl::Now()),
      ram_(options_.ram_limit),
      disk_(options_.disk_limit),
      slab_(&ram_) {}

absl::StatusOr<std::unique_ptr<Node>> Node::Open(NodeOptions options) {
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("a data directory is required");
  }
  if (!(options.low_watermark > 0 && options.low_watermark <= options.high_watermark &&
        options.high_watermark <= 1.0)) {
    return absl::InvalidArgumentError("watermarks must be 0 < low <= high <= 1");
  }
  std::unique_ptr<Node> node(new Node(std::move(options)));
  absl::StatusOr<std::unique_ptr<DiskTier>> disk = DiskTier::Open(node->options_.data_dir);
  if (!disk.ok()) return disk.status();
  node->disk_tier_ = std::move(*disk);
  if (absl::Status s = node->Reload(); !s.ok()) return s;
  node->maintenance_ = std::thread([n = node.get()] { n->MaintenanceLoop(); });
  if (node->options_.recompress_level > 0) {
    {
      MutexLock lock(&node->recompress_mu_);
      node->recompressor_ =
          std::make_unique<Recompressor>(node->options_.recompress_level);
      node->recompress_one_in_.store(1);
    }
    if (node->options_.recompress_thread) {
      node->recompress_thread_ = std::thread([n = node.get()] { n->RecompressLoop(); });
    }
  }
  return node;
}

Node::~Node() {
  {
    MutexLock lock(&stop_mu_);
    stop_ = true;
  }
  stop_cv_.SignalAll();
  if (maintenance_.joinable()) maintenance_.join();
  if (recompress_thread_.joinable()) recompress_thread_.join();
}

// ---------------------------------------------------------------- clients --

std::string Node::EncodeClientMeta(const Client& c) {
  // Text, one field after another: easy to read in a RocksDB dump.
  std::string s = absl::StrCat("v1 ", c.id, " ", c.epoch, " ", c.quota.load(),
                               " ", c.expired ? 1 : 0);
  for (const auto& [id, kind] : c.pools) absl::StrAppend(&s, " ", id, ":", kind);
  return s;
}

absl::Status Node::PersistClient(const Client& c) {
  return disk_tier_->PutClientMeta(c.name, EncodeClientMeta(c));
}

Node::Client* Node::FindOrCreateClient(const std::string& name) {
  auto it = clients_.find(name);
  if (it != clients_.end()) return it->second.get();
  auto c = std::make_unique<Client>();
  c->id = static_cast<uint32_t>(clients_by_id_.size());
  c->name = name;
  c->quota.store(options_.default_client_quota);
  Client* raw = c.get();
  clients_by_id_.push_back(raw);
  clients_.emplace(name, std::move(c));
  return raw;
}

absl::Status Node::Reload() {
  MutexLock lock(&clients_mu_);
  clients_by_id_.clear();
  absl::Status parse_error;
  absl::Status s = disk_tier_->ForEachClientMeta(
      [&](absl::string_view name, absl::string_view value) {
        std::vector<absl::string_view> f = absl::StrSplit(value, ' ');
        uint32_t id;
        uint64_t epoch, quota;
        int expired;
        if (f.size() < 5 || f[0] != "v1" || !absl::SimpleAtoi(f[1], &id) ||
            !absl::SimpleAtoi(f[2], &epoch) || !absl::SimpleAtoi(f[3], &quota) ||
            !absl::SimpleAtoi(f[4], &expired)) {
          parse_error = absl::DataLossError(
              absl::StrCat("malformed client record for \"", name, "\""));
          return;
        }
        auto c = std::make_unique<Client>();
        c->id = id;
        c->name = std::string(name);
        c->epoch = epoch;
        c->quota.store(quota);
        c->expired = expired != 0;
        for (size_t i = 5; i < f.size(); ++i) {
          std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(f[i], ':');
          uint32_t pool;
          int kind;
          if (absl::SimpleAtoi(p.first, &pool) && absl::SimpleAtoi(p.second, &kind)) {
            c->pools[pool] = static_cast<v1::PoolKind>(kind);
          }
        }
        // A restarted node gives every client a full lease to come back.
        c->Renew(options_.lease);
        if (clients_by_id_.size() <= id) clients_by_id_.resize(id + 1, nullptr);
        clients_by_id_[id] = c.get();
        clients_.emplace(c->name, std::move(c));
      });
  if (!s.ok()) return s;
  if (!parse_error.ok()) return parse_error;
  for (Client* c : clients_by_id_) {
    if (c == nullptr) return absl::DataLossError("client ids on disk have gaps");
  }

  uint64_t orphans = 0;
  std::vector<DiskPageKey> orphan_keys;
  absl::Status load_error;
  s = disk_tier_->ForEachPage(
      [&](const DiskPageKey& k, const DiskPageHeader& h) {
        Client* c = k.client < clients_by_id_.size() ? clients_by_id_[k.client] : nullptr;
        if (c == nullptr || c->expired ||
            !ValidateEncodedShape(h.encoding, h.length, kPageSize).ok()) {
          orphan_keys.push_back(k);
          ++orphans;
          return;
        }
        if (h.generation > UINT32_MAX) {
          orphan_keys.push_back(k);
          ++orphans;
          return;
        }
        Key key{k.client, k.pool, k.object, k.index};
        Entry e(static_cast<uint32_t>(h.generation), h.checksum, h.length, h.encoding, 0);
        auto pool = c->pools.find(k.pool);
        if (pool != c->pools.end() && pool->second == v1::POOL_KIND_EPHEMERAL) {
          e.set_flag(Entry::kEphemeral);
        }
        Shard& shard = ShardFor(key);
        MutexLock shard_lock(&shard.mu);
        if (shard.table.Find(key) != nullptr) return;  // RocksDB keys are unique
        const int64_t grew = shard.table.Insert(key, e);
        if (grew < 0) {
          load_error = absl::ResourceExhaustedError("out of memory reloading the index");
          return;
        }
        ram_.ForceCharge(grew);
        index_bytes_ += grew;
        c->index_bytes += grew;
        disk_.ForceCharge(DiskRecordBytes(h.length));
        c->charged += h.length + grew;
        c->pages_disk++;
        c->disk_bytes += h.length;
        pages_on_disk_++;
        payload_bytes_ += h.length;
      },
      [&](absl::string_view) { ++orphans; });
  if (!s.ok()) return s;
  if (!load_error.ok()) return load_error;
  if (!orphan_keys.empty()) {
    DiskTier::Batch batch;
    for (const DiskPageKey& k : orphan_keys) batch.DeletePage(k);
    if (absl::Status d = disk_tier_->Commit(&batch); !d.ok()) return d;
  }
  return absl::OkStatus();
}

absl::StatusOr<Node::Client*> Node::Authorize(const std::string& name,
                                              uint64_t epoch) {
  Client* c;
  {
    MutexLock lock(&clients_mu_);
    auto it = clients_.find(name);
    if (it == clients_.end() || it->second->epoch == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("client \"", name, "\" has no session; call OpenSession"));
    }
    c = it->second.get();
  }
  c->reclaim_mu.lock_shared();
  if (c->expired) {
    c->reclaim_mu.unlock_shared();
    return absl::FailedPreconditionError(
        "the session's lease expired and its pages were reclaimed; call OpenSession");
  }
  if (epoch != c->epoch) {
    uint64_t current = c->epoch;
    c->reclaim_mu.unlock_shared();
    return absl::FailedPreconditionError(absl::StrCat(
        "boot epoch ", epoch, " is not the session's (", current, ")"));
  }
  c->Renew(options_.lease);
  return c;
}

absl::Status Node::OpenSession(const std::string& name,
                               const v1::OpenSessionRequest& request,
                               v1::OpenSessionResponse* response) {
  if (request.boot_epoch() == 0) {
    return absl::InvalidArgumentError("boot_epoch must be nonzero");
  }
  if (request.pools_size() > kMaxPoolsPerSession) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", kMaxPoolsPerSession, " pools per session, got ",
        request.pools_size()));
  }
  absl::flat_hash_set<uint32_t> seen;
  for (const v1::PoolSpec& p : request.pools()) {
    if (absl::Status s = ValidatePoolKind(p.kind()); !s.ok()) return s;
    if (!seen.insert(p.id()).second) {
      return absl::InvalidArgumentError(absl::StrCat("pool ", p.id(), " listed twice"));
    }
  }
  Client* c;
  {
    MutexLock lock(&clients_mu_);
    c = FindOrCreateClient(name);
  }
  std::unique_lock<std::shared_mutex> reclaim(c->reclaim_mu);
  uint64_t reclaimed = 0;
  if (request.boot_epoch() < c->epoch) {
    return absl::FailedPreconditionError(absl::StrCat(
        "boot epoch ", request.boot_epoch(), " is older than the node's (",
        c->epoch, "): a newer instance of this client exists"));
  }
  if (request.boot_epoch() > c->epoch || c->expired) {
    // A new boot (or a session that lapsed): nothing of the old one stays.
    reclaimed = RemoveRange(c, 0, 0, 0);
    c->pools.clear();
    c->epoch = request.boot_epoch();
    c->expired = false;
  } else {
    for (const v1::PoolSpec& p : request.pools()) {
      auto it = c->pools.find(p.id());
      if (it != c->pools.end() && it->second != p.kind()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "pool ", p.id(), " was opened with another kind in this epoch"));
      }
    }
  }
  for (const v1::PoolSpec& p : request.pools()) c->pools[p.id()] = p.kind();
  c->Renew(options_.lease);
  {
    MutexLock lock(&clients_mu_);
    if (absl::Status s = PersistClient(*c); !s.ok()) return s;
  }
  {
    MutexLock lock(&identity_mu_);
    response->set_node_id(node_id_);
  }
  response->set_lease_ms(absl::ToInt64Milliseconds(options_.lease));
  response->set_pages_reclaimed(reclaimed);
  response->set_quota_bytes(c->quota.load());
  response->set_page_link_port(page_link_port_.load());
  return absl::OkStatus();
}

absl::Status Node::Heartbeat(const std::string& name,
                             const v1::HeartbeatRequest& request,
                             v1::HeartbeatResponse* response) {
  absl::StatusOr<Client*> c = Authorize(name, request.boot_epoch());
  if (!c.ok()) return c.status();
  std::shared_lock<std::shared_mutex> lock((*c)->reclaim_mu, std::adopt_lock);
  response->set_lease_ms(absl::ToInt64Milliseconds(options_.lease));
  response->set_ram_free_bytes(ram_.free());
  uint64_t q = (*c)->quota.load(), used = (*c)->charged.load();
  response->set_client_free_bytes(q == 0 ? ram_.free() + disk_.free()
                                         : (used >= q ? 0 : q - used));
  response->set_draining(draining_.load());
  response->set_page_link_port(page_link_port_.load());
  return absl::OkStatus();
}

// ------------------------------------------------------------------ pages --

Node::Shard& Node::ShardFor(const Key& k) {
  // By index block: a block's pages share its shard.
  return shards_[absl::HashOf(k.client, k.pool, k.object,
                              k.index >> PageTable::kBlockShift) %
                 kShards];
}

void Node::ReleaseIndex(Client* c, uint64_t bytes) {
  if (bytes == 0) return;
  ram_.Release(bytes);
  index_bytes_ -= bytes;
  c->index_bytes -= bytes;
  c->charged -= bytes;
}

void Node::ReleaseEntry(const Key& k, const Entry& e, Client* c,
                        DiskTier::Batch* deletes) {
  if (e.in_ram()) {
    slab_.Free(e.handle());
    pages_in_ram_--;
    c->pages_ram--;
    c->ram_bytes -= e.length();
  } else {
    if (deletes != nullptr) {
      deletes->DeletePage(DiskPageKey{k.client, k.pool, k.object, k.index});
    }
    disk_.Release(DiskRecordBytes(e.length()));
    pages_on_disk_--;
    c->pages_disk--;
    c->disk_bytes -= e.length();
  }
  payload_bytes_ -= e.length();
  c->charged -= e.length();
}

absl::Status Node::Store(const std::string& name, const v1::StoreRequest& request,
                         v1::StoreResponse* response) {
  if (request.pages_size() > kMaxPagesPerBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", kMaxPagesPerBatch, " pages per batch, got ", request.pages_size()));
  }
  thread_local std::vector<StorePageFields> pages;
  thread_local std::vector<absl::Status> results;
  pages.clear();
  for (const v1::Page& p : request.pages()) {
    StorePageFields f;
    f.pool = p.key().pool();
    f.object = p.key().object();
    f.index = p.key().index();
    f.encoding = p.encoding();
    f.payload = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.payload().data()),
                                    p.payload().size());
    f.uncompressed_length = p.uncompressed_length();
    f.checksum = p.checksum();
    f.generation = p.generation();
    pages.push_back(f);
  }
  results.resize(pages.size());
  if (absl::Status s = Store(name, request.boot_epoch(), pages, absl::MakeSpan(results));
      !s.ok()) {
    return s;
  }
  response->mutable_results()->Reserve(request.pages_size());
  for (const absl::Status& s : results) {
    v1::PageStatus* r = response->add_results();
    r->set_code(static_cast<int32_t>(s.code()));
    if (!s.ok()) r->set_message(std::string(s.message()));
  }
  return absl::OkStatus();
}

absl::Status Node::Store(const std::string& name, uint64_t boot_epoch,
                         absl::Span<const StorePageFields> pages,
                         absl::Span<absl::Status> results) {
  if (pages.size() > static_cast<size_t>(kMaxPagesPerBatch)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", kMaxPagesPerBatch, " pages per batch, got ", pages.size()));
  }
  if (results.size() != pages.size()) {
    return absl::InternalError("one result per page");
  }
  absl::StatusOr<Client*> c = Authorize(name, boot_epoch);
  if (!c.ok()) return c.status();
  std::shared_lock<std::shared_mutex> lock((*c)->reclaim_mu, std::adopt_lock);
  for (size_t i = 0; i < pages.size(); ++i) {
    results[i] = StoreOne(*c, pages[i], tls_scratch);
    (results[i].ok() ? ops_.stores : ops_.stores_refused)
        .fetch_add(1, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

absl::Status Node::StoreOne(Client* c, const StorePageFields& page, uint8_t* scratch) {
  auto pool = c->pools.find(page.pool);
  if (pool == c->pools.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("pool ", page.pool, " was not opened in this session"));
  }
  if (page.generation > UINT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation ", page.generation, " does not fit 32 bits"));
  }
  const bool ephemeral = pool->second == v1::POOL_KIND_EPHEMERAL;
  const absl::Span<const uint8_t> payload = page.payload;
  const uint32_t encoding = static_cast<uint32_t>(page.encoding);
  if (absl::Status s = DecodePage(encoding, payload, page.uncompressed_length, page.checksum,
                                  absl::MakeSpan(scratch, kPageSize));
      !s.ok()) {
    // Whatever is wrong with it, the request is bad: the client sent a page
    // that does not match its own checksum.
    return absl::InvalidArgumentError(s.message());
  }
  if (draining_.load(std::memory_order_relaxed)) {
    return absl::UnavailableError("node is draining");
  }
  const uint16_t length = static_cast<uint16_t>(payload.size());
  // Charged at its most: the payload, and what the index can grow by. The
  // part of the index charge not needed is given back under the shard lock.
  constexpr uint64_t kIndexReserve = PageTable::kMaxInsertBytes;
  if (!c->TryChargeQuota(ClientCharge(length))) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "client quota of ", c->quota.load(), " bytes reached"));
  }
  // Room in RAM: the payload's slab object and the index reserve. When RAM
  // is full, make room now: drop ephemeral pages, and for a persistent page
  // also write cold persistent pages back to disk. If that does not free
  // enough, a persistent page goes straight to disk.
  absl::StatusOr<uint64_t> handle = slab_.Allocate(length);
  bool index_charged = ram_.TryCharge(kIndexReserve);
  if (!handle.ok() || !index_charged) {
    if (handle.ok()) slab_.Free(*handle);
    if (index_charged) ram_.Release(kIndexReserve);
    // Room for some pages more, so that the next stores find it too.
    const uint64_t need = 64 * SlabAllocator::kPage;
    const uint64_t limit = ram_.limit();
    Evict(limit > need ? limit - need : 0, /*ephemeral_only=*/ephemeral);
    handle = slab_.Allocate(length);
    index_charged = ram_.TryCharge(kIndexReserve);
  }
  // Gives back what was charged and not (or no longer) used: the slab
  // object while `handle` is set, and the index reserve.
  uint64_t reserve = index_charged ? kIndexReserve : 0;
  if (handle.ok()) slab_.PrepareWrite(*handle, length);
  auto undo = [&] {
    if (handle.ok()) slab_.Free(*handle);
    ram_.Release(reserve);
    c->charged -= ClientCharge(length);
  };

  const Key key{c->id, page.pool, page.object, page.index};
  Shard& shard = ShardFor(key);
  MutexLock shard_lock(&shard.mu);
  Entry* old = shard.table.Find(key);
  if (old != nullptr && old->generation() > page.generation) {
    undo();
    return absl::FailedPreconditionError(absl::StrCat(
        "generation ", page.generation, " is older than the stored ",
        old->generation()));
  }
  if (old == nullptr && !index_charged) {
    undo();
    return absl::ResourceExhaustedError("node RAM limit reached");
  }

  Entry e(static_cast<uint32_t>(page.generation), page.checksum, length, encoding,
          Entry::kReferenced);
  if (ephemeral) e.set_flag(Entry::kEphemeral);
  if (handle.ok()) {
    e.set_handle(*handle);
    e.set_flag(Entry::kInRam);
  } else if (ephemeral) {
    undo();
    return absl::ResourceExhaustedError("node RAM limit reached");
  } else if (!disk_.TryCharge(DiskRecordBytes(length))) {
    undo();
    return absl::ResourceExhaustedError("node RAM and disk limits reached");
  }
  // A new key gets its entry now (the index may need memory: if the process
  // cannot have it, that is a refusal like any other, before anything else
  // changed); its growth stays charged, the rest of the reserve goes back.
  int64_t grew = 0;
  if (old == nullptr) {
    grew = shard.table.Insert(key, e);
    if (grew < 0) {
      if (!handle.ok()) disk_.Release(DiskRecordBytes(length));
      undo();
      return absl::ResourceExhaustedError("node out of memory (index)");
    }
  }
  const uint64_t unused = reserve - static_cast<uint64_t>(grew);
  ram_.Release(unused);
  c->charged -= unused;

  DiskTier::Batch batch;
  if (handle.ok()) {
    slab_.Write(*handle, payload.data(), length);
    if (old != nullptr) ReleaseEntry(key, *old, c, &batch);
  } else {
    batch.PutPage(DiskPageKey{key.client, key.pool, key.object, key.index},
                  HeaderOf(e.encoding(), length, e.generation(), e.checksum()),
                  payload.first(length));
    if (absl::Status s = disk_tier_->Commit(&batch); !s.ok()) {
      disk_.Release(DiskRecordBytes(length));
      c->charged -= length;
      if (old == nullptr) {
        // What the table keeps of its growth (a block keeps its capacity)
        // stays charged as index memory.
        const uint64_t freed = shard.table.Erase(key);
        index_bytes_ += grew;
        c->index_bytes += grew;
        ReleaseIndex(c, freed);
      }
      return absl::UnavailableError(absl::StrCat("disk tier: ", s.message()));
    }
    // The Put replaced any older record under this key.
    if (old != nullptr) ReleaseEntry(key, *old, c, nullptr);
  }
  if (batch.count() > 0 && handle.ok()) {
    // The old copy was on disk and the new one is in RAM: delete the record
    // now, so that a crash cannot bring the old generation back. Should the
    // delete fail, the index still says RAM; a restart would find the older
    // generation, which clients reject by its generation.
    (void)disk_tier_->Commit(&batch);
  }
  if (e.in_ram()) {
    pages_in_ram_++;
    c->pages_ram++;
    c->ram_bytes += length;
  } else {
    pages_on_disk_++;
    c->pages_disk++;
    c->disk_bytes += length;
  }
  payload_bytes_ += length;
  if (old != nullptr) *old = e;  // a new key's entry went in above
  index_bytes_ += grew;
  c->index_bytes += grew;
  return absl::OkStatus();
}

absl::Status Node::Load(const std::string& name, const v1::LoadRequest& request,
                        LoadSink* sink) {
  if (request.keys_size() > kMaxPagesPerBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", kMaxPagesPerBatch, " keys per batch, got ", request.keys_size()));
  }
  absl::StatusOr<Client*> c = Authorize(name, request.boot_epoch());
  if (!c.ok()) return c.status();
  std::shared_lock<std::shared_mutex> lock((*c)->reclaim_mu, std::adopt_lock);
  if (request.keys_size() > 1) PrefetchPayloads(*c, request.keys());
  for (const v1::PageKey& key : request.keys()) {
    absl::Status s = LoadOne(*c, key, sink, tls_scratch);
    ops_.loads.fetch_add(1, std::memory_order_relaxed);
    if (!s.ok()) {
      ops_.load_misses.fetch_add(1, std::memory_order_relaxed);
      sink->AddMiss(s);
    }
  }
  return absl::OkStatus();
}

void Node::PrefetchPayloads(Client* c,
                            const google::protobuf::RepeatedPtrField<v1::PageKey>& keys) {
  for (const v1::PageKey& wk : keys) {
    const Key key{c->id, wk.pool(), wk.object(), wk.index()};
    Shard& shard = ShardFor(key);
    MutexLock shard_lock(&shard.mu);
    const Entry* e = shard.table.Find(key);
    if (e == nullptr || !e->in_ram()) continue;
    // A hint only: should the page go before LoadOne copies it, nothing
    // reads the memory.
    const uint8_t* payload = slab_.Resolve(e->handle());
    for (uint32_t off = 0; off < e->length(); off += kCacheLine) {
      __builtin_prefetch(payload + off);
    }
  }
}

absl::Status Node::LoadOne(Client* c, const v1::PageKey& wk, LoadSink* sink,
                           uint8_t* scratch) {
  const Key key{c->id, wk.pool(), wk.object(), wk.index()};
  Shard& shard = ShardFor(key);
  MutexLock shard_lock(&shard.mu);
  Entry* found = shard.table.Find(key);
  if (found == nullptr) return absl::NotFoundError("no such page");
  Entry& e = *found;
  LoadedPage page;
  page.key = &wk;
  page.encoding = static_cast<v1::Encoding>(e.encoding());
  page.uncompressed_length = kPageSize;
  page.checksum = e.checksum();
  page.generation = e.generation();
  if (e.in_ram()) {
    e.set_flag(Entry::kReferenced);
    // Copied out by the sink while the shard lock keeps the slab object.
    page.payload = absl::MakeConstSpan(slab_.Resolve(e.handle()), e.length());
    sink->AddPage(page);
    return absl::OkStatus();
  }
  DiskPageHeader h;
  std::string payload;
  absl::Status s = disk_tier_->GetPage(
      DiskPageKey{key.client, key.pool, key.object, key.index}, &h, &payload);
  if (s.code() == absl::StatusCode::kNotFound) {
    return absl::DataLossError("page record missing from the disk tier");
  }
  if (!s.ok()) return s;
  if (h.generation != e.generation() || h.checksum != e.checksum() ||
      h.length != e.length() || h.encoding != e.encoding()) {
    return absl::DataLossError("disk record does not match the index");
  }
  page.payload = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(payload.data()),
                                     payload.size());
  // Disks rot; RAM we trust (the client verifies everything anyway).
  if (absl::Status d = DecodePage(e.encoding(), page.payload, kPageSize, e.checksum(),
                                  absl::MakeSpan(scratch, kPageSize));
      !d.ok()) {
    return absl::DataLossError(absl::StrCat("disk copy is corrupt: ", d.message()));
  }
  sink->AddPage(page);
  return absl::OkStatus();
}

absl::Status Node::Invalidate(const std::string& name,
                              const v1::InvalidateRequest& request,
                              v1::InvalidateResponse* response) {
  if (request.ranges_size() > kMaxRangesPerBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "at most ", kMaxRangesPerBatch, " ranges per batch, got ",
        request.ranges_size()));
  }
  bool wide = false;
  for (const v1::InvalidateRange& r : request.ranges()) {
    if (r.scope_case() == v1::InvalidateRange::SCOPE_NOT_SET) {
      return absl::InvalidArgumentError("an invalidate range names no scope");
    }
    wide |= r.scope_case() != v1::InvalidateRange::kPage;
  }
  absl::StatusOr<Client*> authorized = Authorize(name, request.boot_epoch());
  if (!authorized.ok()) return authorized.status();
  Client* c = *authorized;
  uint64_t freed = 0;
  if (wide) {
    // Whole objects and pools need the client to themselves.
    c->reclaim_mu.unlock_shared();
    std::unique_lock<std::shared_mutex> lock(c->reclaim_mu);
    if (c->epoch != request.boot_epoch() || c->expired) {
      return absl::FailedPreconditionError("the session changed; call OpenSession");
    }
    for (const v1::InvalidateRange& r : request.ranges()) {
      switch (r.scope_case()) {
        case v1::InvalidateRange::kPool:
          freed += RemoveRange(c, 1, r.pool(), 0);
          break;
        case v1::InvalidateRange::kObject:
          freed += RemoveRange(c, 2, r.object().pool(), r.object().object());
          break;
        default:
          break;  // single pages follow below
      }
    }
    lock.unlock();
    c->reclaim_mu.lock_shared();
    if (c->epoch != request.boot_epoch() || c->expired) {
      c->reclaim_mu.unlock_shared();
      return absl::FailedPreconditionError("the session changed; call OpenSession");
    }
  }
  std::shared_lock<std::shared_mutex> lock(c->reclaim_mu, std::adopt_lock);
  for (const v1::InvalidateRange& r : request.ranges()) {
    if (r.scope_case() != v1::InvalidateRange::kPage) continue;
    const Key key{c->id, r.page().pool(), r.page().object(), r.page().index()};
    Shard& shard = ShardFor(key);
    MutexLock shard_lock(&shard.mu);
    Entry* e = shard.table.Find(key);
    if (e == nullptr) continue;
    if (r.up_to_generation() != 0 && e->generation() > r.up_to_generation()) {
      continue;  // a newer copy replaced the one meant
    }
    DiskTier::Batch batch;
    ReleaseEntry(key, *e, c, &batch);
    ReleaseIndex(c, shard.table.Erase(key));
    // The index no longer names the page either way; a failed delete is
    // reported so that the client knows the space may not be free.
    if (absl::Status s = disk_tier_->Commit(&batch); !s.ok()) {
      return absl::UnavailableError(absl::StrCat("disk tier: ", s.message()));
    }
    ++freed;
  }
  ops_.invalidates.fetch_add(freed, std::memory_order_relaxed);
  response->set_pages_freed(freed);
  return absl::OkStatus();
}

uint64_t Node::RemoveRange(Client* c, int depth, uint32_t pool, uint64_t object) {
  uint64_t removed = 0;
  bool any_on_disk = false;
  for (Shard& shard : shards_) {
    MutexLock lock(&shard.mu);
    const uint64_t freed = shard.table.RemoveRange(
        c->id, depth, pool, object, [&](const Key& k, Entry& e) {
          any_on_disk |= !e.in_ram();
          ReleaseEntry(k, e, c, nullptr);
          ++removed;
        });
    ReleaseIndex(c, freed);
  }
  if (any_on_disk) {
    absl::Status s = depth == 0   ? disk_tier_->DeleteClient(c->id)
                     : depth == 1 ? disk_tier_->DeletePool(c->id, pool)
                                  : disk_tier_->DeleteObject(c->id, pool, object);
    // Records the index no longer names are unreachable; a restart deletes
    // records of clients whose sessions expired, and the next reclaim of
    // this client retries the range.
    (void)s;
  }
  return removed;
}

// --------------------------------------------------------------- eviction --

std::pair<uint64_t, uint64_t> Node::Evict(uint64_t target, bool ephemeral_only) {
  MutexLock evict_lock(&evict_mu_);
  // Empty chunks kept for reuse go first: they hold no pages. While pages
  // move out, every chunk they empty is given back at once.
  slab_.set_caching(false);
  if (ram_.used() > target) slab_.DropCache();
  uint64_t written = 0, dropped = 0;
  std::vector<Client*> clients;
  {
    MutexLock lock(&clients_mu_);
    clients = clients_by_id_;
  }
  // Pass 0 drops ephemeral pages; pass 1 writes back persistent pages not
  // used since the last sweep (clearing their bits); pass 2 takes any.
  bool disk_full = false;
  for (int pass = 0; pass < 3 && !(ephemeral_only && pass > 0); ++pass) {
    for (Shard& shard : shards_) {
      if (ram_.used() <= target || (pass > 0 && disk_full)) break;
      MutexLock lock(&shard.mu);
      if (pass == 0) {
        shard.table.RemoveIf(
            [&](const Key& k, Entry& e) {
              if (!e.in_ram() || !(e.flags() & Entry::kEphemeral) ||
                  ram_.used() <= target) {
                return false;
              }
              ReleaseEntry(k, e, clients[k.client], nullptr);
              ++dropped;
              return true;
            },
            [&](uint32_t client, uint64_t bytes) { ReleaseIndex(clients[client], bytes); });
        continue;
      }
      DiskTier::Batch batch;
      std::vector<std::pair<Client*, Entry*>> moving;
      auto flush = [&] {
        if (moving.empty()) return;
        if (!disk_tier_->Commit(&batch).ok()) {
          for (auto [c, e] : moving) disk_.Release(DiskRecordBytes(e->length()));
          disk_full = true;
        } else {
          for (auto [c, e] : moving) {
            slab_.Free(e->handle());
            e->clear_flag(Entry::kInRam);
            e->set_handle(0);
            pages_in_ram_--;
            pages_on_disk_++;
            c->pages_ram--;
            c->pages_disk++;
            c->ram_bytes -= e->length();
            c->disk_bytes += e->length();
            written++;
          }
        }
        moving.clear();
        batch.Clear();
      };
      // Entries do not move while the shard is locked and nothing is
      // inserted or removed, so `moving` may point at them.
      bool done = false;
      shard.table.ForEach([&](const Key& k, Entry& e) {
        if (done || !e.in_ram()) return;
        if ((e.flags() & Entry::kEphemeral) ||
            (pass == 1 && (e.flags() & Entry::kReferenced))) {
          e.clear_flag(Entry::kReferenced);
          return;
        }
        if (!disk_.TryCharge(DiskRecordBytes(e.length()))) {
          disk_full = true;
          done = true;
          return;
        }
        batch.PutPage(DiskPageKey{k.client, k.pool, k.object, k.index},
                      HeaderOf(e.encoding(), static_cast<uint16_t>(e.length()),
                               e.generation(), e.checksum()),
                      absl::MakeConstSpan(slab_.Resolve(e.handle()), e.length()));
        moving.emplace_back(clients[k.client], &e);
        if (moving.size() >= 64) {
          flush();
          done = ram_.used() <= target || disk_full;
        }
      });
      flush();
    }
  }
  slab_.set_caching(true);
  ops_.written_back += written;
  ops_.ephemeral_dropped += dropped;
  return {written, dropped};
}

// ---------------------------------------------------------- recompression --

namespace {

// Copies looked at per call of RecompressSome from the thread; how long the
// thread pauses when no walk is due; the share of one CPU it may use.
constexpr uint64_t kRecompressStep = 256;
constexpr absl::Duration kRecompressIdleWait = absl::Milliseconds(250);
constexpr double kRecompressCpuShare = 0.2;
// Index blocks (up to 64 entries each) looked at per hold of a shard lock.
constexpr int kRecompressBlocksPerLock = 8;
// Recompression is worth its CPU only where LZ4HC saves memory: after every
// kRecompressYieldWindow copies tried, the share of their payload bytes it
// saved sets how many candidates the walks try next. Under kMinRecompressYield
// they try half as many as before (one in 2, 4, ... kMaxRecompressOneIn; the
// others are passed over for good, as if found not worth it); at twice that
// or more, twice as many, up to all. (fio's half-compressible 4 KiB blocks:
// 13 B saved a copy tried, at ~70 us of CPU each; the swap workload's pages:
// ~540 B, ~22%.)
constexpr uint64_t kRecompressYieldWindow = 32;
constexpr double kMinRecompressYield = 1.0 / 32;
constexpr uint32_t kMaxRecompressOneIn = 32;

absl::Duration ThreadCpuTime() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

}  // namespace

// The walker's state: its walk, its encoder and its page buffers.
struct Node::Recompressor {
  explicit Recompressor(int level) : encoder(level) {}

  Lz4HcEncoder encoder;
  bool walking = false;
  int shard = 0;
  PageTable::Cursor cursor;
  absl::Time walk_started = absl::InfinitePast();
  uint64_t stores_at_walk_start = 0;
  // The walk marked copies, or had no room for some: the next has work.
  bool work_left = true;
  std::vector<RecompressCandidate> found;
  // Sampling by yield (kRecompressYieldWindow above): one candidate in
  // `one_in` is tried; the window's copies tried, their bytes, and the bytes
  // recompression saved on them.
  uint32_t one_in = 1;
  uint64_t candidates = 0;
  uint64_t window_tried = 0, window_bytes = 0, window_saved = 0;
  // A copy of `length` bytes was tried and `saved` bytes smaller after.
  void Tried(uint32_t length, uint64_t saved) {
    window_bytes += length;
    window_saved += saved;
    if (++window_tried < kRecompressYieldWindow) return;
    const double yield = static_cast<double>(window_saved) / static_cast<double>(window_bytes);
    if (yield < kMinRecompressYield) {
      one_in = std::min(one_in * 2, kMaxRecompressOneIn);
    } else if (yield >= 2 * kMinRecompressYield) {
      one_in = std::max(one_in / 2, 1u);
    }
    window_tried = window_bytes = window_saved = 0;
  }
  uint8_t old_payload[kPageSize];
  uint8_t page[kPageSize];
  uint8_t new_payload[kPageSize];
};

uint64_t Node::RecompressSome(uint64_t max_pages) {
  MutexLock lock(&recompress_mu_);
  Recompressor* r = recompressor_.get();
  if (r == nullptr) return 0;
  // Starts a walk if one is due.
  auto start = [&] {
    const absl::Time now = options_.recompress_clock();
    const uint64_t stores = ops_.stores.load(std::memory_order_relaxed);
    if (now < r->walk_started + options_.recompress_age) return false;
    if (!r->work_left && stores == r->stores_at_walk_start) return false;
    r->walking = true;
    r->shard = 0;
    r->cursor = PageTable::Cursor();
    r->walk_started = now;
    r->stores_at_walk_start = stores;
    r->work_left = false;
    return true;
  };
  std::vector<Client*> clients;
  {
    MutexLock clients_lock(&clients_mu_);
    clients = clients_by_id_;
  }
  uint64_t looked = 0, done = 0;
  bool started = false;  // at most one walk starts per call: bounded work
  while (looked < max_pages) {
    if (!r->walking) {
      if (started || !start()) break;
      started = true;
    }
    Shard& shard = shards_[r->shard];
    r->found.clear();
    uint64_t marked = 0, passed_over = 0;
    bool more;
    {
      MutexLock shard_lock(&shard.mu);
      more = shard.table.ForEachFrom(
          &r->cursor, kRecompressBlocksPerLock, [&](const Key& k, Entry& e) {
            if (!e.in_ram() || (e.flags() & Entry::kRecompressed) ||
                e.encoding() != static_cast<uint8_t>(Encoding::kLz4)) {
              return;
            }
            if (!(e.flags() & Entry::kWalked)) {
              e.set_flag(Entry::kWalked);
              ++marked;
              return;
            }
            if (r->candidates++ % r->one_in != 0) {
              e.set_flag(Entry::kRecompressed);  // settled untried
              ++passed_over;
              return;
            }
            r->found.push_back(RecompressCandidate{k, e.handle(), e.checksum(),
                                                   e.generation(), e.length()});
          });
    }
    if (!more && ++r->shard == kShards) r->walking = false;
    if (marked > 0) r->work_left = true;
    ops_.recompress_passed_over.fetch_add(passed_over, std::memory_order_relaxed);
    for (const RecompressCandidate& cand : r->found) {
      if (cand.key.client >= clients.size()) {
        MutexLock clients_lock(&clients_mu_);
        clients = clients_by_id_;
      }
      if (RecompressOne(shard, cand, clients[cand.key.client], r)) {
        ++done;
      } else {
        r->work_left = true;
      }
      // A thread that polls by yielding its CPU (the shim does, waiting
      // for a reply) hands it to whatever else can run, this thread too,
      // which keeps it until a wakeup or the tick takes it back: give it
      // back after each page (~25 us), so that such a poller waits at
      // most that. (On the swap workload it made no difference beyond the
      // noise of two A/B pairs.)
      sched_yield();
    }
    looked += marked + passed_over + r->found.size();
    done += marked + passed_over;
  }
  return done;
}

bool Node::RecompressOne(Shard& shard, const RecompressCandidate& cand, Client* c,
                         Recompressor* r) {
  {
    MutexLock lock(&shard.mu);
    if (!cand.Is(shard.table.Find(cand.key))) return true;  // gone or replaced
    std::memcpy(r->old_payload, slab_.Resolve(cand.handle), cand.length);
  }
  // Only a payload in a smaller size class saves memory; the new one is
  // taken only when it decodes to the page the checksum names.
  const uint32_t fits = SlabAllocator::ClassSize(cand.length) - SlabAllocator::kGranularity;
  size_t length = 0;
  if (DecodePage(static_cast<uint32_t>(Encoding::kLz4),
                 absl::MakeConstSpan(r->old_payload, cand.length), kPageSize,
                 cand.checksum, absl::MakeSpan(r->page))
          .ok()) {
    length = r->encoder.Encode(absl::MakeConstSpan(r->page),
                               absl::MakeSpan(r->new_payload, fits));
  }
  if (length > 0 &&
      !DecodePage(static_cast<uint32_t>(Encoding::kLz4),
                  absl::MakeConstSpan(r->new_payload, length), kPageSize, cand.checksum,
                  absl::MakeSpan(r->page))
           .ok()) {
    length = 0;
  }
  std::optional<uint64_t> handle;  // the new copy's, when there is one
  if (length > 0) {
    absl::StatusOr<uint64_t> h = slab_.Allocate(static_cast<uint32_t>(length));
    // No room for the new copy beside the old one: the page stays as it
    // is, to be tried again on a later walk.
    if (!h.ok()) return false;
    handle = *h;
    slab_.PrepareWrite(*handle, static_cast<uint32_t>(length));
  }
  MutexLock lock(&shard.mu);
  Entry* e = shard.table.Find(cand.key);
  if (!cand.Is(e)) {
    if (handle) slab_.Free(*handle);
    return true;
  }
  e->set_flag(Entry::kRecompressed);
  r->Tried(cand.length, handle ? cand.length - length : 0);
  recompress_one_in_.store(r->one_in, std::memory_order_relaxed);
  ops_.recompress_tried.fetch_add(1, std::memory_order_relaxed);
  ops_.recompress_tried_bytes.fetch_add(cand.length, std::memory_order_relaxed);
  if (!handle) return true;
  slab_.Write(*handle, r->new_payload, static_cast<uint32_t>(length));
  slab_.Free(cand.handle);
  e->set_handle(*handle);
  e->set_length(static_cast<uint32_t>(length));
  const uint64_t saved = cand.length - length;
  payload_bytes_ -= saved;
  c->ram_bytes -= saved;
  c->charged -= saved;
  ops_.recompressed.fetch_add(1, std::memory_order_relaxed);
  ops_.recompress_saved.fetch_add(saved, std::memory_order_relaxed);
  return true;
}

void Node::RecompressLoop() {
  NameThisThread("recompress");
  // Spare CPU only: SCHED_IDLE yields to every other thread of the
  // machine when it wakes, and a cap on its share bounds what it takes
  // even from a donor whose clients keep storing long-lived pages. (fio
  // QD32 randwrite with 3 local servers lost a third of its IOPS to a
  // walker that recompressed every copy at once, overwritten or not; the
  // age, not this cap, is what keeps it from that: ~120k IOPS either way.)
  sched_param param{};
  (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);
  MutexLock lock(&stop_mu_);
  while (!stop_) {
    stop_mu_.Unlock();
    const absl::Duration cpu_before = ThreadCpuTime();
    const uint64_t done = RecompressSome(kRecompressStep);
    const absl::Duration cpu = ThreadCpuTime() - cpu_before;
    stop_mu_.Lock();
    if (stop_) break;
    stop_cv_.WaitFor(done == 0 ? kRecompressIdleWait
                               : cpu * (1 / kRecompressCpuShare - 1));
  }
}

void Node::Maintain() {
  const uint64_t limit = ram_.limit();
  if (ram_.used() > static_cast<uint64_t>(limit * options_.high_watermark)) {
    Evict(static_cast<uint64_t>(limit * options_.low_watermark), false);
  }
  ExpireLeases();
}

void Node::ExpireLeases() {
  const int64_t now = absl::ToUnixNanos(absl::Now());
  std::vector<Client*> expired;
  {
    MutexLock lock(&clients_mu_);
    for (Client* c : clients_by_id_) {
      if (c->lease_deadline_ns.load() < now) expired.push_back(c);
    }
  }
  for (Client* c : expired) {
    std::unique_lock<std::shared_mutex> reclaim(c->reclaim_mu);
    if (c->epoch == 0 || c->expired || c->lease_deadline_ns.load() >= now) continue;
    RemoveRange(c, 0, 0, 0);
    c->expired = true;
    MutexLock lock(&clients_mu_);
    (void)PersistClient(*c);
  }
}

void Node::MaintenanceLoop() {
  NameThisThread("maintenance");
  MutexLock lock(&stop_mu_);
  while (!stop_) {
    stop_cv_.WaitFor(options_.maintenance_interval);
    if (stop_) break;
    stop_mu_.Unlock();
    Maintain();
    stop_mu_.Lock();
  }
}

absl::StatusOr<uint64_t> Node::Shutdown() {
  {
    MutexLock lock(&stop_mu_);
    stop_ = true;
  }
  stop_cv_.SignalAll();
  if (maintenance_.joinable()) maintenance_.join();
  if (recompress_thread_.joinable()) recompress_thread_.join();
  draining_ = true;
  // Everything persistent goes to disk; ephemeral pages are dropped.
  Evict(0, false);
  uint64_t left = pages_in_ram_.load();
  absl::Status s = disk_tier_->Flush();
  if (!s.ok()) return s;
  return left;
}

// ------------------------------------------------------------------ admin --

void Node::FillUsage(const Client& c, v1::ClientUsage* u) {
  u->set_client_id(c.name);
  u->set_boot_epoch(c.epoch);
  u->set_pages_in_ram(c.pages_ram.load());
  u->set_pages_on_disk(c.pages_disk.load());
  u->set_ram_bytes(c.ram_bytes.load());
  u->set_disk_bytes(c.disk_bytes.load());
  u->set_index_bytes(c.index_bytes.load());
  u->set_quota_bytes(c.quota.load());
  int64_t left = c.lease_deadline_ns.load() - absl::ToUnixNanos(absl::Now());
  u->set_lease_remaining_ms(c.expired || left < 0 ? 0 : left / 1000000);
}

void Node::GetStatus(v1::NodeStatus* st) {
  {
    MutexLock lock(&identity_mu_);
    st->set_node_id(node_id_);
    st->set_address(address_);
  }
  st->set_ram_limit_bytes(ram_.limit());
  st->set_ram_used_bytes(ram_.used());
  st->set_disk_limit_bytes(disk_.limit());
  st->set_disk_used_bytes(disk_.used());
  st->set_pages_in_ram(pages_in_ram_.load());
  st->set_pages_on_disk(pages_on_disk_.load());
  uint64_t pages = pages_in_ram_.load() + pages_on_disk_.load();
  uint64_t payload = payload_bytes_.load();
  st->set_logical_bytes(pages * kPageSize);
  st->set_payload_bytes(payload);
  st->set_index_bytes(index_bytes_.load());
  st->set_slab_cached_bytes(slab_.cached_bytes());
  st->set_recompress_one_in(recompress_one_in_.load(std::memory_order_relaxed));
  st->set_compression_ratio(payload == 0 ? 0.0
                                         : static_cast<double>(pages * kPageSize) / payload);
  st->set_draining(draining_.load());
  st->set_ram_over_limit_bytes(ram_.over());
  st->set_uptime_ms(absl::ToInt64Milliseconds(absl::Now() - started_));
  v1::OpCounters* ops = st->mutable_ops();
  ops->set_stores(ops_.stores.load());
  ops->set_stores_refused(ops_.stores_refused.load());
  ops->set_loads(ops_.loads.load());
  ops->set_load_misses(ops_.load_misses.load());
  ops->set_invalidates(ops_.invalidates.load());
  ops->set_pages_written_back(ops_.written_back.load());
  ops->set_ephemeral_dropped(ops_.ephemeral_dropped.load());
  ops->set_requests_rejected(ops_.rejected.load());
  ops->set_pages_recompressed(ops_.recompressed.load());
  ops->set_recompressed_bytes_saved(ops_.recompress_saved.load());
  ops->set_pages_recompress_tried(ops_.recompress_tried.load());
  ops->set_recompress_tried_bytes(ops_.recompress_tried_bytes.load());
  ops->set_pages_recompress_passed_over(ops_.recompress_passed_over.load());
  MutexLock lock(&clients_mu_);
  for (const Client* c : clients_by_id_) FillUsage(*c, st->add_clients());
}

void Node::ListClients(v1::ListClientsResponse* response) {
  MutexLock lock(&clients_mu_);
  for (const Client* c : clients_by_id_) FillUsage(*c, response->add_clients());
}

absl::Status Node::SetClientQuota(const std::string& name, uint64_t bytes,
                                  v1::ClientUsage* usage) {
  if (name.empty()) return absl::InvalidArgumentError("client id is empty");
  MutexLock lock(&clients_mu_);
  Client* c = FindOrCreateClient(name);
  // Lowering a quota below what the client holds refuses its further stores;
  // what it holds stays until it invalidates it.
  c->quota.store(bytes);
  if (absl::Status s = PersistClient(*c); !s.ok()) return s;
  FillUsage(*c, usage);
  return absl::OkStatus();
}

void Node::SetMemoryLimit(uint64_t bytes, v1::SetMemoryLimitResponse* response) {
  const bool lowered = bytes < ram_.limit();
  ram_.set_limit(bytes);
  uint64_t written = 0, dropped = 0;
  if (ram_.used() > static_cast<uint64_t>(bytes * options_.high_watermark)) {
    std::tie(written, dropped) =
        Evict(static_cast<uint64_t>(bytes * options_.low_watermark), false);
  }
  // The host wants its memory now: what went back lazily goes at once.
  if (lowered) slab_.ReleaseLazyPages();
  response->set_ram_limit_bytes(ram_.limit());
  response->set_ram_used_bytes(ram_.used());
  response->set_pages_written_back(written);
  response->set_ephemeral_dropped(dropped);
  response->set_ram_over_limit_bytes(ram_.over());
}

void Node::SetDraining(bool draining) { draining_ = draining; }

void Node::SetIdentity(std::string node_id, std::string address) {
  MutexLock lock(&identity_mu_);
  node_id_ = std::move(node_id);
  address_ = std::move(address);
}

}  // namespace ramster
