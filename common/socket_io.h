// Whole-buffer reads and writes on a blocking socket: what the page link,
// the NBD server and the bench's clients each need around send and read.
#ifndef RAMSTER_COMMON_SOCKET_IO_H_
#define RAMSTER_COMMON_SOCKET_IO_H_

#include <sys/uio.h>

#include <cstddef>

namespace ramster {

// Sends all `n` bytes, blocking (up to the socket's send timeout); never
// raises SIGPIPE. False on an error (errno says which).
bool SendAll(int fd, const void* data, size_t n);

// The same for `count` buffers at once (modified as they go).
bool SendAll(int fd, iovec* iov, int count);

// Reads exactly `n` bytes, blocking. False at end of stream or on an error.
bool ReadFull(int fd, void* data, size_t n);

}  // namespace ramster

#endif  // RAMSTER_COMMON_SOCKET_IO_H_
