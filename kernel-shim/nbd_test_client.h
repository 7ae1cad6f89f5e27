// NbdTestClient: the client half of the NBD protocol, byte by byte, for the
// server's tests and fuzzer. It can speak correctly (Handshake, Read,
// Write, ...) or send whatever bytes a test wants (SendBytes) and check what
// comes back, which is the point: real clients never send malformed input.
//
// Every receive has a timeout (10 s), so a server that fails to answer fails
// the test instead of hanging it.
//
// Thread safety: none; one thread per client.
#ifndef RAMSTER_KERNEL_SHIM_NBD_TEST_CLIENT_H_
#define RAMSTER_KERNEL_SHIM_NBD_TEST_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kernel-shim/nbd_protocol.h"

namespace ramster {

class NbdTestClient {
 public:
  static absl::StatusOr<std::unique_ptr<NbdTestClient>> ConnectUnix(const std::string& path);
  static absl::StatusOr<std::unique_ptr<NbdTestClient>> ConnectTcp(const std::string& host,
                                                                    int port);
  // Takes ownership of a connected stream socket.
  explicit NbdTestClient(int fd);
  ~NbdTestClient();
  NbdTestClient(const NbdTestClient&) = delete;
  NbdTestClient& operator=(const NbdTestClient&) = delete;

  int fd() const { return fd_; }

  // Reads the greeting (checking it) and sends the client flags.
  absl::Status Greet(bool no_zeroes = true);
  // Greet, then NBD_OPT_GO (or NBD_OPT_EXPORT_NAME) for `name`; afterwards
  // export_size() and transmission_flags() are the server's answer.
  absl::Status Handshake(absl::string_view name = "ramster", bool use_go = true,
                         bool no_zeroes = true);

  // Options: sends one, reads one reply (header and data).
  absl::Status SendOption(uint32_t option, absl::Span<const uint8_t> data);
  absl::StatusOr<nbd::OptionReplyHeader> RecvOptionReply(std::vector<uint8_t>* data);

  // Transmission, one request at a time. Each returns the reply's NBD error
  // (0 for success) or a status when the exchange itself failed.
  absl::StatusOr<uint32_t> Write(uint64_t offset, absl::Span<const uint8_t> data,
                                 uint16_t flags = 0);
  absl::StatusOr<uint32_t> Read(uint64_t offset, uint32_t length, std::vector<uint8_t>* out,
                                uint16_t flags = 0);
  // FLUSH, TRIM, WRITE_ZEROES or any other command without payload.
  absl::StatusOr<uint32_t> Command(uint16_t type, uint64_t offset, uint32_t length,
                                   uint16_t flags = 0);

  // Pipelining: send now, collect replies later (in whatever order).
  absl::Status SendRequest(const nbd::Request& request, absl::Span<const uint8_t> payload = {});
  absl::StatusOr<nbd::SimpleReply> RecvReply();

  absl::Status SendBytes(absl::Span<const uint8_t> bytes);
  absl::Status RecvBytes(void* out, size_t n);
  // True when the server has closed the connection (EOF or reset) within
  // `timeout`; false if it is still open (or sent more bytes).
  bool ServerClosed(absl::Duration timeout = absl::Seconds(10));

  uint64_t export_size() const { return export_size_; }
  uint16_t transmission_flags() const { return transmission_flags_; }
  uint16_t handshake_flags() const { return handshake_flags_; }

 private:
  int fd_;
  uint64_t next_handle_ = 1;
  uint64_t export_size_ = 0;
  uint16_t transmission_flags_ = 0;
  uint16_t handshake_flags_ = 0;
};

// Client byte streams for seeds and sessions: the client flags followed by
// an NBD_OPT_GO for `name` (what a client sends before its first request).
std::vector<uint8_t> NbdClientPreamble(absl::string_view name = "ramster");
// One request (and its payload, for WRITE), as bytes.
std::vector<uint8_t> NbdRequestBytes(uint16_t type, uint16_t flags, uint64_t handle,
                                     uint64_t offset, uint32_t length,
                                     absl::Span<const uint8_t> payload = {});

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_NBD_TEST_CLIENT_H_
