// How fast one ramster-server stores and loads pages, with memcached as the
// anchor: the same pages, the same load pattern, the same machine, the same
// run.
//
// The bench starts both servers itself, on loopback only: ramster-server
// (with a RAM limit generous enough that every page stays in RAM, its data
// directory in a temporary directory) and memcached with 4 KiB values. Both
// are stopped at the end, and killed if the bench fails or is interrupted
// (they also die with it: PR_SET_PDEATHSIG).
//
// Pages: a corpus of --corpus_pages distinct pages cut from files on this
// machine (bench/page_corpus.h; the defaults give codec_bench's corpus),
// shuffled into one stream; key i holds stream page i mod corpus size. Pages
// are encoded once, before anything is timed (the client's encode cost is
// reported on its own line): what is measured is the servers, not client-side
// compression. ramster requests are built before the timed phases too;
// memcached requests are written straight from the corpus with gather writes.
//
// Patterns, each with --threads client threads, one connection per thread
// (ramster: a page link each, or one gRPC channel each, with its own
// subchannel pool, so that they do not share one HTTP/2 connection):
//   unbatched  one page per round trip: ramster Store / Load with one page
//              (a request on the thread's page link, as the shim sends them;
//              --ramster_calls=stream: on the thread's Pages stream, as the
//              shim sends them without links; unary: a unary call each);
//              memcached one `set`, wait for STORED / one `get`
//   batched    --batch pages per round trip: ramster Store / Load with that
//              many pages; memcached that many sets written at once, then
//              their replies read / one multi-key `get k1 ... kN`
//
// Order: a small warm-up (connections, buffers); then the first fill, one
// batched store into each freshly started server, timed and reported on its
// own because the server's memory grows while it runs, and the donor RAM it
// cost; then --rounds rounds, each running for each system (alternating which
// goes first) batched store, batched load, clear, unbatched store, unbatched
// load, clear. A clear is ramster Invalidate(pool) or memcached flush_all, so
// every store writes fresh keys; with --overwrite there is no clearing and
// every store after the first fill overwrites pages already stored. The
// report gives the median of the rounds and their min and max. Latency is per
// round trip (one RPC, or one pipelined batch), not per page.
//
// Beside the rates, each phase records the CPU the server process and this
// client process spent per page, and how many cores processes outside the
// bench kept busy meanwhile (the machine is shared; a phase with a high
// figure there was disturbed). --log_phases logs each phase's CLOCK_MONOTONIC
// window, to cut a `perf record -k CLOCK_MONOTONIC` profile by phase.
//
// Loads are checked: every page's status, length and checksum, and every
// --verify_every-th page decoded and compared with the corpus byte for byte.
// A wrong page stops the bench with an error. The ramster client parses each
// reply onto an arena, as the shim's client (client/peer.cc) does.
//
// Donor RAM per page: the server's VmRSS (less LazyFree) before and after the
// first fill (for ramster plus the empty slab pages the warm-up left cached
// and the fill reused: NodeStatus slab_cached_bytes), divided by the pages
// stored; for ramster also NodeStatus ram_used_bytes and payload_bytes per
// page (its own accounting), so that the overhead beyond the compressed
// payload shows; for memcached its `stats` bytes per item. The fill runs in
// two halves, and the same figure over the second half alone (the slope)
// is what one more page costs, without what the process grows by once.
//
//   bazel build -c opt //bench:server_bench
//   bazel-bin/bench/server_bench --json=/tmp/server_bench.json
// (or bazel run -c opt //bench:server_bench -- --json=...; relative paths are
// taken from the directory bazel was run in).
#include <arpa/inet.h>
#include <fcntl.h>
#include <google/protobuf/arena.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <latch>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bench/page_corpus.h"
#include "common/client_identity.h"
#include "common/page_codec.h"
#include "common/page_link_wire.h"
#include "common/socket_io.h"
#include "common/proc_status.h"
#include "ramster/v1/admin.grpc.pb.h"
#include "ramster/v1/page_store.grpc.pb.h"

ABSL_FLAG(std::string, server_binary, "",
          "ramster-server to start (default: the one in this binary's "
          "runfiles, else bazel-bin/server/ramster-server)");
ABSL_FLAG(std::string, memcached_binary, "/usr/bin/memcached",
          "memcached to start as the anchor");
ABSL_FLAG(std::string, systems, "ramster,memcached",
          "Which systems to run, comma-separated (ramster, memcached).");
ABSL_FLAG(int, threads, 4, "Client threads, one connection each.");
ABSL_FLAG(int, batch, 64, "Pages per round trip in the batched pattern.");
ABSL_FLAG(int64_t, batched_pages, 200000,
          "Pages per batched phase (rounded down to whole batches).");
ABSL_FLAG(int64_t, unbatched_pages, 50000, "Pages per unbatched phase.");
ABSL_FLAG(int, rounds, 3, "Timed rounds; the report gives their median.");
ABSL_FLAG(int64_t, corpus_pages, 16384, "Distinct pages in the corpus.");
ABSL_FLAG(std::string, mix, "binary=45,text=30,zero=15,random=10",
          "Relative weights of the page classes, class=weight,...; classes "
          "are binary, text, zero, random.");
ABSL_FLAG(std::string, binary_dirs,
          "/usr/bin,/usr/sbin,/usr/lib/x86_64-linux-gnu",
          "Comma-separated directories searched (recursively) for ELF files.");
ABSL_FLAG(std::string, text_dirs, "/usr/include,/usr/share/doc",
          "Comma-separated directories searched (recursively) for text files.");
ABSL_FLAG(int, max_pages_per_file, 16,
          "At most this many pages are cut from one file.");
ABSL_FLAG(uint64_t, seed, 1, "Seed for the corpus and its order.");
ABSL_FLAG(std::string, server_memory_limit, "2G",
          "ramster-server --memory-limit; large enough that no page spills.");
ABSL_FLAG(int, server_workers, 0,
          "ramster-server --workers (0: the server's default).");
ABSL_FLAG(int, server_recompress_level, 0,
          "ramster-server --recompress-level. 0 (off) by default: this bench measures the store "
          "path and what a page costs beyond its payload as stored; a recompression running "
          "beside it would change payloads, and so RSS and the cache of emptied slab pages, "
          "while they are measured.");
ABSL_FLAG(int, memcached_threads, 2, "memcached -t.");
ABSL_FLAG(int, memcached_memory_mb, 2048, "memcached -m.");
ABSL_FLAG(int, verify_every, 16,
          "Decode and compare every Nth loaded page with the corpus (every "
          "page's status, length and checksum are always checked).");
ABSL_FLAG(bool, overwrite, false,
          "Do not clear between phases: after the first fill every store "
          "overwrites pages already stored. Default: clear (Invalidate / "
          "flush_all) after each load phase, so that every store writes fresh "
          "keys.");
ABSL_FLAG(bool, prebuilt_requests, true,
          "Build every ramster request before the timed phases (payloads copied in, "
          "so the client holds a copy of every page); false builds each one just "
          "before it is sent, for runs too large to hold twice in RAM.");
ABSL_FLAG(std::string, ramster_calls, "link",
          "How the ramster client sends its requests: link (each thread's requests on one page "
          "link, as the shim's client does), stream (on one PageStore.Pages stream, as it does "
          "without links) or unary (a Store / Load call per request).");
ABSL_FLAG(bool, log_phases, false,
          "Log each phase's start and end (CLOCK_MONOTONIC) to stderr, to match "
          "with `perf record -k CLOCK_MONOTONIC` samples.");
ABSL_FLAG(std::string, json, "",
          "If set, also write the figures to this file as JSON.");

