// NbdServer: serves one BlockDevice over the NBD protocol (nbd_protocol.h)
// to the kernel's nbd client, qemu and libnbd, on a unix socket and/or a
// loopback TCP address. One export, named "ramster" by default; the empty
// (default) name selects it too.
//
// What it speaks: the fixed newstyle handshake (NBD_FLAG_C_NO_ZEROES
// honoured); options EXPORT_NAME, GO, INFO (NBD_INFO_EXPORT and
// NBD_INFO_BLOCK_SIZE: minimum 1, preferred 4096, maximum
// max_request_bytes), LIST and ABORT, NBD_REP_ERR_UNSUP for everything else
// (structured replies included); simple replies to READ, WRITE, FLUSH, TRIM,
// WRITE_ZEROES and DISC, with FUA honoured by flushing the device.
//
// How it runs: an acceptor thread; per connection a reader thread that does
// the handshake, then parses and validates requests and hands them to a
// fixed pool of worker threads through a bounded queue; a worker calls the
// device and writes the reply under the connection's write lock, so many
// requests are in flight per connection and replies go out in completion
// order. READ and WRITE payloads live in a preallocated NbdBufferPool; a
// reader waits for buffer space or queue space (backpressure), nothing
// grows. Every length that arrives is bounded: option data by 64 KiB,
// READ/WRITE payloads by max_request_bytes.
//
// Batching: the reader takes from the socket whatever has arrived (a
// burst of requests in one recv) and queues every request of the burst at
// once. A worker that takes a whole-page READ (WRITE) also takes the other
// whole-page READs (WRITEs) of the same connection that are waiting, up to
// max_batch_bytes, and runs them as one BlockDevice::ReadBatch (WriteBatch)
// call: below, the pages of all of them travel in one request per peer.
// Each request still gets its own reply with its own error; the replies of
// a batch go out in one send. A batch never holds two requests that touch
// the same page, nor one that would overtake an older request of its
// connection on a page they share (both then stay queued, in order). A
// connection has one batch running at a time: what arrives meanwhile waits
// and forms its next batch (bigger batches, fewer calls to the peers),
// unless the running one takes longer than batch_overtake_after.
// Requests on one page that are in flight together may still run at once
// on different workers, as NBD allows (and as the kernel never does). A FUA
// write in a batch is answered after one device flush that follows the
// whole batch.
//
// Lone requests: when a connection has exactly one request in flight and
// nothing more has arrived (a client at queue depth 1, such as a task
// faulting a page in from swap), its reader runs that request itself
// instead of waking a worker: one thread hand-off less on the path that
// waits for it (on these VMs a cross-CPU wakeup costs ~20 us). A request
// that arrives meanwhile waits in the socket until the lone one is done,
// then goes the usual way. inline_lone_requests turns this off.
//
// Quick writes: on a device whose whole-page writes return without I/O
// (BlockDevice::quick_writes, e.g. a write-behind area), a burst made only
// of whole-page WRITEs without FUA that touch no page twice, on a
// connection with nothing else in flight, runs on the reader as one batch,
// replies in one send: no worker wakeups at all.
// Anything else in the burst sends the whole burst the usual way.
// inline_quick_writes turns this off.
//
// Read bursts: likewise, a burst of whole-page READs (no page twice, at most
// max_batch_bytes) on a connection with nothing else in flight, when
// nothing more has arrived, runs on the reader as one batch: it would be the
// connection's next batch anyway, and no worker has to wake for it. As with
// a lone request, what arrives meanwhile waits in the socket until the
// burst is done. A/B with fio here (3 peers, 1 copy): QD4 reads 26k -> 34k
// IOPS, QD32 90k -> 101k. inline_read_bursts turns this off.
//
// Read gathering: a client at a high queue depth sends its next reads as
// the replies to its last ones come back, so the reader, back at the
// socket, finds only part of the next burst there, and the bursts settle
// into two halves (fio QD32: ~18 and ~14), each costing every server it
// touches a request. So when the connection's last burst that ran on the
// reader held at least kGatherMinBurst reads and the one being parsed has
// fewer (and only reads, nothing else in flight), the reader polls the
// socket up to read_gather for the rest before it runs it. A client at a
// low queue depth (one swapping task, QD1-4) never has such a burst and
// never waits. A/B with fio QD32 randread, 3 peers, alternating rounds:
// 1 copy ~111k -> ~119k IOPS (six pairs), 2 copies 116k-118k -> 127k-137k
// (three). read_gather zero turns this off.
//
// Malformed input: a request that can be answered is answered with the
// protocol's error (and a rejected WRITE's payload is read and dropped, so
// the stream stays in sync); a stream that cannot be resynchronized (bad
// magic, unknown client flags, oversized option) is dropped. Nothing that
// arrives can crash the server or stop it serving other connections.
//
// Thread safety: stats(), tcp_port() and ServeSocket() may be called from
// any thread once Start() returned OK; Start() and Stop() from one thread.
#ifndef RAMSTER_KERNEL_SHIM_NBD_SERVER_H_
#define RAMSTER_KERNEL_SHIM_NBD_SERVER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/latency_histogram.h"
#include "common/mutex.h"
#include "kernel-shim/block_device.h"
#include "kernel-shim/nbd_buffer_pool.h"
#include "kernel-shim/nbd_protocol.h"

