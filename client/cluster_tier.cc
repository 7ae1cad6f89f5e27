#include "client/cluster_tier.h"

#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/thread_name.h"

namespace ramster {
namespace {

// HOST:PORT -> the addresses HOST resolves to, each with PORT. A literal
// address resolves to itself.
std::vector<std::string> ResolveEntry(const std::string& entry) {
  size_t colon = entry.rfind(':');
  if (colon == std::string::npos) return {};
  std::string host = entry.substr(0, colon);
  std::string port = entry.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return {};
  std::vector<std::string> out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, buf, sizeof(buf));
      out.push_back(absl::StrCat(buf, ":", port));
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, buf,
                sizeof(buf));
      out.push_back(absl::StrCat("[", buf, "]:", port));
    }
  }
  freeaddrinfo(res);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace

uint32_t ClusterTier::EncodePlacement(absl::Span<const int> peers) {
  uint32_t p = static_cast<uint32_t>(std::min<size_t>(peers.size(), kMaxReplicas));
  for (size_t i = 0; i < peers.size() && i < kMaxReplicas; ++i) {
    p |= static_cast<uint32_t>(peers[i] & 0xFF) << (2 + 8 * i);
  }
  return p;
}

std::vector<int> ClusterTier::DecodePlacement(uint32_t placement) {
  std::vector<int> peers;
  for (int i = 0; i < PlacementCopies(placement); ++i) peers.push_back(PlacementPeer(placement, i));
  return peers;
}

ClusterTier::ClusterTier(ClusterOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<ClusterTier>> ClusterTier::Create(ClusterOptions options) {
  if (options.replicas < 1 || options.replicas > kMaxReplicas) {
    return absl::InvalidArgumentError(
        absl::StrCat("replicas must be 1..", kMaxReplicas, ", got ", options.replicas));
  }
  if (options.peer.boot_epoch == 0) {
    return absl::InvalidArgumentError("a nonzero boot epoch is required");
  }
  if (options.peer.client_id.empty()) {
    return absl::InvalidArgumentError("a client id is required");
  }
  for (const std::string& p : options.peers) {
    size_t colon = p.rfind(':');
    int port;
    if (colon == std::string::npos || colon == 0 ||
        !absl::SimpleAtoi(p.substr(colon + 1), &port) || port <= 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("peer \"", p, "\" is not HOST:PORT"));
    }
  }
  std::unique_ptr<ClusterTier> tier(new ClusterTier(std::move(options)));
  tier->Resolve();
  {
    MutexLock lock(&tier->peers_mu_);
    for (auto& p : tier->peers_) p->CheckHealth();
  }
  tier->background_ = std::thread([t = tier.get()] { t->BackgroundLoop(); });
  return tier;
}

ClusterTier::~ClusterTier() {
  {
    MutexLock lock(&stop_mu_);
    stop_ = true;
  }
  stop_cv_.SignalAll();
  if (background_.joinable()) background_.join();
}

void ClusterTier::AttachSlotMap(SlotMap* slots, uint32_t tier_number, uint32_t pool) {
  slots_ = slots;
  tier_number_ = tier_number;
  pool_ = pool;
}

void ClusterTier::Resolve() {
  std::vector<std::string> addresses;
  for (const std::string& entry : options_.peers) {
    std::vector<std::string> r = ResolveEntry(entry);
    addresses.insert(addresses.end(), r.begin(), r.end());
  }
  MutexLock lock(&peers_mu_);
  last_resolve_ = absl::Now();
  for (const std::string& a : addresses) {
    bool known = false;
    for (auto& p : peers_) known |= p->address() == a;
    if (known) continue;
    if (peers_.size() >= kMaxPeers) {
      fprintf(stderr, "ramster: more than %d peers; ignoring %s\n", kMaxPeers, a.c_str());
      continue;
    }
    peers_.push_back(std::make_unique<Peer>(static_cast<int>(peers_.size()), a, options_.peer));
  }
}

Peer* ClusterTier::PeerById(int id) const {
  MutexLock lock(&peers_mu_);
  return id >= 0 && static_cast<size_t>(id) < peers_.size() ? peers_[id].get() : nullptr;
}

