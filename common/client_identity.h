// How a client's identity reaches a node.
//
// Today (trusted deployments: loopback, or a private network the operator
// trusts) the client's configured name travels in the call metadata under
// kClientIdMetadataKey and the node believes it. With mutual TLS the node
// takes the name from the peer certificate instead (grpc::AuthContext) and
// ignores the metadata; no message field ever names the client.
#ifndef RAMSTER_COMMON_CLIENT_IDENTITY_H_
#define RAMSTER_COMMON_CLIENT_IDENTITY_H_

#include <cstddef>

namespace ramster {

inline constexpr char kClientIdMetadataKey[] = "ramster-client-id";
// Longest accepted client name; longer ones are rejected.
inline constexpr size_t kMaxClientIdLength = 128;

}  // namespace ramster

#endif  // RAMSTER_COMMON_CLIENT_IDENTITY_H_
