// NbdServer against a real device (TierStack: LocalCacheTier, LocalFileTier,
// behind TierStackDevice) and a byte-level client: the handshake, every
// command, malformed input of every kind, pipelining, backpressure,
// connection limits and shutdown. The tests with third-party clients (nbdsh,
// qemu-io, nbdcopy, fio) are in tests/nbd_clients_test.sh.
#include "kernel-shim/nbd_server.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/local_cache_tier.h"
#include "client/tier.h"
#include "client/tier_stack.h"
#include "gtest/gtest.h"
#include "kernel-shim/nbd_protocol.h"
#include "kernel-shim/nbd_test_client.h"
#include "kernel-shim/nbd_test_device.h"
#include "kernel-shim/tier_stack_device.h"

namespace ramster {
namespace {

using nbd::Request;

constexpr uint64_t kDeviceBytes = 16 << 20;

// Forwards to a real device; counts flushes, and can fail or hold calls
// (fault injection, like LevelDB's ErrorEnv or nbdkit's error filter).
class InstrumentedDevice final : public BlockDevice {
 public:
  explicit InstrumentedDevice(BlockDevice* base) : base_(base) {}

  uint64_t size() const override { return base_->size(); }
  absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) override {
    Hold();
    if (!read_status.ok()) return read_status;
    return base_->Read(offset, out);
  }
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    if (!write_status.ok()) return write_status;
    return base_->Write(offset, data);
  }
  absl::Status Trim(uint64_t offset, uint64_t length) override {
    return base_->Trim(offset, length);
  }
  absl::Status WriteZeroes(uint64_t offset, uint64_t length) override {
    return base_->WriteZeroes(offset, length);
  }
  absl::Status Flush() override {
    ++flushes;
    return base_->Flush();
  }
  // Batches are held like reads, fail like the calls they stand for, and
  // are recorded (their sizes, in order) before they reach the real device.
  void ReadBatch(absl::Span<Io> ios) override {
    Hold();
    Record(ios.size());
    if (!read_status.ok()) {
      for (Io& io : ios) io.status = read_status;
      return;
    }
    base_->ReadBatch(ios);
  }
  void WriteBatch(absl::Span<Io> ios) override {
    Record(ios.size());
    if (!write_status.ok()) {
      for (Io& io : ios) io.status = write_status;
      return;
    }
    base_->WriteBatch(ios);
  }
  std::vector<size_t> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return batches_;
  }
  bool can_multi_conn() const override { return multi_conn; }
  bool quick_writes() const override { return quick; }

  // Reads block (after entering) until Release(); held() says how many wait.
  void HoldReads() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = true;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = false;
    cv_.notify_all();
  }
  int held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_;
  }

  // Set before the server starts.
  absl::Status read_status, write_status;
  bool multi_conn = true;
  bool quick = false;  // what quick_writes() says
  std::atomic<int> flushes{0};

 private:
  void Hold() {
    std::unique_lock<std::mutex> lock(mu_);
    ++held_;
    cv_.wait(lock, [this] { return !holding_; });
    --held_;
  }
  void Record(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    batches_.push_back(n);
  }
  BlockDevice* const base_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool holding_ = false;
  int held_ = 0;
  std::vector<size_t> batches_;
};

void WaitFor(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!done() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(2));
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Wraps a tier: loads of the slots in fail_loads fail (kUnavailable) and
// stores of the slots in refuse_stores are refused (kResourceExhausted), so
// that a test knows exactly which pages of a batch fail.
class SlotFaultTier final : public Tier {
 public:
  explicit SlotFaultTier(std::unique_ptr<Tier> inner) : inner_(std::move(inner)) {}

  std::string_view name() const override { return inner_->name(); }
  absl::Status Store(const PageKey& key, absl::Span<const uint8_t> raw, const EncodedPage& enc,
                     PageMeta* meta, bool* durable) override {
    if (In(refuse_stores_, key.index)) return absl::ResourceExhaustedError("injected: full");
    return inner_->Store(key, raw, enc, meta, durable);
  }
  absl::Status Load(const PageKey& key, const PageMeta& meta, absl::Span<uint8_t> out) override {
    if (In(fail_loads_, key.index)) return absl::UnavailableError("injected: down");
    return inner_->Load(key, meta, out);
  }
  void Invalidate(const PageKey& key, const PageMeta& meta) override {
    inner_->Invalidate(key, meta);
  }
  bool overwrites_in_place() const override { return inner_->overwrites_in_place(); }

  void FailLoads(std::set<uint64_t> slots) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_loads_ = std::move(slots);
  }
  void RefuseStores(std::set<uint64_t> slots) {
    std::lock_guard<std::mutex> lock(mu_);
    refuse_stores_ = std::move(slots);
  }

 private:
  bool In(const std::set<uint64_t>& set, uint64_t slot) {
    std::lock_guard<std::mutex> lock(mu_);
    return set.count(slot) > 0;
  }
  const std::unique_ptr<Tier> inner_;
  std::mutex mu_;
  std::set<uint64_t> fail_loads_, refuse_stores_;
};

struct Reply {
  uint32_t error = 0;
  std::vector<uint8_t> data;  // a successful READ's payload
};

// Receives `n` replies in whatever order they come; `read_lengths` names
// the READs (by handle) and their lengths, so that their payloads are read.
std::map<uint64_t, Reply> RecvReplies(NbdTestClient* c, size_t n,
                                      const std::map<uint64_t, uint32_t>& read_lengths) {
  std::map<uint64_t, Reply> replies;
  for (size_t i = 0; i < n; ++i) {
    absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    Reply& reply = replies[r->handle];
    reply.error = r->error;
    auto it = read_lengths.find(r->handle);
    if (it != read_lengths.end() && r->error == 0) {
      reply.data.resize(it->second);
      EXPECT_TRUE(c->RecvBytes(reply.data.data(), reply.data.size()).ok());
    }
  }
  return replies;
}

std::vector<uint8_t> Slice(const std::vector<uint8_t>& v, size_t offset, size_t n) {
  return std::vector<uint8_t>(v.begin() + offset, v.begin() + offset + n);
}

// Every READ of `lengths` succeeded with its bytes of `data`: handle 100
// read from page 15 (HoldTheWorker's), handle 100 + p from page p.
void ExpectReads(const std::map<uint64_t, Reply>& replies,
                 const std::map<uint64_t, uint32_t>& lengths, const std::vector<uint8_t>& data) {
  for (const auto& [handle, length] : lengths) {
    auto it = replies.find(handle);
    ASSERT_NE(it, replies.end()) << handle;
    const uint64_t page = handle == 100 ? 15 : handle - 100;
    EXPECT_EQ(it->second.error, 0u) << handle;
    EXPECT_EQ(it->second.data, Slice(data, page * 4096, length)) << handle;
  }
}

class NbdServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Unix socket paths are limited to 108 bytes; TEST_TMPDIR can be longer.
    char tmpl[] = "/tmp/nbd_server_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    absl::StatusOr<NbdTestDevice> dev =
        MakeNbdTestDevice(kDeviceBytes, 4 << 20, dir_ + "/swap");
    ASSERT_TRUE(dev.ok()) << dev.status();
    real_ = std::move(*dev);
    device_ = std::make_unique<InstrumentedDevice>(real_.device.get());
    options_.unix_path = dir_ + "/nbd.sock";
    options_.max_request_bytes = 1 << 20;
    options_.buffer_pool_bytes = 4 << 20;
    options_.log_errors = false;
    // Most tests hold a request in the device to see what queues behind it:
    // that needs the reader to keep reading. The tests of lone requests and
    // read bursts turn these back on.
    options_.inline_lone_requests = false;
    options_.inline_read_bursts = false;
  }

  void TearDown() override {
    if (device_) device_->Release();
    server_.reset();
    unlink((dir_ + "/swap").c_str());
    unlink((dir_ + "/nbd.sock").c_str());
    rmdir(dir_.c_str());
  }

  void StartServer() {
    server_ = std::make_unique<NbdServer>(device_.get(), options_);
    absl::Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s;
  }

  std::unique_ptr<NbdTestClient> Connect() {
    absl::StatusOr<std::unique_ptr<NbdTestClient>> c = NbdTestClient::ConnectUnix(options_.unix_path);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::unique_ptr<NbdTestClient> ConnectAndGo() {
    auto c = Connect();
    if (c == nullptr) return nullptr;
    absl::Status s = c->Handshake();
    EXPECT_TRUE(s.ok()) << s;
    return c;
  }

  // Serves, instead of real_, a stack whose one tier (a cache) fails the
  // slots a test names. Call before StartServer.
  SlotFaultTier* UseFaultyDevice() {
    auto tier = std::make_unique<SlotFaultTier>(std::make_unique<LocalCacheTier>(8 << 20));
    SlotFaultTier* faults = tier.get();
    std::vector<std::unique_ptr<Tier>> tiers;
    tiers.push_back(std::move(tier));
    faulty_.stack = std::make_unique<TierStack>(kDeviceBytes / 4096, 1, std::move(tiers));
    faulty_.device = std::make_unique<TierStackDevice>(faulty_.stack.get());
    device_ = std::make_unique<InstrumentedDevice>(faulty_.device.get());
    return faults;
  }

  // Sends a READ of `offset` that the device holds, so that what is sent
  // next waits in the queue (behind the worker, or behind the connection's
  // running batch).
  void HoldTheWorker(NbdTestClient* c, uint64_t handle, uint64_t offset) {
    device_->HoldReads();
    ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, handle, offset, 4096}).ok());
    WaitFor([&] { return device_->held() == 1; });
    ASSERT_EQ(device_->held(), 1);
  }
  // Starts the server, connects `*c`, writes 16 pages of Pattern(seed)
  // (`*data`) at offset 0, and holds a READ of page 15 (handle 100).
  void StartAndHold(uint32_t seed, std::unique_ptr<NbdTestClient>* c,
                    std::vector<uint8_t>* data) {
    StartServer();
    *c = ConnectAndGo();
    ASSERT_NE(*c, nullptr);
    *data = Pattern(16 * 4096, seed);
    ASSERT_EQ(*(*c)->Write(0, *data), 0u);
    HoldTheWorker(c->get(), 100, 15 * 4096);
  }
  // Waits until `n` requests are queued behind the held one, then lets
  // the worker go on.
  void ReleaseWhenQueued(uint64_t n) {
    WaitFor([&] { return server_->stats().queued == n; });
    ASSERT_EQ(server_->stats().queued, n);
    device_->Release();
  }
  // Sends one-page READs of pages first..last, handle 100 + page, and adds
  // them to `lengths`.
  void SendPageReads(NbdTestClient* c, uint64_t first, uint64_t last,
                     std::map<uint64_t, uint32_t>* lengths) {
    for (uint64_t p = first; p <= last; ++p) {
      ASSERT_TRUE(
          c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 100 + p, p * 4096, 4096}).ok());
      (*lengths)[100 + p] = 4096;
    }
  }

  std::string dir_;
  NbdTestDevice real_;
  NbdTestDevice faulty_;
  std::unique_ptr<InstrumentedDevice> device_;
  NbdServerOptions options_;
  std::unique_ptr<NbdServer> server_;
};

