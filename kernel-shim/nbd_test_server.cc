// nbd_test_server: serves a real device (TierStack: LocalCacheTier, then a
// LocalFileTier) through NbdServer, for tests that drive real NBD clients.
//
//   nbd_test_server --unix=PATH [--tcp=127.0.0.1:0] --file=SWAPFILE
//                   [--size=64M] [--cache=16M] [--workers=4]
//                   [--max-request=32M] [--buffer-pool=64M]
//
// Prints one line when it accepts connections:
//   READY unix=PATH tcp_port=N size=BYTES buffer_pool_bytes=N
// SIGTERM/SIGINT: stops (in-flight requests finish), prints
//   STATS reads=N writes=N ... protocol_errors=N
// and exits 0.
#include <signal.h>

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "common/byte_size.h"
#include "common/flags.h"
#include "kernel-shim/nbd_server.h"
#include "kernel-shim/nbd_test_device.h"

ABSL_FLAG(std::string, unix, "", "unix socket path to listen on");
ABSL_FLAG(std::string, tcp, "", "loopback HOST:PORT to listen on (port 0: any free port)");
ABSL_FLAG(std::string, file, "", "local swap file behind the cache (required)");
ABSL_FLAG(ramster::ByteSize, size, ramster::ByteSize(64 << 20), "device size");
ABSL_FLAG(ramster::ByteSize, cache, ramster::ByteSize(16 << 20), "local cache tier limit");
ABSL_FLAG(int, workers, 4, "worker threads");
ABSL_FLAG(ramster::ByteSize, max_request, ramster::ByteSize(32 << 20),
          "largest READ/WRITE payload");
ABSL_FLAG(ramster::ByteSize, buffer_pool, ramster::ByteSize(64 << 20),
          "preallocated request buffers");
ABSL_FLAG(std::string, export_name, "ramster", "export name");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("serves a TierStackDevice over NBD for tests");
  ramster::ParseCommandLineWithDashes(argc, argv);
  const std::string file = absl::GetFlag(FLAGS_file);
  if (file.empty() || (absl::GetFlag(FLAGS_unix).empty() && absl::GetFlag(FLAGS_tcp).empty())) {
    fprintf(stderr, "nbd_test_server: --file and --unix or --tcp are required\n");
    return 2;
  }
  // Signals are taken by sigwait below; every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<ramster::NbdTestDevice> dev = ramster::MakeNbdTestDevice(
      absl::GetFlag(FLAGS_size).bytes, absl::GetFlag(FLAGS_cache).bytes, file);
  if (!dev.ok()) {
    fprintf(stderr, "nbd_test_server: %s\n", dev.status().ToString().c_str());
    return 1;
  }
  ramster::NbdServerOptions options;
  options.unix_path = absl::GetFlag(FLAGS_unix);
  options.tcp_listen = absl::GetFlag(FLAGS_tcp);
  options.export_name = absl::GetFlag(FLAGS_export_name);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request).bytes;
  options.buffer_pool_bytes = absl::GetFlag(FLAGS_buffer_pool).bytes;
  ramster::NbdServer server(dev->device.get(), options);
  if (absl::Status s = server.Start(); !s.ok()) {
    fprintf(stderr, "nbd_test_server: %s\n", s.ToString().c_str());
    return 1;
  }
  printf("READY unix=%s tcp_port=%d size=%llu buffer_pool_bytes=%zu\n", options.unix_path.c_str(),
         server.tcp_port(), static_cast<unsigned long long>(dev->device->size()),
         server.stats().buffer_pool_bytes);
  fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  server.Stop();
  ramster::NbdServerStats s = server.stats();
  printf(
      "STATS reads=%llu writes=%llu flushes=%llu trims=%llu write_zeroes=%llu disconnects=%llu "
      "bytes_read=%llu bytes_written=%llu errors=%llu device_errors=%llu protocol_errors=%llu "
      "connections=%llu rejected=%llu buffer_waits=%llu\n",
      (unsigned long long)s.reads, (unsigned long long)s.writes, (unsigned long long)s.flushes,
      (unsigned long long)s.trims, (unsigned long long)s.write_zeroes,
      (unsigned long long)s.disconnects, (unsigned long long)s.bytes_read,
      (unsigned long long)s.bytes_written, (unsigned long long)s.errors,
      (unsigned long long)s.device_errors, (unsigned long long)s.protocol_errors,
      (unsigned long long)s.connections_accepted, (unsigned long long)s.connections_rejected,
      (unsigned long long)s.buffer_waits);
  fflush(stdout);
  return 0;
}
