#include "kernel-shim/nbd_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/busy_poll.h"
#include "common/socket_io.h"
#include "common/thread_name.h"

namespace ramster {

using nbd::Request;

namespace {

// Option data longer than this is a denial of service, not a request.
constexpr uint32_t kMaxOptionBytes = 64 << 10;
// Options one connection may send before it must choose the export.
constexpr int kMaxOptions = 1024;
constexpr uint32_t kMinimumBlock = 1;
constexpr uint32_t kPreferredBlock = 4096;
constexpr size_t kMaxRequestLimit = size_t{1} << 30;
constexpr size_t kMaxBatchLimit = size_t{64} << 20;
// Requests a reader parses before it queues them (it queues sooner when it
// would otherwise block).
constexpr size_t kMaxReady = 64;

enum class Io { kOk, kEof, kError };

// Reads exactly `n` bytes. kEof when the peer closed before the first byte
// or part way (both end the connection).
Io ReadExact(int fd, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0) {
      return Io::kEof;
    } else if (errno != EINTR) {
      return Io::kError;
    }
  }
  return Io::kOk;
}

// Reads and drops `n` bytes (the payload of a rejected WRITE).
Io Discard(int fd, uint64_t n) {
  uint8_t sink[16 << 10];
  while (n > 0) {
    size_t chunk = n < sizeof(sink) ? static_cast<size_t>(n) : sizeof(sink);
    if (Io r = ReadExact(fd, sink, chunk); r != Io::kOk) return r;
    n -= chunk;
  }
  return Io::kOk;
}

// The transmission phase's reads, buffered: one recv takes whatever has
// arrived (a burst of pipelined requests, or a header with its payload), so
// that a burst costs one system call and reaches the workers at once. A
// large payload goes from the socket straight into its own buffer. With a
// `poll` budget, an empty buffer is refilled by polling the socket for that
// long before sleeping on it (common/busy_poll.h): at queue depth 1 the next
// request comes within microseconds of the last reply.
class StreamReader {
 public:
  static constexpr size_t kBufferBytes = 16 << 10;

  StreamReader(int fd, absl::Duration poll)
      : fd_(fd), poll_(poll), buf_(new uint8_t[kBufferBytes]) {}

  // Bytes that have arrived and are not consumed: reading up to this many
  // does not block.
  size_t buffered() const { return end_ - pos_; }

  Io Read(void* out, size_t n) {
    if (n == 0) return Io::kOk;  // (a zero-length WRITE has no buffer at all)
    auto* p = static_cast<uint8_t*>(out);
    const size_t from_buffer = std::min(n, buffered());
    std::memcpy(p, buf_.get() + pos_, from_buffer);
    pos_ += from_buffer;
    if (from_buffer == n) return Io::kOk;
    p += from_buffer;
    n -= from_buffer;
    if (n >= kBufferBytes / 2) return ReadExact(fd_, p, n);
    // The buffer is empty: refill it with at least `n` bytes, polling first.
    // (An end of stream or error the poll saw, the blocking recv sees again.)
    pos_ = end_ = 0;
    PollFor(n, poll_);
    while (end_ < n) {
      ssize_t r = recv(fd_, buf_.get() + end_, kBufferBytes - end_, 0);
      if (r > 0) {
        end_ += static_cast<size_t>(r);
      } else if (r == 0) {
        return Io::kEof;
      } else if (errno != EINTR) {
        return Io::kError;
      }
    }
    std::memcpy(p, buf_.get(), n);
    pos_ = n;
    return Io::kOk;
  }

  // Polls the socket for up to `budget` until at least `n` bytes (at most
  // kBufferBytes) are buffered; true if they are. Whatever arrives stays
  // buffered either way. False at once when another thread of the process
  // is polling (common/busy_poll.h).
  bool PollFor(size_t n, absl::Duration budget) {
    if (buffered() >= n) return true;
    if (pos_ > 0) {
      std::memmove(buf_.get(), buf_.get() + pos_, buffered());
      end_ -= pos_;
      pos_ = 0;
    }
    BusyPoll::Poll(budget, [&] {
      ssize_t r = recv(fd_, buf_.get() + end_, kBufferBytes - end_, MSG_DONTWAIT);
      if (r > 0) end_ += static_cast<size_t>(r);
      return end_ >= n || r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
    });
    return buffered() >= n;
  }

  // Reads and drops `n` bytes (the payload of a rejected WRITE).
  Io Skip(uint64_t n) {
    const size_t from_buffer = static_cast<size_t>(std::min<uint64_t>(n, buffered()));
    pos_ += from_buffer;
    return Discard(fd_, n - from_buffer);
  }

 private:
  const int fd_;
  const absl::Duration poll_;
  const std::unique_ptr<uint8_t[]> buf_;
  size_t pos_ = 0, end_ = 0;  // buf_[pos_, end_) is unread
};

// Batches are made of whole pages (the device's blocks, the stack's slots).
constexpr uint64_t kPage = 4096;

// Pages [first, end) that a request touches.
struct PageRange {
  uint64_t first = 0, end = 0;
  bool Overlaps(const PageRange& o) const { return first < o.end && o.first < end; }
};
PageRange PagesOf(const Request& r) {
  return PageRange{r.offset / kPage, (r.offset + r.length + kPage - 1) / kPage};
}

// A READ or WRITE of whole pages: what may run in a batch with others.
bool Batchable(const Request& r) {
  return (r.type == nbd::kCmdRead || r.type == nbd::kCmdWrite) && r.length > 0 &&
         r.offset % kPage == 0 && r.length % kPage == 0;
}

