// How fast the page codec is, next to raw LZ4 on the same pages.
//
// The corpus (bench/page_corpus.h) is cut from files on this machine, so
// nothing large lives in the repository:
//   binary  4 KiB pages from ELF files (executables, shared libraries)
//   text    4 KiB pages from text files (headers, documentation), laid end to
//           end so that short files make whole pages
//   zero    pages of zeros, what the same-filled filter catches
//   random  incompressible pages, as encrypted or compressed data would be
// Selection is deterministic: sorted file lists shuffled with a fixed seed, at
// most --max_pages_per_file pages from each file.
//
// For every class, and for the whole mix in shuffled order, one round times
//   codec encode  EncodePage: checksum, same-filled check, LZ4, raw fallback
//   codec decode  DecodePage: shape checks, LZ4 / fill / copy, checksum check
//   lz4 encode    LZ4_compress_default on each page
//   lz4 decode    LZ4_decompress_safe on each page
// with codec and LZ4 back to back, alternating which goes first. After one
// untimed warm-up round (which also checks that every page round-trips), the
// report gives the median of --rounds rounds. MB is 10^6 bytes of
// uncompressed page for encode and decode alike; a compression ratio is page
// bytes over payload bytes (the codec's 8-byte checksum and its encoding tag
// travel beside the payload and are not counted).
//
//   bazel build //bench:codec_bench
//   bazel-bin/bench/codec_bench --json=/tmp/codec_bench.json
#include <lz4.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "bench/page_corpus.h"
#include "common/page_codec.h"

ABSL_FLAG(double, total_mib, 64, "Corpus size in MiB (4 KiB pages).");
ABSL_FLAG(std::string, mix, "binary=45,text=30,zero=15,random=10",
          "Relative weights of the page classes, class=weight,...; classes "
          "are binary, text, zero, random.");
ABSL_FLAG(std::string, binary_dirs,
          "/usr/bin,/usr/sbin,/usr/lib/x86_64-linux-gnu",
          "Comma-separated directories searched (recursively) for ELF files.");
ABSL_FLAG(std::string, text_dirs, "/usr/include,/usr/share/doc",
          "Comma-separated directories searched (recursively) for text files.");
ABSL_FLAG(int, max_pages_per_file, 16,
          "At most this many pages are cut from one file, so that the corpus "
          "spans many files.");
ABSL_FLAG(int, rounds, 5, "Timed rounds; the report gives their median.");
ABSL_FLAG(uint64_t, seed, 1, "Seed for file order, page choice and mix order.");
ABSL_FLAG(std::string, json, "",
          "If set, also write the figures to this file as JSON.");

namespace ramster {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "codec_bench: %s\n", message.c_str());
  std::exit(1);
}

// ---------------------------------------------------------------------------
// The corpus (bench/page_corpus.h), sized and mixed by the flags.

PageCorpus BuildCorpus(std::mt19937_64& rng) {
  const double total_mib = absl::GetFlag(FLAGS_total_mib);
  const size_t total =
      static_cast<size_t>(std::llround(total_mib * 1024 * 1024 / kPageSize));
  if (total == 0) Die("--total_mib is too small for one page");
  const int per_file = absl::GetFlag(FLAGS_max_pages_per_file);
  if (per_file < 1) Die("--max_pages_per_file must be at least 1");
  absl::StatusOr<std::array<double, kNumPageClasses>> mix =
      ParsePageMix(absl::GetFlag(FLAGS_mix));
  if (!mix.ok()) Die(absl::StrCat("--mix: ", mix.status().message()));

  PageCorpusOptions options;
  options.total_pages = total;
  options.weights = *mix;
  options.binary_dirs = absl::GetFlag(FLAGS_binary_dirs);
  options.text_dirs = absl::GetFlag(FLAGS_text_dirs);
  options.max_pages_per_file = static_cast<size_t>(per_file);
  absl::StatusOr<PageCorpus> corpus = BuildPageCorpus(options, rng);
  if (!corpus.ok()) Die(std::string(corpus.status().message()));
  return *std::move(corpus);
}

// ---------------------------------------------------------------------------
// The measurements.

// What each side keeps between its encode and its decode, by page index.
struct Stored {
  static constexpr size_t kLz4Bound = LZ4_COMPRESSBOUND(kPageSize);

  explicit Stored(size_t pages)
      : codec(pages), lz4(pages * kLz4Bound), lz4_size(pages) {}

  std::vector<EncodedPage> codec;
  std::vector<uint8_t> lz4;
  std::vector<int> lz4_size;

  char* lz4_block(uint32_t i) {
    return reinterpret_cast<char*>(lz4.data() + size_t{i} * kLz4Bound);
  }
};

