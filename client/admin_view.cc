#include "client/admin_view.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/admin_json.h"
#include "common/byte_size.h"

namespace ramster::admin {
namespace {

// ---- Tables --------------------------------------------------------------

enum class Align { kLeft, kRight };

struct Column {
  std::string header;
  Align align;
};

// Text for a terminal: control characters (which could move the cursor or
// recolor the screen when a node id or an error message holds them) become
// \xNN escapes. An empty cell shows as "-".
std::string Cell(absl::string_view text) {
  if (text.empty()) return "-";
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) {
      out += absl::StrFormat("\\x%02x", byte);
    } else {
      out += c;
    }
  }
  return out;
}

// Columns on a terminal: one per code point (no wide characters expected in
// node ids and addresses).
size_t DisplayWidth(absl::string_view text) {
  return std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  });
}

// Aligned columns separated by two spaces; no trailing blanks.
class Table {
 public:
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

  // REQUIRES: cells.size() == number of columns; cells already passed
  // through Cell() where they come from the network.
  void AddRow(std::vector<std::string> cells) {
    rows_.push_back(std::move(cells));
  }

  std::string Render() const {
    std::vector<size_t> widths;
    for (const Column& c : columns_) widths.push_back(DisplayWidth(c.header));
    for (const std::vector<std::string>& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) {
        widths[i] = std::max(widths[i], DisplayWidth(row[i]));
      }
    }
    std::string out;
    auto render_line = [&](const std::vector<std::string>& cells) {
      std::string line;
      for (size_t i = 0; i < cells.size(); ++i) {
        if (i > 0) line += "  ";
        const std::string padding(widths[i] - DisplayWidth(cells[i]), ' ');
        if (columns_[i].align == Align::kRight) {
          absl::StrAppend(&line, padding, cells[i]);
        } else {
          absl::StrAppend(&line, cells[i], padding);
        }
      }
      line.erase(line.find_last_not_of(' ') + 1);
      absl::StrAppend(&out, line, "\n");
    };
    std::vector<std::string> headers;
    for (const Column& c : columns_) headers.push_back(c.header);
    render_line(headers);
    for (const std::vector<std::string>& row : rows_) render_line(row);
    return out;
  }

 private:
  const std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// The table, then a blank line and one line per note (if any).
std::string WithNotes(const Table& table,
                      const std::vector<std::string>& notes) {
  std::string out = table.Render();
  if (!notes.empty()) out += "\n";
  for (const std::string& note : notes) absl::StrAppend(&out, note, "\n");
  return out;
}

std::string Count(uint64_t n) { return absl::StrCat(n); }

std::string Bytes(uint64_t n) { return FormatBytes(n); }

std::string UsedOfLimit(uint64_t used, uint64_t limit) {
  return absl::StrCat(FormatBytes(used), " / ", FormatBytes(limit));
}

std::string Ratio(double ratio) {
  // A node with nothing stored has no meaningful ratio.
  if (!(ratio > 0) || !std::isfinite(ratio)) return "-";
  return absl::StrFormat("%.2f", ratio);
}

std::string Lease(uint64_t remaining_ms) {
  if (remaining_ms == 0) return "expired";
  return absl::FormatDuration(
      absl::Milliseconds(static_cast<int64_t>(remaining_ms)));
}

// "ok", or the error's code name ("UNAVAILABLE"), for the RESULT column.
template <typename Reply>
std::string Result(const NodeReply<Reply>& node) {
  return node.reply.ok() ? "ok"
                         : absl::StatusCodeToString(node.reply.status().code());
}

// "127.0.0.1:1 is down: UNAVAILABLE: ..."
template <typename Reply>
std::string ErrorNote(const NodeReply<Reply>& node, absl::string_view what) {
  return absl::StrCat(Cell(node.address), " ", what, ": ",
                      Cell(node.reply.status().ToString()));
}

// ---- JSON ----------------------------------------------------------------

void WriteUint(JsonWriter& w, absl::string_view key, uint64_t value) {
  w.Key(key);
  w.Uint(value);
}

void WriteString(JsonWriter& w, absl::string_view key,
                 absl::string_view value) {
  w.Key(key);
  w.String(value);
}

void WriteBool(JsonWriter& w, absl::string_view key, bool value) {
  w.Key(key);
  w.Bool(value);
}