bool SetTimeout(int fd, int option, absl::Duration d) {
  timeval tv = absl::ToTimeval(d);
  return setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv)) == 0;
}

std::string ErrnoText(absl::string_view what) {
  return absl::StrCat(what, ": ", strerror(errno));
}

}  // namespace

uint32_t NbdErrno(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return nbd::kEinval;
    case absl::StatusCode::kResourceExhausted:
      return nbd::kEnospc;
    default:
      return nbd::kEio;
  }
}

// ---- internals ---------------------------------------------------------------

// One client. The reader thread owns the socket's read side; replies are
// written by whichever thread finished the request, under write_mu_.
class NbdServer::Connection {
 public:
  Connection(int fd, uint64_t id) : id(id), fd_(fd) {}

  const uint64_t id;
  std::thread thread;
  std::atomic<bool> finished{false};

  // The socket; -1 once closed. The reader thread reads it and closes it
  // once no request is in flight; workers write replies to it while their
  // request is in flight (so before the close); Stop only shuts it down,
  // under mu_ (so never after the close). Lock order: write_mu_, then mu_.
  int fd() const { return fd_; }

  // Sends one message (all of `iov`) unless the connection is broken. A
  // failed send breaks it and shuts the socket down, which ends the reader.
  bool Send(iovec* iov, int count) {
    MutexLock lock(&write_mu_);
    if (broken_) return false;
    if (SendAll(fd_, iov, count)) return true;
    broken_ = true;
    Shutdown(SHUT_RDWR);
    return false;
  }

  bool SendReply(uint64_t handle, uint32_t error, absl::Span<const uint8_t> data = {}) {
    auto header = nbd::EncodeSimpleReply(handle, error);
    iovec iov[2] = {{header.data(), header.size()},
                    {const_cast<uint8_t*>(data.data()), data.size()}};
    return Send(iov, data.empty() ? 1 : 2);
  }

  bool SendOptionReply(uint32_t option, uint32_t type, absl::Span<const uint8_t> data = {}) {
    auto header = nbd::EncodeOptionReplyHeader(option, type, static_cast<uint32_t>(data.size()));
    iovec iov[2] = {{header.data(), header.size()},
                    {const_cast<uint8_t*>(data.data()), data.size()}};
    return Send(iov, data.empty() ? 1 : 2);
  }

  bool SendOptionError(uint32_t option, uint32_t type, absl::string_view message) {
    return SendOptionReply(
        option, type,
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(message.data()), message.size()));
  }

  void Shutdown(int how) {
    MutexLock lock(&mu_);
    if (fd_ >= 0) shutdown(fd_, how);
  }

  // Returns the requests now in flight, this one included.
  int Started() {
    MutexLock lock(&mu_);
    return ++inflight_;
  }
  void Done() {
    MutexLock lock(&mu_);
    if (--inflight_ == 0) idle_.SignalAll();
  }
  // Waits for the requests in flight, then closes the socket.
  void DrainAndClose() {
    MutexLock lock(&mu_);
    while (inflight_ > 0) idle_.Wait();
    close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  Mutex write_mu_;
  bool broken_ ABSL_GUARDED_BY(write_mu_) = false;
  Mutex mu_;
  CondVar idle_{&mu_};
  int inflight_ ABSL_GUARDED_BY(mu_) = 0;
};

struct NbdServer::Job {
  Connection* conn = nullptr;
  Request request;
  NbdBufferPool::Buffer buffer;
  int64_t arrived_ns = 0;  // absl::GetCurrentTimeNanos when parsed
};

// A fixed ring of jobs between the readers and the workers: PushAll blocks
// while it is full, PopBatch while nothing in it may run; after Close,
// PopBatch drains what is left and then returns false.
//
// A connection runs one batch of Batchable jobs at a time: while one runs,
// its other Batchable jobs wait, and go together in its next batch. At
// queue depth 32 that makes one batch of ~20 pages (one request per peer)
// rather than several small ones taken by several workers as each woke,
// which cost more calls, more wakeups and fewer reads per second. A batch
// still running after overtake_after (a slow or hung peer, the disk tier)
// no longer holds the others back: the next batch goes to another worker.
// Other jobs (flush, trim, long or partial requests) run at once on any
// free worker, and every connection has its own batches.
class NbdServer::JobQueue {
 public:
  JobQueue(size_t capacity, absl::Duration overtake_after)
      : overtake_after_(overtake_after), ring_(capacity) {
    MutexLock lock(&mu_);
    passed_.reserve(capacity);
    waiting_.reserve(capacity);
    busy_.reserve(64);
  }

  // Queues the jobs in order (waiting for room as needed) and clears
  // `jobs`. One wakeup for the lot: the worker that wakes takes as many as
  // fit in its batch and wakes another for the rest (or, when none may run
  // yet, waits for the first that may).
  void PushAll(std::vector<Job>* jobs) {
    MutexLock lock(&mu_);
    bool runnable = false;
    const absl::Time now = absl::Now();
    for (Job& job : *jobs) {
      while (count_ == ring_.size()) {
        not_empty_.Signal();
        not_full_.Wait();
      }
      runnable |= Runnable(job, now);
      ring_[(head_ + count_) % ring_.size()] = std::move(job);
      ++count_;
    }
    jobs->clear();
    // Jobs that must wait need a worker watching the clock (PopBatch).
    if (runnable || !timed_waiter_) not_empty_.Signal();
  }