// ---- the handshake -------------------------------------------------------------

TEST_F(NbdServerTest, GoAdvertisesTheExport) {
  StartServer();
  auto c = ConnectAndGo();
  EXPECT_EQ(c->handshake_flags(), nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  EXPECT_EQ(c->export_size(), kDeviceBytes);
  EXPECT_EQ(c->transmission_flags(),
            nbd::kFlagHasFlags | nbd::kFlagSendFlush | nbd::kFlagSendFua | nbd::kFlagSendTrim |
                nbd::kFlagSendWriteZeroes | nbd::kFlagCanMultiConn);
}

TEST_F(NbdServerTest, CanMultiConnOnlyWhenTheDeviceSaysSo) {
  device_->multi_conn = false;
  StartServer();
  auto c = ConnectAndGo();
  EXPECT_EQ(c->transmission_flags() & nbd::kFlagCanMultiConn, 0);
  EXPECT_NE(c->transmission_flags() & nbd::kFlagSendTrim, 0);
}

TEST_F(NbdServerTest, ExportNameWithAndWithoutTheZeroes) {
  StartServer();
  for (bool no_zeroes : {true, false}) {
    for (const char* name : {"ramster", ""}) {
      auto c = Connect();
      ASSERT_TRUE(c->Handshake(name, /*use_go=*/false, no_zeroes).ok());
      EXPECT_EQ(c->export_size(), kDeviceBytes);
      EXPECT_NE(c->transmission_flags() & nbd::kFlagHasFlags, 0);
      // The framing is right only if exactly 10 or 134 bytes came.
      std::vector<uint8_t> out;
      ASSERT_EQ(*c->Read(0, 512, &out), 0u);
      EXPECT_EQ(out, std::vector<uint8_t>(512, 0));
    }
  }
}

TEST_F(NbdServerTest, InfoAnswersWithExportBlockSizesAndNameThenHagglingGoesOn) {
  StartServer();
  auto c = Connect();
  ASSERT_TRUE(c->Greet().ok());
  const uint16_t asked[] = {nbd::kInfoName, nbd::kInfoBlockSize, 999};
  ASSERT_TRUE(c->SendOption(nbd::kOptInfo, nbd::EncodeInfoRequest("ramster", asked)).ok());
  std::map<uint16_t, std::vector<uint8_t>> infos;
  for (;;) {
    std::vector<uint8_t> data;
    absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->option, nbd::kOptInfo);
    if (h->type == nbd::kRepAck) break;
    ASSERT_EQ(h->type, nbd::kRepInfo);
    ASSERT_GE(data.size(), 2u);
    infos[static_cast<uint16_t>(data[0] << 8 | data[1])] = data;
  }
  ASSERT_EQ(infos.size(), 3u);  // export, block size, name; 999 ignored
  nbd::WireReader bs(infos[nbd::kInfoBlockSize]);
  uint16_t type;
  uint32_t minimum, preferred, maximum;
  ASSERT_TRUE(bs.U16(&type) && bs.U32(&minimum) && bs.U32(&preferred) && bs.U32(&maximum));
  EXPECT_EQ(minimum, 1u);
  EXPECT_EQ(preferred, 4096u);
  EXPECT_EQ(maximum, options_.max_request_bytes);
  EXPECT_EQ(std::string(infos[nbd::kInfoName].begin() + 2, infos[nbd::kInfoName].end()),
            "ramster");
  EXPECT_EQ(infos[nbd::kInfoExport].size(), 12u);
  // Still haggling: GO works now, then so does I/O.
  ASSERT_TRUE(c->SendOption(nbd::kOptGo, nbd::EncodeInfoRequest("", {})).ok());
  for (;;) {
    std::vector<uint8_t> data;
    absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok());
    if (h->type == nbd::kRepAck) break;
    ASSERT_EQ(h->type, nbd::kRepInfo);
  }
  EXPECT_EQ(*c->Command(nbd::kCmdFlush, 0, 0), 0u);
}

TEST_F(NbdServerTest, ListNamesTheExportAndRejectsData) {
  StartServer();
  auto c = Connect();
  ASSERT_TRUE(c->Greet().ok());
  ASSERT_TRUE(c->SendOption(nbd::kOptList, {}).ok());
  std::vector<uint8_t> data;
  absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepServer);
  ASSERT_EQ(data.size(), 4u + 7u);
  EXPECT_EQ(std::string(data.begin() + 4, data.end()), "ramster");
  EXPECT_EQ(data[3], 7);
  h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepAck);

  const uint8_t junk[] = {1, 2, 3};
  ASSERT_TRUE(c->SendOption(nbd::kOptList, junk).ok());
  h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepErrInvalid);
  ASSERT_TRUE(c->SendOption(nbd::kOptGo, nbd::EncodeInfoRequest("ramster", {})).ok());
  do {
    h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok());
  } while (h->type == nbd::kRepInfo);
  EXPECT_EQ(h->type, nbd::kRepAck);
}

TEST_F(NbdServerTest, UnsupportedOptionsAreRefusedAndTheirDataSkipped) {
  StartServer();
  auto c = Connect();
  ASSERT_TRUE(c->Greet().ok());
  std::vector<uint8_t> data;
  const std::vector<uint8_t> payload(100, 0x49);  // looks like "IHAVEOPT" if misparsed
  for (uint32_t option : {nbd::kOptStructuredReply, nbd::kOptStartTls, nbd::kOptListMetaContext,
                          nbd::kOptExtendedHeaders, 0xDEADu}) {
    ASSERT_TRUE(c->SendOption(option, option == 0xDEADu ? payload : std::vector<uint8_t>{}).ok());
    absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(h->option, option);
    EXPECT_EQ(h->type, nbd::kRepErrUnsup) << option;
  }
  c->SendOption(nbd::kOptGo, nbd::EncodeInfoRequest("ramster", {})).IgnoreError();
  absl::StatusOr<nbd::OptionReplyHeader> h;
  do {
    h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok());
  } while (h->type == nbd::kRepInfo);
  EXPECT_EQ(h->type, nbd::kRepAck);
  EXPECT_EQ(server_->stats().protocol_errors, 0u);
}

TEST_F(NbdServerTest, GoForAnUnknownExportOrWithBadDataIsRefusedNotFatal) {
  StartServer();
  auto c = Connect();
  ASSERT_TRUE(c->Greet().ok());
  std::vector<uint8_t> data;
  ASSERT_TRUE(c->SendOption(nbd::kOptGo, nbd::EncodeInfoRequest("other", {})).ok());
  absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepErrUnknown);

  std::vector<uint8_t> bad = nbd::EncodeInfoRequest("ramster", {});
  nbd::PutU32(bad.data(), 5000);  // name length beyond the option's data
  ASSERT_TRUE(c->SendOption(nbd::kOptGo, bad).ok());
  h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepErrInvalid);

  ASSERT_TRUE(c->SendOption(nbd::kOptInfo, {}).ok());  // no data at all
  h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepErrInvalid);

  ASSERT_TRUE(c->SendOption(nbd::kOptGo, nbd::EncodeInfoRequest("ramster", {})).ok());
  do {
    h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok());
  } while (h->type == nbd::kRepInfo);
  EXPECT_EQ(h->type, nbd::kRepAck);
  std::vector<uint8_t> out;
  EXPECT_EQ(*c->Read(0, 4096, &out), 0u);
}