enum Method { kCodec, kLz4, kNumMethods };
enum Op { kEncode, kDecode, kNumOps };
constexpr std::array<const char*, kNumMethods> kMethodNames = {"codec", "lz4"};
constexpr std::array<const char*, kNumOps> kOpNames = {"encode", "decode"};

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double Encode(Method m, const PageCorpus& corpus, const std::vector<uint32_t>& order,
              Stored* st) {
  Clock::time_point start = Clock::now();
  if (m == kCodec) {
    for (uint32_t i : order) {
      if (!EncodePage(corpus.page(i), &st->codec[i]).ok()) Die("EncodePage failed");
    }
  } else {
    for (uint32_t i : order) {
      int n = LZ4_compress_default(
          reinterpret_cast<const char*>(corpus.page(i).data()),
          st->lz4_block(i), static_cast<int>(kPageSize),
          static_cast<int>(Stored::kLz4Bound));
      if (n <= 0) Die("LZ4_compress_default failed");
      st->lz4_size[i] = n;
    }
  }
  return Seconds(start);
}

double Decode(Method m, const std::vector<uint32_t>& order, Stored* st,
              uint8_t* out) {
  Clock::time_point start = Clock::now();
  if (m == kCodec) {
    for (uint32_t i : order) {
      const EncodedPage& e = st->codec[i];
      if (!DecodePage(static_cast<uint32_t>(e.encoding), e.bytes(), kPageSize,
                      e.checksum, absl::MakeSpan(out, kPageSize))
               .ok()) {
        Die("DecodePage failed");
      }
    }
  } else {
    for (uint32_t i : order) {
      int n = LZ4_decompress_safe(st->lz4_block(i), reinterpret_cast<char*>(out),
                                  st->lz4_size[i], static_cast<int>(kPageSize));
      if (n != static_cast<int>(kPageSize)) Die("LZ4_decompress_safe failed");
    }
  }
  return Seconds(start);
}

// The checksum alone (the part of the codec that raw LZ4 does not do).
double Checksum(const PageCorpus& corpus, const std::vector<uint32_t>& order) {
  Clock::time_point start = Clock::now();
  uint64_t x = 0;
  for (uint32_t i : order) x ^= PageChecksum(corpus.page(i));
  double s = Seconds(start);
  volatile uint64_t keep = x;  // the hashes must be computed
  (void)keep;
  return s;
}