bool ClusterTier::IsSelf(const Peer& p) const {
  return !options_.self_node_id.empty() && p.node_id() == options_.self_node_id;
}

// Rendezvous (highest random weight) hashing: every peer scores the slot's
// run of kPlacementRun slots; the highest scores win. Adding or losing a
// peer moves only its share.
std::vector<Peer*> ClusterTier::Ranked(uint64_t slot, const std::vector<int>& exclude) {
  const uint64_t run = slot / kPlacementRun;
  std::vector<std::pair<uint64_t, Peer*>> scored;
  {
    MutexLock lock(&peers_mu_);
    for (auto& p : peers_) {
      if (std::find(exclude.begin(), exclude.end(), p->id()) != exclude.end()) continue;
      scored.emplace_back(absl::HashOf(run, p->address()), p.get());
    }
  }
  std::sort(scored.begin(), scored.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<Peer*> out;
  for (auto& [score, p] : scored) {
    if (!IsSelf(*p)) out.push_back(p);
  }
  return out;
}

absl::Status ClusterTier::Store(const PageKey& key, absl::Span<const uint8_t> raw,
                                const EncodedPage& encoded, PageMeta* meta, bool* durable) {
  StoreItem item;
  item.key = key;
  item.raw = raw;
  item.encoded = &encoded;
  item.meta = *meta;
  StoreItem* items[] = {&item};
  StoreBatch(items);
  *meta = item.meta;
  *durable = item.durable;
  return item.status;
}

void ClusterTier::StoreBatch(absl::Span<StoreItem* const> items) {
  const size_t want = static_cast<size_t>(options_.replicas);
  // Per page: its peers' ranking, how far down it the page has asked, and
  // the peers that took a copy. Kept per thread, as are the rankings, so
  // that a batch allocates next to nothing.
  struct Progress {
    size_t ranking = 0;  // in `rankings`: eligible peers, best first
    size_t next = 0;     // first candidate not asked yet
    // Peers that took a copy, by their place in the ranking: the best
    // ranked comes first in the placement (not the lowest peer id), so that
    // the page-by-page load path, which tries copies in placement order,
    // spreads over the peers as the copies do.
    std::array<std::pair<size_t, int>, kMaxReplicas> chosen;
    size_t chosen_count = 0;
    absl::Status last;
  };
  thread_local std::vector<Progress> progress;
  thread_local std::vector<std::vector<Peer*>> rankings;
  progress.assign(items.size(), Progress());
  size_t used_rankings = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    // Pages of one run rank the peers alike (batches are mostly in slot
    // order): rank once per run.
    if (i > 0 && items[i]->key.index / kPlacementRun == items[i - 1]->key.index / kPlacementRun) {
      progress[i].ranking = progress[i - 1].ranking;
      continue;
    }
    if (used_rankings == rankings.size()) rankings.emplace_back();
    std::vector<Peer*>& ranking = rankings[used_rankings];
    progress[i].ranking = used_rankings++;
    ranking.clear();
    for (Peer* p : Ranked(items[i]->key.index, {})) {
      if (p->eligible()) ranking.push_back(p);
    }
  }
  // Rounds: ask every page's next best peers for the copies it still
  // lacks, all pages at once (each peer batches what it is given); pages
  // refused somewhere move on down their ranking in the next round.
  struct Ask {
    size_t item;
    size_t rank;  // the peer's place in the item's ranking
    Peer* peer;
    Peer::PendingStore store;
  };
  thread_local std::vector<Ask> asks;
  thread_local std::vector<Peer::PendingStore*> stores;
  for (;;) {
    asks.clear();
    for (size_t i = 0; i < items.size(); ++i) {
      Progress& pr = progress[i];
      const std::vector<Peer*>& ranking = rankings[pr.ranking];
      size_t missing = want > pr.chosen_count ? want - pr.chosen_count : 0;
      while (missing > 0 && pr.next < ranking.size()) {
        asks.push_back(Ask{i, pr.next, ranking[pr.next], {}});
        ++pr.next;
        --missing;
      }
    }
    if (asks.empty()) break;
    // Each peer gets its share in one go (one request per max_batch_pages),
    // every peer at once; this thread waits for all the answers.
    std::stable_sort(asks.begin(), asks.end(),
                     [](const Ask& a, const Ask& b) { return a.peer->id() < b.peer->id(); });
    stores.clear();
    for (Ask& a : asks) {
      a.store.key = items[a.item]->key;
      a.store.page = items[a.item]->encoded;
      a.store.generation = items[a.item]->meta.generation;
      stores.push_back(&a.store);
    }
    std::deque<Peer::StoreCall> calls;
    for (size_t start = 0; start < asks.size();) {
      size_t end = start;
      while (end < asks.size() && asks[end].peer == asks[start].peer) ++end;
      while (start < end) {
        calls.emplace_back();
        size_t sent = asks[start].peer->StartStore(
            &calls.back(), absl::MakeConstSpan(stores).subspan(start, end - start));
        if (sent == 0) {
          calls.pop_back();
          for (; start < end; ++start) {
            asks[start].store.result = absl::UnavailableError("peer queue full or peer down");
          }
        }
        start += sent;
      }
    }
    AwaitCalls(absl::ZeroDuration(), [](PageCall* call) {
      call->peer->FinishStore(static_cast<Peer::StoreCall*>(call));
    });
    for (Ask& a : asks) {
      Progress& pr = progress[a.item];
      if (a.store.result.ok() && pr.chosen_count < pr.chosen.size()) {
        pr.chosen[pr.chosen_count++] = {a.rank, a.peer->id()};
      } else if (!a.store.result.ok()) {
        pr.last = a.store.result;
      }
    }
  }
  for (size_t i = 0; i < items.size(); ++i) {
    Progress& pr = progress[i];
    if (pr.chosen_count == 0) {
      items[i]->status = pr.last.ok() ? absl::UnavailableError("no peer can take pages")
                                      : pr.last;
      continue;
    }
    // (Asked in peer order, one request per peer: back in rank order.)
    std::sort(pr.chosen.begin(), pr.chosen.begin() + pr.chosen_count);
    std::array<int, kMaxReplicas> peers;
    for (size_t k = 0; k < pr.chosen_count; ++k) peers[k] = pr.chosen[k].second;
    items[i]->meta.placement = EncodePlacement(absl::MakeConstSpan(peers.data(), pr.chosen_count));
    items[i]->durable = pr.chosen_count >= want;
    items[i]->status = absl::OkStatus();
  }
  // Error statuses hold heap messages: not kept past the batch.
  progress.clear();
  asks.clear();
}

