// What one node answered to one admin call. ramsterctl asks every --server
// the same question and formats the list of answers (client/admin_view.h).
#ifndef RAMSTER_CLIENT_ADMIN_REPLY_H_
#define RAMSTER_CLIENT_ADMIN_REPLY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ramster::admin {

template <typename Reply>
struct NodeReply {
  // The address as given on the command line (not what the node calls
  // itself): the one thing known about a node that did not answer.
  std::string address;
  // The reply, or why there is none (a deadline, a refused connection, an
  // error from the node).
  absl::StatusOr<Reply> reply;
};

template <typename Reply>
bool AllOk(const std::vector<NodeReply<Reply>>& replies) {
  for (const NodeReply<Reply>& r : replies) {
    if (!r.reply.ok()) return false;
  }
  return true;
}

}  // namespace ramster::admin

#endif  // RAMSTER_CLIENT_ADMIN_REPLY_H_
