// Node: the page-store node's state. Compressed pages of many clients in a
// RAM tier (slabs, strict limits) with a RocksDB overflow tier, the clients'
// sessions (epochs, leases, quotas, pools), and the figures an operator sees.
// The gRPC services (services.h) are thin layers over it.
//
// Invariants (each index shard's mutex guards its entries):
//  1. A page lives in exactly one tier: its entry says RAM (a slab handle) or
//     disk (a RocksDB record under its key). Moving it, replacing it and
//     freeing it all happen under the shard's lock, RocksDB writes included.
//  2. The RAM budget (slab chunks + the index's blocks) never passes
//     --memory-limit; the disk budget (record bytes) never passes
//     --disk-limit; a client's charge (its payloads, wherever the pages
//     live, + the index blocks that describe them) never passes its quota.
//     Every charge is taken before the thing it pays for exists (the index
//     at its most, trued up under the shard lock), so concurrent stores
//     cannot overshoot.
//  3. A page with a higher generation is never replaced by a lower one.
//  4. Pages belong to the client identity that stored them; no request can
//     name another client's pages.
//
// Thread safety: every public method may be called from any thread.
#ifndef RAMSTER_SERVER_NODE_H_
#define RAMSTER_SERVER_NODE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/mutex.h"
#include "common/store_wire.h"
#include "ramster/v1/admin.pb.h"
#include "ramster/v1/page_store.pb.h"
#include "server/disk_tier.h"
#include "server/load_reply.h"
#include "server/memory_budget.h"
#include "server/page_table.h"
#include "server/slab_allocator.h"

namespace ramster {

struct NodeOptions {
  uint64_t ram_limit = 64 << 20;
  uint64_t disk_limit = 1ull << 30;
  std::string data_dir;
  // Grant of a client that no admin has set a quota for. 0: no per-client
  // limit beyond the node's own.
  uint64_t default_client_quota = 0;
  absl::Duration lease = absl::Minutes(10);
  // Write-back starts above high * limit and stops below low * limit.
  double high_watermark = 0.90;
  double low_watermark = 0.80;
  // How often the background thread checks watermarks and leases.
  absl::Duration maintenance_interval = absl::Milliseconds(50);
  // LZ4HC level (1..12) at which a thread of the lowest priority
  // recompresses the LZ4 pages in RAM (RecompressSome); 0: none.
  int recompress_level = 0;
  // A page is recompressed once it has been stored at least this long (and,
  // while the walker keeps up, within about twice this long): pages that
  // are replaced or freed sooner are not worth the CPU.
  absl::Duration recompress_age = absl::Seconds(1);
  // False: no thread; only RecompressSome calls recompress (tests).
  bool recompress_thread = true;
  // The clock recompression walks are timed by (tests step their own).
  std::function<absl::Time()> recompress_clock = absl::Now;
};

// Request limits (see proto/README.md).
inline constexpr int kMaxPagesPerBatch = 256;
inline constexpr int kMaxRangesPerBatch = 1024;
inline constexpr int kMaxPoolsPerSession = 64;

// The most a client's page can cost it, wherever the page lives: the payload
// plus what its index entry can add (a page that starts a new index block;
// a page next to others costs its 20-byte entry or nothing).
inline uint64_t ClientCharge(uint32_t payload_length) {
  return payload_length + PageTable::kMaxInsertBytes;
}

class Node {
 public:
  // Opens the disk tier in options.data_dir and reloads what it holds.
  static absl::StatusOr<std::unique_ptr<Node>> Open(NodeOptions options);
  // Stops the background thread. Does not write RAM pages back; call
  // Shutdown for that.
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // PageStore. `client` is the authenticated identity.
  absl::Status OpenSession(const std::string& client,
                           const v1::OpenSessionRequest& request,
                           v1::OpenSessionResponse* response);
  absl::Status Heartbeat(const std::string& client,
                         const v1::HeartbeatRequest& request,
                         v1::HeartbeatResponse* response);
  // A whole-request error (no session, stale epoch, batch too large) is the
  // return value; otherwise one status per page in the response.
  absl::Status Store(const std::string& client, const v1::StoreRequest& request,
                     v1::StoreResponse* response);
  // The same for a request read without a message (common/store_wire.h):
  // one status per page in `results` (as many as `pages`).
  absl::Status Store(const std::string& client, uint64_t boot_epoch,
                     absl::Span<const StorePageFields> pages, absl::Span<absl::Status> results);
  // Gives `sink` one result per key, in request order (none when the whole
  // request fails).
  absl::Status Load(const std::string& client, const v1::LoadRequest& request,
                    LoadSink* sink);
  absl::Status Load(const std::string& client, const v1::LoadRequest& request,
                    v1::LoadResponse* response) {
    LoadResponseSink sink(response);
    return Load(client, request, &sink);
  }
  absl::Status Invalidate(const std::string& client,
                          const v1::InvalidateRequest& request,
                          v1::InvalidateResponse* response);