void ClusterTier::LoadBatch(absl::Span<LoadItem* const> items) {
  // One request per peer, all in flight at once; any page that fails there
  // gets the page-by-page path over all its copies. A request per peer is
  // most of a batch's cost on both ends, so where a page has several live
  // copies the batch asks as few peers as it can: the peers take turns in
  // an order that rotates from batch to batch (each comes first as often,
  // so the load stays spread), and each page is loaded from its copy on
  // the peer earliest in this batch's order.
  thread_local std::vector<std::vector<LoadItem*>> by_peer;
  thread_local std::vector<LoadItem*> single;
  for (auto& v : by_peer) v.clear();
  single.clear();
  // The peers, under one lock per batch (never removed: the pointers stay
  // good), not one per page.
  thread_local std::vector<Peer*> peers;
  peers.clear();
  {
    MutexLock lock(&peers_mu_);
    for (const auto& p : peers_) peers.push_back(p.get());
  }
  const size_t peer_count = peers.size();
  const size_t turn =
      peer_count == 0 ? 0 : load_turn_.fetch_add(1, std::memory_order_relaxed) % peer_count;
  for (LoadItem* item : items) {
    Peer* best = nullptr;
    size_t best_place = SIZE_MAX;
    const uint32_t placement = item->meta.placement;
    for (int k = 0; k < PlacementCopies(placement); ++k) {
      const size_t id = static_cast<size_t>(PlacementPeer(placement, k));
      Peer* p = id < peer_count ? peers[id] : nullptr;
      if (p == nullptr || !p->up()) continue;
      const size_t place = (id + peer_count - turn) % peer_count;
      if (place < best_place) {
        best = p;
        best_place = place;
      }
    }
    if (best == nullptr) {
      single.push_back(item);
      continue;
    }
    if (by_peer.size() <= static_cast<size_t>(best->id())) by_peer.resize(best->id() + 1);
    by_peer[best->id()].push_back(item);
  }
  // All started together, each verified as soon as it is back. (Kept by the
  // thread: a lone call's memory, reply arena included, is reused.)
  thread_local std::deque<Peer::LoadCall> calls;
  for (size_t id = 0; id < by_peer.size(); ++id) {
    absl::Span<LoadItem* const> mine = by_peer[id];
    for (size_t start = 0; start < mine.size(); start += Peer::kMaxLoadKeys) {
      calls.emplace_back();
      peers[id]->StartLoad(&calls.back(), mine.subspan(start));
    }
  }
  AwaitCalls(options_.peer.reply_poll, [](PageCall* call) {
    call->peer->FinishLoad(static_cast<Peer::LoadCall*>(call));
  });
  calls.clear();
  for (const auto& mine : by_peer) {
    for (LoadItem* item : mine) {
      if (!item->status.ok()) single.push_back(item);
    }
  }
  for (LoadItem* item : single) item->status = Load(item->key, item->meta, item->out);
}

