// The page link against a real node, over real loopback sockets, spoken to
// byte by byte as a client (or a broken one) would.
#include "server/page_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/page_codec.h"
#include "common/page_link_wire.h"
#include "common/socket_io.h"
#include "common/test_temp_dir.h"
#include "gtest/gtest.h"
#include "server/test_wire_page.h"

namespace ramster {
namespace {

constexpr uint32_t kPool = 1;
constexpr uint64_t kEpoch = 7;
constexpr char kClient[] = "client-a";

std::vector<uint8_t> MakePage(uint64_t seed) {
  std::vector<uint8_t> page(kPageSize);
  std::mt19937_64 rng(seed);
  // Half random, half zero: compressible, so LZ4 encoded.
  for (size_t i = 0; i < kPageSize / 2; ++i) page[i] = static_cast<uint8_t>(rng());
  return page;
}

v1::PagesRequest StoreRequest(uint64_t index, const std::vector<uint8_t>& bytes) {
  v1::PagesRequest req;
  req.mutable_store()->set_boot_epoch(kEpoch);
  *req.mutable_store()->add_pages() = WirePage(kPool, index, bytes);
  return req;
}

v1::PagesRequest LoadRequest(uint64_t index) {
  v1::PagesRequest req;
  req.mutable_load()->set_boot_epoch(kEpoch);
  v1::PageKey* k = req.mutable_load()->add_keys();
  k->set_pool(kPool);
  k->set_index(index);
  return req;
}

// A loaded page decoded and checked against its checksum; empty when it
// does not decode to it.
std::vector<uint8_t> Decoded(const v1::Page& p) {
  std::vector<uint8_t> page(kPageSize);
  if (!DecodePage(p.encoding(),
                  absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.payload().data()),
                                      p.payload().size()),
                  p.uncompressed_length(), p.checksum(), absl::MakeSpan(page))
           .ok()) {
    return {};
  }
  return page;
}

// One client connection, spoken to frame by frame.
class RawLink {
 public:
  explicit RawLink(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    timeval t{10, 0};  // a test that waits this long has failed
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof(t));
  }
  ~RawLink() { close(fd_); }

  bool connected() const { return connected_; }

  bool SendRaw(const std::string& bytes) { return SendAll(fd_, bytes.data(), bytes.size()); }
  bool SendFrame(const std::string& body) {
    const uint32_t length = htonl(static_cast<uint32_t>(body.size()));
    return SendRaw(std::string(reinterpret_cast<const char*>(&length), 4) + body);
  }
  bool Send(const google::protobuf::MessageLite& m) { return SendFrame(m.SerializeAsString()); }
  bool Hello(const std::string& client = kClient) {
    v1::PageLinkHello hello;
    hello.set_client_id(client);
    return Send(hello);
  }

  // The next reply; nullopt at end of stream (or on a malformed reply,
  // which fails the test).
  std::optional<v1::PagesReply> Read() {
    uint32_t length = 0;
    if (!ReadFull(fd_, &length, 4)) return std::nullopt;
    std::string body(ntohl(length), '\0');
    if (!ReadFull(fd_, body.data(), body.size())) return std::nullopt;
    v1::PagesReply reply;
    EXPECT_TRUE(reply.ParseFromString(body));
    return reply;
  }
  // True when the server closed the connection (and sent nothing more).
  bool AtEnd() {
    char c;
    return recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

class PageLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NodeOptions o;
    o.ram_limit = 16 << 20;
    o.disk_limit = 64 << 20;
    o.data_dir = MakeTestTempDir("page_link");
    o.maintenance_interval = absl::Hours(1);
    auto node = Node::Open(o);
    ASSERT_TRUE(node.ok()) << node.status();
    node_ = std::move(*node);
    OpenSession(kClient);
  }

  void StartLink(int max_connections = 8) {
    auto link = PageLink::Start(node_.get(), "127.0.0.1", 0, max_connections);
    ASSERT_TRUE(link.ok()) << link.status();
    link_ = std::move(*link);
    ASSERT_GT(link_->port(), 0);
  }

  void OpenSession(const std::string& client) {
    v1::OpenSessionRequest req;
    req.set_boot_epoch(kEpoch);
    v1::PoolSpec* pool = req.add_pools();
    pool->set_id(kPool);
    pool->set_kind(v1::POOL_KIND_PERSISTENT);
    v1::OpenSessionResponse resp;
    ASSERT_TRUE(node_->OpenSession(client, req, &resp).ok());
  }

  // Waits (bounded) until the link counts `n` open connections.
  bool ConnectionsBecome(int n) {
    for (int i = 0; i < 1000; ++i) {
      if (link_->connections() == n) return true;
      usleep(10000);
    }
    return false;
  }

  std::unique_ptr<Node> node_;
  std::unique_ptr<PageLink> link_;
};

