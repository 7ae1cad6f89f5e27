// Xxh3Avx2: XXH3-64 (seed 0) computed with AVX2, for the page checksum.
//
// The same hash as Debian's libxxhash XXH3_64bits, which that library builds
// for baseline x86-64 (SSE2). Its XXH3_64bits_dispatch picks AVX-512 on CPUs
// that have it, and on the Intel Xeon these sessions ran on a page decode
// followed by that hash took ~16% longer than the decode alone, against ~6%
// with AVX2 (12,000 pages from /usr, median of 15 rounds; the wide units are
// woken for each page, between stretches of LZ4's scalar code). So the codec
// uses this one wherever the CPU has AVX2.
//
// Only on x86-64, and only to be called when Xxh3Avx2Supported().
#ifndef RAMSTER_COMMON_XXH3_AVX2_H_
#define RAMSTER_COMMON_XXH3_AVX2_H_

#include <cstddef>
#include <cstdint>

namespace ramster {

#if defined(__x86_64__)
inline bool Xxh3Avx2Supported() {
  __builtin_cpu_init();  // in case this runs before libgcc's own constructor
  return __builtin_cpu_supports("avx2");
}
uint64_t Xxh3Avx2(const void* data, size_t size);
#endif

}  // namespace ramster

#endif  // RAMSTER_COMMON_XXH3_AVX2_H_
