// ramster-shim: the block device the kernel swaps to.
//
//   ramster-shim --size=BYTES --peers=HOST:PORT,... --local-swap=PATH
//                [--replicas=N] [--nbd-unix=PATH] [--nbd-listen=127.0.0.1:PORT]
//                [--cache-size=BYTES] [--memory-budget=BYTES] [--self=NODE_ID]
//                [--client-id=NAME] [--stats-file=PATH] [--nbd-workers=N] [--nbd-batch=BYTES]
//                [--nbd-inline=true|false]
//
// Serves NBD in front of the tier stack: [local cache] -> cluster -> local
// swap file. It runs when its host is short of memory, so it locks its
// memory, marks itself an I/O flusher, and refuses to start if what it needs
// does not fit --memory-budget. Logs one line when ready; SIGTERM stops it.
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cluster_tier.h"
#include "client/local_cache_tier.h"
#include "client/local_file_tier.h"
#include "client/tier_stack.h"
#include "common/byte_size.h"
#include "common/flags.h"
#include "common/proc_status.h"
#include "common/thread_name.h"
#include "kernel-shim/nbd_server.h"
#include "kernel-shim/shim_admin.h"
#include "kernel-shim/tier_stack_device.h"
#include "kernel-shim/write_behind_device.h"

ABSL_FLAG(ramster::ByteSize, size, ramster::ByteSize(0), "device size, a multiple of 4096 (e.g. 4G)");
ABSL_FLAG(std::string, peers, "", "HOST:PORT,... of the ramster-servers (a name may resolve to many)");
ABSL_FLAG(std::string, local_swap, "", "path of the local swap file (the last tier)");
ABSL_FLAG(int, replicas, 0, "copies on distinct peers (default: 2 with 2+ peers, else 1)");
ABSL_FLAG(std::string, nbd_unix, "", "serve NBD on this unix socket");
ABSL_FLAG(std::string, nbd_listen, "", "serve NBD on this loopback TCP address");
ABSL_FLAG(ramster::ByteSize, cache_size, ramster::ByteSize(0), "local compressed cache (0: none)");
ABSL_FLAG(ramster::ByteSize, memory_budget, ramster::ByteSize(256ull << 20),
          "most memory the shim may lock (slot map, cache, I/O buffers)");
ABSL_FLAG(std::string, self, "", "node id of this host's own ramster-server (never a target)");
ABSL_FLAG(std::string, client_id, "", "identity presented to peers (default: hostname)");
ABSL_FLAG(std::string, stats_file, "", "write figures as JSON to this file every second");
ABSL_FLAG(int, nbd_workers, ramster::NbdServerOptions().workers,
          "threads executing NBD requests (each runs a batch of waiting requests at a time)");
ABSL_FLAG(bool, nbd_inline, ramster::NbdServerOptions().inline_lone_requests,
          "run a connection's lone request on its reader thread instead of waking a worker");
ABSL_FLAG(bool, nbd_quick_writes, ramster::NbdServerOptions().inline_quick_writes,
          "with a write-behind area: run a burst of whole-page writes on the connection's reader");
ABSL_FLAG(bool, nbd_inline_reads, ramster::NbdServerOptions().inline_read_bursts,
          "run a burst of whole-page reads, when nothing else of its connection is in flight, on "
          "the connection's reader as one batch");
ABSL_FLAG(ramster::ByteSize, nbd_batch,
          ramster::ByteSize(ramster::NbdServerOptions().max_batch_bytes),
          "most bytes of waiting READs or WRITEs run as one batch (one request per peer)");
ABSL_FLAG(absl::Duration, nbd_read_gather, absl::Microseconds(60),
          "after a burst of 8+ reads ran on a connection's reader, the next burst polls for up to "
          "this long until it is as big (a client at a high queue depth; 0: never)");
ABSL_FLAG(absl::Duration, nbd_batch_overtake,
          ramster::NbdServerOptions().batch_overtake_after,
          "a connection runs one batch at a time unless the running one has taken this long");
ABSL_FLAG(ramster::ByteSize, write_behind,
          ramster::ByteSize(ramster::WriteBehindOptions().capacity_bytes),
          "staging area for whole-page writes: acknowledged once copied there, sent to the tiers in "
          "batches by background flushers; FLUSH/FUA wait for them (0: write through)");
ABSL_FLAG(int, write_behind_flushers, ramster::WriteBehindOptions().flushers,
          "threads sending staged pages to the tiers");
ABSL_FLAG(absl::Duration, write_behind_coalesce, ramster::WriteBehindOptions().coalesce_delay,
          "a flusher lets staged pages gather this long (or until 64 are queued) unless a FLUSH or "
          "a writer waits (0: never)");
