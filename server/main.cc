// ramster-server: donates this host's spare RAM to its peers.
//
//   ramster-server --listen=HOST:PORT --memory-limit=BYTES --disk-limit=BYTES
//                  --data-dir=DIR [--client-quota=BYTES] [--node-id=NAME]
//
// Logs one line when ready to serve. SIGTERM/SIGINT: stops taking requests,
// writes persistent RAM pages to RocksDB, exits 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/byte_size.h"
#include "common/flags.h"
#include "common/page_codec.h"
#include "server/node.h"
#include "server/page_link.h"
#include "server/services.h"
#include "server/work_queue.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7400", "HOST:PORT to serve on (port 0: any free port)");
ABSL_FLAG(ramster::ByteSize, memory_limit, ramster::ByteSize(256ull << 20),
          "RAM this node donates (pages, slabs and index), e.g. 2G");
ABSL_FLAG(ramster::ByteSize, disk_limit, ramster::ByteSize(1ull << 30),
          "disk this node's RocksDB overflow may hold, e.g. 10G");
ABSL_FLAG(std::string, data_dir, "", "directory for the RocksDB overflow tier (required)");
ABSL_FLAG(ramster::ByteSize, client_quota, ramster::ByteSize(0),
          "default grant per client, RAM and disk together (0: no per-client limit)");
ABSL_FLAG(std::string, node_id, "", "this node's name (default: hostname:port)");
ABSL_FLAG(absl::Duration, lease, absl::Minutes(10),
          "a client silent for this long has its pages reclaimed");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the token Admin calls must present (empty: none needed)");
ABSL_FLAG(int, workers, 4, "threads serving requests that may touch the disk, and Admin");
ABSL_FLAG(absl::Duration, poll_requests, absl::ZeroDuration(),
          "an io thread polls for the next request this long before it sleeps, yielding its CPU "
          "between tries (one polling thread at a time; 0, the default: never). Spends the "
          "donor's idle CPU for its clients' latency (150us: QD1 reads 69 -> 56 us here)");
ABSL_FLAG(int, recompress_level, 2,
          "LZ4HC level (1-12) at which a thread of the lowest priority (SCHED_IDLE, at most a "
          "fifth of one CPU) recompresses the pages clients stored with LZ4, once each; 0: "
          "never. Level 2 makes text-like pages 7-25% smaller at ~20 us a page");
ABSL_FLAG(absl::Duration, recompress_age, absl::Seconds(1),
          "recompress a page once it has been stored this long (pages replaced or freed "
          "sooner are not worth the CPU)");
ABSL_FLAG(int, page_link_port, 0,
          "the page link's TCP port, on the --listen address: PageStore's page requests without "
          "HTTP/2 (clients learn the port when they open their session). 0: one the kernel "
          "picks, or after a restart the one the server had (kept in --data-dir) if it is "
          "free; -1: no page link, gRPC only");
ABSL_FLAG(int, io_threads, 1,
          "threads taking calls off gRPC's completion queues (one queue each); they answer "
          "what RAM alone can answer");

namespace ramster {
namespace {

constexpr int kMaxMessageBytes = 4 << 20;

// Page link connections at once (a shim opens one per thread and request in
// flight); more are refused, and their clients use gRPC.
constexpr int kMaxPageLinkConnections = 512;
constexpr int kMaxStreamsPerConnection = 256;

// The page link port a server last had (0: none recorded, or unreadable).
int ReadPortFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return 0;
  int port = 0;
  if (std::fscanf(f, "%d", &port) != 1 || port < 1 || port > 65535) port = 0;
  std::fclose(f);
  return port;
}

// Best effort: a server that cannot record its port still serves.
void WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return;
  const bool ok = std::fprintf(f, "%d\n", port) > 0;
  if (std::fclose(f) == 0 && ok) std::rename(tmp.c_str(), path.c_str());
}

std::string Hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