namespace ramster {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kPool = 1;
constexpr char kClientId[] = "server-bench";
constexpr auto kCallTimeout = std::chrono::seconds(60);
// A page stream has no per-request deadline (as the shim's: it keeps its
// own); this bounds a stream of a bench that hangs.
constexpr auto kStreamLifetime = std::chrono::hours(2);
// The first block of a Load reply's arena: room for the messages of ~128
// pages (a 64-page reply needs 15 KiB).
constexpr size_t kReplyArenaBlockBytes = 32 << 10;

// ---------------------------------------------------------------------------
// Children and failure. Whatever way the bench ends, the servers it started
// end with it.

enum System { kRamster, kMemcached, kNumSystems };
constexpr std::array<const char*, kNumSystems> kSystemNames = {"ramster",
                                                               "memcached"};

std::atomic<pid_t> g_children[kNumSystems] = {-1, -1};
std::string g_temp_dir;  // removed at exit; set once, before any thread

void KillChildren() {
  for (auto& child : g_children) {
    pid_t pid = child.exchange(-1);
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
}

void RemoveTempDir() {
  if (g_temp_dir.empty()) return;
  std::error_code ec;
  fs::remove_all(g_temp_dir, ec);
}

std::atomic<bool> g_exiting{false};

// Ends the bench: kills the servers, removes the temporary directory, exits
// with `code`, after printing `message` if there is one. The first caller
// does it; a thread that fails meanwhile (say, because its server was just
// killed) stays silent and waits for the exit.
[[noreturn]] void Exit(int code, const std::string& message = "") {
  if (g_exiting.exchange(true)) {
    for (;;) pause();
  }
  std::fflush(stdout);
  if (!message.empty()) std::fprintf(stderr, "server_bench: %s\n", message.c_str());
  KillChildren();
  RemoveTempDir();
  _exit(code);
}

[[noreturn]] void Die(const std::string& message) { Exit(1, message); }

// SIGINT, SIGTERM and SIGHUP are blocked in every thread (set before the
// first one starts) and taken here, so that the cleanup runs in an ordinary
// thread rather than in a signal handler.
void WatchSignals(const sigset_t& signals) {
  std::thread([signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    Exit(128 + sig, absl::StrCat(strsignal(sig), ": stopped the servers"));
  }).detach();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts argv with stdout and stderr going to `log_path`. The child gets
// SIGKILL if the bench dies first.
pid_t Spawn(System system, const std::vector<std::string>& argv,
            const std::string& log_path) {
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) Die(absl::StrCat("cannot create ", log_path, ": ", strerror(errno)));
  std::vector<std::string> copy = argv;
  std::vector<char*> args;
  for (std::string& a : copy) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    dup2(log, 1);
    dup2(log, 2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log);
  if (pid < 0) Die(absl::StrCat("fork: ", strerror(errno)));
  g_children[system] = pid;
  return pid;
}

// True (and the status in *status) once the child has exited.
bool Exited(pid_t pid, int* status) {
  return waitpid(pid, status, WNOHANG) == pid;
}

// SIGTERM, then SIGKILL after `grace`. Returns the exit code, or -1 if it
// had to be killed or died of a signal.
int Stop(System system, std::chrono::seconds grace) {
  pid_t pid = g_children[system].exchange(-1);
  if (pid <= 0) return -1;
  kill(pid, SIGTERM);
  auto deadline = Clock::now() + grace;
  int status = 0;
  while (!Exited(pid, &status)) {
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die(absl::StrCat("cannot find a free port: ", strerror(errno)));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

bool Executable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}

std::string FindServerBinary(const char* argv0) {
  std::string flag = absl::GetFlag(FLAGS_server_binary);
  if (!flag.empty()) {
    if (!Executable(flag)) Die(absl::StrCat("--server_binary ", flag, " is not executable"));
    return flag;
  }
  std::vector<std::string> candidates;
  if (const char* r = getenv("RUNFILES_DIR")) {
    candidates.push_back(absl::StrCat(r, "/ramster/server/ramster-server"));
  }
  candidates.push_back(absl::StrCat(argv0, ".runfiles/ramster/server/ramster-server"));
  candidates.push_back("server/ramster-server");  // bazel run's working directory
  candidates.push_back("bazel-bin/server/ramster-server");
  for (const std::string& c : candidates) {
    if (Executable(c)) return fs::absolute(c).string();
  }
  Die("cannot find ramster-server; build //server:ramster-server or pass "
      "--server_binary");
}

// Relative paths given to `bazel run` mean the directory it was run from.
std::string UserPath(const std::string& path) {
  const char* wd = getenv("BUILD_WORKING_DIRECTORY");
  if (path.empty() || path[0] == '/' || wd == nullptr) return path;
  return absl::StrCat(wd, "/", path);
}

// ---------------------------------------------------------------------------
// What /proc and getrusage say.

// The memory the process holds: VmRSS, less what it gave back lazily
// (MADV_FREE, smaps_rollup's LazyFree: the kernel takes it whenever it
// wants memory; ramster-server gives freed slab pages back that way, and a
// fill that reuses them would otherwise not show in RSS at all).
uint64_t HeldBytes(pid_t pid) {
  const uint64_t rss = RssBytes(pid);
  if (rss == 0) Die(absl::StrCat("no VmRSS in /proc/", pid, "/status"));
  const uint64_t lazy = LazyFreeBytes(pid);
  return rss > lazy ? rss - lazy : 0;
}

// User + system CPU of a process, in seconds.
double CpuSeconds(pid_t pid) {
  std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) Die(absl::StrCat("cannot read /proc/", pid, "/stat"));
  std::vector<std::string> f = absl::StrSplit(stat.substr(paren + 2), ' ');
  // f[0] is field 3 (state); utime and stime are fields 14 and 15.
  uint64_t utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) ||
      !absl::SimpleAtoi(f[12], &stime)) {
    Die(absl::StrCat("cannot parse /proc/", pid, "/stat"));
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

// CPU the machine's processes spent (user, system, and steal by the
// hypervisor), in seconds summed over cores. Interrupt and softirq time is
// left out: much of it is our own loopback traffic, which the kernel does not
// charge to any process.
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0,
           softirq = 0, steal = 0;
  in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  if (!in || cpu != "cpu") Die("cannot parse /proc/stat");
  return static_cast<double>(user + nice + system + steal) /
         sysconf(_SC_CLK_TCK);
}

double SelfCpuSeconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

// ---------------------------------------------------------------------------
// The pages and the load pattern.

// Key i holds corpus page order[i % order.size()], encoded once.
struct PageSource {
  const PageCorpus* corpus = nullptr;
  std::vector<uint32_t> order;
  std::vector<EncodedPage> encoded;  // by corpus index

  uint32_t CorpusIndex(uint64_t key) const { return order[key % order.size()]; }
  const EncodedPage& Encoded(uint64_t key) const { return encoded[CorpusIndex(key)]; }
  absl::Span<const uint8_t> Page(uint64_t key) const {
    return corpus->page(CorpusIndex(key));
  }
};

enum Pattern { kBatched, kUnbatched, kNumPatterns };
constexpr std::array<const char*, kNumPatterns> kPatternNames = {"batched",
                                                                 "unbatched"};
enum Op { kStore, kLoad, kNumOps };
constexpr std::array<const char*, kNumOps> kOpNames = {"store", "load"};

// Round trip r carries keys [r * pages_per_rt, (r + 1) * pages_per_rt);
// a workload runs round trips [first_rt, first_rt + round_trips), thread t
// those in [First(t), First(t + 1)).
struct Workload {
  Pattern pattern;
  int pages_per_rt;
  size_t round_trips;
  int threads;
  size_t first_rt = 0;

  size_t pages() const { return round_trips * pages_per_rt; }
  size_t First(int t) const { return first_rt + round_trips * t / threads; }
  uint64_t FirstKey(size_t rt) const { return uint64_t{rt} * pages_per_rt; }
};

struct PhaseResult {
  double seconds = 0;
  std::vector<int64_t> latency_ns;  // one per round trip, sorted
  double server_cpu_seconds = 0;
  double client_cpu_seconds = 0;
  // Busy CPU of everything else on the machine (other users' processes,
  // the idle server): what disturbed the measurement.
  double foreign_cpu_seconds = 0;
};

// Two phases that ran one after the other, as one.
PhaseResult Concatenate(const PhaseResult& a, const PhaseResult& b) {
  PhaseResult r;
  r.seconds = a.seconds + b.seconds;
  r.server_cpu_seconds = a.server_cpu_seconds + b.server_cpu_seconds;
  r.client_cpu_seconds = a.client_cpu_seconds + b.client_cpu_seconds;
  r.foreign_cpu_seconds = a.foreign_cpu_seconds + b.foreign_cpu_seconds;
  r.latency_ns.reserve(a.latency_ns.size() + b.latency_ns.size());
  std::merge(a.latency_ns.begin(), a.latency_ns.end(), b.latency_ns.begin(),
             b.latency_ns.end(), std::back_inserter(r.latency_ns));
  return r;
}

// CPU of the processes the bench accounts for: itself and its servers.
struct CpuSnapshot {
  double machine = 0, self = 0;
  double servers[kNumSystems] = {};

  static CpuSnapshot Take() {
    CpuSnapshot c;
    c.machine = MachineBusySeconds();
    c.self = SelfCpuSeconds();
    for (int s = 0; s < kNumSystems; ++s) {
      pid_t pid = g_children[s].load();
      if (pid > 0) c.servers[s] = CpuSeconds(pid);
    }
    return c;
  }
};

// Runs fn(thread, round_trip) for every round trip of the workload on its
// threads, all released at once; times each call. `server` is the system
// under test.
template <typename Fn>
PhaseResult RunPhase(const Workload& w, System server, Fn fn) {
  std::vector<std::vector<int64_t>> lat(w.threads);
  std::latch ready(w.threads);
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int t = 0; t < w.threads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<int64_t>& mine = lat[t];
      mine.reserve(w.First(t + 1) - w.First(t));
      ready.count_down();
      go.wait();
      for (size_t rt = w.First(t); rt < w.First(t + 1); ++rt) {
        Clock::time_point start = Clock::now();
        fn(t, rt);
        mine.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           Clock::now() - start)
                           .count());
      }
    });
  }
  ready.wait();
  PhaseResult r;
  const CpuSnapshot before = CpuSnapshot::Take();
  const Clock::time_point start = Clock::now();
  go.count_down();
  for (std::thread& t : threads) t.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const CpuSnapshot after = CpuSnapshot::Take();
  r.server_cpu_seconds = after.servers[server] - before.servers[server];
  r.client_cpu_seconds = after.self - before.self;
  r.foreign_cpu_seconds = after.machine - before.machine - r.server_cpu_seconds -
                          r.client_cpu_seconds;
  for (int s = 0; s < kNumSystems; ++s) {  // the other, idle server is ours too
    if (s != server) r.foreign_cpu_seconds -= after.servers[s] - before.servers[s];
  }
  r.foreign_cpu_seconds = std::max(r.foreign_cpu_seconds, 0.0);
  for (auto& v : lat) r.latency_ns.insert(r.latency_ns.end(), v.begin(), v.end());
  std::sort(r.latency_ns.begin(), r.latency_ns.end());
  return r;
}