TEST_F(NbdServerTest, AbortIsAcknowledgedThenTheServerCloses) {
  StartServer();
  auto c = Connect();
  ASSERT_TRUE(c->Greet().ok());
  ASSERT_TRUE(c->SendOption(nbd::kOptAbort, {}).ok());
  std::vector<uint8_t> data;
  absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->type, nbd::kRepAck);
  EXPECT_TRUE(c->ServerClosed());
}

TEST_F(NbdServerTest, HandshakeViolationsDisconnect) {
  StartServer();
  {  // NBD_OPT_EXPORT_NAME has no error reply: unknown name means close.
    auto c = Connect();
    ASSERT_TRUE(c->Greet().ok());
    const std::string name = "nope";
    ASSERT_TRUE(c->SendOption(nbd::kOptExportName,
                              absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(name.data()),
                                                  name.size()))
                    .ok());
    EXPECT_TRUE(c->ServerClosed());
  }
  {  // Client flags the server never offered.
    auto c = Connect();
    uint8_t greeting[nbd::kGreetingBytes];
    ASSERT_TRUE(c->RecvBytes(greeting, sizeof(greeting)).ok());
    const uint8_t flags[] = {0, 0, 0, 0x05};
    ASSERT_TRUE(c->SendBytes(flags).ok());
    EXPECT_TRUE(c->ServerClosed());
  }
  {  // Bad option magic.
    auto c = Connect();
    ASSERT_TRUE(c->Greet().ok());
    auto header = nbd::EncodeOptionHeader(nbd::kOptList, 0);
    header[3] ^= 0xFF;
    ASSERT_TRUE(c->SendBytes(header).ok());
    EXPECT_TRUE(c->ServerClosed());
  }
  {  // Option data beyond 64 KiB: told why, then dropped.
    auto c = Connect();
    ASSERT_TRUE(c->Greet().ok());
    ASSERT_TRUE(c->SendBytes(nbd::EncodeOptionHeader(nbd::kOptGo, 1 << 20)).ok());
    std::vector<uint8_t> data;
    absl::StatusOr<nbd::OptionReplyHeader> h = c->RecvOptionReply(&data);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->type, nbd::kRepErrTooBig);
    EXPECT_TRUE(c->ServerClosed());
  }
  {  // Endless haggling.
    auto c = Connect();
    ASSERT_TRUE(c->Greet().ok());
    std::vector<uint8_t> data;
    bool closed = false;
    for (int i = 0; i < 1100 && !closed; ++i) {
      if (!c->SendOption(nbd::kOptList, {}).ok()) break;
      closed = !c->RecvOptionReply(&data).ok() || !c->RecvOptionReply(&data).ok();
    }
    EXPECT_TRUE(closed || c->ServerClosed());
  }
  EXPECT_EQ(server_->stats().protocol_errors, 5u);
  // The server still serves.
  auto c = ConnectAndGo();
  std::vector<uint8_t> out;
  EXPECT_EQ(*c->Read(0, 1, &out), 0u);
}

TEST_F(NbdServerTest, AClientThatNeverFinishesTheHandshakeIsDropped) {
  options_.handshake_timeout = absl::Milliseconds(200);
  StartServer();
  auto c = Connect();
  ASSERT_TRUE(c->Greet().ok());
  EXPECT_TRUE(c->ServerClosed(absl::Seconds(5)));
}

// ---- transmission ----------------------------------------------------------------

TEST_F(NbdServerTest, WritesReadBackAlignedUnalignedAndAcrossPages) {
  StartServer();
  auto c = ConnectAndGo();
  struct Case {
    uint64_t offset;
    uint32_t length;
  };
  const Case cases[] = {{0, 4096},         {4096 * 3, 4096 * 5}, {4095, 3},       {100, 10000},
                        {(1 << 20) - 1, 2}, {kDeviceBytes - 7, 7}, {8192 + 1, 1},   {5 << 20, 1 << 20}};
  uint32_t seed = 1;
  for (const Case& k : cases) {
    std::vector<uint8_t> data = Pattern(k.length, seed++);
    ASSERT_EQ(*c->Write(k.offset, data), 0u) << k.offset;
    std::vector<uint8_t> out;
    ASSERT_EQ(*c->Read(k.offset, k.length, &out), 0u);
    EXPECT_EQ(out, data) << k.offset;
  }
  // A neighbour's partial-page write did not disturb the bytes around it.
  std::vector<uint8_t> out;
  ASSERT_EQ(*c->Read(8192, 1, &out), 0u);
  EXPECT_EQ(out[0], Pattern(10000, 4)[8192 - 100]);
  // Visible to another connection (CAN_MULTI_CONN).
  auto other = ConnectAndGo();
  ASSERT_EQ(*other->Read(kDeviceBytes - 7, 7, &out), 0u);
  EXPECT_EQ(out, Pattern(7, 6));
  NbdServerStats s = server_->stats();
  EXPECT_EQ(s.writes, 8u);
  EXPECT_EQ(s.reads, 10u);
  EXPECT_EQ(s.errors, 0u);
  EXPECT_EQ(s.bytes_written, 4096u + 4096 * 5 + 3 + 10000 + 2 + 7 + 1 + (1 << 20));
}

TEST_F(NbdServerTest, TrimAndWriteZeroesReadBackAsZeros) {
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(64 << 10, 7);
  ASSERT_EQ(*c->Write(0, data), 0u);
  ASSERT_EQ(*c->Command(nbd::kCmdTrim, 4096, 8192), 0u);                   // whole pages
  ASSERT_EQ(*c->Command(nbd::kCmdWriteZeroes, 20000, 10000), 0u);          // unaligned
  ASSERT_EQ(*c->Command(nbd::kCmdWriteZeroes, 40000, 100, nbd::kCmdFlagNoHole), 0u);
  std::vector<uint8_t> expect = data;
  std::fill(expect.begin() + 4096, expect.begin() + 4096 + 8192, 0);
  std::fill(expect.begin() + 20000, expect.begin() + 30000, 0);
  std::fill(expect.begin() + 40000, expect.begin() + 40100, 0);
  std::vector<uint8_t> out;
  ASSERT_EQ(*c->Read(0, 64 << 10, &out), 0u);
  EXPECT_EQ(out, expect);
  EXPECT_EQ(server_->stats().trims, 1u);
  EXPECT_EQ(server_->stats().write_zeroes, 2u);
}

TEST_F(NbdServerTest, FuaAndFlushReachTheDevice) {
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data(4096, 1);
  ASSERT_EQ(*c->Write(0, data), 0u);
  EXPECT_EQ(device_->flushes.load(), 0);
  ASSERT_EQ(*c->Write(0, data, nbd::kCmdFlagFua), 0u);
  EXPECT_EQ(device_->flushes.load(), 1);
  ASSERT_EQ(*c->Command(nbd::kCmdTrim, 0, 4096, nbd::kCmdFlagFua), 0u);
  ASSERT_EQ(*c->Command(nbd::kCmdWriteZeroes, 0, 4096, nbd::kCmdFlagFua), 0u);
  EXPECT_EQ(device_->flushes.load(), 3);
  ASSERT_EQ(*c->Command(nbd::kCmdFlush, 0, 0), 0u);
  EXPECT_EQ(device_->flushes.load(), 4);
  std::vector<uint8_t> out;
  ASSERT_EQ(*c->Read(0, 4096, &out, nbd::kCmdFlagFua), 0u);  // FUA on a read: harmless
  EXPECT_EQ(device_->flushes.load(), 4);
}

TEST_F(NbdServerTest, BadRequestsGetTheProtocolsErrorsAndTheStreamStaysInSync) {
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(8192, 9);
  ASSERT_EQ(*c->Write(0, data), 0u);
  const uint32_t max = static_cast<uint32_t>(options_.max_request_bytes);
  std::vector<uint8_t> out;

  EXPECT_EQ(*c->Read(kDeviceBytes - 10, 11, &out), nbd::kEinval);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(*c->Read(~uint64_t{0} - 100, 4096, &out), nbd::kEinval);
  EXPECT_EQ(*c->Read(0, max + 1, &out), nbd::kEinval);
  // Rejected WRITEs: their payload is consumed, so the next request parses.
  // The payloads hold valid-looking request headers to catch a server that
  // would parse them.
  std::vector<uint8_t> trap(4096);
  for (size_t i = 0; i + nbd::kRequestBytes <= trap.size(); i += nbd::kRequestBytes) {
    auto fake = NbdRequestBytes(nbd::kCmdWrite, 0, 666, 0, 4);
    std::copy(fake.begin(), fake.end(), trap.begin() + i);
  }
  EXPECT_EQ(*c->Write(kDeviceBytes - 100, trap), nbd::kEnospc);
  EXPECT_EQ(*c->Write(0, trap, /*flags=*/0x40), nbd::kEinval);  // unknown flag
  EXPECT_EQ(*c->Write(0, trap, nbd::kCmdFlagNoHole), nbd::kEinval);  // not for WRITE
  std::vector<uint8_t> oversize(max + 1, 0x25);
  EXPECT_EQ(*c->Write(0, oversize), nbd::kEinval);
  EXPECT_EQ(*c->Command(nbd::kCmdWriteZeroes, kDeviceBytes, 1), nbd::kEnospc);
  EXPECT_EQ(*c->Command(nbd::kCmdTrim, kDeviceBytes - 4096, 8192), nbd::kEinval);
  EXPECT_EQ(*c->Command(nbd::kCmdFlush, 4096, 0), nbd::kEinval);
  EXPECT_EQ(*c->Command(nbd::kCmdCache, 0, 4096), nbd::kEinval);
  EXPECT_EQ(*c->Command(nbd::kCmdBlockStatus, 0, 4096), nbd::kEinval);
  EXPECT_EQ(*c->Command(0x7777, 0, 0), nbd::kEinval);
  EXPECT_EQ(*c->Read(0, 4096, &out, nbd::kCmdFlagDf), nbd::kEinval);

  // In sync, and nothing was written by any of that.
  ASSERT_EQ(*c->Read(0, 8192, &out), 0u);
  EXPECT_EQ(out, data);
  ASSERT_EQ(*c->Read(kDeviceBytes - 4096, 4096, &out), 0u);
  EXPECT_EQ(out, std::vector<uint8_t>(4096, 0));
  NbdServerStats s = server_->stats();
  EXPECT_EQ(s.errors, 14u);
  EXPECT_EQ(s.unknown_commands, 3u);
  EXPECT_EQ(s.protocol_errors, 0u);
  EXPECT_EQ(s.device_errors, 0u);
  EXPECT_EQ(s.bytes_written, 8192u);
}