// Every page comes back identical from both sides; where the codec chose LZ4
// its payload is byte for byte what raw LZ4 produced.
void Verify(const PageCorpus& corpus, Stored* st) {
  std::vector<uint8_t> out(kPageSize);
  for (uint32_t i = 0; i < corpus.size(); ++i) {
    const EncodedPage& e = st->codec[i];
    absl::Status s = DecodePage(static_cast<uint32_t>(e.encoding), e.bytes(),
                                kPageSize, e.checksum, absl::MakeSpan(out));
    if (!s.ok() || std::memcmp(out.data(), corpus.page(i).data(), kPageSize)) {
      Die(absl::StrCat("codec round trip differs on page ", i, ": ",
                       s.ToString()));
    }
    int n = LZ4_decompress_safe(st->lz4_block(i),
                                reinterpret_cast<char*>(out.data()),
                                st->lz4_size[i], static_cast<int>(kPageSize));
    if (n != static_cast<int>(kPageSize) ||
        std::memcmp(out.data(), corpus.page(i).data(), kPageSize)) {
      Die(absl::StrCat("lz4 round trip differs on page ", i));
    }
    if (e.encoding == Encoding::kLz4 &&
        (static_cast<int>(e.length) != st->lz4_size[i] ||
         std::memcmp(e.payload, st->lz4_block(i), e.length) != 0)) {
      Die(absl::StrCat("codec LZ4 payload differs from raw LZ4 on page ", i));
    }
  }
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// One row of the report: a class, or the whole mix.
struct Group {
  std::string name;
  std::vector<uint32_t> order;
  // seconds[method][op] holds one sample per timed round.
  std::array<std::array<std::vector<double>, kNumOps>, kNumMethods> seconds;
  std::vector<double> checksum_seconds;
  std::array<uint64_t, kNumMethods> payload_bytes = {};
  std::array<size_t, 4> codec_encodings = {};  // by Encoding value

  uint64_t bytes() const { return uint64_t{order.size()} * kPageSize; }
  double MBps(Method m, Op op) const {
    return bytes() / Median(seconds[m][op]) / 1e6;
  }
  double PagesPerSecond(Method m, Op op) const {
    return order.size() / Median(seconds[m][op]);
  }
  double SpeedRatio(Op op) const { return MBps(kCodec, op) / MBps(kLz4, op); }
  double Ratio(Method m) const {
    return static_cast<double>(bytes()) / payload_bytes[m];
  }
  double ChecksumMBps() const {
    return bytes() / Median(checksum_seconds) / 1e6;
  }
};

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

void PrintTable(const std::vector<Group>& groups, const PageCorpus& corpus,
                int rounds, uint64_t seed) {
  std::printf("codec_bench: %zu pages (%.1f MiB), median of %d rounds, seed %llu\n",
              corpus.size(), corpus.size() * kPageSize / 1048576.0, rounds,
              static_cast<unsigned long long>(seed));
  std::printf("cpu: %s, %ld online; lz4 %s, xxhash %u\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN), LZ4_versionString(),
              XXH_versionNumber());
  std::printf("corpus fingerprint (XXH3 of all pages): %016llx\n",
              static_cast<unsigned long long>(PageCorpusFingerprint(corpus)));
  for (int c = 0; c < kNumPageClasses; ++c) {
    if (corpus.wanted[c] == 0) continue;
    std::printf("  %-7s %6zu pages", kPageClassNames[c], corpus.pages[c].size());
    if (c == kBinaryPage || c == kTextPage) {
      std::printf(" from %zu files", corpus.files[c]);
    }
    if (corpus.pages[c].size() < corpus.wanted[c]) {
      std::printf("  (wanted %zu: not enough files)", corpus.wanted[c]);
    }
    std::printf("\n");
  }
  std::printf(
      "\nMB/s = 10^6 page bytes per second; codec/lz4 > 1 means the codec is "
      "faster\n\n");
  std::printf("%-7s %-6s %6s %10s %10s %9s %10s %10s %8s %8s\n", "class", "op",
              "pages", "codec MB/s", "lz4 MB/s", "codec/lz4", "codec kp/s",
              "lz4 kp/s", "codec", "lz4");
  std::printf("%-7s %-6s %6s %10s %10s %9s %10s %10s %8s %8s\n", "", "", "", "",
              "", "", "", "", "ratio", "ratio");
  for (const Group& g : groups) {
    if (g.order.empty()) continue;
    for (int op = 0; op < kNumOps; ++op) {
      Op o = static_cast<Op>(op);
      std::printf("%-7s %-6s %6zu %10.0f %10.0f %9.3f %10.1f %10.1f",
                  g.name.c_str(), kOpNames[op], g.order.size(),
                  g.MBps(kCodec, o), g.MBps(kLz4, o), g.SpeedRatio(o),
                  g.PagesPerSecond(kCodec, o) / 1e3,
                  g.PagesPerSecond(kLz4, o) / 1e3);
      if (o == kEncode) {
        std::printf(" %8.3f %8.3f", g.Ratio(kCodec), g.Ratio(kLz4));
      }
      std::printf("\n");
    }
  }
  std::printf("\ncodec encodings (same-filled / lz4 / raw) and XXH3_64bits "
              "checksum alone:\n");
  for (const Group& g : groups) {
    if (g.order.empty()) continue;
    std::printf("  %-7s %6zu / %6zu / %6zu   checksum %8.0f MB/s\n",
                g.name.c_str(),
                g.codec_encodings[static_cast<int>(Encoding::kSameFilled)],
                g.codec_encodings[static_cast<int>(Encoding::kLz4)],
                g.codec_encodings[static_cast<int>(Encoding::kRaw)],
                g.ChecksumMBps());
  }
}

// A JSON string literal; the strings here are plain ASCII from the system.
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string JsonSamples(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    absl::StrAppendFormat(&s, "%s%.6g", i ? ", " : "", v[i]);
  }
  return s + "]";
}