// Nearest rank on sorted samples.
double PercentileUs(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(std::ceil(q * sorted.size()));
  i = std::clamp<size_t>(i, 1, sorted.size()) - 1;
  return sorted[i] / 1e3;
}

// ---------------------------------------------------------------------------
// ramster over gRPC.

enum class Calls { kLink, kStream, kUnary };

Calls RamsterCalls() {
  const std::string calls = absl::GetFlag(FLAGS_ramster_calls);
  if (calls == "link") return Calls::kLink;
  if (calls == "stream") return Calls::kStream;
  if (calls != "unary") Die("--ramster_calls: link, stream or unary, got " + calls);
  return Calls::kUnary;
}

const char* CallsName(Calls calls) {
  switch (calls) {
    case Calls::kLink:
      return "link";
    case Calls::kStream:
      return "stream";
    case Calls::kUnary:
      break;
  }
  return "unary";
}

class RamsterClient {
 public:
  RamsterClient(const std::string& address, int threads, uint64_t epoch, Calls calls)
      : epoch_(epoch), host_(address.substr(0, address.rfind(':'))) {
    if (calls == Calls::kStream) {
      for (int t = 0; t < threads; ++t) streams_.push_back(std::make_unique<Stream>());
    }
    if (calls == Calls::kLink) {
      for (int t = 0; t < threads; ++t) links_.push_back(std::make_unique<Link>());
    }
    for (int t = 0; t <= threads; ++t) {  // the last one for control calls
      grpc::ChannelArguments args;
      // A channel of its own per thread: separate subchannel pools make
      // separate TCP connections; the dummy argument keeps the channels
      // from being considered equal.
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt("ramster.server_bench.channel", t);
      args.SetMaxReceiveMessageSize(16 << 20);
      args.SetMaxSendMessageSize(16 << 20);
      auto channel = grpc::CreateCustomChannel(
          address, grpc::InsecureChannelCredentials(), args);
      if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                     std::chrono::seconds(10))) {
        Die(absl::StrCat("cannot connect to ramster-server at ", address));
      }
      stubs_.push_back(v1::PageStore::NewStub(channel));
      if (t == threads) admin_ = v1::Admin::NewStub(channel);
    }
  }

  ~RamsterClient() {
    for (auto& l : links_) {
      if (l->fd >= 0) close(l->fd);
    }
    for (auto& st : streams_) {
      if (st->rw == nullptr) continue;
      st->rw->WritesDone();
      (void)st->rw->Finish();
    }
  }

  void OpenSession() {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::OpenSessionRequest req;
    req.set_boot_epoch(epoch_);
    v1::PoolSpec* pool = req.add_pools();
    pool->set_id(kPool);
    pool->set_kind(v1::POOL_KIND_PERSISTENT);
    v1::OpenSessionResponse resp;
    Check(stubs_.back()->OpenSession(&ctx, req, &resp), "OpenSession");
    link_port_ = static_cast<int>(resp.page_link_port());
    if (!links_.empty() && link_port_ == 0) Die("ramster-server offers no page link");
  }

  // Every request of a workload, built once (payloads copied in), each in
  // the PagesRequest a stream carries (a unary call sends its store() or
  // load() as it is).
  struct Requests {
    std::vector<v1::PagesRequest> store;
    std::vector<v1::PagesRequest> load;
  };
  Requests Build(const Workload& w, const PageSource& src) const {
    Requests r;
    r.store.resize(w.round_trips);
    r.load.resize(w.round_trips);
    for (size_t rt = 0; rt < w.round_trips; ++rt) {
      BuildOne(w, rt, src, &r.store[rt], &r.load[rt]);
    }
    return r;
  }
  // The requests of round trip `rt` (either may be null).
  void BuildOne(const Workload& w, size_t rt, const PageSource& src,
                v1::PagesRequest* store_request, v1::PagesRequest* load_request) const {
    v1::StoreRequest* store = nullptr;
    v1::LoadRequest* load = nullptr;
    if (store_request != nullptr) {
      store_request->Clear();
      store = store_request->mutable_store();
      store->set_boot_epoch(epoch_);
    }
    if (load_request != nullptr) {
      load_request->Clear();
      load = load_request->mutable_load();
      load->set_boot_epoch(epoch_);
    }
    for (int i = 0; i < w.pages_per_rt; ++i) {
      const uint64_t key = w.FirstKey(rt) + i;
      if (store != nullptr) {
        const EncodedPage& e = src.Encoded(key);
        v1::Page* p = store->add_pages();
        p->mutable_key()->set_pool(kPool);
        p->mutable_key()->set_index(key);
        p->set_encoding(static_cast<v1::Encoding>(e.encoding));
        p->set_payload(e.payload, e.length);
        p->set_uncompressed_length(kPageSize);
        p->set_checksum(e.checksum);
        p->set_generation(1);
      }
      if (load != nullptr) {
        v1::PageKey* k = load->add_keys();
        k->set_pool(kPool);
        k->set_index(key);
      }
    }
  }

  void Store(int thread, const v1::PagesRequest& request) {
    const v1::StoreRequest& req = request.store();
    v1::PagesReply reply;
    const v1::StoreResponse* response = nullptr;
    v1::StoreResponse unary_response;
    if (!streams_.empty() || !links_.empty()) {
      Exchange(thread, request, &reply, "Store");
      response = &reply.store();
    } else {
      grpc::ClientContext ctx;
      Prepare(&ctx);
      Check(stubs_[thread]->Store(&ctx, req, &unary_response), "Store");
      response = &unary_response;
    }
    const v1::StoreResponse& resp = *response;
    if (resp.results_size() != req.pages_size()) {
      Die(absl::StrCat("Store: ", resp.results_size(), " results for ",
                       req.pages_size(), " pages"));
    }
    for (int i = 0; i < resp.results_size(); ++i) {
      const v1::PageStatus& s = resp.results(i);
      if (s.code() != 0) {
        Die(absl::StrCat("Store refused page ", req.pages(i).key().index(),
                         ": code ", s.code(), " ", s.message()));
      }
    }
  }

  void Load(int thread, const v1::PagesRequest& request, const PageSource& src,
            uint64_t verify_every, uint8_t* scratch) {
    const v1::LoadRequest& req = request.load();
    // The reply on an arena, as the shim's client keeps it (client/peer.cc),
    // so that a page's messages are not each a heap allocation.
    alignas(16) char arena_block[kReplyArenaBlockBytes];
    google::protobuf::Arena arena(arena_block, sizeof(arena_block));
    const v1::LoadResponse* response = nullptr;
    if (!streams_.empty() || !links_.empty()) {
      auto* reply = google::protobuf::Arena::CreateMessage<v1::PagesReply>(&arena);
      Exchange(thread, request, reply, "Load");
      response = &reply->load();
    } else {
      grpc::ClientContext ctx;
      Prepare(&ctx);
      auto* unary_response = google::protobuf::Arena::CreateMessage<v1::LoadResponse>(&arena);
      Check(stubs_[thread]->Load(&ctx, req, unary_response), "Load");
      response = unary_response;
    }
    const v1::LoadResponse& resp = *response;
    if (resp.results_size() != req.keys_size()) {
      Die(absl::StrCat("Load: ", resp.results_size(), " results for ",
                       req.keys_size(), " keys"));
    }
    for (int i = 0; i < resp.results_size(); ++i) {
      const uint64_t key = req.keys(i).index();
      const v1::LoadResult& r = resp.results(i);
      if (r.status().code() != 0) {
        Die(absl::StrCat("Load of page ", key, ": code ", r.status().code(), " ",
                         r.status().message()));
      }
      const v1::Page& p = r.page();
      const EncodedPage& e = src.Encoded(key);
      if (p.key().index() != key || p.generation() != 1 ||
          p.encoding() != static_cast<int>(e.encoding) ||
          p.payload().size() != e.length || p.checksum() != e.checksum) {
        Die(absl::StrCat("Load of page ", key,
                         " returned a different page (key, generation, "
                         "encoding, length or checksum)"));
      }
      if (key % verify_every == 0) {
        absl::Status s = DecodePage(
            p.encoding(),
            absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.payload().data()),
                                p.payload().size()),
            p.uncompressed_length(), p.checksum(), absl::MakeSpan(scratch, kPageSize));
        if (!s.ok() || std::memcmp(scratch, src.Page(key).data(), kPageSize) != 0) {
          Die(absl::StrCat("Load of page ", key, ": wrong bytes (", s.ToString(), ")"));
        }
      }
    }
  }

  // Invalidates the whole pool; the node must then hold nothing.
  void Clear() {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::InvalidateRequest req;
    req.set_boot_epoch(epoch_);
    req.add_ranges()->set_pool(kPool);
    v1::InvalidateResponse resp;
    Check(stubs_.back()->Invalidate(&ctx, req, &resp), "Invalidate");
    v1::NodeStatus st = Status();
    if (st.pages_in_ram() != 0 || st.pages_on_disk() != 0) {
      Die(absl::StrCat("after Invalidate the node still holds ", st.pages_in_ram(),
                       " pages in RAM and ", st.pages_on_disk(), " on disk"));
    }
  }

  v1::NodeStatus Status() {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::NodeStatus st;
    Check(admin_->GetStatus(&ctx, v1::GetStatusRequest(), &st), "GetStatus");
    return st;
  }

 private:
  // A thread's page stream: opened on first use, closed with the client.
  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::PagesRequest, v1::PagesReply>> rw;
  };

  void Prepare(grpc::ClientContext* ctx) const {
    ctx->AddMetadata(kClientIdMetadataKey, kClientId);
    ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  }

  // A thread's page link: connected on first use, closed with the client.
  struct Link {
    int fd = -1;
    std::string frame;
  };

  // One request and its reply on the thread's page link.
  void LinkExchange(int thread, const v1::PagesRequest& request, v1::PagesReply* reply,
                    const char* what) {
    Link& l = *links_[thread];
    if (l.fd < 0) {
      l.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(link_port_));
      if (inet_pton(AF_INET, host_.c_str(), &a.sin_addr) != 1 ||
          connect(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        Die(absl::StrCat("cannot connect to the page link at ", host_, ":", link_port_));
      }
      const int one = 1;
      setsockopt(l.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      v1::PageLinkHello hello;
      hello.set_client_id(kClientId);
      FrameMessage(hello, &l.frame);
      if (!SendAll(l.fd, l.frame.data(), l.frame.size())) Die("page link: hello not sent");
    }
    FrameMessage(request, &l.frame);
    uint32_t length = 0;
    if (!SendAll(l.fd, l.frame.data(), l.frame.size()) || !ReadFull(l.fd, &length, 4) ||
        (length = ntohl(length)) > kMaxPageLinkFrameBytes) {
      Die(absl::StrCat(what, ": the page link ended"));
    }
    l.frame.resize(length);
    if (!ReadFull(l.fd, l.frame.data(), length) || !reply->ParseFromString(l.frame)) {
      Die(absl::StrCat(what, ": no reply on the page link"));
    }
  }

  // One request and its reply on the thread's link or stream; a reply that
  // says the request failed as a whole stops the bench, as a failed call
  // does.
  void Exchange(int thread, const v1::PagesRequest& request, v1::PagesReply* reply,
                const char* what) {
    if (!links_.empty()) {
      LinkExchange(thread, request, reply, what);
      if (reply->code() != 0) {
        Die(absl::StrCat(what, ": code ", reply->code(), ": ", reply->message()));
      }
      return;
    }
    Stream& st = *streams_[thread];
    if (st.rw == nullptr) {
      st.ctx.AddMetadata(kClientIdMetadataKey, kClientId);
      st.ctx.set_deadline(std::chrono::system_clock::now() + kStreamLifetime);
      st.rw = stubs_[thread]->Pages(&st.ctx);
    }
    if (!st.rw->Write(request) || !st.rw->Read(reply)) {
      Check(st.rw->Finish(), what);
      Die(absl::StrCat(what, ": the page stream ended"));
    }
    if (reply->code() != 0) {
      Die(absl::StrCat(what, ": code ", reply->code(), ": ", reply->message()));
    }
  }
  static void Check(const grpc::Status& s, const char* what) {
    if (!s.ok()) {
      Die(absl::StrCat(what, ": gRPC code ", s.error_code(), ": ", s.error_message()));
    }
  }

  const uint64_t epoch_;
  const std::string host_;  // of the server's address: its page link's too
  int link_port_ = 0;       // from OpenSession
  std::vector<std::unique_ptr<v1::PageStore::Stub>> stubs_;  // one per thread, + control
  // One per thread with --ramster_calls=link; empty otherwise.
  std::vector<std::unique_ptr<Link>> links_;
  // One per thread with --ramster_calls=stream; empty with unary.
  std::vector<std::unique_ptr<Stream>> streams_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// ---------------------------------------------------------------------------
// memcached over its text protocol.

class MemcachedConnection {
 public:
  explicit MemcachedConnection(int port) : fd_(ConnectLoopback(port)), buf_(1 << 20) {
    if (fd_ < 0) Die(absl::StrCat("cannot connect to memcached on port ", port));
  }
  ~MemcachedConnection() { close(fd_); }
  MemcachedConnection(const MemcachedConnection&) = delete;
  MemcachedConnection& operator=(const MemcachedConnection&) = delete;

  // `n` sets (keys first_key..), written at once, then their n replies.
  void Set(uint64_t first_key, int n, const PageSource& src) {
    headers_.clear();
    iov_.clear();
    std::vector<size_t> ends;
    for (int i = 0; i < n; ++i) {
      absl::StrAppend(&headers_, "set p", first_key + i, " 0 0 ", kPageSize, "\r\n");
      ends.push_back(headers_.size());
    }
    size_t begin = 0;
    for (int i = 0; i < n; ++i) {
      iov_.push_back({headers_.data() + begin, ends[i] - begin});
      iov_.push_back({const_cast<uint8_t*>(src.Page(first_key + i).data()), kPageSize});
      iov_.push_back({const_cast<char*>("\r\n"), 2});
      begin = ends[i];
    }
    WriteAll();
    for (int i = 0; i < n; ++i) {
      absl::string_view line = ReadLine();
      if (line != "STORED") {
        Die(absl::StrCat("memcached set p", first_key + i, ": ", line));
      }
    }
  }

  // One `get` of n keys; checks that every value comes back, in order.
  void Get(uint64_t first_key, int n, const PageSource& src, uint64_t verify_every,
           uint8_t* scratch) {
    headers_ = "get";
    for (int i = 0; i < n; ++i) absl::StrAppend(&headers_, " p", first_key + i);
    headers_ += "\r\n";
    iov_.assign({{headers_.data(), headers_.size()}});
    WriteAll();
    for (int i = 0; i < n; ++i) {
      const uint64_t key = first_key + i;
      std::string want = absl::StrCat("VALUE p", key, " 0 ", kPageSize);
      absl::string_view line = ReadLine();
      if (line != want) {
        Die(absl::StrCat("memcached get p", key, ": expected '", want, "', got '",
                         line, "'"));
      }
      ReadBytes(scratch, kPageSize);
      if (!ReadLine().empty()) Die("memcached: value not followed by CRLF");
      if (key % verify_every == 0 &&
          std::memcmp(scratch, src.Page(key).data(), kPageSize) != 0) {
        Die(absl::StrCat("memcached get p", key, ": wrong bytes"));
      }
    }
    absl::string_view end = ReadLine();
    if (end != "END") Die(absl::StrCat("memcached get: expected END, got '", end, "'"));
  }

  void FlushAll() {
    Command("flush_all\r\n");
    absl::string_view line = ReadLine();
    if (line != "OK") Die(absl::StrCat("memcached flush_all: ", line));
  }

  std::map<std::string, std::string> Stats() {
    Command("stats\r\n");
    std::map<std::string, std::string> stats;
    for (;;) {
      absl::string_view line = ReadLine();
      if (line == "END") break;
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() < 3 || f[0] != "STAT") Die(absl::StrCat("memcached stats: ", line));
      stats[f[1]] = f[2];
    }
    return stats;
  }

 private:
  void Command(const std::string& text) {
    headers_ = text;
    iov_.assign({{headers_.data(), headers_.size()}});
    WriteAll();
  }

  void WriteAll() {
    if (!SendAll(fd_, iov_.data(), static_cast<int>(iov_.size()))) {
      Die(absl::StrCat("memcached: write: ", strerror(errno)));
    }
  }

  // Reads more into the buffer, moving what is unread to its front.
  void Fill() {
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);
    for (;;) {
      ssize_t n = read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (n > 0) {
        end_ += static_cast<size_t>(n);
        return;
      }
      if (n < 0 && errno == EINTR) continue;
      Die(n == 0 ? "memcached closed the connection"
                 : absl::StrCat("memcached: read: ", strerror(errno)));
    }
  }

  // The next line without its CRLF; valid until the next read.
  absl::string_view ReadLine() {
    for (;;) {
      absl::string_view have(buf_.data() + begin_, end_ - begin_);
      size_t crlf = have.find("\r\n");
      if (crlf != absl::string_view::npos) {
        begin_ += crlf + 2;
        return have.substr(0, crlf);
      }
      Fill();
    }
  }

  void ReadBytes(uint8_t* out, size_t n) {
    while (n > 0) {
      if (begin_ == end_) Fill();
      size_t k = std::min(n, end_ - begin_);
      std::memcpy(out, buf_.data() + begin_, k);
      begin_ += k;
      out += k;
      n -= k;
    }
  }

  const int fd_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;  // unread bytes of buf_
  std::string headers_;
  std::vector<iovec> iov_;
};

