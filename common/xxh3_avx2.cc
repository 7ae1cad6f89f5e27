// Compiled with -mavx2 (common/BUILD; tests/fuzz.sh likewise): only this
// file, so that nothing else in a binary uses AVX2 unasked. xxhash.h is
// included whole and every function of it is static here (XXH_INLINE_ALL),
// so no AVX2 copy of a function can stand in for another file's.
#include "common/xxh3_avx2.h"

#if defined(__x86_64__)

#if !defined(__AVX2__)
#error "common/xxh3_avx2.cc must be compiled with -mavx2"
#endif

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

namespace ramster {

uint64_t Xxh3Avx2(const void* data, size_t size) { return XXH3_64bits(data, size); }

}  // namespace ramster

#endif  // __x86_64__