void WriteClientUsage(JsonWriter& w, const v1::ClientUsage& c) {
  w.BeginObject();
  WriteString(w, "client_id", c.client_id());
  WriteUint(w, "boot_epoch", c.boot_epoch());
  WriteUint(w, "pages_in_ram", c.pages_in_ram());
  WriteUint(w, "pages_on_disk", c.pages_on_disk());
  WriteUint(w, "ram_bytes", c.ram_bytes());
  WriteUint(w, "disk_bytes", c.disk_bytes());
  WriteUint(w, "quota_bytes", c.quota_bytes());
  WriteUint(w, "lease_remaining_ms", c.lease_remaining_ms());
  w.EndObject();
}

void WriteClients(JsonWriter& w,
                  const google::protobuf::RepeatedPtrField<v1::ClientUsage>&
                      clients) {
  w.Key("clients");
  w.BeginArray();
  for (const v1::ClientUsage& c : clients) WriteClientUsage(w, c);
  w.EndArray();
}

// {"nodes": [...]} with one object per node: "address", then `ok_key`
// ("up" or "ok") as a bool, then either what `write_reply` adds or
// "error_code" and "error".
template <typename Reply, typename WriteReply>
std::string JsonDocument(const std::vector<NodeReply<Reply>>& nodes,
                         absl::string_view ok_key, WriteReply write_reply) {
  JsonWriter w;
  w.BeginObject();
  w.Key("nodes");
  w.BeginArray();
  for (const NodeReply<Reply>& node : nodes) {
    w.BeginObject();
    WriteString(w, "address", node.address);
    WriteBool(w, ok_key, node.reply.ok());
    if (node.reply.ok()) {
      write_reply(w, *node.reply);
    } else {
      const absl::Status& status = node.reply.status();
      WriteString(w, "error_code", absl::StatusCodeToString(status.code()));
      WriteString(w, "error", status.ToString());
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return std::move(w).Finish();
}

}  // namespace

// ---- status --------------------------------------------------------------

std::string FormatTable(const std::vector<NodeReply<v1::NodeStatus>>& nodes) {
  Table table({
      {"NODE", Align::kLeft},
      {"ADDRESS", Align::kLeft},
      {"STATE", Align::kLeft},
      {"RAM USED / LIMIT", Align::kRight},
      {"DISK USED / LIMIT", Align::kRight},
      {"PAGES RAM", Align::kRight},
      {"PAGES DISK", Align::kRight},
      {"RATIO", Align::kRight},
      {"CLIENTS", Align::kRight},
  });
  std::vector<std::string> notes;
  for (const NodeReply<v1::NodeStatus>& node : nodes) {
    if (!node.reply.ok()) {
      table.AddRow(
          {"-", Cell(node.address), "down", "-", "-", "-", "-", "-", "-"});
      notes.push_back(ErrorNote(node, "is down"));
      continue;
    }
    const v1::NodeStatus& s = *node.reply;
    table.AddRow({
        Cell(s.node_id()),
        Cell(node.address),
        s.draining() ? "draining" : "up",
        UsedOfLimit(s.ram_used_bytes(), s.ram_limit_bytes()),
        UsedOfLimit(s.disk_used_bytes(), s.disk_limit_bytes()),
        Count(s.pages_in_ram()),
        Count(s.pages_on_disk()),
        Ratio(s.compression_ratio()),
        Count(s.clients_size()),
    });
    if (s.ram_over_limit_bytes() > 0) {
      notes.push_back(absl::StrCat(Cell(node.address), " holds ",
                                   Bytes(s.ram_over_limit_bytes()),
                                   " of RAM beyond its limit"));
    }
  }
  return WithNotes(table, notes);
}

std::string FormatJson(const std::vector<NodeReply<v1::NodeStatus>>& nodes) {
  return JsonDocument(nodes, "up", [](JsonWriter& w, const v1::NodeStatus& s) {
    WriteString(w, "node_id", s.node_id());
    WriteString(w, "reported_address", s.address());
    WriteBool(w, "draining", s.draining());
    WriteUint(w, "ram_used_bytes", s.ram_used_bytes());
    WriteUint(w, "ram_limit_bytes", s.ram_limit_bytes());
    WriteUint(w, "ram_over_limit_bytes", s.ram_over_limit_bytes());
    WriteUint(w, "disk_used_bytes", s.disk_used_bytes());
    WriteUint(w, "disk_limit_bytes", s.disk_limit_bytes());
    WriteUint(w, "pages_in_ram", s.pages_in_ram());
    WriteUint(w, "pages_on_disk", s.pages_on_disk());
    WriteUint(w, "logical_bytes", s.logical_bytes());
    WriteUint(w, "payload_bytes", s.payload_bytes());
    WriteUint(w, "index_bytes", s.index_bytes());
    WriteUint(w, "slab_cached_bytes", s.slab_cached_bytes());
    WriteUint(w, "recompress_one_in", s.recompress_one_in());
    w.Key("compression_ratio");
    w.Double(s.compression_ratio());
    WriteUint(w, "uptime_ms", s.uptime_ms());
    w.Key("ops");
    w.BeginObject();
    const v1::OpCounters& ops = s.ops();
    WriteUint(w, "stores", ops.stores());
    WriteUint(w, "stores_refused", ops.stores_refused());
    WriteUint(w, "loads", ops.loads());
    WriteUint(w, "load_misses", ops.load_misses());
    WriteUint(w, "invalidates", ops.invalidates());
    WriteUint(w, "pages_written_back", ops.pages_written_back());
    WriteUint(w, "ephemeral_dropped", ops.ephemeral_dropped());
    WriteUint(w, "requests_rejected", ops.requests_rejected());
    WriteUint(w, "pages_recompressed", ops.pages_recompressed());
    WriteUint(w, "recompressed_bytes_saved", ops.recompressed_bytes_saved());
    WriteUint(w, "pages_recompress_tried", ops.pages_recompress_tried());
    WriteUint(w, "recompress_tried_bytes", ops.recompress_tried_bytes());
    WriteUint(w, "pages_recompress_passed_over", ops.pages_recompress_passed_over());
    w.EndObject();
    WriteClients(w, s.clients());
  });
}

// ---- clients -------------------------------------------------------------

std::string FormatTable(
    const std::vector<NodeReply<v1::ListClientsResponse>>& nodes) {
  Table table({
      {"ADDRESS", Align::kLeft},
      {"CLIENT", Align::kLeft},
      {"EPOCH", Align::kRight},
      {"PAGES RAM", Align::kRight},
      {"PAGES DISK", Align::kRight},
      {"RAM", Align::kRight},
      {"DISK", Align::kRight},
      {"QUOTA", Align::kRight},
      {"LEASE", Align::kRight},
  });
  std::vector<std::string> notes;
  for (const NodeReply<v1::ListClientsResponse>& node : nodes) {
    // Every node gets at least one row, so that one with no clients is not
    // mistaken for one that was not asked.
    if (!node.reply.ok()) {
      table.AddRow({Cell(node.address), "(down)", "-", "-", "-", "-", "-", "-",
                    "-"});
      notes.push_back(ErrorNote(node, "is down"));
      continue;
    }
    if (node.reply->clients().empty()) {
      table.AddRow({Cell(node.address), "(none)", "-", "-", "-", "-", "-", "-",
                    "-"});
      continue;
    }
    for (const v1::ClientUsage& c : node.reply->clients()) {
      table.AddRow({
          Cell(node.address),
          Cell(c.client_id()),
          Count(c.boot_epoch()),
          Count(c.pages_in_ram()),
          Count(c.pages_on_disk()),
          Bytes(c.ram_bytes()),
          Bytes(c.disk_bytes()),
          Bytes(c.quota_bytes()),
          Lease(c.lease_remaining_ms()),
      });
    }
  }
  return WithNotes(table, notes);
}

std::string FormatJson(
    const std::vector<NodeReply<v1::ListClientsResponse>>& nodes) {
  return JsonDocument(nodes, "up",
                      [](JsonWriter& w, const v1::ListClientsResponse& r) {
                        WriteClients(w, r.clients());
                      });
}

// ---- quota set -----------------------------------------------------------

std::string FormatTable(
    const std::vector<NodeReply<v1::SetClientQuotaResponse>>& nodes) {
  Table table({
      {"ADDRESS", Align::kLeft},
      {"RESULT", Align::kLeft},
      {"CLIENT", Align::kLeft},
      {"QUOTA", Align::kRight},
      {"PAGES RAM", Align::kRight},
      {"PAGES DISK", Align::kRight},
      {"RAM", Align::kRight},
      {"DISK", Align::kRight},
  });
  std::vector<std::string> notes;
  for (const NodeReply<v1::SetClientQuotaResponse>& node : nodes) {
    if (!node.reply.ok()) {
      table.AddRow(
          {Cell(node.address), Result(node), "-", "-", "-", "-", "-", "-"});
      notes.push_back(ErrorNote(node, "failed"));
      continue;
    }
    const v1::ClientUsage& c = node.reply->client();
    table.AddRow({
        Cell(node.address),
        Result(node),
        Cell(c.client_id()),
        Bytes(c.quota_bytes()),
        Count(c.pages_in_ram()),
        Count(c.pages_on_disk()),
        Bytes(c.ram_bytes()),
        Bytes(c.disk_bytes()),
    });
  }
  return WithNotes(table, notes);
}

std::string FormatJson(
    const std::vector<NodeReply<v1::SetClientQuotaResponse>>& nodes) {
  return JsonDocument(nodes, "ok",
                      [](JsonWriter& w, const v1::SetClientQuotaResponse& r) {
                        w.Key("client");
                        WriteClientUsage(w, r.client());
                      });
}

// ---- memory-limit set ----------------------------------------------------

std::string FormatTable(
    const std::vector<NodeReply<v1::SetMemoryLimitResponse>>& nodes) {
  Table table({
      {"ADDRESS", Align::kLeft},
      {"RESULT", Align::kLeft},
      {"RAM LIMIT", Align::kRight},
      {"RAM USED", Align::kRight},
      {"PAGES WRITTEN BACK", Align::kRight},
      {"EPHEMERAL DROPPED", Align::kRight},
      {"OVER LIMIT", Align::kRight},
  });
  std::vector<std::string> notes;
  for (const NodeReply<v1::SetMemoryLimitResponse>& node : nodes) {
    if (!node.reply.ok()) {
      table.AddRow({Cell(node.address), Result(node), "-", "-", "-", "-", "-"});
      notes.push_back(ErrorNote(node, "failed"));
      continue;
    }
    const v1::SetMemoryLimitResponse& r = *node.reply;
    table.AddRow({
        Cell(node.address),
        Result(node),
        Bytes(r.ram_limit_bytes()),
        Bytes(r.ram_used_bytes()),
        Count(r.pages_written_back()),
        Count(r.ephemeral_dropped()),
        Bytes(r.ram_over_limit_bytes()),
    });
    if (r.ram_over_limit_bytes() > 0) {
      notes.push_back(absl::StrCat(
          Cell(node.address), " is still ", Bytes(r.ram_over_limit_bytes()),
          " over the new limit: those pages could not be moved to disk"));
    }
  }
  return WithNotes(table, notes);
}

std::string FormatJson(
    const std::vector<NodeReply<v1::SetMemoryLimitResponse>>& nodes) {
  return JsonDocument(nodes, "ok",
                      [](JsonWriter& w, const v1::SetMemoryLimitResponse& r) {
                        WriteUint(w, "ram_limit_bytes", r.ram_limit_bytes());
                        WriteUint(w, "ram_used_bytes", r.ram_used_bytes());
                        WriteUint(w, "pages_written_back",
                                  r.pages_written_back());
                        WriteUint(w, "ephemeral_dropped",
                                  r.ephemeral_dropped());
                        WriteUint(w, "ram_over_limit_bytes",
                                  r.ram_over_limit_bytes());
                      });
}

// ---- drain / undrain -----------------------------------------------------

std::string FormatTable(
    const std::vector<NodeReply<v1::DrainResponse>>& nodes) {
  Table table({
      {"ADDRESS", Align::kLeft},
      {"RESULT", Align::kLeft},
      {"DRAINING", Align::kLeft},
  });
  std::vector<std::string> notes;
  for (const NodeReply<v1::DrainResponse>& node : nodes) {
    if (!node.reply.ok()) {
      table.AddRow({Cell(node.address), Result(node), "-"});
      notes.push_back(ErrorNote(node, "failed"));
      continue;
    }
    table.AddRow(
        {Cell(node.address), Result(node), node.reply->draining() ? "yes" : "no"});
  }
  return WithNotes(table, notes);
}

std::string FormatJson(const std::vector<NodeReply<v1::DrainResponse>>& nodes) {
  return JsonDocument(nodes, "ok", [](JsonWriter& w, const v1::DrainResponse& r) {
    WriteBool(w, "draining", r.draining());
  });
}

}  // namespace ramster::admin
