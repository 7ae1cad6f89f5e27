// What one page's round trip over loopback costs this machine before any of
// ramster's own work: the floor under a remote swap-in's shim -> server ->
// shim hop, two ways.
//
//   tcp    a 64-byte request and a 2 KiB reply (about one compressed page)
//          over a TCP connection with TCP_NODELAY, each side blocking in
//          read(): what a lean wire of our own would pay
//   grpc   the same two messages on one gRPC bidirectional stream
//          (ByteBuffers, no protobuf), the server answering from one thread
//          that drains its completion queue, the client writing and reading
//          through its own queue: how ramster's page streams are served,
//          without ramster's code around them
//
// Both run with the two threads on one CPU, where the time per round trip is
// the CPU the wire costs both sides (a wakeup is a context switch there),
// and unpinned, where the scheduler puts them as it does the benchmarks'
// processes. Each (wire, placement) runs --rounds rounds of --round_trips
// round trips after one untimed warm-up round; the JSON has every round's
// microseconds per round trip and their median.
//
//   bazel build //bench:wire_probe
//   bazel-bin/bench/wire_probe --json=/tmp/wire.json
#include <arpa/inet.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/round_trip_probe.h"
#include "common/socket_io.h"

ABSL_FLAG(int, rounds, 5, "timed rounds per wire and placement");
ABSL_FLAG(int, round_trips, 10000, "round trips per round");
ABSL_FLAG(std::string, json, "", "write the results here as JSON (else stdout)");

namespace {

constexpr int kAnyCpu = -1;
constexpr size_t kRequestBytes = 64;
constexpr size_t kReplyBytes = 2048;

// Pins the calling thread to `cpu` (kAnyCpu: to every CPU in `all`).
bool PinTo(int cpu, const cpu_set_t& all) {
  if (cpu == kAnyCpu) return pthread_setaffinity_np(pthread_self(), sizeof(all), &all) == 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

double MicrosPerTrip(std::chrono::steady_clock::time_point start, int trips) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
             .count() /
         trips;
}

// One round over TCP on 127.0.0.1. Returns microseconds per round trip, or
// a negative number if a socket call failed.
double TcpRound(int cpu, const cpu_set_t& all, int trips) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(listener);
    return -1;
  }
  const int one = 1;
  bool server_ok = true;
  std::thread server([&] {
    server_ok = PinTo(cpu, all);
    const int fd = accept(listener, nullptr, nullptr);
    if (fd < 0) {
      server_ok = false;
      return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> request(kRequestBytes), reply(kReplyBytes, 'p');
    // Until the client closes its end.
    while (ramster::ReadFull(fd, request.data(), request.size())) {
      if (!ramster::SendAll(fd, reply.data(), reply.size())) {
        server_ok = false;
        break;
      }
    }
    close(fd);
  });
  double us = -1;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd >= 0 && PinTo(cpu, all) &&
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::vector<char> request(kRequestBytes, 'q'), reply(kReplyBytes);
    bool ok = true;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < trips && ok; ++i) {
      ok = ramster::SendAll(fd, request.data(), request.size()) &&
           ramster::ReadFull(fd, reply.data(), reply.size());
    }
    if (ok) us = MicrosPerTrip(start, trips);
  }
  if (fd >= 0) close(fd);
  if (us < 0) shutdown(listener, SHUT_RDWR);  // an accept that never got its client returns
  server.join();
  close(listener);
  return server_ok ? us : -1;
}