  // Takes the oldest job that may run now, and with it (if it is Batchable)
  // every waiting job that may join its batch: same connection and
  // command, Batchable, no page in common with the batch nor with an older
  // job of that connection that stays behind, at most `max_bytes` of
  // payload in all. Jobs left behind keep their order. False once closed
  // and drained. The caller reports the batch's end (Finished).
  bool PopBatch(size_t max_bytes, std::vector<Job>* batch) {
    batch->clear();
    MutexLock lock(&mu_);
    size_t at = FirstRunnable();
    while (at == count_ && !(closed_ && count_ == 0)) {
      // Jobs that wait for their connection's batch may go once it has
      // run for overtake_after: one waiting worker looks again by then.
      if (count_ > 0 && !timed_waiter_) {
        timed_waiter_ = true;
        not_empty_.WaitFor(NextOvertake() - absl::Now());
        timed_waiter_ = false;
      } else {
        not_empty_.Wait();
      }
      at = FirstRunnable();
    }
    if (count_ == 0) return false;
    // Jobs before `at` wait for their connections' batches (or, sharing a
    // page with such a job, behind it); none is of the connection of the
    // job at `at` when that one is Batchable (it would be runnable too).
    Job& taken = ring_[(head_ + at) % ring_.size()];
    batch->push_back(std::move(taken));
    const Request first = batch->front().request;
    const Connection* conn = batch->front().conn;
    size_t bytes = first.length;
    const bool gather = Batchable(first) && bytes + kPage <= max_bytes;
    passed_.clear();
    size_t kept = at;  // jobs staying, moved down to close the gaps
    for (size_t i = at + 1; i < count_; ++i) {
      Job& job = ring_[(head_ + i) % ring_.size()];
      const Request& r = job.request;
      bool take = false;
      if (gather && job.conn == conn) {
        const PageRange pages = PagesOf(r);
        take = r.type == first.type && Batchable(r) && bytes + r.length <= max_bytes;
        for (size_t k = 0; take && k < passed_.size(); ++k) take = !pages.Overlaps(passed_[k]);
        for (size_t k = 0; take && k < batch->size(); ++k) {
          take = !pages.Overlaps(PagesOf((*batch)[k].request));
        }
        if (!take) passed_.push_back(pages);  // at most capacity: no allocation
      }
      if (take) {
        bytes += r.length;
        batch->push_back(std::move(job));
      } else {
        ring_[(head_ + kept) % ring_.size()] = std::move(job);
        ++kept;
      }
    }
    count_ = kept;
    if (Batchable(first)) {
      Running& running = busy_[conn];
      ++running.batches;
      running.newest = absl::Now();
    }
    if (batch->size() > 1) {
      not_full_.SignalAll();
    } else {
      not_full_.Signal();
    }
    // The rest for another worker, or a worker to watch the clock for them.
    if (count_ > 0 && (FirstRunnable() < count_ || !timed_waiter_)) not_empty_.Signal();
    return true;
  }

  // The batch PopBatch gave, whose first job was `first` of `conn`, has
  // run: the connection's next Batchable jobs may go. REQUIRES: the caller
  // calls PopBatch next. (The connection may be gone by now, and its
  // address reused: at worst a new connection's batch then has company, as
  // without the rule.)
  void Finished(const Connection* conn, const Request& first) {
    if (!Batchable(first)) return;
    MutexLock lock(&mu_);
    auto it = busy_.find(conn);
    if (it != busy_.end() && --it->second.batches == 0) busy_.erase(it);
    // No wakeup: the caller's next PopBatch takes what may go now (and
    // wakes another worker if more may).
  }

  size_t size() {
    MutexLock lock(&mu_);
    return count_;
  }

  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    not_empty_.SignalAll();
  }

 private:
  const absl::Duration overtake_after_;
  Mutex mu_;
  CondVar not_full_{&mu_}, not_empty_{&mu_};
  std::vector<Job> ring_ ABSL_GUARDED_BY(mu_);
  size_t head_ ABSL_GUARDED_BY(mu_) = 0;
  size_t count_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // PopBatch's scratch: the pages of the jobs it passed over.
  std::vector<PageRange> passed_ ABSL_GUARDED_BY(mu_);
  // The batches of Batchable jobs a connection has running.
  struct Running {
    int batches = 0;
    absl::Time newest;  // when the newest of them started
  };
  absl::flat_hash_map<const Connection*, Running> busy_ ABSL_GUARDED_BY(mu_);
  // A worker waits with a timeout for the next overtake (the others sleep).
  bool timed_waiter_ ABSL_GUARDED_BY(mu_) = false;
  // FirstRunnable's scratch: the jobs it found waiting.
  std::vector<std::pair<const Connection*, PageRange>> waiting_ ABSL_GUARDED_BY(mu_);

  bool Runnable(const Job& job, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!Batchable(job.request)) return true;
    auto it = busy_.find(job.conn);
    return it == busy_.end() || now - it->second.newest >= overtake_after_;
  }
  // When the first running batch reaches overtake_after.
  absl::Time NextOvertake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Time t = absl::InfiniteFuture();
    for (const auto& [conn, running] : busy_) t = std::min(t, running.newest + overtake_after_);
    return t;
  }
  // The position of the oldest job that may run now; count_ if none. A
  // job that shares a page with an older waiting job of its connection
  // waits as well: requests on one page run in the order they came.
  size_t FirstRunnable() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (count_ == 0) return 0;
    const absl::Time now = absl::Now();
    waiting_.clear();
    for (size_t i = 0; i < count_; ++i) {
      const Job& job = ring_[(head_ + i) % ring_.size()];
      const PageRange pages = PagesOf(job.request);
      bool runnable = Runnable(job, now);
      for (size_t k = 0; runnable && k < waiting_.size(); ++k) {
        runnable = !(waiting_[k].first == job.conn && waiting_[k].second.Overlaps(pages));
      }
      if (runnable) return i;
      waiting_.emplace_back(job.conn, pages);  // at most capacity: no allocation
    }
    return count_;
  }
};

