// BusyPoll: lets a thread that is about to sleep until something arrives
// (a peer's reply, a client's next request) poll for it for a little while
// instead, when that something usually comes within microseconds.
//
// Why: on the small VMs ramster runs on, putting a thread to sleep and
// waking it costs more than the work around it. A swap-in waits for a
// gRPC reply that comes back in ~50 us; sleeping for it costs the shim a
// context switch and the server's send a cross-CPU wakeup (measured: QD1
// reads 115 -> 68 us p50, the servers' CPU per read 45 -> 31 us, with the
// reply polled). The price is CPU spent polling, so it is bounded twice:
// each wait polls for at most its budget, and only one thread of the
// process polls at a time (the others sleep as before), so that under load
// polling threads cannot crowd out the ones doing work on a small machine.
//
// Thread safety: Poll may be called from any thread.
#ifndef RAMSTER_COMMON_BUSY_POLL_H_
#define RAMSTER_COMMON_BUSY_POLL_H_

#include <sched.h>

#include <atomic>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ramster {

class BusyPoll {
 public:
  // Calls `try_once()` until it returns true (then returns true) or
  // `budget` has passed (then false). Returns false at once, without
  // calling it, when the budget is zero or another thread is polling.
  template <typename F>
  static bool Poll(absl::Duration budget, F try_once) {
    if (budget <= absl::ZeroDuration()) return false;
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
    const absl::Time until = absl::Now() + budget;
    bool got = false;
    do {
      got = try_once();
      // Polite: a thread that is ready to run on this CPU (a server, the
      // kernel's reclaim, the workload) runs first.
      if (!got) sched_yield();
    } while (!got && absl::Now() < until);
    busy_.store(false, std::memory_order_release);
    return got;
  }

 private:
  static inline std::atomic<bool> busy_{false};
};

}  // namespace ramster

#endif  // RAMSTER_COMMON_BUSY_POLL_H_
