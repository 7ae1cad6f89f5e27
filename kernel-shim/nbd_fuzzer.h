// The NBD server's fuzz target (nbd_fuzzer.cc) and what its drivers need:
// seed inputs, and a check that the server is still healthy afterwards.
//
// An input is [mode:1][client bytes...]. With an odd mode the target first
// sends a correct handshake (client flags, NBD_OPT_GO), so the bytes reach
// the request parser; with an even mode they are the whole client stream,
// handshake included. Either way they go to a running NbdServer (over a
// real TierStackDevice) through a socketpair, exactly as a client's bytes
// would, and the target reads everything the server answers until it
// closes. In odd mode it also checks that answer: exactly one simple reply
// per complete request, each with the error CheckRequest predicts and
// with data only for a successful READ. Anything else traps.
#ifndef RAMSTER_KERNEL_SHIM_NBD_FUZZER_H_
#define RAMSTER_KERNEL_SHIM_NBD_FUZZER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel-shim/nbd_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace ramster {

// Realistic inputs in the target's layout: every command, every option,
// valid and not.
std::vector<std::vector<uint8_t>> NbdFuzzSeeds();

// Waits for the fuzzed connections to finish, then checks that no request
// buffer is still held and that a correct client can write and read back.
// Returns an empty string when healthy, otherwise what is wrong.
std::string NbdFuzzCheckServerHealthy();

// The fuzzed server's counters.
NbdServerStats NbdFuzzServerStats();

}  // namespace ramster

#endif  // RAMSTER_KERNEL_SHIM_NBD_FUZZER_H_
