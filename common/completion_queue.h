// Taking completions off a gRPC completion queue with bounded polling: the
// client's threads wait for their calls this way (client/peer.h AwaitCalls),
// a server's io threads for requests (server/services.cc).
#ifndef RAMSTER_COMMON_COMPLETION_QUEUE_H_
#define RAMSTER_COMMON_COMPLETION_QUEUE_H_

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "common/busy_poll.h"

namespace ramster {

// CompletionQueue::AsyncNext, but polled for up to `poll` first (BusyPoll)
// before it sleeps: GOT_EVENT, TIMEOUT once `deadline` has passed, or
// SHUTDOWN once the queue is shut down and drained.
inline grpc::CompletionQueue::NextStatus NextPolledUntil(grpc::CompletionQueue* cq,
                                                         absl::Duration poll,
                                                         absl::Time deadline, void** tag,
                                                         bool* ok) {
  if (BusyPoll::Poll(poll, [&] {
        return cq->AsyncNext(tag, ok, gpr_time_0(GPR_CLOCK_REALTIME)) ==
               grpc::CompletionQueue::GOT_EVENT;
      })) {
    return grpc::CompletionQueue::GOT_EVENT;
  }
  if (deadline == absl::InfiniteFuture()) {
    return cq->AsyncNext(tag, ok, gpr_inf_future(GPR_CLOCK_REALTIME));
  }
  return cq->AsyncNext(tag, ok, absl::ToChronoTime(deadline));
}

// CompletionQueue::Next, polled the same way. False once the queue is shut
// down and drained.
inline bool NextPolled(grpc::CompletionQueue* cq, absl::Duration poll, void** tag, bool* ok) {
  return NextPolledUntil(cq, poll, absl::InfiniteFuture(), tag, ok) ==
         grpc::CompletionQueue::GOT_EVENT;
}

}  // namespace ramster

#endif  // RAMSTER_COMMON_COMPLETION_QUEUE_H_
