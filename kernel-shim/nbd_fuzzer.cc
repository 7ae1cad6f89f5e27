// Fuzz target for the NBD server's handshake and request parsing; see
// nbd_fuzzer.h for the input layout and the properties it checks. Built by
// Bazel into a deterministic driver (nbd_fuzz_test.cc) and by tests/fuzz.sh
// with libFuzzer, ASan and UBSan.
#include "kernel-shim/nbd_fuzzer.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernel-shim/nbd_protocol.h"
#include "kernel-shim/nbd_test_client.h"
#include "kernel-shim/nbd_test_device.h"

namespace ramster {
namespace {

constexpr uint64_t kDeviceBytes = 256 << 10;
constexpr uint32_t kMaxRequest = 16 << 10;

// One server for the whole run (it is what is being fuzzed: its state
// carries over between inputs, as it would between clients).
struct Harness {
  Harness() {
    // No file tier: a 1 MiB cache holds the whole 256 KiB device, so the
    // device itself never fails and every reply is predictable.
    absl::StatusOr<NbdTestDevice> d = MakeNbdTestDevice(kDeviceBytes, 1 << 20, "");
    if (!d.ok()) std::abort();
    dev = std::move(*d);
    NbdServerOptions o;
    o.workers = 2;
    o.max_request_bytes = kMaxRequest;
    o.buffer_pool_bytes = 2 * kMaxRequest;
    o.queue_depth = 8;
    o.max_connections = 64;
    o.log_errors = false;
    o.handshake_timeout = absl::Seconds(10);
    o.send_timeout = absl::Seconds(10);
    server = std::make_unique<NbdServer>(dev.device.get(), o);
    if (!server->Start().ok()) std::abort();
  }
  NbdTestDevice dev;
  std::unique_ptr<NbdServer> server;
};

Harness& GetHarness() {
  static Harness* h = new Harness();  // never destroyed: threads keep running
  return *h;
}

// Sends `input` as a client would, then closes the sending side; returns
// all the server sent until it closed. Empty (and nothing sent) if the
// server refused the connection.
std::vector<uint8_t> Exchange(absl::Span<const uint8_t> input) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  std::vector<uint8_t> output;
  if (!GetHarness().server->ServeSocket(sv[0]).ok()) {
    close(sv[1]);
    return output;
  }
  std::thread drain([&output, fd = sv[1]] {
    uint8_t buf[16 << 10];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        output.insert(output.end(), buf, buf + n);
      } else if (n == 0 || errno != EINTR) {
        return;
      }
    }
  });
  size_t done = 0;
  while (done < input.size()) {
    ssize_t n = send(sv[1], input.data() + done, input.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the server hung up: the rest is not read
    done += static_cast<size_t>(n);
  }
  shutdown(sv[1], SHUT_WR);
  drain.join();
  close(sv[1]);
  return output;
}

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) __builtin_trap(); \
  } while (0)

// The server's answer to the preamble: greeting, then option replies up to
// and including NBD_OPT_GO's ACK.
void SkipHandshakeAnswer(nbd::WireReader* r) {
  absl::Span<const uint8_t> bytes;
  FUZZ_CHECK(r->Bytes(nbd::kGreetingBytes, &bytes));
  for (;;) {
    FUZZ_CHECK(r->Bytes(nbd::kOptionReplyHeaderBytes, &bytes));
    absl::StatusOr<nbd::OptionReplyHeader> h = nbd::DecodeOptionReplyHeader(bytes);
    FUZZ_CHECK(h.ok() && h->option == nbd::kOptGo);
    FUZZ_CHECK(h->type == nbd::kRepInfo || h->type == nbd::kRepAck);
    FUZZ_CHECK(r->Bytes(h->length, &bytes));
    if (h->type == nbd::kRepAck) return;
  }
}

