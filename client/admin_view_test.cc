#include "client/admin_view.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ramster::admin {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = 1 << 20;

// n1: an ordinary up node with one client.
v1::NodeStatus UpNode() {
  v1::NodeStatus s;
  s.set_node_id("n1");
  s.set_address("10.0.0.1:7070");
  s.set_ram_limit_bytes(64 * kMiB);
  s.set_ram_used_bytes(12 * kMiB);
  s.set_disk_limit_bytes(1024 * kMiB);
  s.set_disk_used_bytes(8192);
  s.set_pages_in_ram(6144);
  s.set_pages_on_disk(2);
  s.set_logical_bytes(25174016);
  s.set_payload_bytes(10069606);
  s.set_index_bytes(24576);
  s.set_slab_cached_bytes(8192);
  s.set_recompress_one_in(2);
  s.set_compression_ratio(2.5);
  s.set_uptime_ms(3600000);
  v1::OpCounters* ops = s.mutable_ops();
  ops->set_stores(7000);
  ops->set_stores_refused(3);
  ops->set_loads(500);
  ops->set_load_misses(4);
  ops->set_invalidates(12);
  ops->set_pages_written_back(2);
  ops->set_ephemeral_dropped(0);
  ops->set_requests_rejected(1);
  ops->set_pages_recompressed(5000);
  ops->set_recompressed_bytes_saved(1536000);
  ops->set_pages_recompress_tried(5200);
  ops->set_recompress_tried_bytes(10649600);
  ops->set_pages_recompress_passed_over(64);
  v1::ClientUsage* c = s.add_clients();
  c->set_client_id("host-a");
  c->set_boot_epoch(3);
  c->set_pages_in_ram(6144);
  c->set_pages_on_disk(2);
  c->set_ram_bytes(12 * kMiB);
  c->set_disk_bytes(8192);
  c->set_quota_bytes(32 * kMiB);
  c->set_lease_remaining_ms(29500);
  return s;
}

// n2: draining, empty, and over its RAM limit after a lowering.
v1::NodeStatus DrainingNode() {
  v1::NodeStatus s;
  s.set_node_id("n2");
  s.set_ram_limit_bytes(64 * kMiB);
  s.set_ram_used_bytes(70 * kMiB);
  s.set_ram_over_limit_bytes(6 * kMiB);
  s.set_draining(true);
  return s;
}

TEST(StatusTableTest, OneRowPerNodeWithDownNodesAndNotes) {
  const std::vector<NodeReply<v1::NodeStatus>> nodes = {
      {"127.0.0.1:7070", UpNode()},
      {"127.0.0.1:7071", DrainingNode()},
      {"127.0.0.1:1", absl::UnavailableError("connection refused")},
  };
  EXPECT_EQ(FormatTable(nodes),
            R"(NODE  ADDRESS         STATE        RAM USED / LIMIT  DISK USED / LIMIT  PAGES RAM  PAGES DISK  RATIO  CLIENTS
n1    127.0.0.1:7070  up        12.0 MiB / 64.0 MiB  8.0 KiB / 1.0 GiB       6144           2   2.50        1
n2    127.0.0.1:7071  draining  70.0 MiB / 64.0 MiB          0 B / 0 B          0           0      -        0
-     127.0.0.1:1     down                        -                  -          -           -      -        -

127.0.0.1:7071 holds 6.0 MiB of RAM beyond its limit
127.0.0.1:1 is down: UNAVAILABLE: connection refused
)");
}

TEST(StatusTableTest, ControlCharactersFromTheNetworkAreEscaped) {
  v1::NodeStatus s = UpNode();
  s.set_node_id("evil\x1b[2J\nid");
  const std::vector<NodeReply<v1::NodeStatus>> nodes = {
      {"127.0.0.1:7070", s},
      {"127.0.0.1:1", absl::UnavailableError("two\nlines")},
  };
  const std::string table = FormatTable(nodes);
  EXPECT_THAT(table, HasSubstr("evil\\x1b[2J\\x0aid  127.0.0.1:7070  up"));
  EXPECT_THAT(table, HasSubstr("UNAVAILABLE: two\\x0alines\n"));
  EXPECT_THAT(table, Not(HasSubstr("\x1b")));
}

