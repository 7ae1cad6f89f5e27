// A byte budget with a hard limit, shared by everything that holds RAM or
// disk on behalf of the node. Charging never overshoots: a charge that would
// pass the limit fails and changes nothing.
//
// Thread safety: all methods may be called concurrently.
#ifndef RAMSTER_SERVER_MEMORY_BUDGET_H_
#define RAMSTER_SERVER_MEMORY_BUDGET_H_

#include <atomic>
#include <cstdint>

namespace ramster {

class Budget {
 public:
  explicit Budget(uint64_t limit) : limit_(limit) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  // Adds `bytes` to the usage if the result stays within the limit.
  bool TryCharge(uint64_t bytes) {
    uint64_t used = used_.load(std::memory_order_relaxed);
    do {
      if (bytes > limit_.load(std::memory_order_relaxed) ||
          used > limit_.load(std::memory_order_relaxed) - bytes) {
        return false;
      }
    } while (!used_.compare_exchange_weak(used, used + bytes,
                                          std::memory_order_relaxed));
    return true;
  }

  // Adds `bytes` whatever the limit (reloading what is already on disk).
  void ForceCharge(uint64_t bytes) {
    used_.fetch_add(bytes, std::memory_order_relaxed);
  }

  // REQUIRES: `bytes` was charged before.
  void Release(uint64_t bytes) {
    used_.fetch_sub(bytes, std::memory_order_relaxed);
  }

  void set_limit(uint64_t limit) {
    limit_.store(limit, std::memory_order_relaxed);
  }
  uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  uint64_t free() const {
    uint64_t l = limit(), u = used();
    return u >= l ? 0 : l - u;
  }
  uint64_t over() const {
    uint64_t l = limit(), u = used();
    return u > l ? u - l : 0;
  }

 private:
  std::atomic<uint64_t> limit_;
  std::atomic<uint64_t> used_{0};
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_MEMORY_BUDGET_H_