// ---------------------------------------------------------------------------
// Figures.

struct Spread {
  double median = 0, min = 0, max = 0;
  std::vector<double> rounds;
};

Spread SpreadOf(std::vector<double> v) {
  Spread s;
  s.rounds = v;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  s.min = v.front();
  s.max = v.back();
  return s;
}

// One (system, pattern, op) cell: a sample per round.
struct Cell {
  std::vector<double> pages_per_s, p50_us, p99_us, server_cpu_us, client_cpu_us,
      foreign_cores;

  void Add(const PhaseResult& r, size_t pages) {
    pages_per_s.push_back(pages / r.seconds);
    p50_us.push_back(PercentileUs(r.latency_ns, 0.50));
    p99_us.push_back(PercentileUs(r.latency_ns, 0.99));
    server_cpu_us.push_back(r.server_cpu_seconds * 1e6 / pages);
    client_cpu_us.push_back(r.client_cpu_seconds * 1e6 / pages);
    foreign_cores.push_back(r.foreign_cpu_seconds / r.seconds);
  }
  bool empty() const { return pages_per_s.empty(); }
};

// The first batched store into a freshly started server: its memory grows
// (page faults, new slabs) while it is timed. Measured once, not in the
// rounds, which run on warm memory.
//
// It runs in two halves with the server's memory read between them. The
// whole fill's growth per page also carries what the process grows by once
// (malloc's per-thread caches, buffers, the first slab pages of each
// class), spread over however many pages the fill has; the second half's
// growth per page (the slope) is what one more page costs.
struct Memory {
  bool measured = false;
  Cell first_fill;
  uint64_t pages = 0;
  uint64_t pages_mid = 0;  // stored by the first half
  uint64_t rss_before = 0, rss_mid = 0, rss_after = 0;
  // ramster: empty slab pages the server kept committed from the warm-up
  // (NodeStatus slab_cached_bytes) that the fill reused, in all and in its
  // second half. They were resident before, so RSS alone would not count
  // them.
  uint64_t cache_reused = 0, cache_reused_second = 0;
  // ramster: NodeStatus; memcached: `stats` bytes and curr_items.
  uint64_t accounted_bytes = 0;
  uint64_t payload_bytes = 0, payload_mid = 0;
  uint64_t items = 0;