  // Admin.
  void GetStatus(v1::NodeStatus* status);
  void ListClients(v1::ListClientsResponse* response);
  absl::Status SetClientQuota(const std::string& client, uint64_t bytes,
                              v1::ClientUsage* usage);
  void SetMemoryLimit(uint64_t bytes, v1::SetMemoryLimitResponse* response);
  void SetDraining(bool draining);
  // The node's name and address as reported to clients and operators; set
  // once the server knows its port.
  void SetIdentity(std::string node_id, std::string address);
  // Sessions opened from now on advertise this page link port (0: none).
  void SetPageLinkPort(uint16_t port) { page_link_port_.store(port); }
  bool draining() const { return draining_.load(); }

  // For a graceful stop: writes every persistent RAM page to disk (as far as
  // the disk limit allows) and makes the disk tier durable. Returns how many
  // pages could not be written (they are lost with the process).
  absl::StatusOr<uint64_t> Shutdown();

  // Counts a request rejected before it reached the node (bad identity).
  void CountRejected() { ops_.rejected.fetch_add(1, std::memory_order_relaxed); }

  // True while no request can touch the disk tier: nothing is on disk and
  // RAM is below the write-back watermark. Services then answer page
  // requests on the gRPC thread itself instead of handing them to workers.
  bool ServesFromRam() const {
    return pages_on_disk_.load(std::memory_order_relaxed) == 0 &&
           ram_.used() < static_cast<uint64_t>(ram_.limit() * options_.high_watermark);
  }

  const NodeOptions& options() const { return options_; }
  uint64_t ram_used() const { return ram_.used(); }
  uint64_t disk_used() const { return disk_.used(); }

  // Runs one maintenance pass now (watermarks, leases); for tests.
  void RunMaintenanceForTest() { Maintain(); }

  // Recompression: denser payloads for the pages a node holds, made with
  // spare CPU. Clients encode with LZ4 at its fastest, because their CPU
  // is busy when they swap; a donor re-encodes each LZ4 page in RAM that
  // has stayed a while once with LZ4HC (options().recompress_level), the
  // same block format, so loads and clients see no difference but a
  // shorter payload. A page moves to the smaller slab object only when that
  // is a smaller size class; either way it is marked and not looked at
  // again (a new store of the key is a new copy). The old copy is read, and
  // the new one put in its place, under the shard lock, each only if the
  // entry still names the same copy; the encoding runs outside it. The new
  // payload is decoded and checked against the page's checksum before it
  // replaces the old one. The page's owner is charged for the smaller
  // payload from then on.
  //
  // The work goes in walks over the whole index, at most one per
  // options().recompress_age: a walk marks the LZ4 copies it sees for the
  // first time and recompresses those an earlier walk marked, so a copy
  // replaced or freed within one age never costs the CPU (under a stream
  // of overwrites, most of them). A walk is started only when the last one
  // left work for the next, or pages were stored since it started.
  //
  // Goes on with the current walk, and starts the next if one is due (one
  // at most), until it has looked at `max_pages` copies or its walk ends.
  // Returns how many copies it marked or recompressed (or found not worth
  // it): 0 when there was nothing to do now, or recompression is off.
  // Open starts a thread (SCHED_IDLE, and at most a fifth of one CPU)
  // that calls it.
  uint64_t RecompressSome(uint64_t max_pages);

 private:
  struct Client;
  using Key = PageTableKey;
  using Entry = PageEntry;

  static constexpr int kShards = 64;
  struct Shard {
    Mutex mu;
    PageTable table ABSL_GUARDED_BY(mu);
  };

  explicit Node(NodeOptions options);
  absl::Status Reload();

  // Finds the client by identity and checks the epoch; on success holds a
  // shared lock on the client's reclaim lock.
  absl::StatusOr<Client*> Authorize(const std::string& name, uint64_t epoch);
  Client* FindOrCreateClient(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_);
  absl::Status PersistClient(const Client& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_);
  std::string EncodeClientMeta(const Client& c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_);

