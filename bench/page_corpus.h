// A corpus of 4 KiB pages that looks like a swap stream, cut from files on
// this machine so that nothing large lives in the repository:
//   binary  pages from ELF files (executables, shared libraries)
//   text    pages from text files (headers, documentation), laid end to end
//           so that short files make whole pages
//   zero    pages of zeros, what the same-filled filter catches
//   random  incompressible pages, as encrypted or compressed data would be
//
// Selection is deterministic for a given generator state: sorted file lists
// shuffled with the caller's generator, at most max_pages_per_file pages
// from each file. The same options and generator state give the same pages
// in every bench (see PageCorpusFingerprint).
//
// Thread safety: BuildPageCorpus is not; a built PageCorpus is immutable and
// may be read from any thread.
#ifndef RAMSTER_BENCH_PAGE_CORPUS_H_
#define RAMSTER_BENCH_PAGE_CORPUS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/page_codec.h"

namespace ramster {

enum PageClass { kBinaryPage, kTextPage, kZeroPage, kRandomPage, kNumPageClasses };
inline constexpr std::array<const char*, kNumPageClasses> kPageClassNames = {
    "binary", "text", "zero", "random"};

struct PageCorpusOptions {
  size_t total_pages = 16384;
  // Relative weights by PageClass; see ParsePageMix.
  std::array<double, kNumPageClasses> weights = {45, 30, 15, 10};
  // Comma-separated directories, searched recursively.
  std::string binary_dirs = "/usr/bin,/usr/sbin,/usr/lib/x86_64-linux-gnu";
  std::string text_dirs = "/usr/include,/usr/share/doc";
  size_t max_pages_per_file = 16;
};

struct PageCorpus {
  std::vector<uint8_t> bytes;  // page i is bytes[i * kPageSize, +kPageSize)
  std::array<std::vector<uint32_t>, kNumPageClasses> pages;  // indices by class
  std::array<size_t, kNumPageClasses> files = {};   // files the pages came from
  std::array<size_t, kNumPageClasses> wanted = {};  // pages asked for

  size_t size() const { return bytes.size() / kPageSize; }
  absl::Span<const uint8_t> page(uint32_t i) const {
    return {bytes.data() + size_t{i} * kPageSize, kPageSize};
  }
};

// Parses "binary=45,text=30,zero=15,random=10"; classes not named weigh 0.
// kInvalidArgument for an unknown class, a bad or negative weight, or all
// weights zero.
absl::StatusOr<std::array<double, kNumPageClasses>> ParsePageMix(
    const std::string& mix);

// Builds the corpus, drawing from `rng`. A class may come out short of its
// share when the directories do not hold enough files (see `wanted`).
// kInvalidArgument for zero pages, zero weights or max_pages_per_file 0.
absl::StatusOr<PageCorpus> BuildPageCorpus(const PageCorpusOptions& options,
                                           std::mt19937_64& rng);

// XXH3-64 of all the corpus's bytes: names the corpus, so that runs (of any
// bench) can be told to have measured the same pages.
uint64_t PageCorpusFingerprint(const PageCorpus& corpus);

// Fisher-Yates on the raw generator, so that the order depends on the seed
// alone and not on the standard library's distributions.
template <typename T>
void ShuffleWith(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
}

}  // namespace ramster

#endif  // RAMSTER_BENCH_PAGE_CORPUS_H_
