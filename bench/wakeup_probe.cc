// What it costs this machine to wake a sleeping thread: the price of every
// hop between processes on the swap path (kernel -> nbdfuse -> shim ->
// server and back), which the other figures of the report pay without
// saying so.
//
// Two threads pass one byte back and forth over two pipes; each blocks in
// read() until the other writes, so every round trip is two wakeups of a
// sleeping thread. Three placements:
//   same_cpu    both threads pinned to one CPU: a wakeup is a context
//               switch on that CPU
//   other_cpu   pinned to two different CPUs: a wakeup reaches a CPU that
//               has gone idle (in a VM, a halted vCPU the host must resume)
//   unpinned    wherever the scheduler puts them, as it does the processes
//               of the benchmarks
// Each placement runs --rounds rounds of --round_trips round trips after one
// untimed warm-up round; the JSON has every round's microseconds per round
// trip and their median.
//
//   bazel build //bench:wakeup_probe
//   bazel-bin/bench/wakeup_probe --json=/tmp/wakeup.json
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/round_trip_probe.h"

ABSL_FLAG(int, rounds, 5, "timed rounds per placement");
ABSL_FLAG(int, round_trips, 20000, "round trips per round");
ABSL_FLAG(std::string, json, "", "write the results here as JSON (else stdout)");

namespace {

constexpr int kAnyCpu = -1;

bool PinTo(int cpu) {
  if (cpu == kAnyCpu) return true;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

// One round: `round_trips` ping-pongs between the calling thread (on
// `cpu_a`) and a peer thread (on `cpu_b`). Returns microseconds per round
// trip, or a negative number if a pipe or the pinning failed.
double Round(int cpu_a, int cpu_b, int round_trips) {
  int ping[2], pong[2];
  if (pipe(ping) != 0) return -1;
  if (pipe(pong) != 0) {
    close(ping[0]);
    close(ping[1]);
    return -1;
  }
  struct Peer {
    int in, out, cpu, round_trips;
    bool ok = true;
  } peer{ping[0], pong[1], cpu_b, round_trips};
  pthread_t thread;
  auto body = [](void* arg) -> void* {
    auto* p = static_cast<Peer*>(arg);
    p->ok = PinTo(p->cpu);
    char c;
    for (int i = 0; i < p->round_trips; ++i) {
      if (read(p->in, &c, 1) != 1 || write(p->out, &c, 1) != 1) {
        p->ok = false;
        close(p->out);  // the caller's read ends
        p->out = -1;
        break;
      }
    }
    return nullptr;
  };
  double us = -1;
  cpu_set_t own;  // the caller's CPUs, given back at the end
  const bool saved = pthread_getaffinity_np(pthread_self(), sizeof(own), &own) == 0;
  const bool pinned = saved && PinTo(cpu_a);
  if (pthread_create(&thread, nullptr, body, &peer) == 0) {
    char c = 'x';
    bool ok = pinned;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < round_trips && ok; ++i) {
      ok = write(ping[1], &c, 1) == 1 && read(pong[0], &c, 1) == 1;
    }
    const auto end = std::chrono::steady_clock::now();
    if (!ok) {  // the peer's read ends
      close(ping[1]);
      ping[1] = -1;
    }
    pthread_join(thread, nullptr);
    pong[1] = peer.out;
    if (ok && peer.ok) {
      us = std::chrono::duration<double, std::micro>(end - start).count() / round_trips;
    }
  }
  for (int fd : {ping[0], ping[1], pong[0], pong[1]}) {
    if (fd >= 0) close(fd);
  }
  if (saved) pthread_setaffinity_np(pthread_self(), sizeof(own), &own);
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int round_trips = absl::GetFlag(FLAGS_round_trips);
  if (!ramster::RoundTripFlagsValid("wakeup_probe", rounds, round_trips)) return 2;
  // The last two CPUs this process may run on.
  cpu_set_t allowed;
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
    for (int i = 0; i < CPU_SETSIZE; ++i) {
      if (CPU_ISSET(i, &allowed)) cpus.push_back(i);
    }
  }
  if (cpus.empty()) {
    fprintf(stderr, "wakeup_probe: sched_getaffinity failed\n");
    return 1;
  }
  struct Placement {
    const char* name;
    int a, b;
  };
  std::vector<Placement> placements = {{"same_cpu", cpus.back(), cpus.back()}};
  if (cpus.size() >= 2) placements.push_back({"other_cpu", cpus[cpus.size() - 2], cpus.back()});
  placements.push_back({"unpinned", kAnyCpu, kAnyCpu});

  std::vector<std::string> fields = {absl::StrCat("\"cpus\": ", cpus.size()),
                                     absl::StrCat("\"rounds\": ", rounds),
                                     absl::StrCat("\"round_trips\": ", round_trips)};
  for (const Placement& p : placements) {
    if (!ramster::MeasureRoundTrips(
            "wakeup_probe", p.name, rounds, round_trips,
            [&p](int trips) { return Round(p.a, p.b, trips); },
            "a pipe, a thread or the pinning failed", &fields)) {
      return 1;
    }
  }
  return ramster::WriteRoundTripJson("wakeup_probe", fields, absl::GetFlag(FLAGS_json));
}