void WriteJson(const std::string& path, const std::vector<Group>& groups,
               const PageCorpus& corpus, int rounds, uint64_t seed) {
  std::string j = "{\n";
  absl::StrAppendFormat(&j,
                        "  \"benchmark\": \"codec_bench\",\n"
                        "  \"cpu\": %s,\n  \"lz4_version\": %s,\n"
                        "  \"xxhash_version\": %u,\n  \"rounds\": %d,\n"
                        "  \"seed\": %u,\n  \"page_size\": %u,\n"
                        "  \"total_pages\": %u,\n"
                        "  \"corpus_fingerprint\": \"%016x\",\n"
                        "  \"corpus\": {",
                        JsonString(CpuModel()),
                        JsonString(LZ4_versionString()), XXH_versionNumber(),
                        rounds, seed, kPageSize, corpus.size(),
                        PageCorpusFingerprint(corpus));
  for (int c = 0; c < kNumPageClasses; ++c) {
    absl::StrAppendFormat(&j,
                          "%s\n    \"%s\": {\"pages\": %u, \"wanted\": %u, "
                          "\"files\": %u}",
                          c ? "," : "", kPageClassNames[c], corpus.pages[c].size(),
                          corpus.wanted[c], corpus.files[c]);
  }
  j += "\n  },\n  \"results\": [";
  bool first = true;
  for (const Group& g : groups) {
    if (g.order.empty()) continue;
    absl::StrAppendFormat(&j, "%s\n    {\"class\": \"%s\", \"pages\": %u, "
                          "\"bytes\": %u,",
                          first ? "" : ",", g.name, g.order.size(), g.bytes());
    first = false;
    for (int op = 0; op < kNumOps; ++op) {
      Op o = static_cast<Op>(op);
      absl::StrAppendFormat(&j, "\n     \"%s\": {", kOpNames[op]);
      for (int m = 0; m < kNumMethods; ++m) {
        Method me = static_cast<Method>(m);
        absl::StrAppendFormat(
            &j,
            "\"%s\": {\"mb_per_s\": %.1f, \"pages_per_s\": %.0f, "
            "\"median_s\": %.6g, \"round_s\": %s}, ",
            kMethodNames[m], g.MBps(me, o), g.PagesPerSecond(me, o),
            Median(g.seconds[m][op]), JsonSamples(g.seconds[m][op]));
      }
      absl::StrAppendFormat(&j, "\"codec_over_lz4\": %.4f},", g.SpeedRatio(o));
    }
    absl::StrAppendFormat(
        &j,
        "\n     \"ratio\": {\"codec\": %.4f, \"lz4\": %.4f},"
        "\n     \"payload_bytes\": {\"codec\": %u, \"lz4\": %u},"
        "\n     \"codec_encodings\": {\"same_filled\": %u, \"lz4\": %u, "
        "\"raw\": %u},"
        "\n     \"checksum_mb_per_s\": %.1f}",
        g.Ratio(kCodec), g.Ratio(kLz4), g.payload_bytes[kCodec],
        g.payload_bytes[kLz4],
        g.codec_encodings[static_cast<int>(Encoding::kSameFilled)],
        g.codec_encodings[static_cast<int>(Encoding::kLz4)],
        g.codec_encodings[static_cast<int>(Encoding::kRaw)], g.ChecksumMBps());
  }
  j += "\n  ]\n}\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << j;
  out.close();
  if (!out) Die(absl::StrCat("cannot write ", path));
}

int Run() {
  const int rounds = absl::GetFlag(FLAGS_rounds);
  if (rounds < 1) Die("--rounds must be at least 1");
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  std::mt19937_64 rng(seed);
  PageCorpus corpus = BuildCorpus(rng);
  if (corpus.size() == 0) Die("empty corpus");

  std::vector<Group> groups;
  for (int c = 0; c < kNumPageClasses; ++c) {
    Group g;
    g.name = kPageClassNames[c];
    g.order = corpus.pages[c];
    groups.push_back(std::move(g));
  }
  Group mix;
  mix.name = "mix";
  for (const auto& pages : corpus.pages) {
    mix.order.insert(mix.order.end(), pages.begin(), pages.end());
  }
  ShuffleWith(mix.order, rng);
  groups.push_back(std::move(mix));

  Stored stored(corpus.size());
  alignas(64) static uint8_t out[kPageSize];

  // Round 0 is the warm-up: it faults in every buffer and fills `stored`,
  // which Verify then checks.
  for (int round = 0; round <= rounds; ++round) {
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      Group& g = groups[gi];
      if (g.order.empty()) continue;
      bool codec_first = (round + gi) % 2 == 0;
      Method order[2] = {codec_first ? kCodec : kLz4,
                         codec_first ? kLz4 : kCodec};
      std::array<double, kNumMethods> enc, dec;
      for (Method m : order) enc[m] = Encode(m, corpus, g.order, &stored);
      for (Method m : order) dec[m] = Decode(m, g.order, &stored, out);
      double sum = Checksum(corpus, g.order);
      if (round == 0) continue;
      for (int m = 0; m < kNumMethods; ++m) {
        g.seconds[m][kEncode].push_back(enc[m]);
        g.seconds[m][kDecode].push_back(dec[m]);
      }
      g.checksum_seconds.push_back(sum);
    }
    if (round == 0) Verify(corpus, &stored);
  }

  for (Group& g : groups) {
    for (uint32_t i : g.order) {
      const EncodedPage& e = stored.codec[i];
      g.payload_bytes[kCodec] += e.length;
      g.payload_bytes[kLz4] += static_cast<uint64_t>(stored.lz4_size[i]);
      ++g.codec_encodings[static_cast<int>(e.encoding)];
    }
  }

  PrintTable(groups, corpus, rounds, seed);
  const std::string json = absl::GetFlag(FLAGS_json);
  if (!json.empty()) {
    WriteJson(json, groups, corpus, rounds, seed);
    std::printf("\nwrote %s\n", json.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace ramster

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Page codec (EncodePage/DecodePage) against raw LZ4 on 4 KiB pages cut "
      "from files on this machine.");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "codec_bench: unexpected argument '%s'\n", rest[1]);
    return 2;
  }
  return ramster::Run();
}