grpc::ByteBuffer Bytes(size_t n, char fill) {
  const std::string s(n, fill);
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

// One round on one gRPC stream over 127.0.0.1 (a server and a channel of
// its own, so no round inherits another's connection). Returns microseconds
// per round trip, or a negative number if the server or a call failed.
double GrpcRound(int cpu, const cpu_set_t& all, int trips) {
  grpc::AsyncGenericService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterAsyncGenericService(&service);
  std::unique_ptr<grpc::ServerCompletionQueue> server_cq = builder.AddCompletionQueue();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return -1;

  // The server's one stream: accepted, then read -> write -> read ... until
  // the client's writes end, then finished. Tags name the step.
  enum Tag : intptr_t { kAccepted = 1, kRead, kWritten, kFinished };
  grpc::GenericServerContext server_ctx;
  grpc::GenericServerAsyncReaderWriter stream(&server_ctx);
  bool server_ok = true;
  std::thread server_thread([&] {
    server_ok = PinTo(cpu, all);
    service.RequestCall(&server_ctx, &stream, server_cq.get(), server_cq.get(),
                        reinterpret_cast<void*>(kAccepted));
    grpc::ByteBuffer request;
    const grpc::ByteBuffer reply = Bytes(kReplyBytes, 'p');
    void* tag;
    bool ok;
    while (server_cq->Next(&tag, &ok)) {
      switch (static_cast<Tag>(reinterpret_cast<intptr_t>(tag))) {
        case kAccepted:
        case kWritten:
          if (!ok) {
            server_ok = false;
            break;
          }
          stream.Read(&request, reinterpret_cast<void*>(kRead));
          break;
        case kRead:
          if (ok) {
            stream.Write(reply, reinterpret_cast<void*>(kWritten));
          } else {  // the client is done writing
            stream.Finish(grpc::Status::OK, reinterpret_cast<void*>(kFinished));
          }
          break;
        case kFinished:
          break;
      }
    }
  });

  double us = -1;
  {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    grpc::GenericStub stub(grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                                     grpc::InsecureChannelCredentials(), args));
    grpc::ClientContext ctx;
    grpc::CompletionQueue cq;
    std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
        stub.PrepareCall(&ctx, "/ramster.bench.Wire/Pages", &cq);
    void* tag;
    bool ok = false;
    // Waits for `n` completions; false if one failed.
    auto await = [&](int n) {
      bool all_ok = true;
      for (int i = 0; i < n; ++i) all_ok = cq.Next(&tag, &ok) && ok && all_ok;
      return all_ok;
    };
    if (call != nullptr && PinTo(cpu, all)) {
      call->StartCall(nullptr);
      bool good = await(1);
      const grpc::ByteBuffer request = Bytes(kRequestBytes, 'q');
      grpc::ByteBuffer reply;
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < trips && good; ++i) {
        call->Write(request, nullptr);
        call->Read(&reply, nullptr);
        good = await(2);
      }
      if (good) us = MicrosPerTrip(start, trips);
      call->WritesDone(nullptr);
      await(1);
      grpc::Status status;
      call->Finish(&status, nullptr);
      await(1);
      if (!status.ok()) us = -1;
    }
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_cq->Shutdown();
  server_thread.join();
  return server_ok ? us : -1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int round_trips = absl::GetFlag(FLAGS_round_trips);
  if (!ramster::RoundTripFlagsValid("wire_probe", rounds, round_trips)) return 2;
  cpu_set_t all;
  if (sched_getaffinity(0, sizeof(all), &all) != 0) {
    fprintf(stderr, "wire_probe: sched_getaffinity failed\n");
    return 1;
  }
  int last_cpu = kAnyCpu;
  for (int i = 0; i < CPU_SETSIZE; ++i) {
    if (CPU_ISSET(i, &all)) last_cpu = i;
  }
  struct Wire {
    const char* name;
    double (*round)(int cpu, const cpu_set_t& all, int trips);
  };
  const Wire wires[] = {{"tcp", TcpRound}, {"grpc", GrpcRound}};
  const std::pair<const char*, int> placements[] = {{"same_cpu", last_cpu},
                                                    {"unpinned", kAnyCpu}};
  std::vector<std::string> fields = {absl::StrCat("\"rounds\": ", rounds),
                                     absl::StrCat("\"round_trips\": ", round_trips),
                                     absl::StrCat("\"request_bytes\": ", kRequestBytes),
                                     absl::StrCat("\"reply_bytes\": ", kReplyBytes)};
  for (const Wire& wire : wires) {
    for (const auto& [placement, cpu] : placements) {
      if (!ramster::MeasureRoundTrips(
              "wire_probe", absl::StrCat(wire.name, "_", placement), rounds, round_trips,
              [&](int trips) { return wire.round(cpu, all, trips); },
              "a socket, a call or the pinning failed", &fields)) {
        return 1;
      }
    }
  }
  return ramster::WriteRoundTripJson("wire_probe", fields, absl::GetFlag(FLAGS_json));
}