  double RssPerPage() const {
    return (static_cast<double>(rss_after) - static_cast<double>(rss_before) +
            static_cast<double>(cache_reused)) /
           pages;
  }
  double AccountedPerPage() const { return static_cast<double>(accounted_bytes) / pages; }
  double PayloadPerPage() const { return static_cast<double>(payload_bytes) / pages; }
  // The second half's growth and payload per page.
  double SlopeRssPerPage() const {
    return (static_cast<double>(rss_after) - static_cast<double>(rss_mid) +
            static_cast<double>(cache_reused_second)) /
           static_cast<double>(pages - pages_mid);
  }
  double SlopePayloadPerPage() const {
    return static_cast<double>(payload_bytes - payload_mid) /
           static_cast<double>(pages - pages_mid);
  }
  double SlopeOverheadPerPage() const { return SlopeRssPerPage() - SlopePayloadPerPage(); }
  // What the whole fill grew by beyond its payload and the slope's overhead
  // for each of its pages: the one-time part.
  double OneTimeBytes() const {
    return RssPerPage() * pages - static_cast<double>(payload_bytes) -
           SlopeOverheadPerPage() * pages;
  }
};

struct Results {
  Cell cells[kNumSystems][kNumPatterns][kNumOps];
  Memory memory[kNumSystems];
  Workload workloads[kNumPatterns];
  // Corpus and client-side figures.
  size_t corpus_pages = 0;
  uint64_t corpus_fingerprint = 0;
  std::array<size_t, kNumPageClasses> class_pages = {}, class_files = {};
  std::array<uint64_t, kNumPageClasses> class_payload = {};
  double encode_us_per_page = 0;
  double batched_payload_per_page = 0;  // what the client sent, per page
  int ramster_exit = 0, memcached_exit = 0;
  bool overwrite = false;
};

std::string Rate(double pages_per_s) {
  if (pages_per_s >= 1e6) return absl::StrFormat("%.2fM", pages_per_s / 1e6);
  if (pages_per_s >= 1e3) return absl::StrFormat("%.1fk", pages_per_s / 1e3);
  return absl::StrFormat("%.0f", pages_per_s);
}

std::string RateSpread(const Spread& s) {
  return absl::StrFormat("%s [%s-%s]", Rate(s.median), Rate(s.min), Rate(s.max));
}

std::string UsSpread(const Spread& s) {
  auto us = [](double v) {
    return v >= 100 ? absl::StrFormat("%.0f", v) : absl::StrFormat("%.1f", v);
  };
  return absl::StrFormat("%s [%s-%s]", us(s.median), us(s.min), us(s.max));
}

void PrintTable(const Results& r, int threads, int rounds) {
  const Workload& b = r.workloads[kBatched];
  const Workload& u = r.workloads[kUnbatched];
  std::printf("server_bench: one ramster-server against memcached, same pages, "
              "same load pattern, same run\n");
  std::printf("machine: %s, %ld cores online; the servers and the %d client "
              "threads share them\n",
              CpuModel().c_str(), sysconf(_SC_NPROCESSORS_ONLN), threads);
  uint64_t payload = 0;
  for (uint64_t p : r.class_payload) payload += p;
  std::printf("corpus: %zu distinct pages (%.0f MiB, fingerprint %016llx), encoded "
              "payload %.0f B/page on average (ratio %.2f):\n",
              r.corpus_pages, r.corpus_pages * kPageSize / 1048576.0,
              static_cast<unsigned long long>(r.corpus_fingerprint),
              static_cast<double>(payload) / r.corpus_pages,
              static_cast<double>(r.corpus_pages) * kPageSize / payload);
  for (int c = 0; c < kNumPageClasses; ++c) {
    std::printf("  %-7s %6zu pages", kPageClassNames[c], r.class_pages[c]);
    if (c == kBinaryPage || c == kTextPage) {
      std::printf(" from %5zu files", r.class_files[c]);
    } else {
      std::printf("                 ");
    }
    if (r.class_pages[c] > 0) {
      std::printf("  %6.0f B/page encoded",
                  static_cast<double>(r.class_payload[c]) / r.class_pages[c]);
    }
    std::printf("\n");
  }
  std::printf("client encode (EncodePage, one thread, before the timed phases): "
              "%.2f us/page\n",
              r.encode_us_per_page);
  std::printf("patterns: batched = %d pages per round trip, %zu pages per phase; "
              "unbatched = 1 page per round trip, %zu pages per phase\n",
              b.pages_per_rt, b.pages(), u.pages());
  std::printf("  ramster: Store/Load requests of that many pages (%s); memcached: that "
              "many pipelined sets / one multi-key get\n",
              RamsterCalls() == Calls::kLink
                  ? "each thread's on one page link, as the shim sends them"
                  : RamsterCalls() == Calls::kStream
                        ? "each thread's on one Pages stream, as the shim sends them without links"
                        : "unary calls");
  std::printf("  %d client threads, one connection each; latency is per round "
              "trip, in us; median of %d rounds [min-max]\n",
              threads, rounds);
  std::printf("  %s\n",
              r.overwrite
                  ? "--overwrite: no clearing; every store overwrites pages already stored"
                  : "each load phase is followed by a clear (ramster Invalidate, memcached "
                    "flush_all): stores write fresh keys");
  std::printf("  srv/cli CPU: CPU us per page of the server process and of this "
              "client process (all threads);\n  other: cores kept busy by "
              "processes outside the bench during the phase (disturbance)\n\n");

  std::printf("%-9s %-5s %-9s %24s %20s %20s %7s %7s %5s\n", "pattern", "op",
              "system", "pages/s", "p50 us/round trip", "p99 us/round trip",
              "srv CPU", "cli CPU", "other");
  auto row = [](const char* pattern, const char* op, const char* system,
                const Cell& c) {
    std::printf("%-9s %-5s %-9s %24s %20s %20s %7.2f %7.2f %5.2f\n", pattern, op,
                system, RateSpread(SpreadOf(c.pages_per_s)).c_str(),
                UsSpread(SpreadOf(c.p50_us)).c_str(), UsSpread(SpreadOf(c.p99_us)).c_str(),
                SpreadOf(c.server_cpu_us).median, SpreadOf(c.client_cpu_us).median,
                SpreadOf(c.foreign_cores).max);
  };
  for (int p = 0; p < kNumPatterns; ++p) {
    for (int o = 0; o < kNumOps; ++o) {
      for (int s = 0; s < kNumSystems; ++s) {
        const Cell& c = r.cells[s][p][o];
        if (!c.empty()) row(kPatternNames[p], kOpNames[o], kSystemNames[s], c);
      }
      const Cell& a = r.cells[kRamster][p][o];
      const Cell& m = r.cells[kMemcached][p][o];
      if (!a.empty() && !m.empty()) {
        std::printf("%-9s %-5s %-9s %24.2f %20.2f %20.2f %7.2f\n", kPatternNames[p],
                    kOpNames[o], "r/m",
                    SpreadOf(a.pages_per_s).median / SpreadOf(m.pages_per_s).median,
                    SpreadOf(a.p50_us).median / SpreadOf(m.p50_us).median,
                    SpreadOf(a.p99_us).median / SpreadOf(m.p99_us).median,
                    SpreadOf(a.server_cpu_us).median / SpreadOf(m.server_cpu_us).median);
      }
    }
  }
  std::printf("(r/m: ramster / memcached, medians measured in this run; other: "
              "max over rounds)\n\n");

  std::printf("first fill: the first batched store into each freshly started "
              "server (its memory grows while timed; once, not in the rounds)\n");
  for (int s = 0; s < kNumSystems; ++s) {
    const Memory& m = r.memory[s];
    if (m.measured) row("1st fill", "store", kSystemNames[s], m.first_fill);
  }
  std::printf("\ndonor RAM per stored page, after that first fill of %zu pages:\n",
              b.pages());
  std::printf("  %-9s %12s %14s %14s %14s %14s %14s %12s\n", "system", "RSS delta",
              "own account", "payload", "RSS overhead", "acct overhead", "slope overhead",
              "one-time MB");
  for (int s = 0; s < kNumSystems; ++s) {
    const Memory& m = r.memory[s];
    if (!m.measured) continue;
    std::printf("  %-9s %12.0f %14.0f %14.0f %14.1f %14.1f %14.1f %12.2f\n", kSystemNames[s],
                m.RssPerPage(), m.AccountedPerPage(), m.PayloadPerPage(),
                m.RssPerPage() - m.PayloadPerPage(),
                m.AccountedPerPage() - m.PayloadPerPage(),
                m.SlopeOverheadPerPage(), m.OneTimeBytes() / 1e6);
  }
  std::printf("  (bytes per page. RSS delta: VmRSS less LazyFree, after - before, plus for "
              "ramster the slab pages\n   the warm-up left cached that the fill reused; "
              "ramster own account = NodeStatus ram_used_bytes,\n   payload = payload_bytes; "
              "memcached own account = stats bytes (items with headers),\n   payload = the "
              "4096-byte value; slope: the same over the fill's second half only;\n   one-time: "
              "what the whole fill grew by beyond its pages at the slope's cost)\n\n");

  std::printf("goals:\n");
  for (int o = 0; o < kNumOps; ++o) {
    const Cell& a = r.cells[kRamster][kBatched][o];
    const Cell& m = r.cells[kMemcached][kBatched][o];
    if (a.empty() || m.empty()) continue;
    double ratio = SpreadOf(a.pages_per_s).median / SpreadOf(m.pages_per_s).median;
    std::printf("  batched %-5s rate >= memcached's: %s (%.2fx)\n", kOpNames[o],
                ratio >= 1 ? "met" : "NOT met", ratio);
  }
  const Memory& m = r.memory[kRamster];
  if (m.measured) {
    const double limit = m.PayloadPerPage() + 32;
    const double slope_over = m.SlopeOverheadPerPage();
    std::printf("  donor RAM/page <= payload + 32 = %.0f B: RSS %.0f B %s, own "
                "account %.0f B %s; one more page (slope) payload + %.1f B %s\n",
                limit, m.RssPerPage(), m.RssPerPage() <= limit ? "met" : "NOT met",
                m.AccountedPerPage(), m.AccountedPerPage() <= limit ? "met" : "NOT met",
                slope_over, slope_over <= 32 ? "met" : "NOT met");
  }
}