// ---- lifecycle ---------------------------------------------------------------

NbdServer::NbdServer(BlockDevice* device, NbdServerOptions options)
    : device_(device), options_(std::move(options)) {}

NbdServer::~NbdServer() { Stop(); }

absl::Status NbdServer::ValidateOptions() const {
  if (device_ == nullptr) return absl::InvalidArgumentError("nbd: no device");
  if (options_.workers < 1 || options_.workers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("nbd: workers=", options_.workers));
  }
  if (options_.max_request_bytes < kPreferredBlock ||
      options_.max_request_bytes > kMaxRequestLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "nbd: max_request_bytes=", options_.max_request_bytes, " (4 KiB to 1 GiB)"));
  }
  if (options_.queue_depth < 1) return absl::InvalidArgumentError("nbd: queue_depth < 1");
  if (options_.max_batch_bytes > kMaxBatchLimit) {
    return absl::InvalidArgumentError(
        absl::StrCat("nbd: max_batch_bytes=", options_.max_batch_bytes, " (at most 64 MiB)"));
  }
  if (options_.batch_overtake_after < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("nbd: batch_overtake_after < 0");
  }
  if (options_.max_connections < 1) return absl::InvalidArgumentError("nbd: max_connections < 1");
  if (options_.export_name.size() > nbd::kMaxStringBytes) {
    return absl::InvalidArgumentError("nbd: export name longer than 4096 bytes");
  }
  return absl::OkStatus();
}

absl::Status NbdServer::Start() {
  if (started_) return absl::FailedPreconditionError("nbd: Start called twice");
  if (absl::Status s = ValidateOptions(); !s.ok()) return s;
  started_ = true;  // from here on Stop() undoes whatever was set up

  pool_ = std::make_unique<NbdBufferPool>(
      std::max(options_.buffer_pool_bytes, options_.max_request_bytes));
  queue_ = std::make_unique<JobQueue>(static_cast<size_t>(options_.queue_depth),
                                      options_.batch_overtake_after);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    Stop();
    return absl::UnavailableError(ErrnoText("nbd: pipe"));
  }
  wake_read_ = pipe_fds[0];
  wake_write_ = pipe_fds[1];
  if (!options_.unix_path.empty()) {
    if (absl::Status s = ListenUnix(); !s.ok()) {
      Stop();
      return s;
    }
  }
  if (!options_.tcp_listen.empty()) {
    if (absl::Status s = ListenTcp(); !s.ok()) {
      Stop();
      return s;
    }
  }
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

absl::Status NbdServer::ListenUnix() {
  const std::string& path = options_.unix_path;
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("nbd: unix socket path too long: ", path));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(ErrnoText("nbd: socket"));
  // A socket file left by a server that died may be replaced; one that a
  // live server answers on may not.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      close(fd);
      return absl::FailedPreconditionError(
          absl::StrCat("nbd: a server is already listening on ", path));
    }
    close(fd);
    unlink(path.c_str());
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::UnavailableError(ErrnoText("nbd: socket"));
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::string err = ErrnoText(absl::StrCat("nbd: bind ", path));
    close(fd);
    return absl::UnavailableError(err);
  }
  unix_bound_ = true;
  if (listen(fd, 64) != 0) {
    std::string err = ErrnoText("nbd: listen");
    close(fd);
    return absl::UnavailableError(err);
  }
  unix_fd_ = fd;
  return absl::OkStatus();
}