TEST_F(PageLinkTest, StoresAndLoadsPagesInOrder) {
  StartLink();
  RawLink c(link_->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Hello());
  const std::vector<uint8_t> a = MakePage(1), b = MakePage(2);
  // Two requests written before either reply is read: answered in order.
  ASSERT_TRUE(c.Send(StoreRequest(10, a)));
  ASSERT_TRUE(c.Send(StoreRequest(11, b)));
  for (int i = 0; i < 2; ++i) {
    std::optional<v1::PagesReply> r = c.Read();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->code(), 0) << r->message();
    ASSERT_EQ(r->store().results_size(), 1);
    EXPECT_EQ(r->store().results(0).code(), 0) << r->store().results(0).message();
  }
  for (const auto& [index, want] : {std::pair{10, a}, std::pair{11, b}}) {
    ASSERT_TRUE(c.Send(LoadRequest(index)));
    std::optional<v1::PagesReply> r = c.Read();
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->op_case(), v1::PagesReply::kLoad);
    ASSERT_EQ(r->load().results_size(), 1);
    const std::vector<uint8_t> got = Decoded(r->load().results(0).page());
    ASSERT_EQ(got.size(), kPageSize);  // it decoded, to its checksum
    EXPECT_EQ(got, want);
  }
  // A key never stored: a per-key miss, not a failed request.
  ASSERT_TRUE(c.Send(LoadRequest(99)));
  std::optional<v1::PagesReply> miss = c.Read();
  ASSERT_TRUE(miss.has_value());
  EXPECT_EQ(miss->code(), 0);
  ASSERT_EQ(miss->load().results_size(), 1);
  EXPECT_EQ(miss->load().results(0).status().code(), static_cast<int>(absl::StatusCode::kNotFound));
}

TEST_F(PageLinkTest, SessionsAndHeartbeatsAdvertiseThePort) {
  StartLink();
  node_->SetPageLinkPort(static_cast<uint16_t>(link_->port()));
  v1::OpenSessionRequest req;
  req.set_boot_epoch(kEpoch);
  v1::OpenSessionResponse open;
  ASSERT_TRUE(node_->OpenSession("client-b", req, &open).ok());
  EXPECT_EQ(open.page_link_port(), static_cast<uint32_t>(link_->port()));
  v1::HeartbeatRequest hb;
  hb.set_boot_epoch(kEpoch);
  v1::HeartbeatResponse beat;
  ASSERT_TRUE(node_->Heartbeat("client-b", hb, &beat).ok());
  EXPECT_EQ(beat.page_link_port(), static_cast<uint32_t>(link_->port()));
}

TEST_F(PageLinkTest, AFailedRequestIsAnsweredAndTheLinkGoesOn) {
  StartLink();
  RawLink c(link_->port());
  ASSERT_TRUE(c.Hello());
  // Bytes that are no PagesRequest.
  ASSERT_TRUE(c.SendFrame(std::string("\xff\xff\xff\xff\xff", 5)));
  std::optional<v1::PagesReply> r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  // Neither store nor load.
  ASSERT_TRUE(c.Send(v1::PagesRequest()));
  r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  // A stale boot epoch: refused as a whole, as the unary call would be.
  v1::PagesRequest stale = LoadRequest(1);
  stale.mutable_load()->set_boot_epoch(kEpoch - 1);
  ASSERT_TRUE(c.Send(stale));
  r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kFailedPrecondition)) << r->message();
  // A page whose payload does not match its checksum: refused per page.
  v1::PagesRequest bad = StoreRequest(5, MakePage(5));
  bad.mutable_store()->mutable_pages(0)->set_checksum(1);
  ASSERT_TRUE(c.Send(bad));
  r = c.Read();
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->store().results_size(), 1);
  EXPECT_EQ(r->store().results(0).code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  // And the link still works.
  ASSERT_TRUE(c.Send(StoreRequest(6, MakePage(6))));
  r = c.Read();
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->store().results_size(), 1);
  EXPECT_EQ(r->store().results(0).code(), 0);
}

