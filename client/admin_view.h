// How ramsterctl shows the answers of a set of nodes: a table for people and
// JSON for scripts. Pure functions of the replies, so tests can check the
// exact text.
//
// Every node asked appears in the output, whether or not it answered: in
// tables as a row (state "down" for status and clients, the error code for
// the mutating commands) followed by a note with the full error; in JSON as
// an object with "address", "error_code" and "error", plus "up": false for
// status and clients or "ok": false for the mutating commands.
//
// JSON documents all have the shape {"nodes": [ {...}, ... ]}, one object per
// node in the order asked; byte counts and counters are JSON numbers.
#ifndef RAMSTER_CLIENT_ADMIN_VIEW_H_
#define RAMSTER_CLIENT_ADMIN_VIEW_H_

#include <string>
#include <vector>

#include "client/admin_reply.h"
#include "ramster/v1/admin.pb.h"

namespace ramster::admin {

// `status`: one row per node (node id, address, up/down/draining, RAM and
// disk used/limit, pages in RAM and on disk, compression ratio, clients).
// JSON: every NodeStatus field; "address" is the address dialed and
// "reported_address" what the node reported.
std::string FormatTable(const std::vector<NodeReply<v1::NodeStatus>>& nodes);
std::string FormatJson(const std::vector<NodeReply<v1::NodeStatus>>& nodes);

// `clients`: one row per client per node (epoch, pages, bytes, quota, lease).
std::string FormatTable(
    const std::vector<NodeReply<v1::ListClientsResponse>>& nodes);
std::string FormatJson(
    const std::vector<NodeReply<v1::ListClientsResponse>>& nodes);

// `quota set`: the client's usage and new quota on each node.
std::string FormatTable(
    const std::vector<NodeReply<v1::SetClientQuotaResponse>>& nodes);
std::string FormatJson(
    const std::vector<NodeReply<v1::SetClientQuotaResponse>>& nodes);

// `memory-limit set`: new limit, RAM used, pages written back, ephemeral
// pages dropped, and how far RAM is still over the new limit.
std::string FormatTable(
    const std::vector<NodeReply<v1::SetMemoryLimitResponse>>& nodes);
std::string FormatJson(
    const std::vector<NodeReply<v1::SetMemoryLimitResponse>>& nodes);

// `drain` / `undrain`: whether each node is now draining.
std::string FormatTable(const std::vector<NodeReply<v1::DrainResponse>>& nodes);
std::string FormatJson(const std::vector<NodeReply<v1::DrainResponse>>& nodes);

}  // namespace ramster::admin

#endif  // RAMSTER_CLIENT_ADMIN_VIEW_H_