std::string JsonSpread(const Spread& s) {
  std::string j = absl::StrFormat("{\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, \"rounds\": [",
                                  s.median, s.min, s.max);
  for (size_t i = 0; i < s.rounds.size(); ++i) {
    absl::StrAppendFormat(&j, "%s%.6g", i ? ", " : "", s.rounds[i]);
  }
  return j + "]}";
}

// The figures of a cell, as JSON object members.
std::string JsonCell(const Cell& c) {
  return absl::StrFormat(
      "\"pages_per_s\": %s,\n     \"p50_us\": %s,\n     \"p99_us\": %s,\n"
      "     \"server_cpu_us_per_page\": %s,\n     \"client_cpu_us_per_page\": %s,\n"
      "     \"foreign_cores\": %s",
      JsonSpread(SpreadOf(c.pages_per_s)), JsonSpread(SpreadOf(c.p50_us)),
      JsonSpread(SpreadOf(c.p99_us)), JsonSpread(SpreadOf(c.server_cpu_us)),
      JsonSpread(SpreadOf(c.client_cpu_us)), JsonSpread(SpreadOf(c.foreign_cores)));
}

void WriteJson(const std::string& path, const Results& r, int threads, int rounds,
               uint64_t seed) {
  std::string j = "{\n";
  absl::StrAppendFormat(
      &j,
      "  \"benchmark\": \"server_bench\",\n  \"cpu\": \"%s\",\n  \"cores\": %d,\n"
      "  \"note\": \"servers and client threads share the cores\",\n"
      "  \"threads\": %d,\n  \"rounds\": %d,\n  \"seed\": %u,\n"
      "  \"latency_unit\": \"us per round trip\",\n  \"overwrite\": %s,\n"
      "  \"ramster_calls\": \"%s\",\n",
      CpuModel(), sysconf(_SC_NPROCESSORS_ONLN), threads, rounds, seed,
      r.overwrite ? "true" : "false", CallsName(RamsterCalls()));
  j += "  \"patterns\": {";
  for (int p = 0; p < kNumPatterns; ++p) {
    absl::StrAppendFormat(&j, "%s\"%s\": {\"pages_per_round_trip\": %d, \"pages\": %u}",
                          p ? ", " : "", kPatternNames[p], r.workloads[p].pages_per_rt,
                          r.workloads[p].pages());
  }
  j += "},\n  \"corpus\": {";
  absl::StrAppendFormat(&j,
                        "\"pages\": %u, \"fingerprint\": \"%016x\", "
                        "\"encode_us_per_page\": %.4f",
                        r.corpus_pages, r.corpus_fingerprint, r.encode_us_per_page);
  for (int c = 0; c < kNumPageClasses; ++c) {
    absl::StrAppendFormat(&j, ", \"%s\": {\"pages\": %u, \"files\": %u, \"payload_bytes\": %u}",
                          kPageClassNames[c], r.class_pages[c], r.class_files[c],
                          r.class_payload[c]);
  }
  j += "},\n  \"results\": [";
  bool first = true;
  for (int s = 0; s < kNumSystems; ++s) {
    for (int p = 0; p < kNumPatterns; ++p) {
      for (int o = 0; o < kNumOps; ++o) {
        const Cell& c = r.cells[s][p][o];
        if (c.empty()) continue;
        absl::StrAppendFormat(
            &j, "%s\n    {\"system\": \"%s\", \"pattern\": \"%s\", \"op\": \"%s\",\n     %s}",
            first ? "" : ",", kSystemNames[s], kPatternNames[p], kOpNames[o], JsonCell(c));
        first = false;
      }
    }
  }
  j += "\n  ],\n  \"ratios_ramster_over_memcached\": [";
  first = true;
  for (int p = 0; p < kNumPatterns; ++p) {
    for (int o = 0; o < kNumOps; ++o) {
      const Cell& a = r.cells[kRamster][p][o];
      const Cell& m = r.cells[kMemcached][p][o];
      if (a.empty() || m.empty()) continue;
      absl::StrAppendFormat(
          &j,
          "%s\n    {\"pattern\": \"%s\", \"op\": \"%s\", \"pages_per_s\": %.4f, "
          "\"p50_us\": %.4f, \"p99_us\": %.4f, \"server_cpu_us_per_page\": %.4f}",
          first ? "" : ",", kPatternNames[p], kOpNames[o],
          SpreadOf(a.pages_per_s).median / SpreadOf(m.pages_per_s).median,
          SpreadOf(a.p50_us).median / SpreadOf(m.p50_us).median,
          SpreadOf(a.p99_us).median / SpreadOf(m.p99_us).median,
          SpreadOf(a.server_cpu_us).median / SpreadOf(m.server_cpu_us).median);
      first = false;
    }
  }
  j += "\n  ],\n  \"memory\": {";
  first = true;
  for (int s = 0; s < kNumSystems; ++s) {
    const Memory& m = r.memory[s];
    if (!m.measured) continue;
    absl::StrAppendFormat(
        &j,
        "%s\n    \"%s\": {\"pages\": %u, \"rss_before_bytes\": %u, "
        "\"rss_after_bytes\": %u, \"cache_reused_bytes\": %u,\n      \"rss_per_page\": %.2f, "
        "\"accounted_bytes\": %u, \"accounted_per_page\": %.2f, "
        "\"payload_per_page\": %.2f,\n      \"rss_overhead_per_page\": %.2f, "
        "\"accounted_overhead_per_page\": %.2f, \"items\": %u,\n"
        "      \"pages_mid\": %u, \"rss_mid_bytes\": %u, \"cache_reused_second_bytes\": %u, "
        "\"payload_mid_bytes\": %u,\n"
        "      \"slope_rss_per_page\": %.2f, \"slope_payload_per_page\": %.2f, "
        "\"slope_overhead_per_page\": %.2f, \"one_time_bytes\": %.0f,\n"
        "      \"first_fill_store\": {%s}}",
        first ? "" : ",", kSystemNames[s], m.pages, m.rss_before, m.rss_after,
        m.cache_reused, m.RssPerPage(), m.accounted_bytes, m.AccountedPerPage(), m.PayloadPerPage(),
        m.RssPerPage() - m.PayloadPerPage(), m.AccountedPerPage() - m.PayloadPerPage(),
        m.items, m.pages_mid, m.rss_mid, m.cache_reused_second, m.payload_mid,
        m.SlopeRssPerPage(), m.SlopePayloadPerPage(),
        m.SlopeOverheadPerPage(), m.OneTimeBytes(),
        JsonCell(m.first_fill));
    first = false;
  }
  absl::StrAppendFormat(&j, "\n  },\n  \"client_payload_per_page\": %.2f,\n",
                        r.batched_payload_per_page);
  absl::StrAppendFormat(&j, "  \"exit_codes\": {\"ramster\": %d, \"memcached\": %d}\n}\n",
                        r.ramster_exit, r.memcached_exit);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j;
  out.close();
  if (!out) Die(absl::StrCat("cannot write ", path));
}