absl::Status ClusterTier::Load(const PageKey& key, const PageMeta& meta,
                               absl::Span<uint8_t> out) {
  std::vector<int> ids = DecodePlacement(meta.placement);
  // Up peers first: a down one costs a deadline.
  std::stable_partition(ids.begin(), ids.end(), [this](int id) {
    Peer* p = PeerById(id);
    return p != nullptr && p->up();
  });
  absl::Status last = absl::NotFoundError("no copy in the cluster");
  for (int id : ids) {
    Peer* p = PeerById(id);
    if (p == nullptr) continue;
    absl::Status s = p->Load(key, meta.generation, meta.checksum, out);
    if (s.ok()) return s;
    if (s.code() == absl::StatusCode::kDataLoss) {
      fprintf(stderr, "ramster: slot %llu: bad copy on %s: %s\n",
              static_cast<unsigned long long>(key.index), p->address().c_str(),
              std::string(s.message()).c_str());
    }
    last = s;
  }
  return last;
}

void ClusterTier::Invalidate(const PageKey& key, const PageMeta& meta) {
  for (int id : DecodePlacement(meta.placement)) {
    if (Peer* p = PeerById(id)) p->EnqueueInvalidate(key, meta.generation);
  }
}

void ClusterTier::InvalidateReplaced(const PageKey& key, const PageMeta& old,
                                     const PageMeta& now) {
  const std::vector<int> kept = DecodePlacement(now.placement);
  for (int id : DecodePlacement(old.placement)) {
    if (std::find(kept.begin(), kept.end(), id) != kept.end()) continue;
    if (Peer* p = PeerById(id)) p->EnqueueInvalidate(key, old.generation);
  }
}

void ClusterTier::InvalidateObject(uint32_t pool, uint64_t object) {
  MutexLock lock(&peers_mu_);
  for (auto& p : peers_) p->InvalidateObject(pool, object);
}

void ClusterTier::InvalidatePool(uint32_t pool) {
  MutexLock lock(&peers_mu_);
  for (auto& p : peers_) p->InvalidatePool(pool);
}

std::vector<ClusterTier::PeerView> ClusterTier::peers() const {
  std::vector<PeerView> out;
  MutexLock lock(&peers_mu_);
  for (auto& p : peers_) {
    out.push_back(PeerView{p->address(), p->node_id(), p->up(), p->draining(), p->eligible(),
                           p->stores_sent(), p->store_batches(), p->invalidates_sent(),
                           p->stream_retries(), p->link_usable(), p->link_calls(),
                           p->link_failures()});
  }
  return out;
}

// ------------------------------------------------------------ background --

void ClusterTier::BackgroundLoop() {
  NameThisThread("cluster-health");
  MutexLock lock(&stop_mu_);
  while (!stop_) {
    stop_cv_.WaitFor(options_.health_interval);
    if (stop_) break;
    stop_mu_.Unlock();
    CheckNowForTest();
    stop_mu_.Lock();
  }
}

