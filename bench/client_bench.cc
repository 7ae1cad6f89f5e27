// client_bench: pages/s and latency of store and load through the client's
// tier stack (cluster tier -> local swap file) against local ramster-servers,
// with 1 and 2 replicas, and what the slot map costs per slot.
//
//   client_bench [--servers=3] [--threads=4] [--pages=40000] [--rounds=3]
//                [--server_binary=PATH] [--json=PATH]
//
// Each thread stores its own slots (one page per call, as the shim does for
// each 4 KiB swap write; concurrent calls to one peer share its batches),
// then loads them back and verifies every byte. Latency is per page.
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cluster_tier.h"
#include "client/local_file_tier.h"
#include "client/tier_stack.h"
#include "common/proc_status.h"
#include "tests/server_process.h"

ABSL_FLAG(int, servers, 3, "local ramster-servers to start");
ABSL_FLAG(int, threads, 4, "client threads");
ABSL_FLAG(int, pages, 40000, "pages stored (and loaded) per configuration and round");
ABSL_FLAG(int, rounds, 3, "rounds per configuration; the median is reported");
ABSL_FLAG(std::string, server_binary, "", "path to ramster-server (default: next to this binary)");
ABSL_FLAG(std::string, json, "", "also write the figures as JSON here");

namespace ramster {
namespace {

using Clock = std::chrono::steady_clock;

// A swap-like page: 60% text-like, 20% same-filled, 20% random.
void MakePage(uint64_t slot, uint64_t round, uint8_t* p) {
  static const char kText[] = "cold anonymous memory of a process that is swapped out ";
  uint64_t x = (slot + 1) * 0x9E3779B97F4A7C15ULL + round;
  switch (slot % 5) {
    case 0:
      for (size_t i = 0; i < kPageSize; i += 8) std::memcpy(p + i, &x, 8);
      return;
    case 1:
      for (size_t i = 0; i < kPageSize; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::memcpy(p + i, &x, 8);
      }
      return;
    default:
      for (size_t i = 0; i < kPageSize; ++i) p[i] = kText[(i + x % 97) % (sizeof(kText) - 1)];
      std::memcpy(p, &x, 8);
      return;
  }
}

struct Figures {
  double pages_per_s = 0, p50_us = 0, p99_us = 0;
};

Figures Summarize(std::vector<double>* lat, double seconds) {
  Figures f;
  std::sort(lat->begin(), lat->end());
  f.pages_per_s = lat->size() / seconds;
  f.p50_us = (*lat)[lat->size() / 2];
  f.p99_us = (*lat)[lat->size() * 99 / 100];
  return f;
}

template <typename T>
T Median(std::vector<T> v, double T::*field) {
  std::sort(v.begin(), v.end(), [field](const T& a, const T& b) { return a.*field < b.*field; });
  return v[v.size() / 2];
}

int Run() {
  const int n_servers = absl::GetFlag(FLAGS_servers);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int pages = absl::GetFlag(FLAGS_pages);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::string binary = absl::GetFlag(FLAGS_server_binary);
  if (binary.empty()) binary = RunfilePath("server/ramster-server");
  char tmpl[] = "/tmp/client_bench_XXXXXX";
  std::string dir = mkdtemp(tmpl);

  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::vector<std::string> addresses;
  for (int i = 0; i < n_servers; ++i) {
    std::string d = absl::StrCat(dir, "/node", i);
    mkdir(d.c_str(), 0700);
    servers.push_back(std::make_unique<ServerProcess>(
        binary, std::vector<std::string>{"--memory-limit=2G", "--disk-limit=0", "--data-dir=" + d,
                                         absl::StrCat("--node-id=node", i)}));
    if (!servers.back()->Start()) {
      fprintf(stderr, "client_bench: cannot start %s\n", binary.c_str());
      return 1;
    }
    addresses.push_back(servers.back()->address());
  }
  printf("client_bench: %d servers, %d client threads, %d pages per round, %d rounds "
         "(all on this %u-core machine)\n",
         n_servers, threads, pages, rounds, std::thread::hardware_concurrency());
  printf("%-10s %-6s %12s %10s %10s\n", "replicas", "op", "pages/s", "p50 us", "p99 us");

  std::string json = "{\"configs\": [";
  double slot_map_bytes = 0;
  for (int replicas : {1, 2}) {
    std::vector<Figures> store_f, load_f;
    for (int round = 0; round < rounds; ++round) {
      ClusterOptions o;
      o.peers = addresses;
      o.replicas = replicas;
      o.peer.client_id = absl::StrCat("bench-r", replicas, "-", round);
      o.peer.boot_epoch = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
      o.peer.pool = 1;
      auto cluster = ClusterTier::Create(o);
      auto file = LocalFileTier::Open(dir + "/swap", pages);
      if (!cluster.ok() || !file.ok()) {
        fprintf(stderr, "client_bench: %s %s\n", cluster.status().ToString().c_str(),
                file.status().ToString().c_str());
        return 1;
      }
      std::vector<std::unique_ptr<Tier>> tiers;
      tiers.push_back(std::move(*cluster));
      tiers.push_back(std::move(*file));
      TierStack stack(pages, 1, std::move(tiers));
      slot_map_bytes = stack.slot_map()->BytesPerSlot();

      std::atomic<int> errors{0};
      auto phase = [&](bool store, std::vector<double>* all) {
        std::vector<std::vector<double>> lat(threads);
        auto t0 = Clock::now();
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t) {
          ts.emplace_back([&, t] {
            uint8_t page[kPageSize], out[kPageSize];
            for (int s = t; s < pages; s += threads) {
              auto a = Clock::now();
              if (store) {
                MakePage(s, round, page);
                if (!stack.Store(s, absl::MakeConstSpan(page, kPageSize)).ok()) errors++;
              } else {
                if (!stack.Load(s, absl::MakeSpan(out, kPageSize)).ok()) errors++;
              }
              lat[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
              if (!store) {
                MakePage(s, round, page);
                if (std::memcmp(page, out, kPageSize) != 0) errors++;
              }
            }
          });
        }
        for (auto& th : ts) th.join();
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        for (auto& l : lat) all->insert(all->end(), l.begin(), l.end());
        return secs;
      };
      std::vector<double> sl, ll;
      double ss = phase(true, &sl);
      double ls = phase(false, &ll);
      if (errors.load() != 0) {
        fprintf(stderr, "client_bench: %d errors or mismatches\n", errors.load());
        return 1;
      }
      auto st = stack.stats();
      if (st.slots_in[0] + st.slots_filled != static_cast<uint64_t>(pages)) {
        fprintf(stderr, "client_bench: only %llu of %d pages went to the cluster\n",
                static_cast<unsigned long long>(st.slots_in[0]), pages);
      }
      store_f.push_back(Summarize(&sl, ss));
      load_f.push_back(Summarize(&ll, ls));
    }
    Figures s = Median(store_f, &Figures::pages_per_s);
    Figures l = Median(load_f, &Figures::pages_per_s);
    auto spread = [](const std::vector<Figures>& v) {
      double lo = v[0].pages_per_s, hi = lo;
      for (const auto& f : v) lo = std::min(lo, f.pages_per_s), hi = std::max(hi, f.pages_per_s);
      return absl::StrFormat("%.0f-%.0f", lo, hi);
    };
    printf("%-10d %-6s %12.0f %10.1f %10.1f   (range %s)\n", replicas, "store", s.pages_per_s,
           s.p50_us, s.p99_us, spread(store_f).c_str());
    printf("%-10d %-6s %12.0f %10.1f %10.1f   (range %s)\n", replicas, "load", l.pages_per_s,
           l.p50_us, l.p99_us, spread(load_f).c_str());
    absl::StrAppend(&json, replicas == 1 ? "" : ", ",
                    absl::StrFormat("{\"replicas\": %d, \"store\": {\"pages_per_s\": %.0f, "
                                    "\"p50_us\": %.1f, \"p99_us\": %.1f}, \"load\": "
                                    "{\"pages_per_s\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f}}",
                                    replicas, s.pages_per_s, s.p50_us, s.p99_us, l.pages_per_s,
                                    l.p50_us, l.p99_us));
  }
  // What the slot map costs on a realistic device: 64 GiB = 16 Mi slots,
  // measured as the RSS it adds.
  auto rss = [] { return static_cast<double>(RssBytes()); };
  double before = rss();
  double big_per_slot;
  {
    SlotMap big(16ull << 20);
    big_per_slot = (rss() - before) / static_cast<double>(big.slots());
  }
  printf("slot map: %.2f bytes per slot here (%d slots, fixed lock stripes included); "
         "%.2f bytes per slot measured for a 64 GiB device (RSS); promise: at most 16\n",
         slot_map_bytes, pages, big_per_slot);
  absl::StrAppend(&json, absl::StrFormat("], \"slot_map_bytes_per_slot\": %.2f, "
                                        "\"slot_map_bytes_per_slot_64g\": %.2f}\n",
                                        slot_map_bytes, big_per_slot));
  if (!absl::GetFlag(FLAGS_json).empty()) std::ofstream(absl::GetFlag(FLAGS_json)) << json;
  for (auto& s : servers) s->Stop();
  std::string rm = "rm -rf " + dir;
  (void)!system(rm.c_str());
  return 0;
}

}  // namespace
}  // namespace ramster

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return ramster::Run();
}