TEST_F(NbdServerTest, BadRequestMagicDropsThatConnectionOnly) {
  StartServer();
  auto bystander = ConnectAndGo();
  auto c = ConnectAndGo();
  ASSERT_EQ(*c->Write(0, Pattern(512, 1)), 0u);
  auto bad = NbdRequestBytes(nbd::kCmdRead, 0, 1, 0, 512);
  bad[0] = 0x52;
  ASSERT_TRUE(c->SendBytes(bad).ok());
  EXPECT_TRUE(c->ServerClosed());
  // A short header followed by EOF is a plain disconnect.
  auto d = ConnectAndGo();
  ASSERT_TRUE(d->SendBytes(absl::MakeConstSpan(bad).first(10)).ok());
  shutdown(d->fd(), SHUT_WR);
  EXPECT_TRUE(d->ServerClosed());
  std::vector<uint8_t> out;
  ASSERT_EQ(*bystander->Read(0, 512, &out), 0u);
  EXPECT_EQ(out, Pattern(512, 1));
  EXPECT_EQ(server_->stats().protocol_errors, 1u);
}

TEST_F(NbdServerTest, DeviceErrorsBecomeNbdErrors) {
  device_->read_status = absl::DataLossError("no good copy");
  device_->write_status = absl::ResourceExhaustedError("every tier refused");
  StartServer();
  auto c = ConnectAndGo();
  std::vector<uint8_t> out;
  EXPECT_EQ(*c->Read(0, 4096, &out), nbd::kEio);
  EXPECT_TRUE(out.empty());  // no payload after an error
  EXPECT_EQ(*c->Write(0, Pattern(4096, 1)), nbd::kEnospc);
  EXPECT_EQ(*c->Command(nbd::kCmdFlush, 0, 0), 0u);  // still in sync
  NbdServerStats s = server_->stats();
  EXPECT_EQ(s.device_errors, 2u);
  EXPECT_EQ(s.errors, 2u);
}

TEST(NbdErrno, OneMappingFromStatusToNbdError) {
  EXPECT_EQ(NbdErrno(absl::OkStatus()), 0u);
  EXPECT_EQ(NbdErrno(absl::InvalidArgumentError("")), nbd::kEinval);
  EXPECT_EQ(NbdErrno(absl::OutOfRangeError("")), nbd::kEinval);
  EXPECT_EQ(NbdErrno(absl::ResourceExhaustedError("")), nbd::kEnospc);
  EXPECT_EQ(NbdErrno(absl::DataLossError("")), nbd::kEio);
  EXPECT_EQ(NbdErrno(absl::UnavailableError("")), nbd::kEio);
  EXPECT_EQ(NbdErrno(absl::InternalError("")), nbd::kEio);
}

// ---- concurrency -------------------------------------------------------------------

TEST_F(NbdServerTest, LoneRequestsRunOnTheirReader) {
  options_.inline_lone_requests = true;
  options_.request_poll = absl::Microseconds(200);  // the shim's reader polls
  StartServer();
  auto c = ConnectAndGo();
  for (uint64_t i = 0; i < 20; ++i) {
    const std::vector<uint8_t> data = Pattern(4096, static_cast<uint8_t>(i));
    ASSERT_EQ(*c->Write(i * 4096, data), 0u);
    std::vector<uint8_t> back;
    ASSERT_EQ(*c->Read(i * 4096, 4096, &back), 0u);
    ASSERT_EQ(back, data);
  }
  // One at a time: every one of them ran on the reader.
  EXPECT_EQ(server_->stats().inline_requests, 40u);
}

// One send holding several requests (headers and WRITE payloads): they
// arrive as one burst.
std::vector<uint8_t> Burst(const std::vector<std::pair<nbd::Request, std::vector<uint8_t>>>& rs) {
  std::vector<uint8_t> out;
  for (const auto& [r, payload] : rs) {
    const auto h = nbd::EncodeRequest(r);
    out.insert(out.end(), h.begin(), h.end());
    out.insert(out.end(), payload.begin(), payload.end());
  }
  return out;
}

TEST_F(NbdServerTest, BurstsOfQuickWholePageWritesRunOnTheReader) {
  device_->quick = true;
  options_.workers = 1;
  StartServer();
  auto c = ConnectAndGo();
  std::vector<std::pair<nbd::Request, std::vector<uint8_t>>> rs;
  std::map<uint64_t, uint32_t> lengths;
  for (uint64_t i = 0; i < 12; ++i) {
    const uint32_t len = i == 5 ? 3 * 4096 : 4096;
    rs.push_back({{nbd::kRequestMagic, 0, nbd::kCmdWrite, 300 + i, (4 * i) * 4096, len},
                  Pattern(len, static_cast<uint8_t>(i + 1))});
    lengths[300 + i] = 0;
  }
  ASSERT_TRUE(c->SendBytes(Burst(rs)).ok());
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 12, lengths);
  ASSERT_EQ(replies.size(), 12u);
  for (const auto& [handle, reply] : replies) EXPECT_EQ(reply.error, 0u) << handle;
  // Every one ran on the reader, and the device saw batches of them.
  NbdServerStats st = server_->stats();
  EXPECT_EQ(st.inline_requests, 12u);
  EXPECT_GE(st.batched_requests, 2u);
  for (uint64_t i = 0; i < 12; ++i) {
    std::vector<uint8_t> back;
    ASSERT_EQ(*c->Read((4 * i) * 4096, rs[i].second.size(), &back), 0u);
    EXPECT_EQ(back, rs[i].second) << i;
  }
}

TEST_F(NbdServerTest, ABurstWithFuaPartialOverlappingOrOtherRequestsGoesToTheWorkers) {
  device_->quick = true;
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> page = Pattern(4096, 7);
  const std::vector<std::vector<std::pair<nbd::Request, std::vector<uint8_t>>>> bursts = {
      // a FUA write
      {{{nbd::kRequestMagic, 0, nbd::kCmdWrite, 1, 0, 4096}, page},
       {{nbd::kRequestMagic, nbd::kCmdFlagFua, nbd::kCmdWrite, 2, 4096, 4096}, page}},
      // a partial write
      {{{nbd::kRequestMagic, 0, nbd::kCmdWrite, 3, 8192, 4096}, page},
       {{nbd::kRequestMagic, 0, nbd::kCmdWrite, 4, 3 * 4096 + 10, 100}, Pattern(100, 9)}},
      // two writes to one page (in flight together: NBD lets them run in
      // either order, so the page ends up as one of them)
      {{{nbd::kRequestMagic, 0, nbd::kCmdWrite, 5, 5 * 4096, 4096}, Pattern(4096, 1)},
       {{nbd::kRequestMagic, 0, nbd::kCmdWrite, 6, 5 * 4096, 4096}, Pattern(4096, 2)}},
      // a write and a read
      {{{nbd::kRequestMagic, 0, nbd::kCmdWrite, 7, 6 * 4096, 4096}, page},
       {{nbd::kRequestMagic, 0, nbd::kCmdRead, 8, 7 * 4096, 4096}, {}}},
  };
  for (const auto& b : bursts) {
    ASSERT_TRUE(c->SendBytes(Burst(b)).ok());
    std::map<uint64_t, uint32_t> lengths;
    for (const auto& [r, payload] : b) lengths[r.handle] = r.type == nbd::kCmdRead ? r.length : 0;
    std::map<uint64_t, Reply> replies = RecvReplies(c.get(), b.size(), lengths);
    ASSERT_EQ(replies.size(), b.size());
    for (const auto& [handle, reply] : replies) EXPECT_EQ(reply.error, 0u) << handle;
  }
  EXPECT_EQ(server_->stats().inline_requests, 0u);
  std::vector<uint8_t> back;
  ASSERT_EQ(*c->Read(5 * 4096, 4096, &back), 0u);
  EXPECT_TRUE(back == Pattern(4096, 1) || back == Pattern(4096, 2));
  ASSERT_EQ(*c->Read(3 * 4096, 4096, &back), 0u);
  EXPECT_EQ(Slice(back, 10, 100), Pattern(100, 9));
}