int Run() {
  NodeOptions options;
  options.ram_limit = absl::GetFlag(FLAGS_memory_limit).bytes;
  options.disk_limit = absl::GetFlag(FLAGS_disk_limit).bytes;
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.default_client_quota = absl::GetFlag(FLAGS_client_quota).bytes;
  options.lease = absl::GetFlag(FLAGS_lease);
  options.recompress_level = absl::GetFlag(FLAGS_recompress_level);
  options.recompress_age = absl::GetFlag(FLAGS_recompress_age);
  if (options.recompress_age < absl::ZeroDuration()) {
    fprintf(stderr, "ramster-server: --recompress-age must not be negative\n");
    return 2;
  }
  if (options.recompress_level < 0 || options.recompress_level > Lz4HcEncoder::kMaxLevel) {
    fprintf(stderr, "ramster-server: --recompress-level must be 0..%d\n",
            Lz4HcEncoder::kMaxLevel);
    return 2;
  }
  if (options.data_dir.empty()) {
    fprintf(stderr, "ramster-server: --data-dir is required\n");
    return 2;
  }
  if (options.lease <= absl::ZeroDuration()) {
    fprintf(stderr, "ramster-server: --lease must be positive\n");
    return 2;
  }
  std::string token;
  if (std::string path = absl::GetFlag(FLAGS_admin_token_file); !path.empty()) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    token = std::string(absl::StripAsciiWhitespace(ss.str()));
    if (!in || token.empty()) {
      fprintf(stderr, "ramster-server: cannot read an admin token from %s\n", path.c_str());
      return 2;
    }
  }
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1 || workers > 256) {
    fprintf(stderr, "ramster-server: --workers must be 1..256\n");
    return 2;
  }
  const int io_threads = absl::GetFlag(FLAGS_io_threads);
  if (const int p = absl::GetFlag(FLAGS_page_link_port); p < -1 || p > 65535) {
    fprintf(stderr, "ramster-server: --page-link-port must be -1..65535\n");
    return 2;
  }
  if (io_threads < Services::kMinIoThreads || io_threads > Services::kMaxIoThreads) {
    fprintf(stderr, "ramster-server: --io-threads must be %d..%d\n",
            Services::kMinIoThreads, Services::kMaxIoThreads);
    return 2;
  }

  // Signals are taken by one thread with sigwait; every other thread
  // (gRPC's, RocksDB's, ours) inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string listen = absl::GetFlag(FLAGS_listen);
  // Health checks are answered by Services (the default service would add
  // callback-API threads; see services.h).
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // Calls (page streams included) open at once on one client connection;
  // more wait at the client. A client opens a few per thread.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxStreamsPerConnection);

  // The node opens (and reloads its disk tier) before it serves; its name
  // needs the port, known only once the server has bound it.
  WorkQueue work(workers, /*max_pending=*/4096);
  absl::StatusOr<std::unique_ptr<Node>> opened = Node::Open(options);
  if (!opened.ok()) {
    fprintf(stderr, "ramster-server: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Node> node = std::move(*opened);
  Services services(node.get(), &work, token, io_threads);
  services.set_request_poll(absl::GetFlag(FLAGS_poll_requests));
  services.Register(&builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    fprintf(stderr, "ramster-server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  services.Start();
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::unique_ptr<PageLink> page_link;
  if (const int link_port = absl::GetFlag(FLAGS_page_link_port); link_port >= 0) {
    absl::StatusOr<std::unique_ptr<PageLink>> started;
    // With a port the kernel picks, a restarted server takes the one it had
    // if it is free, so that its clients' links to it connect again at once
    // (they learn a new port only at their next health check, and meanwhile
    // send their calls on gRPC, whose reconnect backoff can still refuse
    // them right after the restart).
    const std::string port_file = options.data_dir + "/page-link-port";
    if (const int last = link_port == 0 ? ReadPortFile(port_file) : 0; last > 0) {
      started = PageLink::Start(node.get(), host, last, kMaxPageLinkConnections);
    }
    if (!started.ok()) {
      started = PageLink::Start(node.get(), host, link_port, kMaxPageLinkConnections);
    }
    if (started.ok() && link_port == 0) WritePortFile(port_file, (*started)->port());
    if (!started.ok()) {
      fprintf(stderr, "ramster-server: %s\n", started.status().ToString().c_str());
      return 1;
    }
    page_link = std::move(*started);
    node->SetPageLinkPort(static_cast<uint16_t>(page_link->port()));
  }
  std::string node_id = absl::GetFlag(FLAGS_node_id);
  if (node_id.empty()) node_id = absl::StrCat(Hostname(), ":", port);
  node->SetIdentity(node_id, absl::StrCat(host, ":", port));
  v1::NodeStatus st;
  node->GetStatus(&st);
  fprintf(stderr,
          "ramster-server: node %s ready on %s:%d (page link %s; ram limit %s, disk limit %s, "
          "%llu pages reloaded from %s)\n",
          node_id.c_str(), host.c_str(), port,
          page_link != nullptr ? absl::StrCat("port ", page_link->port()).c_str() : "off",
          FormatBytes(options.ram_limit).c_str(), FormatBytes(options.disk_limit).c_str(),
          static_cast<unsigned long long>(st.pages_on_disk()), options.data_dir.c_str());
  fflush(stderr);

  int sig = 0;
  sigwait(&signals, &sig);
  fprintf(stderr, "ramster-server: %s: stopping\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  node->SetDraining(true);
  // Calls in flight end while the io threads still run; then their queues.
  // Page streams are ended first: clients keep them open.
  if (page_link != nullptr) page_link->Shutdown();
  services.CloseStreams();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  services.Shutdown();
  absl::StatusOr<uint64_t> lost = node->Shutdown();
  if (!lost.ok()) {
    fprintf(stderr, "ramster-server: shutdown: %s\n", lost.status().ToString().c_str());
    return 1;
  }
  node->GetStatus(&st);
  fprintf(stderr,
          "ramster-server: stopped; %llu persistent pages on disk, %llu could not "
          "be written (disk limit)\n",
          static_cast<unsigned long long>(st.pages_on_disk()),
          static_cast<unsigned long long>(*lost));
  return 0;
}

}  // namespace
}  // namespace ramster

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ramster-server --listen=HOST:PORT --memory-limit=BYTES --disk-limit=BYTES "
      "--data-dir=DIR [--client-quota=BYTES] [--node-id=NAME]");
  ramster::ParseCommandLineWithDashes(argc, argv);
  // gRPC's locks are absl::Mutex; Debian's Abseil checks every acquisition
  // for lock-order cycles (a debugging aid that showed in the server's
  // profile). Our own locks are ordered by design and checked by the tests.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return ramster::Run();
}