namespace ramster {

struct NbdServerOptions {
  // Where to listen; either may be empty (with both empty, connections come
  // only through ServeSocket). tcp_listen is "HOST:PORT" with a loopback
  // HOST ("127.0.0.1:10809", "[::1]:10809"); port 0 picks a free port.
  std::string unix_path;
  std::string tcp_listen;
  std::string export_name = "ramster";
  // Threads executing requests against the device.
  int workers = 4;
  // The largest READ or WRITE payload (advertised as the maximum block
  // size; a longer request is answered EINVAL). At most 1 GiB.
  size_t max_request_bytes = 32 << 20;
  // Preallocated request buffers, shared by all connections; at least
  // max_request_bytes (it is raised to that).
  size_t buffer_pool_bytes = 64 << 20;
  // Requests parsed and waiting for a worker, all connections together.
  int queue_depth = 128;
  // The most payload bytes one batch of READs or WRITEs may hold (a single
  // larger request runs alone). At most 64 MiB; below 8192 there is no
  // batching.
  size_t max_batch_bytes = 128 << 10;
  // A connection runs one batch at a time (its next whole-page requests
  // wait and go together, see nbd_server.cc JobQueue), unless the running
  // one has taken this long: then the next goes to another worker.
  absl::Duration batch_overtake_after = absl::Milliseconds(1);
  // Run a connection's lone request on its reader (see above).
  bool inline_lone_requests = true;
  // Run bursts of whole-page writes on the reader when the device's writes
  // are quick (see above).
  bool inline_quick_writes = true;
  // Run bursts of whole-page reads on the reader (see above).
  bool inline_read_bursts = true;
  // A connection's reader polls an empty socket this long before it sleeps
  // on it (common/busy_poll.h); zero: it sleeps at once.
  absl::Duration request_poll = absl::ZeroDuration();
  // How long a burst of reads may wait for the rest of it (see above);
  // zero: never.
  absl::Duration read_gather = absl::ZeroDuration();
  // Connections beyond this are closed as soon as they are accepted.
  int max_connections = 32;
  // A client must finish the handshake within this time.
  absl::Duration handshake_timeout = absl::Seconds(30);
  // A reply that cannot be sent within this time (a client that stopped
  // reading) drops the connection, so that it cannot hold workers forever.
  absl::Duration send_timeout = absl::Seconds(60);
  // Log dropped connections and device errors to stderr.
  bool log_errors = true;
};

struct NbdServerStats {
  // Requests received, by command (including those answered with an error).
  uint64_t reads = 0, writes = 0, flushes = 0, trims = 0, write_zeroes = 0;
  uint64_t disconnects = 0;       // NBD_CMD_DISC
  uint64_t unknown_commands = 0;
  // Payload bytes of READs and WRITEs that succeeded.
  uint64_t bytes_read = 0, bytes_written = 0;
  // READs and WRITEs that ran as part of a batch of several, and the
  // batches (requests / batches is the average batch).
  uint64_t batched_requests = 0, batches = 0;
  uint64_t inline_requests = 0;  // run by their connection's reader
  uint64_t gathered_bursts = 0;  // read bursts that waited for more (read_gather)
  uint64_t queued = 0;            // requests waiting for a worker now
  uint64_t errors = 0;            // requests answered with an error
  uint64_t device_errors = 0;     // ... of which the device returned
  uint64_t protocol_errors = 0;   // connections dropped for malformed input
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;  // over max_connections
  uint64_t connections_active = 0;
  // Memory: the preallocated buffer arena (fixed after Start) and how much
  // of it requests hold now; how often a request waited for space.
  // Besides the arena the server holds, per connection, one thread, a
  // 16 KiB receive buffer and (during the handshake only) up to 64 KiB of
  // option data.
  size_t buffer_pool_bytes = 0;
  size_t buffer_bytes_in_use = 0;
  uint64_t buffer_waits = 0;
  uint64_t buffer_waiting = 0;  // requests waiting for buffer space now
  // Time from a READ's arrival (its header parsed) to its reply's send,
  // successful or not (those refused as malformed aside): what the server
  // adds to the client's wait.
  LatencyHistogram::Summary read_latency;
};

// The NBD error for a device status: kInvalidArgument and kOutOfRange ->
// EINVAL, kResourceExhausted -> ENOSPC, anything else -> EIO; OK -> 0.
// The only place where statuses become NBD errors.
uint32_t NbdErrno(const absl::Status& status);

class NbdServer {
 public:
  // The fewest reads a connection's last burst must have held for the next
  // to wait for its rest (read gathering, above).
  static constexpr size_t kGatherMinBurst = 8;

