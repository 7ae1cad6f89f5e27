// swap_workload: a program that makes a machine swap and checks that every
// byte comes back. It fills a working set with known content (text-like,
// zero and random pages, as a real heap), makes random read/write passes
// over it, verifying each page it reads, and ends with a full verification
// and a checksum. Run it in a memory cgroup smaller than its working set and
// the kernel must swap its pages out and in.
//
//   swap_workload --mib=512 --passes=3 --ops=100000 [--seed=1] [--progress]
//
// Exit status 0 only if every page read back as written.
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

// Text-like material that LZ4 compresses about 2-3x, like heap and page
// cache data: words from a small vocabulary with some numbers. Built once;
// pages are slices of it, so filling a page costs a copy.
const std::vector<uint8_t>& Text() {
  static const std::vector<uint8_t>* text = [] {
    static const char* kWords[] = {"ramster ", "page ", "swap ", "cold ", "peer ",
                                   "memory ", "kernel ", "tier ", "the ", "of "};
    auto* t = new std::vector<uint8_t>();
    std::mt19937_64 rng(12345);
    while (t->size() < (1 << 20)) {
      char buf[32];
      int n = (rng() % 8 == 0) ? snprintf(buf, sizeof(buf), "%" PRIu64 " ", rng() % 100000)
                               : snprintf(buf, sizeof(buf), "%s", kWords[rng() % 10]);
      t->insert(t->end(), buf, buf + n);
    }
    return t;
  }();
  return *text;
}

// Deterministic content of page `index` at `version`. Every page starts with
// its index and version, so no two versions of a page are alike.
void Fill(uint8_t* p, uint64_t index, uint32_t version) {
  uint64_t x = (index + 1) * 0x9E3779B97F4A7C15ULL ^ (static_cast<uint64_t>(version) << 40);
  switch (index % 10) {
    case 0:
      // A page of one repeated word (zero at version 0): what zram and the
      // shim keep as a fill word.
      x = version == 0 ? 0 : x;
      for (size_t i = 0; i < kPage; i += 8) std::memcpy(p + i, &x, 8);
      return;
    case 8:
      // Incompressible (xorshift).
      for (size_t i = 0; i < kPage; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::memcpy(p + i, &x, 8);
      }
      return;
    default: {
      const std::vector<uint8_t>& t = Text();
      std::memcpy(p, t.data() + (x % (t.size() - kPage)), kPage);
      std::memcpy(p, &index, 8);
      std::memcpy(p + 8, &version, 4);
      return;
    }
  }
}

// FNV-1a over 64-bit words: a checksum of the final contents.
uint64_t Fnv(const uint8_t* p, size_t n, uint64_t h) {
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
  }
  return h;
}

uint64_t Flag(int argc, char** argv, const char* name, uint64_t def) {
  std::string prefix = std::string("--") + name + "=";
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) {
      return std::strtoull(argv[i] + prefix.size(), nullptr, 10);
    }
  }
  return def;
}

bool Has(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t mib = Flag(argc, argv, "mib", 512);
  const uint64_t passes = Flag(argc, argv, "passes", 3);
  const uint64_t ops = Flag(argc, argv, "ops", 100000);
  const uint64_t seed = Flag(argc, argv, "seed", 1);
  const bool progress = Has(argc, argv, "--progress");
  if (mib == 0 || mib > (1 << 20)) {
    fprintf(stderr, "swap_workload: --mib must be 1..1048576\n");
    return 2;
  }
  const uint64_t pages = mib * 1024 * 1024 / kPage;
  auto t0 = std::chrono::steady_clock::now();
  auto* mem = static_cast<uint8_t*>(mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (mem == MAP_FAILED) {
    perror("swap_workload: mmap");
    return 1;
  }
  std::vector<uint32_t> version(pages, 0);
  for (uint64_t i = 0; i < pages; ++i) Fill(mem + i * kPage, i, 0);
  if (progress) fprintf(stderr, "filled %" PRIu64 " MiB\n", mib);

  std::mt19937_64 rng(seed);
  uint8_t expect[kPage];
  uint64_t mismatches = 0;
  for (uint64_t pass = 1; pass <= passes; ++pass) {
    for (uint64_t op = 0; op < ops; ++op) {
      uint64_t i = rng() % pages;
      uint8_t* p = mem + i * kPage;
      if (rng() % 2 == 0) {
        Fill(expect, i, version[i]);
        if (std::memcmp(p, expect, kPage) != 0) {
          if (mismatches++ < 10) {
            fprintf(stderr, "MISMATCH page %" PRIu64 " version %u\n", i, version[i]);
          }
        }
      } else {
        Fill(p, i, ++version[i]);
      }
    }
    if (progress) {
      fprintf(stderr, "pass %" PRIu64 "/%" PRIu64 " done, %" PRIu64 " mismatches\n", pass,
              passes, mismatches);
    }
  }
  // Everything, once more, and a checksum of the final contents.
  uint64_t sum = 0xcbf29ce484222325ULL;
  for (uint64_t i = 0; i < pages; ++i) {
    Fill(expect, i, version[i]);
    if (std::memcmp(mem + i * kPage, expect, kPage) != 0) {
      if (mismatches++ < 10) fprintf(stderr, "MISMATCH page %" PRIu64 " (final)\n", i);
    }
    sum = Fnv(mem + i * kPage, kPage, sum);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("swap_workload: %" PRIu64 " MiB, %" PRIu64 " passes x %" PRIu64
         " ops, %.2f s, checksum %016" PRIx64 ", %s\n",
         mib, passes, ops, secs, sum, mismatches == 0 ? "OK" : "MISMATCH");
  return mismatches == 0 ? 0 : 1;
}