// (The tests of read bursts write their data on a connection of its own: a
// request's reply goes out just before its connection counts it done, so a
// burst sent right after it on the same connection may still see it in
// flight, and then rightly goes to the workers.)
TEST_F(NbdServerTest, ABurstOfWholePageReadsRunsOnTheReaderAsOneBatch) {
  options_.inline_read_bursts = true;
  options_.workers = 1;
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(16 * 4096, 21);
  ASSERT_EQ(*ConnectAndGo()->Write(0, data), 0u);
  std::vector<std::pair<nbd::Request, std::vector<uint8_t>>> rs;
  std::map<uint64_t, uint32_t> lengths;
  for (uint64_t p = 1; p <= 8; ++p) {
    const uint32_t len = p == 8 ? 2 * 4096 : 4096;
    rs.push_back({{nbd::kRequestMagic, 0, nbd::kCmdRead, 100 + p, p * 4096, len}, {}});
    lengths[100 + p] = len;
  }
  ASSERT_TRUE(c->SendBytes(Burst(rs)).ok());
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 8, lengths);
  ASSERT_EQ(replies.size(), 8u);
  ExpectReads(replies, lengths, data);
  EXPECT_EQ(server_->stats().inline_requests, 8u);
  EXPECT_EQ(device_->batches(), std::vector<size_t>{8});
}

// One send with whole-page reads of pages [first, last], handles 100 + page.
std::vector<uint8_t> PageReadBurst(uint64_t first, uint64_t last,
                                   std::map<uint64_t, uint32_t>* lengths) {
  std::vector<std::pair<nbd::Request, std::vector<uint8_t>>> rs;
  for (uint64_t p = first; p <= last; ++p) {
    rs.push_back({{nbd::kRequestMagic, 0, nbd::kCmdRead, 100 + p, p * 4096, 4096}, {}});
    (*lengths)[100 + p] = 4096;
  }
  return Burst(rs);
}

// After a burst of 10 reads, the next arrives in two parts (a client at a
// high queue depth resubmitting as its replies come back): the reader waits
// for the second and runs all 10 as one batch.
TEST_F(NbdServerTest, AfterABigReadBurstTheNextWaitsForItsRest) {
  options_.inline_read_bursts = true;
  options_.read_gather = absl::Seconds(20);  // far more than the test needs
  options_.workers = 1;
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(16 * 4096, 23);
  ASSERT_EQ(*ConnectAndGo()->Write(0, data), 0u);
  std::map<uint64_t, uint32_t> lengths;
  ASSERT_TRUE(c->SendBytes(PageReadBurst(1, 10, &lengths)).ok());
  ExpectReads(RecvReplies(c.get(), 10, lengths), lengths, data);
  EXPECT_EQ(server_->stats().gathered_bursts, 0u);  // the first burst: nothing to go by

  lengths.clear();
  ASSERT_TRUE(c->SendBytes(PageReadBurst(1, 4, &lengths)).ok());
  absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(c->SendBytes(PageReadBurst(5, 10, &lengths)).ok());
  ExpectReads(RecvReplies(c.get(), 10, lengths), lengths, data);
  EXPECT_EQ(device_->batches(), (std::vector<size_t>{10, 10}));
  EXPECT_EQ(server_->stats().gathered_bursts, 1u);
  EXPECT_EQ(server_->stats().inline_requests, 20u);
}

// Bursts of fewer than kGatherMinBurst reads (a client at a low queue
// depth) never wait, nor do reads that follow anything but a big read
// burst. (A wrong wait would show in gathered_bursts, and cost 2 s.)
TEST_F(NbdServerTest, SmallReadBurstsAndReadsAfterOtherRequestsNeverWait) {
  options_.inline_read_bursts = true;
  options_.read_gather = absl::Seconds(2);
  options_.workers = 1;
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(16 * 4096, 24);
  ASSERT_EQ(*ConnectAndGo()->Write(0, data), 0u);
  static_assert(NbdServer::kGatherMinBurst == 8);
  const auto reads = [&](uint64_t first, uint64_t last) {
    std::map<uint64_t, uint32_t> lengths;
    ASSERT_TRUE(c->SendBytes(PageReadBurst(first, last, &lengths)).ok());
    ExpectReads(RecvReplies(c.get(), lengths.size(), lengths), lengths, data);
  };
  reads(1, 7);
  reads(1, 2);
  reads(3, 3);
  // A big burst, then a write: the reads after the write do not wait.
  reads(1, 10);
  ASSERT_EQ(*c->Write(15 * 4096, Slice(data, 15 * 4096, 4096)), 0u);
  reads(1, 2);
  EXPECT_EQ(server_->stats().gathered_bursts, 0u);
  EXPECT_EQ(device_->batches(), (std::vector<size_t>{7, 2, 10, 2}));
}

// A read burst that is not all whole-page READs of distinct pages, or is
// bigger than a batch, goes the usual way; so does one that arrives while
// another request of its connection is in flight, and then a FLUSH
// arriving meanwhile does not wait for it.
TEST_F(NbdServerTest, OtherReadBurstsGoToTheWorkers) {
  options_.inline_read_bursts = true;
  options_.max_batch_bytes = 4 * 4096;
  options_.workers = 2;
  options_.batch_overtake_after = absl::Hours(1);
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(16 * 4096, 22);
  ASSERT_EQ(*c->Write(0, data), 0u);
  using R = std::pair<nbd::Request, std::vector<uint8_t>>;
  std::map<uint64_t, uint64_t> offsets;  // by handle
  const auto read = [&](uint64_t handle, uint64_t offset, uint32_t length) {
    offsets[handle] = offset;
    return R{{nbd::kRequestMagic, 0, nbd::kCmdRead, handle, offset, length}, {}};
  };
  const std::vector<std::vector<R>> bursts = {
      {read(1, 4096, 4096), read(2, 4096, 4096)},                 // one page twice
      {read(3, 2 * 4096, 4096), read(4, 3 * 4096 + 10, 100)},     // a partial read
      {read(5, 4 * 4096, 4096), read(6, 5 * 4096, 4 * 4096)},     // more than a batch
      {read(8, 9 * 4096, 4096), R{{nbd::kRequestMagic, 0, nbd::kCmdFlush, 9, 0, 0}, {}}},
  };
  for (const auto& b : bursts) {
    ASSERT_TRUE(c->SendBytes(Burst(b)).ok());
    std::map<uint64_t, uint32_t> lengths;
    for (const auto& [r, payload] : b) {
      if (r.type == nbd::kCmdRead) lengths[r.handle] = r.length;
    }
    std::map<uint64_t, Reply> replies = RecvReplies(c.get(), b.size(), lengths);
    ASSERT_EQ(replies.size(), b.size());
    for (const auto& [handle, length] : lengths) {
      EXPECT_EQ(replies[handle].error, 0u) << handle;
      EXPECT_EQ(replies[handle].data, Slice(data, offsets[handle], length)) << handle;
    }
  }
  EXPECT_EQ(server_->stats().inline_requests, 0u);
  // Behind a request in flight, a read burst queues, and a FLUSH after it
  // is answered while the burst's batch waits for the device.
  HoldTheWorker(c.get(), 100, 15 * 4096);
  std::map<uint64_t, uint32_t> lengths{{100, 4096}};
  SendPageReads(c.get(), 1, 3, &lengths);
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdFlush, 7, 0, 0}).ok());
  absl::StatusOr<nbd::SimpleReply> flush = c->RecvReply();
  ASSERT_TRUE(flush.ok()) << flush.status();
  EXPECT_EQ(flush->handle, 7u);
  device_->Release();
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 4, lengths);
  ExpectReads(replies, lengths, data);
  EXPECT_EQ(server_->stats().inline_requests, 0u);
}

TEST_F(NbdServerTest, ARequestArrivingWhileAReadBurstRunsWaitsForItThenCompletes) {
  options_.inline_read_bursts = true;
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(4 * 4096, 23);
  ASSERT_EQ(*ConnectAndGo()->Write(0, data), 0u);
  device_->HoldReads();
  std::map<uint64_t, uint32_t> lengths;
  std::vector<std::pair<nbd::Request, std::vector<uint8_t>>> rs;
  for (uint64_t p = 1; p <= 3; ++p) {
    rs.push_back({{nbd::kRequestMagic, 0, nbd::kCmdRead, 100 + p, p * 4096, 4096}, {}});
    lengths[100 + p] = 4096;
  }
  ASSERT_TRUE(c->SendBytes(Burst(rs)).ok());
  WaitFor([&] { return device_->held() == 1; });
  ASSERT_EQ(device_->held(), 1);
  // The reader runs the burst: this FLUSH is not even parsed until it is
  // done.
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdFlush, 7, 0, 0}).ok());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(server_->stats().flushes, 0u);
  device_->Release();
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 3, lengths);
  ExpectReads(replies, lengths, data);
  absl::StatusOr<nbd::SimpleReply> flush = c->RecvReply();
  ASSERT_TRUE(flush.ok()) << flush.status();
  EXPECT_EQ(flush->handle, 7u);
  EXPECT_EQ(flush->error, 0u);
  EXPECT_EQ(server_->stats().inline_requests, 3u);
}