TEST_F(PageLinkTest, StoresNotWrittenTheWayProtobufWritesThemAreReadAsMessages) {
  // Store requests are read in place when protobuf's serializer wrote them
  // (common/store_wire.h); anything else goes to protobuf's parser, which
  // decides. Two store messages in one frame merge into one of two pages.
  StartLink();
  RawLink c(link_->port());
  ASSERT_TRUE(c.Hello());
  const std::vector<uint8_t> a = MakePage(20), b = MakePage(21);
  ASSERT_TRUE(c.SendFrame(StoreRequest(20, a).SerializeAsString() +
                          StoreRequest(21, b).SerializeAsString()));
  std::optional<v1::PagesReply> r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), 0) << r->message();
  ASSERT_EQ(r->store().results_size(), 2);
  EXPECT_EQ(r->store().results(0).code(), 0) << r->store().results(0).message();
  EXPECT_EQ(r->store().results(1).code(), 0) << r->store().results(1).message();
  for (const auto& [index, want] : {std::pair{20, a}, std::pair{21, b}}) {
    ASSERT_TRUE(c.Send(LoadRequest(index)));
    r = c.Read();
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ(r->load().results_size(), 1);
    const std::vector<uint8_t> got = Decoded(r->load().results(0).page());
    ASSERT_EQ(got.size(), kPageSize);  // it decoded, to its checksum
    EXPECT_EQ(got, want) << index;
  }
  // More pages than a batch may have: refused as a whole, whichever parser.
  v1::PagesRequest big = StoreRequest(0, a);
  for (int i = 1; i <= kMaxPagesPerBatch; ++i) {
    *big.mutable_store()->add_pages() = big.store().pages(0);
  }
  ASSERT_TRUE(c.Send(big));
  r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << r->message();
  // A page with a stale generation among good ones: refused alone, with
  // its reason, in a reply written without a message object.
  v1::PagesRequest mixed = StoreRequest(30, a);
  *mixed.mutable_store()->add_pages() = WirePage(kPool, 20, b, /*generation=*/0);
  *mixed.mutable_store()->add_pages() = WirePage(kPool, 31, b);
  mixed.mutable_store()->mutable_pages(1)->set_generation(0);
  ASSERT_TRUE(c.Send(mixed));
  r = c.Read();
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->store().results_size(), 3);
  EXPECT_EQ(r->store().results(0).code(), 0);
  EXPECT_EQ(r->store().results(1).code(),
            static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(r->store().results(1).message().find("older"), std::string::npos)
      << r->store().results(1).message();
  EXPECT_EQ(r->store().results(2).code(), 0);
}

TEST_F(PageLinkTest, ARefusedHelloGetsItsStatusAndTheLinkCloses) {
  StartLink();
  struct Case {
    std::string hello;  // a frame's body
    absl::StatusCode code;
  };
  v1::PageLinkHello bad_name;
  bad_name.set_client_id("no spaces allowed");
  const Case cases[] = {
      {v1::PageLinkHello().SerializeAsString(), absl::StatusCode::kUnauthenticated},
      {bad_name.SerializeAsString(), absl::StatusCode::kInvalidArgument},
      {std::string("\x0a\xff", 2), absl::StatusCode::kInvalidArgument},  // does not parse
  };
  for (const Case& k : cases) {
    RawLink c(link_->port());
    ASSERT_TRUE(c.SendFrame(k.hello));
    std::optional<v1::PagesReply> r = c.Read();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->code(), static_cast<int>(k.code)) << r->message();
    EXPECT_TRUE(c.AtEnd());
  }
  // Requests of a client with no session: refused, the link goes on.
  RawLink c(link_->port());
  ASSERT_TRUE(c.Hello("client-without-session"));
  ASSERT_TRUE(c.Send(LoadRequest(1)));
  std::optional<v1::PagesReply> r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kFailedPrecondition)) << r->message();
}