// ---------------------------------------------------------------------------

int Run(const char* argv0) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  WatchSignals(signals);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int batch = absl::GetFlag(FLAGS_batch);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int64_t verify_every_flag = absl::GetFlag(FLAGS_verify_every);
  if (threads < 1 || threads > 256) Die("--threads must be 1..256");
  if (batch < 1 || batch > 256) Die("--batch must be 1..256 (the server's limit)");
  if (rounds < 1) Die("--rounds must be at least 1");
  if (verify_every_flag < 1) Die("--verify_every must be at least 1");
  const uint64_t verify_every = static_cast<uint64_t>(verify_every_flag);
  bool run[kNumSystems] = {};
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_systems), ',',
                                            absl::SkipEmpty())) {
    if (s == "ramster") {
      run[kRamster] = true;
    } else if (s == "memcached") {
      run[kMemcached] = true;
    } else {
      Die(absl::StrCat("--systems: unknown system '", s, "'"));
    }
  }
  if (!run[kRamster] && !run[kMemcached]) Die("--systems names no system");

  Results results;
  results.workloads[kBatched] = {
      kBatched, batch,
      static_cast<size_t>(std::max<int64_t>(absl::GetFlag(FLAGS_batched_pages), 0) / batch),
      threads};
  results.workloads[kUnbatched] = {
      kUnbatched, 1,
      static_cast<size_t>(std::max<int64_t>(absl::GetFlag(FLAGS_unbatched_pages), 0)),
      threads};
  for (const Workload& w : results.workloads) {
    if (w.round_trips < static_cast<size_t>(threads)) {
      Die(absl::StrCat(kPatternNames[w.pattern],
                       ": need at least one round trip per thread"));
    }
  }

  // The corpus, its order, its encoding.
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  std::mt19937_64 rng(seed);
  PageCorpusOptions copt;
  if (absl::GetFlag(FLAGS_corpus_pages) < 1) Die("--corpus_pages must be at least 1");
  copt.total_pages = static_cast<size_t>(absl::GetFlag(FLAGS_corpus_pages));
  absl::StatusOr<std::array<double, kNumPageClasses>> mix =
      ParsePageMix(absl::GetFlag(FLAGS_mix));
  if (!mix.ok()) Die(absl::StrCat("--mix: ", mix.status().message()));
  copt.weights = *mix;
  copt.binary_dirs = absl::GetFlag(FLAGS_binary_dirs);
  copt.text_dirs = absl::GetFlag(FLAGS_text_dirs);
  if (absl::GetFlag(FLAGS_max_pages_per_file) < 1) Die("--max_pages_per_file must be >= 1");
  copt.max_pages_per_file = static_cast<size_t>(absl::GetFlag(FLAGS_max_pages_per_file));
  absl::StatusOr<PageCorpus> corpus = BuildPageCorpus(copt, rng);
  if (!corpus.ok()) Die(corpus.status().ToString());
  if (corpus->size() == 0) Die("empty corpus");

  PageSource src;
  src.corpus = &*corpus;
  for (const auto& pages : corpus->pages) {
    src.order.insert(src.order.end(), pages.begin(), pages.end());
  }
  ShuffleWith(src.order, rng);
  src.encoded.resize(corpus->size());
  {
    Clock::time_point start = Clock::now();
    for (uint32_t i = 0; i < corpus->size(); ++i) {
      if (!EncodePage(corpus->page(i), &src.encoded[i]).ok()) Die("EncodePage failed");
    }
    results.encode_us_per_page =
        std::chrono::duration<double, std::micro>(Clock::now() - start).count() /
        corpus->size();
  }
  results.corpus_pages = corpus->size();
  results.corpus_fingerprint = PageCorpusFingerprint(*corpus);
  for (int c = 0; c < kNumPageClasses; ++c) {
    results.class_pages[c] = corpus->pages[c].size();
    results.class_files[c] = corpus->files[c];
    for (uint32_t i : corpus->pages[c]) results.class_payload[c] += src.encoded[i].length;
  }
  {
    uint64_t sum = 0;
    const Workload& b = results.workloads[kBatched];
    for (uint64_t k = 0; k < b.pages(); ++k) sum += src.Encoded(k).length;
    results.batched_payload_per_page = static_cast<double>(sum) / b.pages();
  }

  // The servers.
  signal(SIGPIPE, SIG_IGN);
  {
    const char* tmp = getenv("TEST_TMPDIR");
    if (tmp == nullptr) tmp = getenv("TMPDIR");
    std::string tmpl = absl::StrCat(tmp ? tmp : "/tmp", "/server_bench_XXXXXX");
    if (mkdtemp(tmpl.data()) == nullptr) Die(absl::StrCat("mkdtemp: ", strerror(errno)));
    g_temp_dir = tmpl;
  }
  pid_t pids[kNumSystems] = {-1, -1};
  int ramster_port = 0, memcached_port = 0;
  const std::string ramster_log = g_temp_dir + "/ramster-server.log";
  const std::string memcached_log = g_temp_dir + "/memcached.log";
  if (run[kRamster]) {
    std::vector<std::string> argv = {
        FindServerBinary(argv0),
        "--listen=127.0.0.1:0",
        "--memory-limit=" + absl::GetFlag(FLAGS_server_memory_limit),
        "--disk-limit=1G",
        "--data-dir=" + g_temp_dir + "/ramster-data",
        "--node-id=server-bench",
        absl::StrCat("--recompress-level=", absl::GetFlag(FLAGS_server_recompress_level))};
    if (int w = absl::GetFlag(FLAGS_server_workers); w > 0) {
      argv.push_back(absl::StrCat("--workers=", w));
    }
    fs::create_directories(g_temp_dir + "/ramster-data");
    pids[kRamster] = Spawn(kRamster, argv, ramster_log);
    std::regex ready(R"(ready on [^ ]*:(\d+))");
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (ramster_port == 0) {
      std::string log = ReadFile(ramster_log);
      std::smatch m;
      if (std::regex_search(log, m, ready)) {
        ramster_port = std::stoi(m[1]);
        break;
      }
      int status;
      if (Exited(pids[kRamster], &status)) {
        g_children[kRamster] = -1;
        Die(absl::StrCat("ramster-server exited before it was ready:\n", log));
      }
      if (Clock::now() > deadline) Die("ramster-server did not get ready in 60 s:\n" + log);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (run[kMemcached]) {
    const std::string binary = absl::GetFlag(FLAGS_memcached_binary);
    if (!Executable(binary)) {
      Die(absl::StrCat("memcached not found at ", binary,
                       " (Debian package memcached, or --systems=ramster)"));
    }
    for (int attempt = 0; attempt < 5 && memcached_port == 0; ++attempt) {
      const int port = FreeLoopbackPort();
      std::vector<std::string> argv = {
          binary, "-l", "127.0.0.1", "-p", absl::StrCat(port), "-U", "0", "-m",
          absl::StrCat(absl::GetFlag(FLAGS_memcached_memory_mb)), "-t",
          absl::StrCat(absl::GetFlag(FLAGS_memcached_threads))};
      if (geteuid() == 0) {  // memcached refuses root unless told
        argv.push_back("-u");
        argv.push_back("root");
      }
      pids[kMemcached] = Spawn(kMemcached, argv, memcached_log);
      auto deadline = Clock::now() + std::chrono::seconds(10);
      int status;
      while (Clock::now() < deadline) {
        if (Exited(pids[kMemcached], &status)) {
          g_children[kMemcached] = -1;
          break;
        }
        int fd = ConnectLoopback(port);
        if (fd >= 0) {
          close(fd);
          memcached_port = port;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (memcached_port == 0) {
      Die("memcached did not start:\n" + ReadFile(memcached_log));
    }
  }

  // Clients and requests.
  const uint64_t epoch = static_cast<uint64_t>(
      std::chrono::system_clock::now().time_since_epoch().count());
  std::unique_ptr<RamsterClient> ramster;
  RamsterClient::Requests ramster_requests[kNumPatterns];
  if (run[kRamster]) {
    ramster = std::make_unique<RamsterClient>(absl::StrCat("127.0.0.1:", ramster_port),
                                              threads, epoch, RamsterCalls());
    ramster->OpenSession();
    if (absl::GetFlag(FLAGS_prebuilt_requests)) {
      for (int p = 0; p < kNumPatterns; ++p) {
        ramster_requests[p] = ramster->Build(results.workloads[p], src);
      }
    }
  }
  std::vector<std::unique_ptr<MemcachedConnection>> mc;
  if (run[kMemcached]) {
    for (int t = 0; t <= threads; ++t) {  // the last one for control commands
      mc.push_back(std::make_unique<MemcachedConnection>(memcached_port));
    }
  }
  std::vector<std::vector<uint8_t>> scratch(threads, std::vector<uint8_t>(kPageSize));
  const bool prebuilt = absl::GetFlag(FLAGS_prebuilt_requests);
  std::vector<v1::PagesRequest> store_scratch(threads);
  std::vector<v1::PagesRequest> load_scratch(threads);

  const bool log_phases = absl::GetFlag(FLAGS_log_phases);
  const bool overwrite = absl::GetFlag(FLAGS_overwrite);
  results.overwrite = overwrite;
  auto run_phase = [&](System s, Pattern p, Op o, const Workload& w) {
    if (s == kRamster) {
      const RamsterClient::Requests& req = ramster_requests[p];
      if (o == kStore) {
        return RunPhase(w, s, [&](int t, size_t rt) {
          if (prebuilt) return ramster->Store(t, req.store[rt]);
          ramster->BuildOne(w, rt, src, &store_scratch[t], nullptr);
          ramster->Store(t, store_scratch[t]);
        });
      }
      return RunPhase(w, s, [&](int t, size_t rt) {
        if (prebuilt) return ramster->Load(t, req.load[rt], src, verify_every, scratch[t].data());
        ramster->BuildOne(w, rt, src, nullptr, &load_scratch[t]);
        ramster->Load(t, load_scratch[t], src, verify_every, scratch[t].data());
      });
    }
    if (o == kStore) {
      return RunPhase(w, s, [&](int t, size_t rt) {
        mc[t]->Set(w.FirstKey(rt), w.pages_per_rt, src);
      });
    }
    return RunPhase(w, s, [&](int t, size_t rt) {
      mc[t]->Get(w.FirstKey(rt), w.pages_per_rt, src, verify_every, scratch[t].data());
    });
  };
  auto phase = [&](System s, Pattern p, Op o, const Workload& w) {
    timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    PhaseResult r = run_phase(s, p, o, w);
    if (log_phases) {
      timespec end;
      clock_gettime(CLOCK_MONOTONIC, &end);
      std::fprintf(stderr, "phase %s %s %s %zu pages: monotonic %ld.%09ld to %ld.%09ld\n",
                   kSystemNames[s], kPatternNames[p], kOpNames[o], w.pages(),
                   static_cast<long>(start.tv_sec), start.tv_nsec,
                   static_cast<long>(end.tv_sec), end.tv_nsec);
    }
    return r;
  };
  auto clear = [&](System s) {
    if (s == kRamster) {
      ramster->Clear();
    } else {
      mc.back()->FlushAll();
    }
  };

  // Warm-up: connections, buffers, the first slabs. Not measured.
  for (int s = 0; s < kNumSystems; ++s) {
    if (!run[s]) continue;
    const System sys = static_cast<System>(s);
    for (int p = 0; p < kNumPatterns; ++p) {
      Workload w = results.workloads[p];
      w.round_trips = std::min<size_t>(w.round_trips, threads * 4);
      phase(sys, static_cast<Pattern>(p), kStore, w);
      phase(sys, static_cast<Pattern>(p), kLoad, w);
      clear(sys);
    }
  }

  // The first fill: one batched store into each server's fresh memory, with
  // the donor RAM it costs. Then a load, to check every page once more.
  const Workload& b = results.workloads[kBatched];
  const Workload& u = results.workloads[kUnbatched];
  for (int i = 0; i < kNumSystems; ++i) {
    const System s = static_cast<System>(i);
    if (!run[s]) continue;
    Memory& mem = results.memory[s];
    Workload first_half = b;
    first_half.round_trips = b.round_trips / 2;
    Workload second_half = b;
    second_half.first_rt = first_half.round_trips;
    second_half.round_trips = b.round_trips - first_half.round_trips;
    if (first_half.round_trips == 0) Die("--batched_pages: the first fill needs 2 round trips");
    const uint64_t cached_before = s == kRamster ? ramster->Status().slab_cached_bytes() : 0;
    mem.rss_before = HeldBytes(pids[s]);
    PhaseResult first = phase(s, kBatched, kStore, first_half);
    mem.rss_mid = HeldBytes(pids[s]);
    mem.pages_mid = first_half.pages();
    uint64_t cached_mid = 0;
    if (s == kRamster) {
      v1::NodeStatus st = ramster->Status();
      cached_mid = st.slab_cached_bytes();
      mem.payload_mid = st.payload_bytes();
    } else {
      mem.payload_mid = mem.pages_mid * kPageSize;
    }
    PhaseResult second = phase(s, kBatched, kStore, second_half);
    mem.rss_after = HeldBytes(pids[s]);
    mem.first_fill.Add(Concatenate(first, second), b.pages());
    mem.pages = b.pages();
    mem.measured = true;
    if (s == kRamster) {
      v1::NodeStatus st = ramster->Status();
      mem.cache_reused_second = cached_mid > st.slab_cached_bytes()
                                    ? cached_mid - st.slab_cached_bytes()
                                    : 0;
      if (st.pages_in_ram() != b.pages() || st.pages_on_disk() != 0) {
        Die(absl::StrCat("ramster holds ", st.pages_in_ram(), " pages in RAM and ",
                         st.pages_on_disk(), " on disk; expected ", b.pages(),
                         " in RAM (raise --server_memory_limit)"));
      }
      mem.accounted_bytes = st.ram_used_bytes();
      mem.payload_bytes = st.payload_bytes();
      mem.cache_reused = cached_before > st.slab_cached_bytes()
                             ? cached_before - st.slab_cached_bytes()
                             : 0;
      mem.items = st.pages_in_ram();
    } else {
      std::map<std::string, std::string> st = mc.back()->Stats();
      uint64_t bytes = 0, items = 0, evictions = 0;
      if (!absl::SimpleAtoi(st["bytes"], &bytes) ||
          !absl::SimpleAtoi(st["curr_items"], &items) ||
          !absl::SimpleAtoi(st["evictions"], &evictions)) {
        Die("memcached stats: no bytes / curr_items / evictions");
      }
      if (items != b.pages() || evictions != 0) {
        Die(absl::StrCat("memcached holds ", items, " items (", evictions,
                         " evicted); expected ", b.pages(),
                         " (raise --memcached_memory_mb)"));
      }
      mem.accounted_bytes = bytes;
      mem.payload_bytes = uint64_t{items} * kPageSize;
      mem.items = items;
    }
    phase(s, kBatched, kLoad, b);
    if (!overwrite) clear(s);
  }

  // The timed rounds.
  std::fprintf(stderr, "server_bench: %d rounds", rounds);
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < kNumSystems; ++i) {
      const System s = static_cast<System>((i + round) % kNumSystems);
      if (!run[s]) continue;
      results.cells[s][kBatched][kStore].Add(phase(s, kBatched, kStore, b), b.pages());
      results.cells[s][kBatched][kLoad].Add(phase(s, kBatched, kLoad, b), b.pages());
      if (!overwrite) clear(s);
      results.cells[s][kUnbatched][kStore].Add(phase(s, kUnbatched, kStore, u), u.pages());
      results.cells[s][kUnbatched][kLoad].Add(phase(s, kUnbatched, kLoad, u), u.pages());
      if (!overwrite) clear(s);
    }
    std::fprintf(stderr, " .");
  }
  std::fprintf(stderr, "\n");
  if (overwrite) {
    for (int s = 0; s < kNumSystems; ++s) {
      if (run[s]) clear(static_cast<System>(s));
    }
  }

  // Stop both; ramster holds nothing now, so its drain on SIGTERM is quick.
  ramster.reset();
  mc.clear();
  if (run[kRamster]) {
    results.ramster_exit = Stop(kRamster, std::chrono::seconds(30));
    if (results.ramster_exit != 0) {
      Die(absl::StrCat("ramster-server did not stop cleanly (exit ", results.ramster_exit,
                       "):\n", ReadFile(ramster_log)));
    }
  }
  if (run[kMemcached]) results.memcached_exit = Stop(kMemcached, std::chrono::seconds(10));
  RemoveTempDir();

  PrintTable(results, threads, rounds);
  const std::string json = UserPath(absl::GetFlag(FLAGS_json));
  if (!json.empty()) {
    WriteJson(json, results, threads, rounds, seed);
    std::printf("\nwrote %s\n", json.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace ramster

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Stores and loads 4 KiB pages against one ramster-server and one memcached "
      "(started by the bench, on loopback), unbatched and batched.");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "server_bench: unexpected argument '%s'\n", rest[1]);
    return 2;
  }
  return ramster::Run(argv[0]);
}