// A burst of quick writes runs on the reader only when nothing older of
// its connection is in flight: here it waits behind a READ of its page that
// waits for the connection's batch, and the READ sees the page as it was.
TEST_F(NbdServerTest, AQuickWriteDoesNotOvertakeARequestWaitingInTheQueue) {
  device_->quick = true;
  options_.workers = 4;
  options_.batch_overtake_after = absl::Hours(1);
  std::unique_ptr<NbdTestClient> c;
  std::vector<uint8_t> data;
  ASSERT_NO_FATAL_FAILURE(StartAndHold(16, &c, &data));
  std::map<uint64_t, uint32_t> lengths{{100, 4096}};
  SendPageReads(c.get(), 3, 3, &lengths);
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdWrite, 300, 3 * 4096, 4096},
                             Pattern(4096, 17))
                  .ok());
  ReleaseWhenQueued(2);  // the READ and the WRITE
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 3, lengths);
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(replies[300].error, 0u);
  ExpectReads(replies, lengths, data);
  std::vector<uint8_t> back;
  ASSERT_EQ(*c->Read(3 * 4096, 4096, &back), 0u);
  EXPECT_EQ(back, Pattern(4096, 17));
}

TEST_F(NbdServerTest, ARequestArrivingWhileALoneOneRunsWaitsForItThenCompletes) {
  options_.inline_lone_requests = true;
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(4096, 9);
  ASSERT_EQ(*c->Write(0, data), 0u);
  device_->HoldReads();
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 100, 0, 4096}).ok());
  WaitFor([&] { return device_->held() == 1; });
  ASSERT_EQ(device_->held(), 1);
  // The reader is busy with the lone READ: this WRITE is not even parsed
  // until the READ is done.
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdWrite, 200, 8192, 4096}, data).ok());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(server_->stats().writes, 1u);
  device_->Release();
  absl::StatusOr<nbd::SimpleReply> first = c->RecvReply();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->handle, 100u);
  EXPECT_EQ(first->error, 0u);
  std::vector<uint8_t> payload(4096);
  ASSERT_TRUE(c->RecvBytes(payload.data(), payload.size()).ok());
  EXPECT_EQ(payload, data);
  absl::StatusOr<nbd::SimpleReply> second = c->RecvReply();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->handle, 200u);
  EXPECT_EQ(second->error, 0u);
  std::vector<uint8_t> back;
  ASSERT_EQ(*c->Read(8192, 4096, &back), 0u);
  EXPECT_EQ(back, data);
}

// Every READ's time in the server, from its arrival to its reply, is
// counted; a READ held in the device for 30 ms shows in the top percentile.
TEST_F(NbdServerTest, ReadLatencyCountsEachReadFromArrivalToReply) {
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(4096, 3);
  ASSERT_EQ(*c->Write(0, data), 0u);
  std::vector<uint8_t> back;
  for (int i = 0; i < 9; ++i) ASSERT_EQ(*c->Read(0, 4096, &back), 0u);
  device_->HoldReads();
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 100, 0, 4096}).ok());
  WaitFor([&] { return device_->held() == 1; });
  absl::SleepFor(absl::Milliseconds(30));
  device_->Release();
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 1, {{100, 4096}});
  EXPECT_EQ(replies[100].data, data);
  const LatencyHistogram::Summary s = server_->stats().read_latency;
  EXPECT_EQ(s.count, 10u);
  EXPECT_GE(s.p99_ns, 30'000'000u);
  EXPECT_LT(s.p50_ns, 30'000'000u);
}

TEST_F(NbdServerTest, RepliesGoOutInCompletionOrder) {
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(4096, 5);
  ASSERT_EQ(*c->Write(0, data), 0u);
  device_->HoldReads();
  Request read{nbd::kRequestMagic, 0, nbd::kCmdRead, 100, 0, 4096};
  ASSERT_TRUE(c->SendRequest(read).ok());
  WaitFor([&] { return device_->held() == 1; });
  Request write{nbd::kRequestMagic, 0, nbd::kCmdWrite, 200, 8192, 4096};
  ASSERT_TRUE(c->SendRequest(write, data).ok());
  absl::StatusOr<nbd::SimpleReply> first = c->RecvReply();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->handle, 200u);  // the later WRITE overtook the held READ
  device_->Release();
  absl::StatusOr<nbd::SimpleReply> second = c->RecvReply();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->handle, 100u);
  EXPECT_EQ(second->error, 0u);
  std::vector<uint8_t> out(4096);
  ASSERT_TRUE(c->RecvBytes(out.data(), out.size()).ok());
  EXPECT_EQ(out, data);
}

TEST_F(NbdServerTest, ManyRequestsInFlightOnOneConnection) {
  StartServer();
  auto c = ConnectAndGo();
  // 256 writes of distinct pages, all sent before any reply is read, then
  // 256 reads likewise; every handle answered exactly once.
  constexpr int kN = 256;
  std::thread sender([&] {
    for (int i = 0; i < kN; ++i) {
      Request w{nbd::kRequestMagic, 0, nbd::kCmdWrite, static_cast<uint64_t>(i),
                static_cast<uint64_t>(i) * 4096 + 1, 4096};
      ASSERT_TRUE(c->SendRequest(w, Pattern(4096, i)).ok());
    }
  });
  std::map<uint64_t, int> seen;
  for (int i = 0; i < kN; ++i) {
    absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->error, 0u);
    seen[r->handle]++;
  }
  sender.join();
  EXPECT_EQ(seen.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) {
    Request rd{nbd::kRequestMagic, 0, nbd::kCmdRead, static_cast<uint64_t>(1000 + i),
               static_cast<uint64_t>(i) * 4096 + 1, 4096};
    ASSERT_TRUE(c->SendRequest(rd).ok());
  }
  for (int i = 0; i < kN; ++i) {
    absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->error, 0u);
    std::vector<uint8_t> out(4096);
    ASSERT_TRUE(c->RecvBytes(out.data(), out.size()).ok());
    EXPECT_EQ(out, Pattern(4096, static_cast<uint32_t>(r->handle - 1000))) << r->handle;
  }
}

TEST_F(NbdServerTest, ParallelConnections) {
  StartServer();
  constexpr int kConns = 8;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kConns; ++t) {
    threads.emplace_back([&, t] {
      auto c = ConnectAndGo();
      if (c == nullptr) {
        ++failures;
        return;
      }
      std::mt19937 rng(t);
      const uint64_t base = static_cast<uint64_t>(t) * (kDeviceBytes / kConns);
      std::vector<uint8_t> model(kDeviceBytes / kConns, 0);
      for (int i = 0; i < 200; ++i) {
        uint32_t len = 1 + rng() % 20000;
        uint64_t off = rng() % (model.size() - len);
        std::vector<uint8_t> data = Pattern(len, rng());
        if (*c->Write(base + off, data) != 0) ++failures;
        std::copy(data.begin(), data.end(), model.begin() + off);
      }
      std::vector<uint8_t> out;
      if (*c->Read(base, static_cast<uint32_t>(std::min<size_t>(model.size(), 1 << 20)), &out) !=
              0 ||
          out != std::vector<uint8_t>(model.begin(), model.begin() + out.size())) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server_->stats().connections_accepted, static_cast<uint64_t>(kConns));
}

TEST_F(NbdServerTest, RequestsWaitForBufferSpaceAndAllComplete) {
  options_.max_request_bytes = 64 << 10;
  options_.buffer_pool_bytes = 64 << 10;  // one request's worth
  options_.queue_depth = 2;
  StartServer();
  EXPECT_EQ(server_->stats().buffer_pool_bytes, 64u << 10);
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(64 << 10, 3);
  ASSERT_EQ(*c->Write(0, data), 0u);
  device_->HoldReads();
  for (uint64_t h = 1; h <= 3; ++h) {
    ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, h, 0, 64 << 10}).ok());
  }
  // The first holds the whole pool inside the device; the second waits for
  // space; the third is not even read yet.
  WaitFor([&] { return server_->stats().buffer_waiting == 1; });
  NbdServerStats s = server_->stats();
  EXPECT_EQ(s.buffer_waiting, 1u);
  EXPECT_EQ(s.buffer_bytes_in_use, 64u << 10);
  device_->Release();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->error, 0u);
    std::vector<uint8_t> out(64 << 10);
    ASSERT_TRUE(c->RecvBytes(out.data(), out.size()).ok());
    EXPECT_EQ(out, data);
  }
  // A buffer goes back to the pool just after its reply is sent.
  WaitFor([&] { return server_->stats().buffer_bytes_in_use == 0; });
  s = server_->stats();
  EXPECT_GE(s.buffer_waits, 1u);
  EXPECT_EQ(s.buffer_bytes_in_use, 0u);
}

// ---- batches ----------------------------------------------------------------------

