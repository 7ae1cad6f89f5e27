// ClusterTier: pages in the RAM of remote peers (ramster-servers).
//
// Placement: rendezvous hashing of the slot's run (kPlacementRun slots in a
// row) over the peers that are eligible (up, in session, not draining, not
// full; never this host's own server, named by `self_node_id`). A page goes
// to `replicas` distinct peers; fewer acks still keep the page but report it
// not durable, so the stack also writes it to the next tier (the local swap
// file). Runs rather than single slots: the pages of a run that a server
// holds fill one block of its index (server/page_table.h) instead of a few
// pages each in many, and the kernel's swap clusters (consecutive slots)
// travel to one peer in one request rather than to all of them.
//
// Failure handling: every call has a deadline; failed calls and health
// checks mark peers down; a background thread then re-replicates the pages
// that had a copy on a down or draining peer from a surviving copy, and
// drops the lost peer from the slot's placement once the replica count is
// back. A peer that comes back is used again for new pages.
//
// Batches: StoreBatch and LoadBatch give each peer its share of the pages
// as one request (per max_batch_pages stores, per 256 loads), to all the
// peers at once, and wait for the answers on the calling thread (no thread
// switch between the caller and the network). A page with several live
// copies is loaded from the one that lets its batch ask the fewest peers;
// which peers those are rotates from batch to batch (see LoadBatch).
//
// Placement bits in the slot map (26): 2 bits replica count, then up to
// three 8-bit peer ids. So at most 3 replicas and 256 peers per client.
//
// Thread safety: Store/Load/Invalidate may be called concurrently (the stack
// never does so for one slot). Background threads lock the slot map's
// stripes to change placements.
#ifndef RAMSTER_CLIENT_CLUSTER_TIER_H_
#define RAMSTER_CLIENT_CLUSTER_TIER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/peer.h"
#include "client/slot_map.h"
#include "client/tier.h"
#include "common/mutex.h"

namespace ramster {

struct ClusterOptions {
  // HOST:PORT entries. A HOST that resolves to several addresses (a
  // Kubernetes headless service) gives one peer per address; names are
  // re-resolved every `resolve_interval`.
  std::vector<std::string> peers;
  // This host's own server's node id: never a target.
  std::string self_node_id;
  int replicas = 2;
  absl::Duration health_interval = absl::Milliseconds(500);
  absl::Duration resolve_interval = absl::Seconds(30);
  PeerOptions peer;
};

class ClusterTier final : public Tier {
 public:
  static constexpr int kMaxReplicas = 3;
  static constexpr int kMaxPeers = 256;
  // Slots placed together (the server's index block: PageTable::kBlockPages).
  static constexpr uint64_t kPlacementRun = 64;

  // Resolves the peers and checks their health once before returning.
  static absl::StatusOr<std::unique_ptr<ClusterTier>> Create(ClusterOptions options);
  ~ClusterTier() override;

  std::string_view name() const override { return "cluster"; }
  absl::Status Store(const PageKey& key, absl::Span<const uint8_t> raw,
                     const EncodedPage& encoded, PageMeta* meta, bool* durable) override;
  absl::Status Load(const PageKey& key, const PageMeta& meta,
                    absl::Span<uint8_t> out) override;
  void StoreBatch(absl::Span<StoreItem* const> items) override;
  void LoadBatch(absl::Span<LoadItem* const> items) override;
  void Invalidate(const PageKey& key, const PageMeta& meta) override;
  // Skips the peers in `now`'s placement: their copy of `old` was replaced
  // by the newer one (a peer keeps one copy per key; an invalidation up to
  // the old generation would find the new one and leave it).
  void InvalidateReplaced(const PageKey& key, const PageMeta& old, const PageMeta& now) override;
  void InvalidateObject(uint32_t pool, uint64_t object) override;
  void InvalidatePool(uint32_t pool) override;
  bool overwrites_in_place() const override { return false; }
  // Lets the repair thread walk the slots this tier holds.
  void AttachSlotMap(SlotMap* slots, uint32_t tier_number, uint32_t pool) override;

  // Placement bits.
  static uint32_t EncodePlacement(absl::Span<const int> peers);
  static std::vector<int> DecodePlacement(uint32_t placement);
  // The same without a vector: how many copies, and the peer of copy `i`.
  static int PlacementCopies(uint32_t placement) { return static_cast<int>(placement & 3); }
  static int PlacementPeer(uint32_t placement, int i) {
    return static_cast<int>((placement >> (2 + 8 * i)) & 0xFF);
  }

  struct PeerView {
    std::string address, node_id;
    bool up, draining, eligible;
    uint64_t stores, batches, invalidates;
    // Requests sent again on a new page stream or link after an idle one
    // failed.
    uint64_t stream_retries;
    // Page calls sent on the peer's page link; new links that failed.
    bool link_usable;
    uint64_t link_calls, link_failures;
  };
  std::vector<PeerView> peers() const;
  uint64_t repaired() const { return repaired_.load(); }
  uint64_t unrepairable() const { return unrepairable_.load(); }
  // Runs health checks and one repair pass now (for tests).
  void CheckNowForTest();
  // Slots that still name a down or draining peer (for tests and status).
  uint64_t SlotsNeedingRepair();

 private:
  explicit ClusterTier(ClusterOptions options);
  void Resolve();
  std::vector<Peer*> Ranked(uint64_t slot, const std::vector<int>& exclude);
  Peer* PeerById(int id) const;
  bool IsSelf(const Peer& p) const;
  void BackgroundLoop();
  void RepairPass();
  bool RepairSlot(uint64_t slot, SlotEntry* e);

  const ClusterOptions options_;

  mutable Mutex peers_mu_;
  std::vector<std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(peers_mu_);
  // Turns of LoadBatch: which peer comes first in its order (see there).
  std::atomic<uint64_t> load_turn_{0};
  absl::Time last_resolve_ ABSL_GUARDED_BY(peers_mu_);

  SlotMap* slots_ = nullptr;  // set once by AttachSlotMap
  uint32_t tier_number_ = 0;
  uint32_t pool_ = 0;

  std::atomic<uint64_t> repaired_{0}, unrepairable_{0};
  std::atomic<bool> repair_wanted_{false};

  Mutex stop_mu_;
  CondVar stop_cv_{&stop_mu_};
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread background_;
};

}  // namespace ramster

#endif  // RAMSTER_CLIENT_CLUSTER_TIER_H_