ABSL_FLAG(bool, write_behind_retain, ramster::WriteBehindOptions().retain,
          "pages that went out stay readable in their staging frames until the frames are wanted "
          "(a swap-in of a recent swap-out needs no round trip)");
ABSL_FLAG(absl::Duration, poll_requests, absl::Microseconds(50),
          "an NBD connection's reader polls for the next request this long before it sleeps "
          "(one polling thread at a time; 0: never)");
ABSL_FLAG(bool, page_link, true,
          "send page calls on each server's page link (plain TCP) when it offers one; "
          "false: always on gRPC page streams");
ABSL_FLAG(absl::Duration, poll_replies, absl::Microseconds(150),
          "a thread waiting for a peer's Load reply polls for it this long before it sleeps "
          "(one polling thread at a time; 0: never)");
ABSL_FLAG(absl::Duration, call_timeout, absl::Seconds(2), "deadline of every call to a peer");
ABSL_FLAG(std::string, admin_listen, "",
          "serve the Admin status (for ramsterctl) on this HOST:PORT (port 0: any)");

namespace ramster {
namespace {

constexpr uint32_t kSwapPool = 1;
constexpr size_t kThreadStack = 512 << 10;

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

std::string StatsJson(TierStack* stack, ClusterTier* cluster, const NbdServer& nbd,
                      const WriteBehindDevice* staging) {
  TierStack::Stats st = stack->stats();
  std::string j = absl::StrCat(
      "{\"stores\": ", st.stores, ", \"loads\": ", st.loads, ", \"invalidates\": ",
      st.invalidates, ", \"same_filled\": ", st.same_filled, ", \"zero_loads\": ",
      st.zero_loads, ", \"backups\": ", st.backups, ", \"not_durable\": ", st.not_durable,
      ", \"load_fallbacks\": ", st.load_fallbacks, ", \"load_failures\": ", st.load_failures,
      ", \"slots_filled\": ", st.slots_filled, ", \"rss_bytes\": ", RssBytes(),
      ", \"slot_map_bytes_per_slot\": ", stack->slot_map()->BytesPerSlot(), ", \"tiers\": [");
  for (size_t i = 0; i < stack->tier_count(); ++i) {
    absl::StrAppend(&j, i ? ", " : "", "{\"name\": \"", std::string(stack->tier(i)->name()),
                    "\", \"slots\": ", st.slots_in[i], ", \"stored\": ", st.stored_in[i],
                    ", \"refused\": ", st.refused_by[i], "}");
  }
  absl::StrAppend(&j, "], \"peers\": [");
  if (cluster != nullptr) {
    bool first = true;
    for (const auto& p : cluster->peers()) {
      absl::StrAppend(&j, first ? "" : ", ", "{\"address\": \"", p.address, "\", \"node_id\": \"",
                      p.node_id, "\", \"up\": ", p.up ? "true" : "false", ", \"stores\": ",
                      p.stores, "}");
      first = false;
    }
  }
  NbdServerStats n = nbd.stats();
  absl::StrAppend(&j, "], \"nbd\": {\"reads\": ", n.reads, ", \"writes\": ", n.writes,
                  ", \"trims\": ", n.trims, ", \"errors\": ", n.errors,
                  ", \"batches\": ", n.batches, ", \"batched_requests\": ", n.batched_requests,
                  ", \"inline_requests\": ", n.inline_requests,
                  ", \"gathered_bursts\": ", n.gathered_bursts,
                  ", \"read_us\": {\"count\": ", n.read_latency.count,
                  ", \"p50\": ", n.read_latency.p50_ns / 1000.0,
                  ", \"p90\": ", n.read_latency.p90_ns / 1000.0,
                  ", \"p99\": ", n.read_latency.p99_ns / 1000.0, "}",
                  ", \"connections\": ", n.connections_active, "}");
  if (staging != nullptr) {
    WriteBehindDevice::Stats w = staging->stats();
    absl::StrAppend(&j, ", \"write_behind\": {\"capacity_pages\": ", w.capacity_pages,
                    ", \"staged_pages\": ", w.staged_pages, ", \"retained_pages\": ",
                    w.retained_pages, ", \"staged_writes\": ", w.staged_writes,
                    ", \"read_hits\": ", w.read_hits, ", \"retained_hits\": ", w.retained_hits,
                    ", \"flushed_pages\": ",
                    w.flushed_pages, ", \"flush_batches\": ", w.flush_batches,
                    ", \"flush_failures\": ", w.flush_failures, ", \"superseded\": ",
                    w.superseded, ", \"room_waits\": ", w.room_waits,
                    ", \"written_through\": ", w.written_through, "}");
  }
  absl::StrAppend(&j, "}\n");
  return j;
}

int Fail(const std::string& why) {
  fprintf(stderr, "ramster-shim: %s\n", why.c_str());
  return 2;
}

int Run() {
  const uint64_t size = absl::GetFlag(FLAGS_size).bytes;
  if (size == 0 || size % kPageSize != 0) return Fail("--size must be a positive multiple of 4096");
  const std::string local_swap = absl::GetFlag(FLAGS_local_swap);
  if (local_swap.empty()) return Fail("--local-swap is required (the last tier)");
  NbdServerOptions nbd_options;
  // The kernel's swap I/O is 4-128 KiB per request; bigger requests (tools)
  // are still served, 8 MiB at most, from a 16 MiB preallocated arena.
  nbd_options.max_request_bytes = 8 << 20;
  nbd_options.buffer_pool_bytes = 16 << 20;
  nbd_options.workers = absl::GetFlag(FLAGS_nbd_workers);
  nbd_options.max_batch_bytes = absl::GetFlag(FLAGS_nbd_batch).bytes;
  nbd_options.batch_overtake_after = absl::GetFlag(FLAGS_nbd_batch_overtake);
  nbd_options.inline_lone_requests = absl::GetFlag(FLAGS_nbd_inline);
  nbd_options.inline_quick_writes = absl::GetFlag(FLAGS_nbd_quick_writes);
  nbd_options.inline_read_bursts = absl::GetFlag(FLAGS_nbd_inline_reads);
  nbd_options.request_poll = absl::GetFlag(FLAGS_poll_requests);
  nbd_options.read_gather = absl::GetFlag(FLAGS_nbd_read_gather);
  nbd_options.unix_path = absl::GetFlag(FLAGS_nbd_unix);
  nbd_options.tcp_listen = absl::GetFlag(FLAGS_nbd_listen);
  if (nbd_options.unix_path.empty() && nbd_options.tcp_listen.empty()) {
    return Fail("give --nbd-unix or --nbd-listen");
  }
  std::vector<std::string> peers;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_peers), ',', absl::SkipEmpty())) {
    peers.emplace_back(p);
  }
  int replicas = absl::GetFlag(FLAGS_replicas);
  if (replicas == 0) replicas = peers.size() >= 2 ? 2 : 1;

  // What the shim will hold, against its budget.
  const uint64_t slots = size / kPageSize;
  const uint64_t budget = absl::GetFlag(FLAGS_memory_budget).bytes;
  const uint64_t cache = absl::GetFlag(FLAGS_cache_size).bytes;
  const uint64_t slot_map = slots * sizeof(SlotEntry);
  const uint64_t buffers = nbd_options.buffer_pool_bytes;
  const uint64_t staging = absl::GetFlag(FLAGS_write_behind).bytes;
  const uint64_t overhead = 48ull << 20;  // code, libraries, thread stacks, gRPC
  if (slot_map + cache + buffers + staging + overhead > budget) {
    return Fail(absl::StrCat("--memory-budget ", FormatBytes(budget), " is too small: slot map ",
                             FormatBytes(slot_map), " + cache ", FormatBytes(cache),
                             " + I/O buffers ", FormatBytes(buffers), " + write-behind ",
                             FormatBytes(staging), " + ~",
                             FormatBytes(overhead), " for the process"));
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Small thread stacks: with mlockall every stack page is resident.
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kThreadStack);
  pthread_setattr_default_np(&attr);
  pthread_attr_destroy(&attr);
  // Writing pages out must not wait for memory that only writing pages out
  // can free.
  if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0) {
    fprintf(stderr, "ramster-shim: warning: PR_SET_IO_FLUSHER: %s\n", strerror(errno));
  }

  std::string client_id = absl::GetFlag(FLAGS_client_id);
  if (client_id.empty()) client_id = Hostname();
  std::vector<std::unique_ptr<Tier>> tiers;
  if (cache > 0) tiers.push_back(std::make_unique<LocalCacheTier>(cache));
  ClusterTier* cluster = nullptr;
  if (!peers.empty()) {
    ClusterOptions o;
    o.peers = peers;
    o.self_node_id = absl::GetFlag(FLAGS_self);
    o.replicas = replicas;
    o.peer.client_id = client_id;
    o.peer.boot_epoch = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
    o.peer.pool = kSwapPool;
    o.peer.call_timeout = absl::GetFlag(FLAGS_call_timeout);
    o.peer.reply_poll = absl::GetFlag(FLAGS_poll_replies);
    o.peer.page_link = absl::GetFlag(FLAGS_page_link);
    absl::StatusOr<std::unique_ptr<ClusterTier>> c = ClusterTier::Create(std::move(o));
    if (!c.ok()) return Fail(c.status().ToString());
    cluster = c->get();
    tiers.push_back(std::move(*c));
  }
  absl::StatusOr<std::unique_ptr<LocalFileTier>> file = LocalFileTier::Open(local_swap, slots);
  if (!file.ok()) return Fail(file.status().ToString());
  tiers.push_back(std::move(*file));
  TierStack stack(slots, kSwapPool, std::move(tiers));
  TierStackDevice device(&stack);
  std::unique_ptr<WriteBehindDevice> write_behind;
  if (staging > 0) {
    WriteBehindOptions w;
    w.capacity_bytes = staging;
    w.flushers = absl::GetFlag(FLAGS_write_behind_flushers);
    w.coalesce_delay = absl::GetFlag(FLAGS_write_behind_coalesce);
    w.retain = absl::GetFlag(FLAGS_write_behind_retain);
    absl::StatusOr<std::unique_ptr<WriteBehindDevice>> d = WriteBehindDevice::Create(&device, w);
    if (!d.ok()) return Fail(absl::StrCat("--write-behind: ", d.status().ToString()));
    write_behind = std::move(*d);
  }
  BlockDevice* served = write_behind != nullptr ? static_cast<BlockDevice*>(write_behind.get())
                                                : &device;

  NbdServer nbd(served, nbd_options);
  if (absl::Status s = nbd.Start(); !s.ok()) return Fail(s.ToString());
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    fprintf(stderr, "ramster-shim: warning: mlockall: %s (the swap path may stall)\n",
            strerror(errno));
  }

  // The Admin endpoint, for ramsterctl.
  std::unique_ptr<ShimAdminService> admin;
  std::unique_ptr<grpc::Server> admin_server;
  std::string admin_where;
  if (const std::string listen = absl::GetFlag(FLAGS_admin_listen); !listen.empty()) {
    ShimAdminService::Identity id;
    id.client_id = client_id;
    id.memory_budget = budget;
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
    admin = std::make_unique<ShimAdminService>(&stack, id);
    builder.RegisterService(admin.get());
    admin_server = builder.BuildAndStart();
    if (admin_server == nullptr || port == 0) return Fail("cannot serve Admin on " + listen);
    const std::string address = absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
    admin->set_address(address);
    admin_where = ", Admin on " + address;
  }
  std::string where = nbd_options.unix_path.empty() ? "" : "unix:" + nbd_options.unix_path;
  if (!nbd_options.tcp_listen.empty()) {
    absl::StrAppend(&where, where.empty() ? "" : " and ", "tcp:127.0.0.1:", nbd.tcp_port());
  }
  fprintf(stderr,
          "ramster-shim: ready: NBD on %s%s, %s device, %zu peers, replicas %d, local swap %s, "
          "write-behind %s, RSS %s\n",
          where.c_str(), admin_where.c_str(), FormatBytes(size).c_str(), peers.size(), replicas,
          local_swap.c_str(), staging > 0 ? FormatBytes(staging).c_str() : "off",
          FormatBytes(RssBytes()).c_str());
  fflush(stderr);

  // Figures for the demo and tests, once a second.
  std::atomic<bool> stop{false};
  std::thread stats;
  const std::string stats_file = absl::GetFlag(FLAGS_stats_file);
  if (!stats_file.empty()) {
    stats = std::thread([&] {
      NameThisThread("stats");
      while (!stop.load()) {
        std::string tmp = stats_file + ".tmp";
        {
          std::ofstream out(tmp, std::ios::trunc);
          out << StatsJson(&stack, cluster, nbd, write_behind.get());
        }
        rename(tmp.c_str(), stats_file.c_str());
        for (int i = 0; i < 10 && !stop.load(); ++i) absl::SleepFor(absl::Milliseconds(100));
      }
    });
  }

  int sig = 0;
  sigwait(&signals, &sig);
  fprintf(stderr, "ramster-shim: %s: stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  nbd.Stop();
  if (admin_server != nullptr) admin_server->Shutdown();
  stop = true;
  if (stats.joinable()) stats.join();
  if (write_behind != nullptr) {
    write_behind.reset();  // drains the staging area into the tiers
  }
  TierStack::Stats st = stack.stats();
  fprintf(stderr, "ramster-shim: stopped after %llu stores, %llu loads, %llu load failures\n",
          static_cast<unsigned long long>(st.stores), static_cast<unsigned long long>(st.loads),
          static_cast<unsigned long long>(st.load_failures));
  return 0;
}

}  // namespace
}  // namespace ramster

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ramster-shim --size=BYTES --peers=HOST:PORT,... --local-swap=PATH [--replicas=N] "
      "[--nbd-unix=PATH] [--nbd-listen=127.0.0.1:PORT] [--cache-size=BYTES] "
      "[--memory-budget=BYTES]");
  ramster::ParseCommandLineWithDashes(argc, argv);
  // gRPC's locks are absl::Mutex; Debian's Abseil checks every acquisition
  // for lock-order cycles (a debugging aid that showed in the swap path's
  // profile). Our own locks are ordered by design and checked by the tests.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return ramster::Run();
}