absl::Status NbdServer::ListenTcp() {
  const std::string& spec = options_.tcp_listen;
  size_t colon = spec.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("nbd: tcp address is not HOST:PORT: ", spec));
  }
  std::string host = spec.substr(0, colon);
  std::string port = spec.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port_number;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 0 || port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("nbd: bad tcp port in ", spec));
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("nbd: tcp host must be a numeric address: ", spec, ": ", gai_strerror(rc)));
  }
  // NBD has no authentication: anyone who can connect can read and write
  // the device. Only loopback.
  bool loopback = false;
  if (res->ai_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(res->ai_addr);
    loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  } else if (res->ai_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(res->ai_addr);
    loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
  }
  if (!loopback) {
    freeaddrinfo(res);
    return absl::InvalidArgumentError(
        absl::StrCat("nbd: refusing to listen on a non-loopback address: ", spec));
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    return absl::UnavailableError(ErrnoText("nbd: socket"));
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc = bind(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0 || listen(fd, 64) != 0) {
    std::string err = ErrnoText(absl::StrCat("nbd: bind/listen ", spec));
    close(fd);
    return absl::UnavailableError(err);
  }
  sockaddr_storage bound = {};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  tcp_port_ = ntohs(bound.ss_family == AF_INET
                        ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                        : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  tcp_fd_ = fd;
  return absl::OkStatus();
}

void NbdServer::Wake() {
  if (wake_write_ < 0) return;
  char c = 1;
  // Non-blocking: a full pipe already means "wake up".
  [[maybe_unused]] ssize_t n = write(wake_write_, &c, 1);
}

void NbdServer::Stop() {
  if (!started_) return;
  {
    MutexLock lock(&conns_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  Wake();
  if (acceptor_.joinable()) acceptor_.join();
  for (int* fd : {&unix_fd_, &tcp_fd_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  if (unix_bound_) unlink(options_.unix_path.c_str());
  unix_bound_ = false;
  // No new connections can appear now (stopping_). Ending the read side
  // makes each reader stop taking requests; the requests in flight finish
  // and their replies are sent before the reader closes the socket.
  std::list<std::unique_ptr<Connection>> conns;
  {
    MutexLock lock(&conns_mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) c->Shutdown(SHUT_RD);
  for (auto& c : conns) c->thread.join();
  conns.clear();
  if (queue_) queue_->Close();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  for (int* fd : {&wake_read_, &wake_write_}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

NbdServerStats NbdServer::stats() const {
  NbdServerStats s;
  s.reads = reads_;
  s.writes = writes_;
  s.flushes = flushes_;
  s.trims = trims_;
  s.write_zeroes = write_zeroes_;
  s.disconnects = disconnects_;
  s.unknown_commands = unknown_commands_;
  s.bytes_read = bytes_read_;
  s.bytes_written = bytes_written_;
  s.batched_requests = batched_requests_;
  s.batches = batches_;
  s.inline_requests = inline_requests_;
  s.gathered_bursts = gathered_bursts_;
  s.errors = errors_;
  s.device_errors = device_errors_;
  s.protocol_errors = protocol_errors_;
  s.connections_accepted = accepted_;
  s.connections_rejected = rejected_;
  s.connections_active = active_;
  s.read_latency = read_latency_.Summarize();
  if (queue_) s.queued = queue_->size();
  if (pool_) {
    s.buffer_pool_bytes = pool_->capacity();
    s.buffer_bytes_in_use = pool_->bytes_in_use();
    s.buffer_waits = pool_->waits();
    s.buffer_waiting = pool_->waiting();
  }
  return s;
}

// ---- connections -------------------------------------------------------------

void NbdServer::AcceptLoop() {
  NameThisThread("nbd-accept");
  for (;;) {
    pollfd fds[3];
    int n = 0;
    fds[n++] = {wake_read_, POLLIN, 0};
    if (unix_fd_ >= 0) fds[n++] = {unix_fd_, POLLIN, 0};
    if (tcp_fd_ >= 0) fds[n++] = {tcp_fd_, POLLIN, 0};
    if (poll(fds, static_cast<nfds_t>(n), -1) < 0) {
      if (errno == EINTR) continue;
      if (options_.log_errors) fprintf(stderr, "nbd: poll: %s\n", strerror(errno));
      return;
    }
    if (fds[0].revents != 0) {
      char buf[64];
      while (read(wake_read_, buf, sizeof(buf)) > 0) {
      }
      {
        MutexLock lock(&conns_mu_);
        if (stopping_) return;
      }
      Reap();
    }
    for (int i = 1; i < n; ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      int fd = accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED && options_.log_errors) {
          fprintf(stderr, "nbd: accept: %s\n", strerror(errno));
          // Out of descriptors: do not spin on a listening socket that
          // stays readable.
          if (errno == EMFILE || errno == ENFILE) usleep(100 * 1000);
        }
        continue;
      }
      if (fds[i].fd == tcp_fd_) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      }
      ServeSocket(fd).IgnoreError();  // counted in stats when refused
    }
  }
}

absl::Status NbdServer::ServeSocket(int fd) {
  MutexLock lock(&conns_mu_);
  if (!started_ || stopping_) {
    close(fd);
    return absl::FailedPreconditionError("nbd: server not running");
  }
  if (active_ >= static_cast<uint64_t>(options_.max_connections)) {
    ++rejected_;  // counted before the client can see the close
    close(fd);
    if (options_.log_errors) {
      fprintf(stderr, "nbd: refusing a connection: %d already open\n", options_.max_connections);
    }
    return absl::ResourceExhaustedError("nbd: too many connections");
  }
  SetTimeout(fd, SO_SNDTIMEO, options_.send_timeout);
  SetTimeout(fd, SO_RCVTIMEO, options_.handshake_timeout);
  ++accepted_;
  ++active_;
  auto conn = std::make_unique<Connection>(fd, next_conn_id_++);
  Connection* c = conn.get();
  conns_.push_back(std::move(conn));
  c->thread = std::thread([this, c] { Serve(c); });
  return absl::OkStatus();
}

void NbdServer::Reap() {
  std::list<std::unique_ptr<Connection>> done;
  {
    MutexLock lock(&conns_mu_);
    for (auto it = conns_.begin(); it != conns_.end();) {
      if ((*it)->finished) {
        done.push_back(std::move(*it));
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : done) c->thread.join();
}

void NbdServer::ProtocolError(Connection* c, absl::string_view what) {
  ++protocol_errors_;
  if (options_.log_errors) {
    fprintf(stderr, "nbd: connection %llu: %.*s; disconnecting\n",
            static_cast<unsigned long long>(c->id), static_cast<int>(what.size()), what.data());
  }
}

void NbdServer::Serve(Connection* c) {
  NameThisThread("nbd-conn");
  if (Handshake(c)) {
    SetTimeout(c->fd(), SO_RCVTIMEO, absl::ZeroDuration());  // idle is fine now
    Transmission(c);
  }
  c->DrainAndClose();
  --active_;
  c->finished = true;
  Wake();  // the acceptor reaps this thread
}

uint16_t NbdServer::TransmissionFlags() const {
  uint16_t flags = nbd::kFlagHasFlags | nbd::kFlagSendFlush | nbd::kFlagSendFua |
                   nbd::kFlagSendTrim | nbd::kFlagSendWriteZeroes;
  if (device_->can_multi_conn()) flags |= nbd::kFlagCanMultiConn;
  return flags;
}

// ---- handshake -----------------------------------------------------------------

bool NbdServer::Handshake(Connection* c) {
  const int fd = c->fd();
  auto greeting = nbd::EncodeGreeting(nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  iovec iov = {greeting.data(), greeting.size()};
  if (!c->Send(&iov, 1)) return false;

  uint8_t flag_bytes[4];
  if (ReadExact(fd, flag_bytes, sizeof(flag_bytes)) != Io::kOk) return false;
  uint32_t client_flags;
  nbd::WireReader(flag_bytes).U32(&client_flags);
  if ((client_flags & ~nbd::kKnownClientFlags) != 0) {
    ProtocolError(c, absl::StrCat("unknown client flags 0x", absl::Hex(client_flags)));
    return false;
  }
  const bool no_zeroes = (client_flags & nbd::kClientFlagNoZeroes) != 0;

  std::vector<uint8_t> data;
  for (int count = 0; count < kMaxOptions; ++count) {
    uint8_t header_bytes[nbd::kOptionHeaderBytes];
    if (ReadExact(fd, header_bytes, sizeof(header_bytes)) != Io::kOk) return false;
    absl::StatusOr<nbd::OptionHeader> header = nbd::DecodeOptionHeader(header_bytes);
    if (!header.ok()) {
      ProtocolError(c, header.status().message());
      return false;
    }
    const uint32_t option = header->option;
    if (header->length > kMaxOptionBytes) {
      // Reading it would take as long as the client likes; say why, then
      // drop the connection (the spec allows that for a denial of service).
      c->SendOptionError(option, nbd::kRepErrTooBig, "option data longer than 64 KiB");
      ProtocolError(c, absl::StrCat(nbd::OptionName(option), " with ", header->length,
                                    " bytes of data"));
      return false;
    }
    data.resize(header->length);
    if (ReadExact(fd, data.data(), data.size()) != Io::kOk) return false;

    switch (option) {
      case nbd::kOptExportName: {
        absl::string_view name(reinterpret_cast<const char*>(data.data()), data.size());
        if (!ExportNameOk(name)) {
          // This option has no error reply: the spec says disconnect.
          ProtocolError(c, absl::StrCat("NBD_OPT_EXPORT_NAME for unknown export '",
                                        name.substr(0, 64), "'"));
          return false;
        }
        std::array<uint8_t, nbd::kExportNameReplyBytes + nbd::kExportNameZeroes> reply;
        size_t n = nbd::EncodeExportNameReply(device_->size(), TransmissionFlags(), no_zeroes,
                                              &reply);
        iovec r = {reply.data(), n};
        return c->Send(&r, 1);
      }
      case nbd::kOptAbort:
        c->SendOptionReply(option, nbd::kRepAck);
        return false;
      case nbd::kOptList: {
        if (!data.empty()) {
          if (!c->SendOptionError(option, nbd::kRepErrInvalid, "NBD_OPT_LIST takes no data")) {
            return false;
          }
          break;
        }
        const std::string& name = options_.export_name;
        std::vector<uint8_t> server(4 + name.size());
        nbd::PutU32(server.data(), static_cast<uint32_t>(name.size()));
        std::memcpy(server.data() + 4, name.data(), name.size());
        if (!c->SendOptionReply(option, nbd::kRepServer, server) ||
            !c->SendOptionReply(option, nbd::kRepAck)) {
          return false;
        }
        break;
      }
      case nbd::kOptInfo:
      case nbd::kOptGo: {
        bool go = false;
        if (!HandleInfo(c, option, data, &go)) return false;
        if (go) return true;
        break;
      }
      default:
        // STARTTLS, STRUCTURED_REPLY, meta contexts, extended headers and
        // anything unknown: its data was read, the stream is in sync.
        if (!c->SendOptionError(option, nbd::kRepErrUnsup,
                                absl::StrCat(nbd::OptionName(option), " (", option,
                                             ") is not supported"))) {
          return false;
        }
        break;
    }
  }
  ProtocolError(c, absl::StrCat("more than ", kMaxOptions, " options"));
  return false;
}

bool NbdServer::HandleInfo(Connection* c, uint32_t option, absl::Span<const uint8_t> data,
                           bool* go) {
  absl::StatusOr<nbd::InfoRequest> req = nbd::DecodeInfoRequest(data);
  if (!req.ok()) return c->SendOptionError(option, nbd::kRepErrInvalid, req.status().message());
  if (!ExportNameOk(req->name)) {
    return c->SendOptionError(option, nbd::kRepErrUnknown,
                              absl::StrCat("no export named '", req->name.substr(0, 64), "'"));
  }
  // NBD_INFO_EXPORT always; the block sizes always too (a server may send
  // them unasked, and clients that honour them then avoid tiny writes);
  // the name if asked. Other requests are ignored, as the spec allows.
  auto info_export = nbd::EncodeInfoExport(device_->size(), TransmissionFlags());
  auto block_size = nbd::EncodeInfoBlockSize(kMinimumBlock, kPreferredBlock,
                                             static_cast<uint32_t>(options_.max_request_bytes));
  if (!c->SendOptionReply(option, nbd::kRepInfo, info_export) ||
      !c->SendOptionReply(option, nbd::kRepInfo, block_size)) {
    return false;
  }
  for (uint16_t type : req->requests) {
    if (type != nbd::kInfoName) continue;
    const std::string& name = options_.export_name;
    std::vector<uint8_t> info(2 + name.size());
    nbd::PutU16(info.data(), nbd::kInfoName);
    std::memcpy(info.data() + 2, name.data(), name.size());
    if (!c->SendOptionReply(option, nbd::kRepInfo, info)) return false;
    break;
  }
  if (!c->SendOptionReply(option, nbd::kRepAck)) return false;
  *go = option == nbd::kOptGo;
  return true;
}

// ---- transmission ----------------------------------------------------------------

void NbdServer::Transmission(Connection* c) {
  StreamReader in(c->fd(), options_.request_poll);
  const uint64_t size = device_->size();
  const auto max_payload = static_cast<uint32_t>(options_.max_request_bytes);
  // Requests parsed but not queued yet. They go to the queue together (or,
  // bursts that may, run here), and always before the reader might block (on
  // the socket, on buffer space, on sending an error): a request never
  // waits for a later one.
  std::vector<Job> ready;
  ready.reserve(kMaxReady);
  // In flight on this connection when the last request was started.
  int inflight = 0;
  const bool quick_writes = options_.inline_quick_writes && device_->quick_writes();
  // Read gathering (see the header): how many reads the connection's last
  // burst that ran here held (0 if it was anything else), and until when
  // the burst being parsed may wait for more.
  size_t last_read_burst = 0;
  absl::Time gather_until = absl::InfinitePast();
  const auto may_gather = [&] {
    if (options_.read_gather <= absl::ZeroDuration() || last_read_burst < kGatherMinBurst ||
        ready.empty() || ready.size() >= last_read_burst ||
        inflight != static_cast<int>(ready.size())) {
      return false;
    }
    for (const Job& job : ready) {
      if (job.request.type != nbd::kCmdRead) return false;
    }
    return true;
  };
  const auto queue_ready = [&] {
    if (ready.empty()) return;
    gather_until = absl::InfinitePast();
    last_read_burst = 0;
    // On the reader instead, only when nothing older of this connection is
    // in flight (nothing may overtake a request waiting in the queue): a
    // burst of quick writes, or a burst of reads when nothing more has
    // arrived (it is the connection's next batch anyway).
    const bool alone = inflight == static_cast<int>(ready.size());
    if (alone && ((quick_writes && InlineBurst(ready, nbd::kCmdWrite, SIZE_MAX)) ||
                  (options_.inline_read_bursts && ready.size() > 1 &&
                   in.buffered() < nbd::kRequestBytes &&
                   InlineBurst(ready, nbd::kCmdRead, options_.max_batch_bytes)))) {
      inline_requests_ += ready.size();
      if (ready[0].request.type == nbd::kCmdRead) last_read_burst = ready.size();
      Run(absl::MakeSpan(ready));
      ready.clear();
      return;
    }
    queue_->PushAll(&ready);
  };
  uint8_t header[nbd::kRequestBytes];
  for (;;) {
    if (in.buffered() < sizeof(header) && may_gather()) {
      const absl::Time now = absl::Now();
      if (gather_until == absl::InfinitePast()) {
        gather_until = now + options_.read_gather;
        ++gathered_bursts_;
      }
      if (now < gather_until && in.PollFor(sizeof(header), gather_until - now)) continue;
    }
    if (in.buffered() < sizeof(header) && options_.inline_lone_requests &&
        ready.size() == 1 && inflight == 1) {
      // The only request in flight, and nothing else has arrived: run it
      // here rather than wake a worker for it.
      gather_until = absl::InfinitePast();
      last_read_burst = 0;
      ++inline_requests_;
      Execute(&ready[0]);
      ready.clear();
    }
    if (in.buffered() < sizeof(header) || ready.size() >= kMaxReady) queue_ready();
    if (in.Read(header, sizeof(header)) != Io::kOk) break;  // EOF, shutdown
    absl::StatusOr<Request> req = nbd::DecodeRequest(header);
    if (!req.ok()) {
      ProtocolError(c, req.status().message());
      break;
    }
    if (req->type == nbd::kCmdDisc) {
      ++disconnects_;
      break;  // the requests in flight still finish
    }
    switch (req->type) {
      case nbd::kCmdRead: ++reads_; break;
      case nbd::kCmdWrite: ++writes_; break;
      case nbd::kCmdFlush: ++flushes_; break;
      case nbd::kCmdTrim: ++trims_; break;
      case nbd::kCmdWriteZeroes: ++write_zeroes_; break;
      default: ++unknown_commands_; break;
    }
    if (uint32_t error = nbd::CheckRequest(*req, size, max_payload); error != 0) {
      ++errors_;
      queue_ready();
      if (nbd::HasPayload(*req) && in.Skip(req->length) != Io::kOk) break;
      if (!c->SendReply(req->handle, error)) break;
      continue;
    }
    Job job;
    job.conn = c;
    job.request = *req;
    job.arrived_ns = absl::GetCurrentTimeNanos();
    if ((req->type == nbd::kCmdRead || req->type == nbd::kCmdWrite) &&
        !pool_->TryAcquire(req->length, &job.buffer)) {
      queue_ready();  // they may hold the space this one waits for
      job.buffer = pool_->Acquire(req->length);
    }
    if (req->type == nbd::kCmdWrite) {
      if (in.buffered() < req->length) queue_ready();
      if (in.Read(job.buffer.data(), req->length) != Io::kOk) {
        pool_->Release(&job.buffer);
        break;
      }
    }
    inflight = c->Started();
    ready.push_back(std::move(job));
  }
  queue_ready();
}

bool NbdServer::InlineBurst(const std::vector<Job>& jobs, uint32_t type, size_t max_bytes) {
  if (jobs.empty()) return false;
  size_t bytes = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Request& r = jobs[i].request;
    if (r.type != type || !Batchable(r) || (r.flags & nbd::kCmdFlagFua) != 0) return false;
    bytes += r.length;
    if (bytes > max_bytes) return false;
    const PageRange pages = PagesOf(r);
    for (size_t k = 0; k < i; ++k) {
      if (pages.Overlaps(PagesOf(jobs[k].request))) return false;
    }
  }
  return true;
}

void NbdServer::WorkerLoop() {
  NameThisThread("nbd-worker");
  std::vector<Job> batch;
  while (queue_->PopBatch(options_.max_batch_bytes, &batch)) {
    // Run lets go of the jobs' connection.
    const Connection* conn = batch.front().conn;
    const Request first = batch.front().request;
    Run(absl::MakeSpan(batch));
    queue_->Finished(conn, first);
  }
}

void NbdServer::Run(absl::Span<Job> jobs) {
  if (jobs.size() == 1) {
    Execute(&jobs[0]);
  } else {
    ExecuteBatch(jobs);
  }
}

void NbdServer::Execute(Job* job) {
  const Request& r = job->request;
  absl::Status s;
  switch (r.type) {
    case nbd::kCmdRead: s = device_->Read(r.offset, job->buffer.span()); break;
    case nbd::kCmdWrite: s = device_->Write(r.offset, job->buffer.span()); break;
    case nbd::kCmdFlush: s = device_->Flush(); break;
    case nbd::kCmdTrim: s = device_->Trim(r.offset, r.length); break;
    case nbd::kCmdWriteZeroes: s = device_->WriteZeroes(r.offset, r.length); break;
  }
  if (s.ok() && (r.flags & nbd::kCmdFlagFua) != 0 && r.type != nbd::kCmdRead &&
      r.type != nbd::kCmdFlush) {
    s = device_->Flush();
  }
  const uint32_t error = Account(r, s);
  ReplyAndRelease(absl::MakeSpan(job, 1), &error);
}

void NbdServer::ExecuteBatch(absl::Span<Job> jobs) {
  thread_local std::vector<BlockDevice::Io> ios;
  thread_local std::vector<uint32_t> errors;
  ios.clear();
  for (const Job& job : jobs) ios.push_back({job.request.offset, job.buffer.span(), {}});
  const bool reads = jobs[0].request.type == nbd::kCmdRead;
  if (reads) {
    device_->ReadBatch(absl::MakeSpan(ios));
  } else {
    device_->WriteBatch(absl::MakeSpan(ios));
  }
  batches_++;
  batched_requests_ += jobs.size();
  // FUA: one flush after the whole batch, before any reply.
  absl::Status flushed;
  if (!reads) {
    bool fua = false;
    for (size_t i = 0; i < jobs.size(); ++i) {
      fua |= ios[i].status.ok() && (jobs[i].request.flags & nbd::kCmdFlagFua) != 0;
    }
    if (fua) flushed = device_->Flush();
  }
  errors.resize(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Request& r = jobs[i].request;
    absl::Status s = std::move(ios[i].status);
    if (s.ok() && !reads && (r.flags & nbd::kCmdFlagFua) != 0) s = flushed;
    errors[i] = Account(r, s);
  }
  ReplyAndRelease(jobs, errors.data());
}

uint32_t NbdServer::Account(const Request& r, const absl::Status& s) {
  const uint32_t error = NbdErrno(s);
  if (error != 0) {
    ++errors_;
    uint64_t n = ++device_errors_;
    // Loud, but not a flood when a disk is failing.
    if (options_.log_errors && (n <= 10 || n % 1000 == 0)) {
      fprintf(stderr, "nbd: %.*s offset=%llu length=%u failed (error %u; %llu so far): %s\n",
              static_cast<int>(nbd::CommandName(r.type).size()), nbd::CommandName(r.type).data(),
              static_cast<unsigned long long>(r.offset), r.length, error,
              static_cast<unsigned long long>(n), s.ToString().c_str());
    }
  } else if (r.type == nbd::kCmdRead) {
    bytes_read_ += r.length;
  } else if (r.type == nbd::kCmdWrite) {
    bytes_written_ += r.length;
  }
  return error;
}

void NbdServer::ReplyAndRelease(absl::Span<Job> jobs, const uint32_t* errors) {
  // Replies per send: two iovecs each (header, READ data), below IOV_MAX.
  constexpr size_t kPerSend = 64;
  Connection* const c = jobs[0].conn;
  // Counted before the send: once a client has its reply, the stats have it.
  const int64_t now = absl::GetCurrentTimeNanos();
  for (const Job& job : jobs) {
    if (job.request.type == nbd::kCmdRead) read_latency_.Record(now - job.arrived_ns);
  }
  std::array<uint8_t, nbd::kSimpleReplyBytes> headers[kPerSend];
  iovec iov[2 * kPerSend];
  for (size_t start = 0; start < jobs.size(); start += kPerSend) {
    const size_t n = std::min(kPerSend, jobs.size() - start);
    int count = 0;
    for (size_t i = 0; i < n; ++i) {
      const Job& job = jobs[start + i];
      const uint32_t error = errors[start + i];
      headers[i] = nbd::EncodeSimpleReply(job.request.handle, error);
      iov[count++] = {headers[i].data(), headers[i].size()};
      if (job.request.type == nbd::kCmdRead && error == 0 && job.buffer.size() > 0) {
        iov[count++] = {job.buffer.data(), job.buffer.size()};
      }
    }
    c->Send(iov, count);  // a failure breaks the connection; nothing to undo
  }
  for (Job& job : jobs) {
    pool_->Release(&job.buffer);
    // The last Done may let the reader close the connection: no use of `c`
    // after it.
    job.conn->Done();
    job.conn = nullptr;
  }
}

}  // namespace ramster
