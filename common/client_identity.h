// How a client's identity reaches a node.
//
// Today (trusted deployments: loopback, or a private network the operator
// trusts) the client's configured name travels in the call metadata under
// kClientIdMetadataKey, or in a page link's hello (server/page_link.h), and
// the node believes it. With mutual TLS the node takes the name from the
// peer certificate instead (grpc::AuthContext) and ignores the metadata; no
// request or reply field ever names the client.
#ifndef RAMSTER_COMMON_CLIENT_IDENTITY_H_
#define RAMSTER_COMMON_CLIENT_IDENTITY_H_

#include <cstddef>

#include "absl/strings/ascii.h"
#include "absl/strings/string_view.h"

namespace ramster {

inline constexpr char kClientIdMetadataKey[] = "ramster-client-id";
// Longest accepted client name; longer ones are rejected.
inline constexpr size_t kMaxClientIdLength = 128;

// 1..kMaxClientIdLength characters of [A-Za-z0-9._:@-].
inline bool IsValidClientId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxClientIdLength) return false;
  for (char ch : id) {
    if (!absl::ascii_isalnum(ch) && ch != '.' && ch != '-' && ch != '_' && ch != ':' &&
        ch != '@') {
      return false;
    }
  }
  return true;
}

}  // namespace ramster

#endif  // RAMSTER_COMMON_CLIENT_IDENTITY_H_
