// A fixed set of worker threads with a bounded queue. The gRPC services hand
// their blocking work (locks, RocksDB) to it so that no io thread blocks; a
// full queue refuses instead of growing.
//
// Thread safety: Submit may be called from any thread.
#ifndef RAMSTER_SERVER_WORK_QUEUE_H_
#define RAMSTER_SERVER_WORK_QUEUE_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace ramster {

class WorkQueue {
 public:
  WorkQueue(int threads, size_t max_pending);
  // Runs what is queued, then joins the threads.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // False (and `work` is not run) when max_pending items are waiting.
  bool Submit(std::function<void()> work);
  // Items waiting (not yet taken by a worker).
  size_t pending();

 private:
  void Run();

  const size_t max_pending_;
  Mutex mu_;
  CondVar cv_{&mu_};
  std::deque<std::function<void()>> pending_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ramster

#endif  // RAMSTER_SERVER_WORK_QUEUE_H_