  // `device` must outlive the server.
  NbdServer(BlockDevice* device, NbdServerOptions options);
  // Stops the server if it is running.
  ~NbdServer();
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  // Validates the options, preallocates the buffers, starts the workers,
  // binds and listens. On OK the sockets accept connections.
  // kInvalidArgument for bad options or addresses, kFailedPrecondition when
  // called twice or when another server is listening on unix_path,
  // kUnavailable when a socket cannot be bound.
  absl::Status Start();

  // Serves an already connected stream socket as if it had been accepted
  // (socket activation, socketpair tests, the fuzzer). Takes ownership of
  // `fd`. kFailedPrecondition if the server is not running; the connection
  // limit applies (the socket is closed and counted as rejected).
  absl::Status ServeSocket(int fd);

  // The bound TCP port (0 when not listening on TCP). REQUIRES: Start() OK.
  int tcp_port() const { return tcp_port_; }

  // Stops accepting, lets every connection finish the requests it has in
  // flight (their replies are sent), closes the connections, joins every
  // thread and removes the unix socket. Idempotent.
  void Stop();

  NbdServerStats stats() const;

 private:
  class Connection;
  class JobQueue;
  struct Job;

  absl::Status ValidateOptions() const;
  absl::Status ListenUnix();
  absl::Status ListenTcp();
  void AcceptLoop();
  // Joins and frees connections whose reader has finished.
  void Reap();
  void Wake();

  // Reader thread: handshake, then requests, then cleanup.
  void Serve(Connection* c);
  // True when the client entered transmission (export chosen).
  bool Handshake(Connection* c);
  bool HandleInfo(Connection* c, uint32_t option, absl::Span<const uint8_t> data, bool* go);
  void Transmission(Connection* c);
  void WorkerLoop();
  // A job alone (Execute) or several as one batch (ExecuteBatch).
  void Run(absl::Span<Job> jobs);
  void Execute(Job* job);
  // REQUIRES: jobs of one connection, all READs or all WRITEs, whole
  // pages, not overlapping (JobQueue::PopBatch).
  void ExecuteBatch(absl::Span<Job> jobs);
  // True when `jobs` (a burst, in order) may run on the reader as one
  // batch: all whole-page requests of `type` without FUA, no page touched
  // twice, at most `max_bytes` together.
  static bool InlineBurst(const std::vector<Job>& jobs, uint32_t type, size_t max_bytes);
  // Counts a finished request (stats, the error log); its NBD error.
  uint32_t Account(const nbd::Request& r, const absl::Status& s);
  // Replies to `jobs` (of one connection; errors[i] for jobs[i]) in as few
  // sends as possible, then releases their buffers and finishes them.
  void ReplyAndRelease(absl::Span<Job> jobs, const uint32_t* errors);

  uint16_t TransmissionFlags() const;
  bool ExportNameOk(absl::string_view name) const {
    return name.empty() || name == options_.export_name;
  }
  void ProtocolError(Connection* c, absl::string_view what);

  // Constant after construction.
  BlockDevice* const device_;
  const NbdServerOptions options_;

  // Set up by Start(), constant until Stop().
  std::unique_ptr<NbdBufferPool> pool_;
  std::unique_ptr<JobQueue> queue_;
  std::vector<std::thread> workers_;
  std::thread acceptor_;
  int unix_fd_ = -1, tcp_fd_ = -1;
  int wake_read_ = -1, wake_write_ = -1;  // a pipe that wakes the acceptor
  int tcp_port_ = 0;
  bool started_ = false;
  bool unix_bound_ = false;  // we created unix_path (and remove it in Stop)

  Mutex conns_mu_;
  std::list<std::unique_ptr<Connection>> conns_ ABSL_GUARDED_BY(conns_mu_);
  bool stopping_ ABSL_GUARDED_BY(conns_mu_) = false;
  uint64_t next_conn_id_ ABSL_GUARDED_BY(conns_mu_) = 1;

  // Counters for stats().
  std::atomic<uint64_t> reads_{0}, writes_{0}, flushes_{0}, trims_{0}, write_zeroes_{0},
      disconnects_{0}, unknown_commands_{0}, bytes_read_{0}, bytes_written_{0}, errors_{0},
      device_errors_{0}, protocol_errors_{0}, accepted_{0}, rejected_{0}, active_{0},
      batched_requests_{0}, batches_{0}, inline_requests_{0},
      gathered_bursts_{0};
  LatencyHistogram read_latency_;
};

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_NBD_SERVER_H_