TEST_F(NbdServerTest, WaitingWholePageReadsRunAsOneBatchEachWithItsOwnReply) {
  options_.workers = 1;
  std::unique_ptr<NbdTestClient> c;
  std::vector<uint8_t> data;
  ASSERT_NO_FATAL_FAILURE(StartAndHold(11, &c, &data));
  // Behind it: ten one-page READs and one of two pages.
  std::map<uint64_t, uint32_t> lengths{{100, 4096}};
  SendPageReads(c.get(), 1, 10, &lengths);
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 111, 11 * 4096, 8192}).ok());
  lengths[111] = 8192;
  ReleaseWhenQueued(11);
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 12, lengths);
  ASSERT_EQ(replies.size(), 12u);
  ExpectReads(replies, lengths, data);
  EXPECT_EQ(device_->batches(), std::vector<size_t>{11});
  NbdServerStats s = server_->stats();
  EXPECT_EQ(s.batches, 1u);
  EXPECT_EQ(s.batched_requests, 11u);
  EXPECT_EQ(s.bytes_read, 13u * 4096);
}

// A connection runs one batch at a time: with workers to spare, what
// arrives while its batch runs waits and goes as its next batch; a FLUSH
// does not wait.
TEST_F(NbdServerTest, AConnectionRunsOneBatchAtATimeAndWhatArrivesMeanwhileGoesNext) {
  options_.workers = 4;
  options_.batch_overtake_after = absl::Hours(1);
  std::unique_ptr<NbdTestClient> c;
  std::vector<uint8_t> data;
  ASSERT_NO_FATAL_FAILURE(StartAndHold(12, &c, &data));
  std::map<uint64_t, uint32_t> lengths{{100, 4096}};
  SendPageReads(c.get(), 1, 10, &lengths);
  // A whole-page WRITE waits like the READs; a partial one of the same
  // page (never batched) waits behind it, not to overtake it.
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdWrite, 300, 20 * 4096, 4096},
                             Pattern(4096, 14))
                  .ok());
  ASSERT_TRUE(
      c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdWrite, 301, 20 * 4096 + 10, 100},
                     Pattern(100, 15))
          .ok());
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdFlush, 200, 0, 0}).ok());
  absl::StatusOr<nbd::SimpleReply> flushed = c->RecvReply();
  ASSERT_TRUE(flushed.ok()) << flushed.status();
  EXPECT_EQ(flushed->handle, 200u);  // answered while the READ is held
  // Three idle workers, and still the ten READs and both WRITEs wait.
  ReleaseWhenQueued(12);
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 13, lengths);
  ASSERT_EQ(replies.size(), 13u);
  EXPECT_EQ(replies[300].error, 0u);
  EXPECT_EQ(replies[301].error, 0u);
  ExpectReads(replies, lengths, data);
  // The held READ ran alone; the ten as one batch.
  EXPECT_EQ(device_->batches().front(), 10u);
}

// A batch that runs longer than batch_overtake_after (a hung peer) no
// longer holds back its connection's next one.
TEST_F(NbdServerTest, ASlowBatchIsOvertaken) {
  options_.workers = 4;
  options_.batch_overtake_after = absl::Milliseconds(20);
  std::unique_ptr<NbdTestClient> c;
  std::vector<uint8_t> data;
  ASSERT_NO_FATAL_FAILURE(StartAndHold(13, &c, &data));
  std::map<uint64_t, uint32_t> lengths{{100, 4096}};
  SendPageReads(c.get(), 1, 4, &lengths);
  WaitFor([&] { return device_->held() >= 2; });  // a second batch, the first still held
  EXPECT_GE(device_->held(), 2);
  device_->Release();
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 5, lengths);
  ASSERT_EQ(replies.size(), 5u);
  ExpectReads(replies, lengths, data);
}

// A batch takes only whole-page requests of one kind that touch no page of
// each other nor of an older request it leaves waiting; the rest run later,
// in order. FUA is honoured by a flush before the batch's replies.
TEST_F(NbdServerTest, ABatchSkipsOverlappingPartialAndOtherRequestsWhichRunInOrder) {
  options_.workers = 1;
  std::unique_ptr<NbdTestClient> c;
  std::vector<uint8_t> expect;
  ASSERT_NO_FATAL_FAILURE(StartAndHold(12, &c, &expect));
  const std::vector<uint8_t> a = Pattern(8192, 21), b = Pattern(4096, 22), cc = Pattern(4096, 23),
                             d = Pattern(200, 24), e = Pattern(4096, 25), f = Pattern(4096, 26);
  const uint16_t kWrite = nbd::kCmdWrite, kRead = nbd::kCmdRead;
  const auto send = [&](uint16_t type, uint16_t flags, uint64_t handle, uint64_t offset,
                        uint32_t length, const std::vector<uint8_t>& payload) {
    ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, flags, type, handle, offset, length},
                               payload)
                    .ok());
  };
  send(kWrite, 0, 101, 0, 8192, a);                      // pages 0-1: batch
  send(kWrite, 0, 102, 4096, 4096, b);                   // page 1 again: later
  send(kRead, 0, 103, 2 * 4096, 4096, {});               // a READ: later
  send(kWrite, 0, 104, 2 * 4096, 4096, cc);              // after that READ
  send(kWrite, 0, 105, 5 * 4096 + 100, 200, d);          // partial page: alone
  send(kWrite, nbd::kCmdFlagFua, 106, 6 * 4096, 4096, e);  // batch, FUA
  send(kWrite, 0, 107, 7 * 4096, 4096, f);               // batch
  ReleaseWhenQueued(7);
  const std::vector<uint8_t> page2_before = Slice(expect, 2 * 4096, 4096);
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 8, {{100, 4096}, {103, 4096}});
  ASSERT_EQ(replies.size(), 8u);
  for (const auto& [handle, reply] : replies) EXPECT_EQ(reply.error, 0u) << handle;
  EXPECT_EQ(replies[103].data, page2_before);  // it ran before the WRITE queued after it
  EXPECT_EQ(device_->batches(), std::vector<size_t>{3});  // 101, 106, 107
  EXPECT_EQ(device_->flushes.load(), 1);
  std::copy(a.begin(), a.end(), expect.begin());
  std::copy(b.begin(), b.end(), expect.begin() + 4096);
  std::copy(cc.begin(), cc.end(), expect.begin() + 2 * 4096);
  std::copy(d.begin(), d.end(), expect.begin() + 5 * 4096 + 100);
  std::copy(e.begin(), e.end(), expect.begin() + 6 * 4096);
  std::copy(f.begin(), f.end(), expect.begin() + 7 * 4096);
  std::vector<uint8_t> out;
  ASSERT_EQ(*c->Read(0, 16 * 4096, &out), 0u);
  EXPECT_EQ(out, expect);
}

TEST_F(NbdServerTest, PagesThatFailInABatchFailOnlyTheirOwnRequests) {
  options_.workers = 1;
  SlotFaultTier* faults = UseFaultyDevice();
  StartServer();
  auto c = ConnectAndGo();
  const std::vector<uint8_t> data = Pattern(16 * 4096, 13);
  ASSERT_EQ(*c->Write(0, data), 0u);

  // READs: page 3 and page 9 (inside a two-page READ) have no good copy.
  faults->FailLoads({3, 9});
  HoldTheWorker(c.get(), 100, 15 * 4096);
  std::map<uint64_t, uint32_t> lengths{{100, 4096}};
  for (uint64_t i = 1; i <= 8; ++i) {
    ASSERT_TRUE(
        c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 100 + i, i * 4096, 4096}).ok());
    lengths[100 + i] = 4096;
  }
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 109, 9 * 4096, 8192}).ok());
  lengths[109] = 8192;
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 111, 11 * 4096, 4096}).ok());
  lengths[111] = 4096;
  ReleaseWhenQueued(10);
  std::map<uint64_t, Reply> replies = RecvReplies(c.get(), 11, lengths);
  ASSERT_EQ(replies.size(), 11u);
  for (const auto& [handle, length] : lengths) {
    if (handle == 103 || handle == 109) {
      EXPECT_EQ(replies[handle].error, nbd::kEio) << handle;
      EXPECT_TRUE(replies[handle].data.empty()) << handle;
      continue;
    }
    const uint64_t page = handle == 100 ? 15 : handle - 100;
    EXPECT_EQ(replies[handle].error, 0u) << handle;
    EXPECT_EQ(replies[handle].data, Slice(data, page * 4096, length)) << handle;
  }
  EXPECT_EQ(device_->batches(), std::vector<size_t>{10});

  // WRITEs: the only tier refuses page 20; its WRITE fails, the others of
  // the batch are kept.
  faults->FailLoads({});
  faults->RefuseStores({20});
  HoldTheWorker(c.get(), 200, 15 * 4096);
  const std::vector<uint8_t> fresh = Pattern(4 * 4096, 14);
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdWrite, 201 + i, (18 + i) * 4096,
                                4096},
                               Slice(fresh, i * 4096, 4096))
                    .ok());
  }
  ReleaseWhenQueued(4);
  replies = RecvReplies(c.get(), 5, {{200, 4096}});
  ASSERT_EQ(replies.size(), 5u);
  EXPECT_EQ(replies[200].error, 0u);
  EXPECT_EQ(replies[201].error, 0u);
  EXPECT_EQ(replies[202].error, 0u);
  EXPECT_EQ(replies[203].error, nbd::kEnospc);
  EXPECT_EQ(replies[204].error, 0u);
  EXPECT_EQ(device_->batches(), (std::vector<size_t>{10, 4}));
  std::vector<uint8_t> expect = fresh;
  std::fill(expect.begin() + 2 * 4096, expect.begin() + 3 * 4096, 0);  // never written
  std::vector<uint8_t> out;
  ASSERT_EQ(*c->Read(18 * 4096, 4 * 4096, &out), 0u);
  EXPECT_EQ(out, expect);
  EXPECT_EQ(server_->stats().device_errors, 3u);
}