TEST_F(PageLinkTest, AnOverlongFrameClosesTheLinkAndOthersGoOn) {
  StartLink();
  RawLink c(link_->port());
  ASSERT_TRUE(c.Hello());
  const uint32_t huge = htonl(kMaxPageLinkFrameBytes + 1);
  ASSERT_TRUE(c.SendRaw(std::string(reinterpret_cast<const char*>(&huge), 4)));
  std::optional<v1::PagesReply> r = c.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(c.AtEnd());
  // An overlong hello too.
  RawLink h(link_->port());
  ASSERT_TRUE(h.SendRaw(std::string(reinterpret_cast<const char*>(&huge), 4)));
  r = h.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(h.AtEnd());

  RawLink d(link_->port());
  ASSERT_TRUE(d.Hello());
  ASSERT_TRUE(d.Send(StoreRequest(1, MakePage(1))));
  r = d.Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->code(), 0);
}

TEST_F(PageLinkTest, RandomFramesAreEachAnsweredAndTheServerGoesOn) {
  StartLink();
  std::mt19937_64 rng(42);
  RawLink c(link_->port());
  ASSERT_TRUE(c.Hello());
  for (int i = 0; i < 300; ++i) {
    std::string body(rng() % 4096, '\0');
    for (char& ch : body) ch = static_cast<char>(rng());
    // Now and then a valid request with its bytes flipped: deeper paths.
    if (i % 3 == 0) {
      body = StoreRequest(i, MakePage(i)).SerializeAsString();
      body[rng() % body.size()] ^= static_cast<char>(1 + rng() % 255);
    }
    ASSERT_TRUE(c.SendFrame(body));
    ASSERT_TRUE(c.Read().has_value()) << "frame " << i;
  }
  // Random hellos: each gets its refusal and the end of the link.
  for (int i = 0; i < 20; ++i) {
    std::string body(1 + rng() % 64, '\0');
    for (char& ch : body) ch = static_cast<char>(rng());
    RawLink h(link_->port());
    ASSERT_TRUE(h.SendFrame(body));
    std::optional<v1::PagesReply> r = h.Read();
    ASSERT_TRUE(r.has_value());
    EXPECT_NE(r->code(), 0);
    EXPECT_TRUE(h.AtEnd());
  }
  // The server still stores and loads.
  RawLink d(link_->port());
  ASSERT_TRUE(d.Hello());
  ASSERT_TRUE(d.Send(StoreRequest(7, MakePage(7))));
  std::optional<v1::PagesReply> r = d.Read();
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->store().results_size(), 1);
  EXPECT_EQ(r->store().results(0).code(), 0);
  ASSERT_TRUE(d.Send(LoadRequest(7)));
  r = d.Read();
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->load().results_size(), 1);
  EXPECT_EQ(r->load().results(0).status().code(), 0);
}

TEST_F(PageLinkTest, ConnectionsBeyondTheLimitAreClosed) {
  StartLink(/*max_connections=*/2);
  auto a = std::make_unique<RawLink>(link_->port());
  RawLink b(link_->port());
  ASSERT_TRUE(ConnectionsBecome(2));
  RawLink over(link_->port());
  ASSERT_TRUE(over.connected());  // accepted by the kernel, then closed
  EXPECT_TRUE(over.AtEnd());
  // Once one ends, there is room again.
  a.reset();
  ASSERT_TRUE(ConnectionsBecome(1));
  RawLink c(link_->port());
  ASSERT_TRUE(c.Hello());
  ASSERT_TRUE(c.Send(LoadRequest(1)));
  EXPECT_TRUE(c.Read().has_value());
}

TEST_F(PageLinkTest, ShutdownEndsOpenLinks) {
  StartLink();
  RawLink idle(link_->port());
  ASSERT_TRUE(idle.Hello());
  RawLink silent(link_->port());  // not even a hello yet
  ASSERT_TRUE(ConnectionsBecome(2));
  link_->Shutdown();
  EXPECT_TRUE(idle.AtEnd());
  EXPECT_TRUE(silent.AtEnd());
  EXPECT_EQ(link_->connections(), 0);
  RawLink late(link_->port());
  EXPECT_FALSE(late.connected());
}

TEST_F(PageLinkTest, StartRefusesABadPortOrATakenOne) {
  EXPECT_FALSE(PageLink::Start(node_.get(), "127.0.0.1", 70000, 8).ok());
  StartLink();
  absl::StatusOr<std::unique_ptr<PageLink>> again =
      PageLink::Start(node_.get(), "127.0.0.1", link_->port(), 8);
  EXPECT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable) << again.status();
}

}  // namespace
}  // namespace ramster
