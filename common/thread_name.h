// NameThisThread: gives the calling thread a name that `top -H`, `ps -L`,
// perf and /proc/<pid>/task/<tid>/comm show, so that a profile of a shim or a
// server says which of its threads spent the time (a page link's connection,
// the recompressor, a write-behind flusher) instead of the process's name
// for every thread. The kernel keeps the first 15 bytes.
#ifndef RAMSTER_COMMON_THREAD_NAME_H_
#define RAMSTER_COMMON_THREAD_NAME_H_

#include <sys/prctl.h>

namespace ramster {

inline void NameThisThread(const char* name) {
  prctl(PR_SET_NAME, name, 0, 0, 0);  // cannot fail for the calling thread
}

}  // namespace ramster

#endif  // RAMSTER_COMMON_THREAD_NAME_H_