// Many whole-page and partial READs and WRITEs in flight on one connection
// (never two on one page at once, as the kernel and fio do), with several
// workers: every READ returns exactly what the WRITEs before it left.
TEST_F(NbdServerTest, MixedRequestsAtQueueDepth32MatchTheModel) {
  StartServer();
  auto c = ConnectAndGo();
  constexpr uint64_t kPages = 96;
  constexpr int kRequests = 3000, kDepth = 32;
  std::vector<uint8_t> model(kPages * 4096, 0);
  std::vector<bool> busy(kPages, false);
  struct InFlight {
    uint64_t first_page, pages;
    bool read;
    std::vector<uint8_t> expect;
    uint32_t length;
  };
  std::map<uint64_t, InFlight> inflight;
  std::mt19937 rng(77);
  int sent = 0, mismatches = 0, errors = 0;
  uint64_t handle = 1000;
  while (sent < kRequests || !inflight.empty()) {
    while (sent < kRequests && inflight.size() < kDepth) {
      const uint64_t pages = rng() % 8 == 0 ? 2 : 1;
      const uint64_t first = rng() % (kPages - pages + 1);
      if (busy[first] || busy[first + pages - 1]) continue;
      const bool read = rng() % 2 == 0;
      const bool partial = rng() % 10 == 0;
      const uint64_t offset = first * 4096 + (partial ? 1 + rng() % 4000 : 0);
      const uint32_t length =
          partial ? static_cast<uint32_t>(1 + rng() % (first * 4096 + pages * 4096 - offset))
                  : static_cast<uint32_t>(pages * 4096);
      InFlight f{first, pages, read, {}, length};
      if (read) {
        f.expect = Slice(model, offset, length);
        ASSERT_TRUE(
            c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, handle, offset, length}).ok());
      } else {
        std::vector<uint8_t> payload = Pattern(length, static_cast<uint32_t>(handle));
        std::copy(payload.begin(), payload.end(), model.begin() + offset);
        ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdWrite, handle, offset, length},
                                   payload)
                        .ok());
      }
      for (uint64_t p = first; p < first + pages; ++p) busy[p] = true;
      inflight[handle++] = std::move(f);
      ++sent;
    }
    absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
    ASSERT_TRUE(r.ok()) << r.status();
    auto it = inflight.find(r->handle);
    ASSERT_NE(it, inflight.end()) << r->handle;
    InFlight& f = it->second;
    if (r->error != 0) {
      ++errors;
    } else if (f.read) {
      std::vector<uint8_t> out(f.length);
      ASSERT_TRUE(c->RecvBytes(out.data(), out.size()).ok());
      if (out != f.expect) ++mismatches;
    }
    for (uint64_t p = f.first_page; p < f.first_page + f.pages; ++p) busy[p] = false;
    inflight.erase(it);
  }
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(mismatches, 0);
  std::vector<uint8_t> out;
  ASSERT_EQ(*c->Read(0, kPages * 4096, &out), 0u);
  EXPECT_EQ(out, model);
  EXPECT_EQ(server_->stats().errors, 0u);
}

TEST_F(NbdServerTest, ConnectionsBeyondTheLimitAreClosed) {
  options_.max_connections = 2;
  StartServer();
  auto a = ConnectAndGo();
  auto b = ConnectAndGo();
  auto c = Connect();
  EXPECT_TRUE(c->ServerClosed());  // not even a greeting
  EXPECT_EQ(server_->stats().connections_rejected, 1u);
  a.reset();
  WaitFor([&] { return server_->stats().connections_active < 2; });
  auto d = ConnectAndGo();
  std::vector<uint8_t> out;
  EXPECT_EQ(*d->Read(0, 1, &out), 0u);
}

// ---- ending ----------------------------------------------------------------------

TEST_F(NbdServerTest, DiscFinishesTheRequestsInFlightThenCloses) {
  StartServer();
  auto c = ConnectAndGo();
  ASSERT_EQ(*c->Write(0, Pattern(4096, 8)), 0u);
  device_->HoldReads();
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 7, 0, 4096}).ok());
  WaitFor([&] { return device_->held() == 1; });
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdDisc, 8, 0, 0}).ok());
  device_->Release();
  absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->handle, 7u);
  std::vector<uint8_t> out(4096);
  ASSERT_TRUE(c->RecvBytes(out.data(), out.size()).ok());
  EXPECT_EQ(out, Pattern(4096, 8));
  EXPECT_TRUE(c->ServerClosed());  // and no reply to DISC
  EXPECT_EQ(server_->stats().disconnects, 1u);
}

TEST_F(NbdServerTest, StopAnswersTheRequestsInFlightThenCloses) {
  StartServer();
  auto c = ConnectAndGo();
  auto idle = ConnectAndGo();
  auto haggling = Connect();
  ASSERT_TRUE(haggling->Greet().ok());
  device_->HoldReads();
  ASSERT_TRUE(c->SendRequest({nbd::kRequestMagic, 0, nbd::kCmdRead, 7, 0, 4096}).ok());
  WaitFor([&] { return device_->held() == 1; });
  std::thread stopper([&] { server_->Stop(); });
  absl::SleepFor(absl::Milliseconds(50));
  device_->Release();
  absl::StatusOr<nbd::SimpleReply> r = c->RecvReply();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->handle, 7u);
  EXPECT_EQ(r->error, 0u);
  std::vector<uint8_t> out(4096);
  ASSERT_TRUE(c->RecvBytes(out.data(), out.size()).ok());
  stopper.join();
  EXPECT_TRUE(c->ServerClosed());
  EXPECT_TRUE(idle->ServerClosed());
  EXPECT_TRUE(haggling->ServerClosed());
  struct stat st;
  EXPECT_NE(stat(options_.unix_path.c_str(), &st), 0);  // socket removed
  EXPECT_EQ(server_->stats().connections_active, 0u);
  server_->Stop();  // idempotent
}

// ---- listening ---------------------------------------------------------------------

TEST_F(NbdServerTest, TcpOnLoopback) {
  options_.unix_path.clear();
  options_.tcp_listen = "127.0.0.1:0";
  StartServer();
  ASSERT_GT(server_->tcp_port(), 0);
  absl::StatusOr<std::unique_ptr<NbdTestClient>> c =
      NbdTestClient::ConnectTcp("127.0.0.1", server_->tcp_port());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->Handshake().ok());
  ASSERT_EQ(*(*c)->Write(12345, Pattern(5000, 2)), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(*(*c)->Read(12345, 5000, &out), 0u);
  EXPECT_EQ(out, Pattern(5000, 2));
}

TEST_F(NbdServerTest, BadOptionsAndAddressesAreRefused) {
  auto start = [&](NbdServerOptions o) { return NbdServer(device_.get(), o).Start(); };
  NbdServerOptions o = options_;
  o.unix_path.clear();
  for (const char* addr : {"0.0.0.0:0", "10.1.2.3:0", "localhost:0", "127.0.0.1", "127.0.0.1:99999",
                           "[::]:0"}) {
    o.tcp_listen = addr;
    EXPECT_EQ(start(o).code(), absl::StatusCode::kInvalidArgument) << addr;
  }
  o = options_;
  o.workers = 0;
  EXPECT_EQ(start(o).code(), absl::StatusCode::kInvalidArgument);
  o = options_;
  o.max_request_bytes = 100;
  EXPECT_EQ(start(o).code(), absl::StatusCode::kInvalidArgument);
  o = options_;
  o.unix_path = "/tmp/" + std::string(200, 'x');
  EXPECT_EQ(start(o).code(), absl::StatusCode::kInvalidArgument);
  StartServer();
  EXPECT_EQ(server_->Start().code(), absl::StatusCode::kFailedPrecondition);
  // Another server on the same live socket.
  EXPECT_EQ(start(options_).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(NbdServerTest, AStaleSocketFileIsReplaced) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, options_.unix_path.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);  // the file stays, nobody listens
  StartServer();
  auto c = ConnectAndGo();
  std::vector<uint8_t> out;
  EXPECT_EQ(*c->Read(0, 1, &out), 0u);
}

TEST_F(NbdServerTest, ServeSocketOverASocketpair) {
  options_.unix_path.clear();
  StartServer();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_TRUE(server_->ServeSocket(sv[0]).ok());
  NbdTestClient c(sv[1]);
  ASSERT_TRUE(c.Handshake().ok());
  ASSERT_EQ(*c.Write(0, Pattern(100, 1)), 0u);
  std::vector<uint8_t> out;
  ASSERT_EQ(*c.Read(0, 100, &out), 0u);
  EXPECT_EQ(out, Pattern(100, 1));
}

}  // namespace
}  // namespace ramster