void ClusterTier::CheckNowForTest() {
  bool resolve;
  {
    MutexLock lock(&peers_mu_);
    resolve = absl::Now() - last_resolve_ >= options_.resolve_interval;
  }
  if (resolve) Resolve();
  std::vector<Peer*> all;
  {
    MutexLock lock(&peers_mu_);
    for (auto& p : peers_) all.push_back(p.get());
  }
  bool trouble = false;
  for (Peer* p : all) {
    p->CheckHealth();
    trouble |= !p->up() || p->draining();
  }
  if (trouble || repair_wanted_.exchange(false)) RepairPass();
}

uint64_t ClusterTier::SlotsNeedingRepair() {
  if (slots_ == nullptr) return 0;
  uint64_t n = 0;
  for (uint64_t s = 0; s < slots_->slots(); ++s) {
    std::lock_guard<std::mutex> lock(slots_->StripeFor(s));
    const SlotEntry& e = slots_->at(s);
    if (e.tier() != tier_number_) continue;
    for (int id : DecodePlacement(e.placement())) {
      Peer* p = PeerById(id);
      if (p == nullptr || !p->up() || p->draining()) {
        ++n;
        break;
      }
    }
  }
  return n;
}

void ClusterTier::RepairPass() {
  if (slots_ == nullptr) return;
  for (uint64_t s = 0; s < slots_->slots(); ++s) {
    {
      MutexLock lock(&stop_mu_);
      if (stop_) return;
    }
    std::lock_guard<std::mutex> lock(slots_->StripeFor(s));
    SlotEntry& e = slots_->at(s);
    if (e.tier() != tier_number_) continue;
    if (!RepairSlot(s, &e)) repair_wanted_ = true;
  }
}

// Restores the slot's replica count on healthy peers. REQUIRES: the slot's
// stripe locked. Returns false when the slot still needs work (no source or
// no target right now).
bool ClusterTier::RepairSlot(uint64_t slot, SlotEntry* e) {
  std::vector<int> ids = DecodePlacement(e->placement());
  std::vector<int> good, bad;
  for (int id : ids) {
    Peer* p = PeerById(id);
    (p != nullptr && p->up() && !p->draining() ? good : bad).push_back(id);
  }
  if (bad.empty()) return true;
  const PageKey key{pool_, 0, slot};
  // A source: a good copy, or a draining (but alive) peer's.
  uint8_t raw[kPageSize];
  bool have = false;
  for (int id : ids) {
    Peer* p = PeerById(id);
    if (p == nullptr || !p->up()) continue;
    if (p->Load(key, e->generation, e->checksum, absl::MakeSpan(raw, kPageSize)).ok()) {
      have = true;
      break;
    }
  }
  if (!have) {
    // Every copy is on a peer that is down. Keep naming them: a peer that
    // restarts gracefully still has its pages. The backup tier (if any)
    // serves reads meanwhile.
    unrepairable_++;
    return false;
  }
  EncodedPage enc;
  if (!EncodePage(absl::MakeConstSpan(raw, kPageSize), &enc).ok()) return false;
  std::vector<int> placed = good;
  std::vector<Peer*> targets;
  for (Peer* p : Ranked(slot, ids)) {
    if (p->eligible()) targets.push_back(p);
  }
  for (Peer* p : targets) {
    if (placed.size() >= static_cast<size_t>(options_.replicas)) break;
    Peer::PendingStore store;
    store.key = key;
    store.page = &enc;
    store.generation = e->generation;
    Peer::Completion done(1);
    if (!p->EnqueueStore(&store, &done)) continue;
    done.Wait();
    if (store.result.ok()) placed.push_back(p->id());
  }
  if (placed.size() < static_cast<size_t>(options_.replicas) && placed.size() <= good.size()) {
    return false;  // nowhere to put a new copy yet
  }
  // The bad peers' copies are dropped from the placement; tell the ones that
  // are alive (draining) to free them.
  for (int id : bad) {
    Peer* p = PeerById(id);
    if (p != nullptr && p->up()) p->EnqueueInvalidate(key, e->generation);
  }
  e->Set(e->tier(), e->backup(), EncodePlacement(placed));
  repaired_++;
  return placed.size() >= static_cast<size_t>(options_.replicas);
}

}  // namespace ramster