  absl::Status StoreOne(Client* c, const StorePageFields& page, uint8_t* scratch);
  // Asks the CPU for the RAM payloads of `keys` ahead of LoadOne: a batch's
  // payloads are cold (a donor's pages are read about once), and fetched
  // together their misses overlap instead of each copy waiting for its own.
  void PrefetchPayloads(Client* c,
                        const google::protobuf::RepeatedPtrField<v1::PageKey>& keys);
  // Gives the page to `sink` if it can be returned; otherwise says why.
  absl::Status LoadOne(Client* c, const v1::PageKey& key, LoadSink* sink,
                       uint8_t* scratch);
  // Removes every page of (client[, pool[, object]]). REQUIRES: the client's
  // reclaim lock held exclusively.
  uint64_t RemoveRange(Client* c, int depth, uint32_t pool, uint64_t object);
  void FillUsage(const Client& c, v1::ClientUsage* usage)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(clients_mu_);

  Shard& ShardFor(const Key& k);
  // Undoes the index charge of `bytes` freed from the table for client `c`.
  void ReleaseIndex(Client* c, uint64_t bytes);
  // Frees whatever `e` occupies and undoes its accounting.
  // REQUIRES: the shard of `k` locked; the entry is being removed.
  void ReleaseEntry(const Key& k, const Entry& e, Client* c,
                    DiskTier::Batch* deletes);

  // Moves RAM pages out until RAM use is at most `target`: drops ephemeral
  // pages first, then writes persistent ones to disk, least recently used
  // first (a CLOCK sweep). Returns (written back, dropped).
  std::pair<uint64_t, uint64_t> Evict(uint64_t target, bool ephemeral_only);
  void Maintain();
  void MaintenanceLoop();
  void ExpireLeases();

  struct RecompressCandidate {
    Key key;
    uint64_t handle;
    uint64_t checksum;
    uint32_t generation;
    uint32_t length;
    // The entry still names this copy, and it was not looked at yet.
    bool Is(const Entry* e) const {
      return e != nullptr && e->in_ram() && e->handle() == handle &&
             e->generation() == generation && e->length() == length &&
             e->checksum() == checksum && !(e->flags() & Entry::kRecompressed);
    }
  };
  struct Recompressor;
  // False when there was no RAM for the new copy beside the old one.
  bool RecompressOne(Shard& shard, const RecompressCandidate& cand, Client* c,
                     Recompressor* r);
  void RecompressLoop();

  const NodeOptions options_;
  const absl::Time started_;
  mutable Mutex identity_mu_;
  std::string node_id_ ABSL_GUARDED_BY(identity_mu_);
  std::string address_ ABSL_GUARDED_BY(identity_mu_);
  std::atomic<uint16_t> page_link_port_{0};
  Budget ram_;
  Budget disk_;
  SlabAllocator slab_;
  std::unique_ptr<DiskTier> disk_tier_;
  Shard shards_[kShards];
  std::atomic<bool> draining_{false};
  Mutex evict_mu_;  // one eviction pass at a time

  mutable Mutex clients_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Client>> clients_
      ABSL_GUARDED_BY(clients_mu_);
  std::vector<Client*> clients_by_id_ ABSL_GUARDED_BY(clients_mu_);

  struct Ops {
    std::atomic<uint64_t> stores{0}, stores_refused{0}, loads{0},
        load_misses{0}, invalidates{0}, written_back{0}, ephemeral_dropped{0},
        rejected{0}, recompressed{0}, recompress_saved{0}, recompress_tried{0},
        recompress_tried_bytes{0}, recompress_passed_over{0};
  } ops_;
  std::atomic<uint64_t> pages_in_ram_{0}, pages_on_disk_{0};
  std::atomic<uint64_t> payload_bytes_{0};
  std::atomic<uint64_t> index_bytes_{0};

  Mutex stop_mu_;
  CondVar stop_cv_{&stop_mu_};
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread maintenance_;

  // One walker at a time: the thread, or a test.
  Mutex recompress_mu_;
  std::unique_ptr<Recompressor> recompressor_ ABSL_GUARDED_BY(recompress_mu_);
  // The recompressor's sampling (Recompressor::one_in), for GetStatus.
  std::atomic<uint32_t> recompress_one_in_{0};
  std::thread recompress_thread_;
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_NODE_H_
