#include "server/work_queue.h"

#include "common/thread_name.h"

namespace ramster {

WorkQueue::WorkQueue(int threads, size_t max_pending) : max_pending_(max_pending) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

WorkQueue::~WorkQueue() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  for (auto& t : threads_) t.join();
}

bool WorkQueue::Submit(std::function<void()> work) {
  {
    MutexLock lock(&mu_);
    if (pending_.size() >= max_pending_) return false;
    pending_.push_back(std::move(work));
  }
  cv_.Signal();
  return true;
}

size_t WorkQueue::pending() {
  MutexLock lock(&mu_);
  return pending_.size();
}

void WorkQueue::Run() {
  NameThisThread("worker");
  for (;;) {
    std::function<void()> work;
    {
      MutexLock lock(&mu_);
      while (pending_.empty() && !stop_) cv_.Wait();
      if (pending_.empty()) return;  // stopping, nothing left
      work = std::move(pending_.front());
      pending_.pop_front();
    }
    work();
  }
}

}  // namespace ramster