TEST(StatusJsonTest, ExactDocumentWithEscapingAndADownNode) {
  v1::NodeStatus s = UpNode();
  // A quote, a backslash, a newline, a control character and a non-ASCII
  // letter.
  s.set_node_id("n\"1\\\n\x01\xC3\xA9");
  const std::vector<NodeReply<v1::NodeStatus>> nodes = {
      {"127.0.0.1:7070", s},
      {"127.0.0.1:1", absl::UnavailableError("connection \"refused\"")},
  };
  EXPECT_EQ(FormatJson(nodes), R"({
  "nodes": [
    {
      "address": "127.0.0.1:7070",
      "up": true,
      "node_id": "n\"1\\\n\u0001)"
                               "\xC3\xA9"
                               R"(",
      "reported_address": "10.0.0.1:7070",
      "draining": false,
      "ram_used_bytes": 12582912,
      "ram_limit_bytes": 67108864,
      "ram_over_limit_bytes": 0,
      "disk_used_bytes": 8192,
      "disk_limit_bytes": 1073741824,
      "pages_in_ram": 6144,
      "pages_on_disk": 2,
      "logical_bytes": 25174016,
      "payload_bytes": 10069606,
      "index_bytes": 24576,
      "slab_cached_bytes": 8192,
      "recompress_one_in": 2,
      "compression_ratio": 2.5,
      "uptime_ms": 3600000,
      "ops": {
        "stores": 7000,
        "stores_refused": 3,
        "loads": 500,
        "load_misses": 4,
        "invalidates": 12,
        "pages_written_back": 2,
        "ephemeral_dropped": 0,
        "requests_rejected": 1,
        "pages_recompressed": 5000,
        "recompressed_bytes_saved": 1536000,
        "pages_recompress_tried": 5200,
        "recompress_tried_bytes": 10649600,
        "pages_recompress_passed_over": 64
      },
      "clients": [
        {
          "client_id": "host-a",
          "boot_epoch": 3,
          "pages_in_ram": 6144,
          "pages_on_disk": 2,
          "ram_bytes": 12582912,
          "disk_bytes": 8192,
          "quota_bytes": 33554432,
          "lease_remaining_ms": 29500
        }
      ]
    },
    {
      "address": "127.0.0.1:1",
      "up": false,
      "error_code": "UNAVAILABLE",
      "error": "UNAVAILABLE: connection \"refused\""
    }
  ]
}
)");
}

TEST(StatusJsonTest, LargeCountersStayNumbers) {
  v1::NodeStatus s;
  s.set_ram_limit_bytes(18446744073709551615u);
  const std::string json = FormatJson({{"a", s}});
  EXPECT_THAT(json, HasSubstr(R"("ram_limit_bytes": 18446744073709551615,)"));
  EXPECT_THAT(json, HasSubstr(R"("clients": [])"));
}

TEST(StatusJsonTest, NoNodes) {
  EXPECT_EQ(FormatJson(std::vector<NodeReply<v1::NodeStatus>>{}),
            "{\n  \"nodes\": []\n}\n");
}

v1::ListClientsResponse TwoClients() {
  v1::ListClientsResponse r;
  *r.add_clients() = UpNode().clients(0);
  v1::ClientUsage* b = r.add_clients();
  b->set_client_id("host-b");
  b->set_boot_epoch(1);
  b->set_quota_bytes(16 * kMiB);
  return r;
}

TEST(ClientsTableTest, EveryNodeHasARow) {
  const std::vector<NodeReply<v1::ListClientsResponse>> nodes = {
      {"127.0.0.1:7070", TwoClients()},
      {"127.0.0.1:7071", v1::ListClientsResponse()},
      {"127.0.0.1:1", absl::UnavailableError("connection refused")},
  };
  EXPECT_EQ(FormatTable(nodes),
            R"(ADDRESS         CLIENT  EPOCH  PAGES RAM  PAGES DISK       RAM     DISK     QUOTA    LEASE
127.0.0.1:7070  host-a      3       6144           2  12.0 MiB  8.0 KiB  32.0 MiB    29.5s
127.0.0.1:7070  host-b      1          0           0       0 B      0 B  16.0 MiB  expired
127.0.0.1:7071  (none)      -          -           -         -        -         -        -
127.0.0.1:1     (down)      -          -           -         -        -         -        -

127.0.0.1:1 is down: UNAVAILABLE: connection refused
)");
}