// Transmission mode: predicts the reply to every complete request in
// `requests` (the server frames the stream exactly so: a header, and a
// WRITE's payload whether or not the WRITE is accepted; a bad magic or
// DISC ends it) and checks `output` against the prediction.
void CheckReplies(absl::Span<const uint8_t> requests, absl::Span<const uint8_t> output) {
  struct Expect {
    uint32_t error;
    uint32_t data;  // bytes following the reply
  };
  std::map<uint64_t, std::vector<Expect>> expected;
  size_t count = 0;
  bool ambiguous = false;  // one handle, different answers: order unknown
  size_t pos = 0;
  while (requests.size() - pos >= nbd::kRequestBytes) {
    absl::StatusOr<nbd::Request> q = nbd::DecodeRequest(requests.subspan(pos, nbd::kRequestBytes));
    if (!q.ok() || q->type == nbd::kCmdDisc) break;
    const size_t need = nbd::kRequestBytes + (nbd::HasPayload(*q) ? q->length : 0);
    if (requests.size() - pos < need) break;  // cut short: no reply due
    const uint32_t error = nbd::CheckRequest(*q, kDeviceBytes, kMaxRequest);
    const uint32_t data = q->type == nbd::kCmdRead && error == 0 ? q->length : 0;
    std::vector<Expect>& v = expected[q->handle];
    if (!v.empty() && (v[0].error != error || v[0].data != data)) ambiguous = true;
    v.push_back({error, data});
    ++count;
    pos += need;
  }
  nbd::WireReader r(output);
  SkipHandshakeAnswer(&r);
  if (ambiguous) return;
  for (size_t i = 0; i < count; ++i) {
    absl::Span<const uint8_t> bytes;
    FUZZ_CHECK(r.Bytes(nbd::kSimpleReplyBytes, &bytes));
    absl::StatusOr<nbd::SimpleReply> reply = nbd::DecodeSimpleReply(bytes);
    FUZZ_CHECK(reply.ok());
    auto it = expected.find(reply->handle);
    FUZZ_CHECK(it != expected.end() && !it->second.empty());
    const Expect e = it->second.back();
    it->second.pop_back();
    FUZZ_CHECK(reply->error == e.error);
    FUZZ_CHECK(r.Bytes(e.data, &bytes));
  }
  FUZZ_CHECK(r.remaining() == 0);  // no reply to anything else
}

void Append(std::vector<uint8_t>* out, absl::Span<const uint8_t> bytes) {
  out->insert(out->end(), bytes.begin(), bytes.end());
}