TEST(ClientsJsonTest, ClientsPerNode) {
  const std::vector<NodeReply<v1::ListClientsResponse>> nodes = {
      {"127.0.0.1:7071", v1::ListClientsResponse()},
      {"127.0.0.1:1", absl::DeadlineExceededError("Deadline Exceeded")},
  };
  EXPECT_EQ(FormatJson(nodes), R"({
  "nodes": [
    {
      "address": "127.0.0.1:7071",
      "up": true,
      "clients": []
    },
    {
      "address": "127.0.0.1:1",
      "up": false,
      "error_code": "DEADLINE_EXCEEDED",
      "error": "DEADLINE_EXCEEDED: Deadline Exceeded"
    }
  ]
}
)");
}

TEST(QuotaViewTest, TableAndJson) {
  v1::SetClientQuotaResponse reply;
  *reply.mutable_client() = UpNode().clients(0);
  const std::vector<NodeReply<v1::SetClientQuotaResponse>> nodes = {
      {"127.0.0.1:7070", reply},
      {"127.0.0.1:7071", absl::NotFoundError("no client host-a")},
  };
  EXPECT_EQ(FormatTable(nodes),
            R"(ADDRESS         RESULT     CLIENT     QUOTA  PAGES RAM  PAGES DISK       RAM     DISK
127.0.0.1:7070  ok         host-a  32.0 MiB       6144           2  12.0 MiB  8.0 KiB
127.0.0.1:7071  NOT_FOUND  -              -          -           -         -        -

127.0.0.1:7071 failed: NOT_FOUND: no client host-a
)");
  const std::string json = FormatJson(nodes);
  EXPECT_THAT(json, HasSubstr(R"("ok": true,
      "client": {
        "client_id": "host-a",)"));
  EXPECT_THAT(json, HasSubstr(R"("quota_bytes": 33554432,)"));
  EXPECT_THAT(json, HasSubstr(R"("ok": false,
      "error_code": "NOT_FOUND",)"));
}

TEST(MemoryLimitViewTest, TableShowsTheReplyAndWhatIsStillOver) {
  v1::SetMemoryLimitResponse reply;
  reply.set_ram_limit_bytes(32 * kMiB);
  reply.set_ram_used_bytes(40 * kMiB);
  reply.set_pages_written_back(100);
  reply.set_ephemeral_dropped(7);
  reply.set_ram_over_limit_bytes(8 * kMiB);
  const std::vector<NodeReply<v1::SetMemoryLimitResponse>> nodes = {
      {"127.0.0.1:7070", reply},
      {"127.0.0.1:7071", absl::DeadlineExceededError("Deadline Exceeded")},
  };
  EXPECT_EQ(FormatTable(nodes),
            R"(ADDRESS         RESULT             RAM LIMIT  RAM USED  PAGES WRITTEN BACK  EPHEMERAL DROPPED  OVER LIMIT
127.0.0.1:7070  ok                  32.0 MiB  40.0 MiB                 100                  7     8.0 MiB
127.0.0.1:7071  DEADLINE_EXCEEDED          -         -                   -                  -           -

127.0.0.1:7070 is still 8.0 MiB over the new limit: those pages could not be moved to disk
127.0.0.1:7071 failed: DEADLINE_EXCEEDED: Deadline Exceeded
)");
  EXPECT_EQ(FormatJson({nodes[0]}), R"({
  "nodes": [
    {
      "address": "127.0.0.1:7070",
      "ok": true,
      "ram_limit_bytes": 33554432,
      "ram_used_bytes": 41943040,
      "pages_written_back": 100,
      "ephemeral_dropped": 7,
      "ram_over_limit_bytes": 8388608
    }
  ]
}
)");
}

TEST(DrainViewTest, TableAndJson) {
  v1::DrainResponse draining;
  draining.set_draining(true);
  const std::vector<NodeReply<v1::DrainResponse>> nodes = {
      {"127.0.0.1:7070", draining},
      {"127.0.0.1:7071", v1::DrainResponse()},
  };
  EXPECT_EQ(FormatTable(nodes), R"(ADDRESS         RESULT  DRAINING
127.0.0.1:7070  ok      yes
127.0.0.1:7071  ok      no
)");
  EXPECT_EQ(FormatJson(nodes), R"({
  "nodes": [
    {
      "address": "127.0.0.1:7070",
      "ok": true,
      "draining": true
    },
    {
      "address": "127.0.0.1:7071",
      "ok": true,
      "draining": false
    }
  ]
}
)");
}

}  // namespace
}  // namespace ramster::admin