std::vector<uint8_t> Bytes(absl::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

std::vector<uint8_t> Fill(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

}  // namespace

std::vector<std::vector<uint8_t>> NbdFuzzSeeds() {
  using nbd::kCmdRead;
  using nbd::kCmdWrite;
  std::vector<std::vector<uint8_t>> seeds;
  auto transmission = [&](std::initializer_list<std::vector<uint8_t>> requests) {
    std::vector<uint8_t> s = {1};
    for (const auto& r : requests) Append(&s, r);
    seeds.push_back(std::move(s));
  };
  auto R = NbdRequestBytes;
  // Every command, valid.
  transmission({R(kCmdWrite, 0, 1, 0, 4096, Fill(4096, 1)), R(kCmdRead, 0, 2, 0, 4096, {}),
                R(nbd::kCmdFlush, 0, 3, 0, 0, {}), R(nbd::kCmdTrim, 0, 4, 0, 4096, {}),
                R(nbd::kCmdWriteZeroes, nbd::kCmdFlagNoHole, 5, 100, 5000, {}),
                R(kCmdRead, 0, 6, 0, 8192, {}), R(nbd::kCmdDisc, 0, 7, 0, 0, {})});
  // Unaligned and FUA.
  transmission({R(kCmdWrite, nbd::kCmdFlagFua, 10, 4095, 3, Fill(3, 9)),
                R(kCmdRead, 0, 11, 4090, 10, {}),
                R(kCmdWrite, 0, 12, kDeviceBytes - 5, 5, Fill(5, 3)),
                R(kCmdRead, nbd::kCmdFlagFua, 13, kDeviceBytes - 8, 8, {})});
  // Out of range, oversize (a WRITE whose payload must be skipped), bad flags.
  transmission({R(kCmdRead, 0, 20, kDeviceBytes, 1, {}),
                R(kCmdWrite, 0, 21, kDeviceBytes - 1, 2, Fill(2, 0)),
                R(kCmdWrite, 0, 22, 0, kMaxRequest + 1, Fill(kMaxRequest + 1, 0x25)),
                R(kCmdRead, 0, 23, 0, kMaxRequest + 1, {}),
                R(kCmdWrite, nbd::kCmdFlagNoHole, 24, 0, 16, Fill(16, 0x67)),
                R(kCmdRead, nbd::kCmdFlagDf, 25, 0, 16, {}),
                R(nbd::kCmdFlush, 0, 26, 8, 8, {}),
                R(nbd::kCmdTrim, 0, 27, 1 << 30, 1, {}), R(kCmdRead, 0, 28, 0, 16, {})});
  // Unknown commands; then a bad magic ends the stream.
  std::vector<uint8_t> bad = R(kCmdRead, 0, 33, 0, 16, {});
  bad[0] ^= 0xFF;
  transmission({R(nbd::kCmdCache, 0, 30, 0, 4096, {}), R(nbd::kCmdBlockStatus, 0, 31, 0, 4096, {}),
                R(0x1234, 0, 32, 0, 0, {}), bad, R(kCmdRead, 0, 34, 0, 16, {})});
  // Many in flight.
  {
    std::vector<uint8_t> s = {1};
    for (uint64_t i = 0; i < 24; ++i) {
      Append(&s, R(kCmdWrite, 0, 100 + i, i * 3000, 3000, Fill(3000, static_cast<uint8_t>(i))));
      Append(&s, R(kCmdRead, 0, 200 + i, i * 2048, 4096, {}));
    }
    seeds.push_back(std::move(s));
  }
  // A WRITE cut short by the end of the stream.
  transmission({R(kCmdWrite, 0, 40, 0, 4096, Fill(100, 1))});

  // Whole client streams, handshake included.
  auto raw = [&](std::initializer_list<std::vector<uint8_t>> parts) {
    std::vector<uint8_t> s = {0};
    for (const auto& p : parts) Append(&s, p);
    seeds.push_back(std::move(s));
  };
  auto flags = [](uint32_t f) {
    std::vector<uint8_t> v(4);
    nbd::PutU32(v.data(), f);
    return v;
  };
  auto option = [](uint32_t opt, const std::vector<uint8_t>& data) {
    auto h = nbd::EncodeOptionHeader(opt, static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> v(h.begin(), h.end());
    v.insert(v.end(), data.begin(), data.end());
    return v;
  };
  const uint16_t infos[] = {nbd::kInfoName, nbd::kInfoBlockSize, nbd::kInfoDescription};
  const uint32_t both = nbd::kClientFlagFixedNewstyle | nbd::kClientFlagNoZeroes;
  raw({NbdClientPreamble(), R(kCmdWrite, 0, 1, 10, 10, Fill(10, 4)), R(kCmdRead, 0, 2, 0, 32, {})});
  raw({flags(both), option(nbd::kOptExportName, Bytes("ramster")), R(kCmdRead, 0, 1, 0, 512, {})});
  raw({flags(nbd::kClientFlagFixedNewstyle), option(nbd::kOptExportName, {}),
       R(nbd::kCmdFlush, 0, 1, 0, 0, {})});
  raw({flags(both), option(nbd::kOptList, {}), option(nbd::kOptList, Bytes("x")),
       option(nbd::kOptInfo, nbd::EncodeInfoRequest("ramster", infos)),
       option(nbd::kOptStructuredReply, {}), option(nbd::kOptStartTls, {}),
       option(0xABCD, Fill(40, 0x49)), option(nbd::kOptGo, nbd::EncodeInfoRequest("", {})),
       R(kCmdRead, 0, 1, 0, 64, {})});
  raw({flags(both), option(nbd::kOptGo, nbd::EncodeInfoRequest("other", {})),
       option(nbd::kOptGo, Fill(9, 0)), option(nbd::kOptInfo, {}), option(nbd::kOptAbort, {})});
  raw({flags(both), option(nbd::kOptExportName, Bytes("nope"))});
  raw({flags(0x80000000u)});
  auto too_big = nbd::EncodeOptionHeader(nbd::kOptGo, 1 << 20);  // no data follows
  raw({flags(both), std::vector<uint8_t>(too_big.begin(), too_big.end())});
  return seeds;
}

std::string NbdFuzzCheckServerHealthy() {
  NbdServer* server = GetHarness().server.get();
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (server->stats().connections_active > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  NbdServerStats s = server->stats();
  if (s.connections_active != 0) {
    return absl::StrCat(s.connections_active, " connections still open after their clients left");
  }
  if (s.buffer_bytes_in_use != 0) {
    return absl::StrCat(s.buffer_bytes_in_use, " buffer bytes still held with no requests");
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return "socketpair failed";
  if (absl::Status st = server->ServeSocket(sv[0]); !st.ok()) {
    close(sv[1]);
    return st.ToString();
  }
  NbdTestClient c(sv[1]);
  if (absl::Status st = c.Handshake(); !st.ok()) return st.ToString();
  const std::vector<uint8_t> data = Fill(10000, 42);
  absl::StatusOr<uint32_t> w = c.Write(1234, data);
  if (!w.ok() || *w != 0) return "a valid WRITE failed";
  std::vector<uint8_t> out;
  absl::StatusOr<uint32_t> r = c.Read(1234, 10000, &out);
  if (!r.ok() || *r != 0 || out != data) return "a valid READ did not return what was written";
  return "";
}

NbdServerStats NbdFuzzServerStats() { return GetHarness().server->stats(); }

}  // namespace ramster

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ramster;
  if (size == 0) return 0;
  const bool preamble = (data[0] & 1) != 0;
  const absl::Span<const uint8_t> body(data + 1, size - 1);
  std::vector<uint8_t> input;
  if (preamble) input = NbdClientPreamble();
  input.insert(input.end(), body.begin(), body.end());
  std::vector<uint8_t> output = Exchange(input);
  if (output.empty()) return 0;  // refused: over the connection limit
  // Whatever came in, the server's first words are its greeting.
  FUZZ_CHECK(output.size() >= nbd::kGreetingBytes);
  auto greeting = nbd::EncodeGreeting(nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  FUZZ_CHECK(std::equal(greeting.begin(), greeting.end(), output.begin()));
  if (preamble) CheckReplies(body, output);
  return 0;
}
