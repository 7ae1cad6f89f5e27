#include "bench/page_corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace ramster {
namespace {

namespace fs = std::filesystem;

uint8_t* AddPage(PageClass c, PageCorpus* corpus) {
  corpus->pages[c].push_back(static_cast<uint32_t>(corpus->size()));
  corpus->bytes.resize(corpus->bytes.size() + kPageSize);
  return corpus->bytes.data() + corpus->bytes.size() - kPageSize;
}

// Regular files under the directories, symlinks skipped so that a library
// reached through its soname links counts once; sorted.
std::vector<std::string> ListFiles(const std::string& dirs_csv) {
  std::vector<std::string> files;
  for (absl::string_view dir : absl::StrSplit(dirs_csv, ',', absl::SkipEmpty())) {
    std::error_code ec;
    fs::recursive_directory_iterator it(
        fs::path(std::string(dir)),
        fs::directory_options::skip_permission_denied, ec);
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      std::error_code st;
      if (it->is_symlink(st) || !it->is_regular_file(st)) continue;
      files.push_back(it->path().string());
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

class File {
 public:
  explicit File(const std::string& path)
      : fd_(open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~File() {
    if (fd_ >= 0) close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  bool ok() const { return fd_ >= 0; }
  uint64_t size() const {
    struct stat st;
    return fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }
  bool ReadAt(uint64_t offset, void* buf, size_t n) const {
    return pread(fd_, buf, n, static_cast<off_t>(offset)) ==
           static_cast<ssize_t>(n);
  }

 private:
  int fd_;
};

void AddBinaryPages(const std::vector<std::string>& candidates, size_t want,
                    size_t per_file, std::mt19937_64& rng, PageCorpus* corpus) {
  for (const std::string& path : candidates) {
    size_t have = corpus->pages[kBinaryPage].size();
    if (have >= want) break;
    File f(path);
    if (!f.ok()) continue;
    size_t n_pages = f.size() / kPageSize;
    char magic[4];
    if (n_pages == 0 || !f.ReadAt(0, magic, 4) ||
        std::memcmp(magic, "\x7f" "ELF", 4) != 0) {
      continue;
    }
    // A random choice of the file's pages, read in file order.
    size_t k = std::min({n_pages, per_file, want - have});
    std::vector<uint32_t> idx(n_pages);
    for (size_t i = 0; i < n_pages; ++i) idx[i] = static_cast<uint32_t>(i);
    for (size_t i = 0; i < k; ++i) {
      std::swap(idx[i], idx[i + rng() % (n_pages - i)]);
    }
    std::sort(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(k));
    bool any = false;
    for (size_t i = 0; i < k; ++i) {
      uint8_t page[kPageSize];
      if (!f.ReadAt(uint64_t{idx[i]} * kPageSize, page, kPageSize)) continue;
      std::memcpy(AddPage(kBinaryPage, corpus), page, kPageSize);
      any = true;
    }
    if (any) ++corpus->files[kBinaryPage];
  }
}

// Text: no NUL and almost no control characters; bytes >= 0x80 pass, for
// UTF-8. Compressed files (/usr/share/doc/*.gz) fail.
bool LooksLikeText(absl::Span<const uint8_t> bytes) {
  size_t odd = 0;
  for (uint8_t b : bytes) {
    if (b == 0) return false;
    if ((b < 0x20 && b != '\t' && b != '\n' && b != '\r' && b != '\f') ||
        b == 0x7f) {
      ++odd;
    }
  }
  return odd * 100 <= bytes.size();
}

void AddTextPages(const std::vector<std::string>& candidates, size_t want,
                  size_t per_file, std::mt19937_64& rng, PageCorpus* corpus) {
  std::vector<uint8_t> stream;  // text laid end to end
  const size_t want_bytes = want * kPageSize;
  for (const std::string& path : candidates) {
    if (stream.size() >= want_bytes) break;
    File f(path);
    if (!f.ok()) continue;
    uint64_t size = f.size();
    if (size < 64) continue;
    // At most per_file pages' worth, from a random place in a long file.
    uint64_t n = std::min<uint64_t>(
        {size, per_file * kPageSize, want_bytes - stream.size()});
    uint64_t offset = size > n ? rng() % (size - n + 1) : 0;
    std::vector<uint8_t> buf(n);
    if (!f.ReadAt(offset, buf.data(), buf.size()) || !LooksLikeText(buf)) {
      continue;
    }
    stream.insert(stream.end(), buf.begin(), buf.end());
    ++corpus->files[kTextPage];
  }
  for (size_t off = 0; off + kPageSize <= stream.size(); off += kPageSize) {
    std::memcpy(AddPage(kTextPage, corpus), stream.data() + off, kPageSize);
  }
}

}  // namespace

absl::StatusOr<std::array<double, kNumPageClasses>> ParsePageMix(
    const std::string& mix) {
  std::array<double, kNumPageClasses> w = {};
  for (absl::string_view item : absl::StrSplit(mix, ',', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits('=', 1));
    int c = 0;
    while (c < kNumPageClasses && kv.first != kPageClassNames[c]) ++c;
    double value;
    if (c == kNumPageClasses || !absl::SimpleAtod(kv.second, &value) ||
        value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad item '", item,
                       "' (want class=weight, class one of binary, text, "
                       "zero, random)"));
    }
    w[c] = value;
  }
  double sum = 0;
  for (double x : w) sum += x;
  if (sum <= 0) return absl::InvalidArgumentError("all weights are zero");
  return w;
}

absl::StatusOr<PageCorpus> BuildPageCorpus(const PageCorpusOptions& options,
                                           std::mt19937_64& rng) {
  if (options.total_pages == 0) {
    return absl::InvalidArgumentError("a corpus needs at least one page");
  }
  if (options.max_pages_per_file == 0) {
    return absl::InvalidArgumentError("max_pages_per_file must be at least 1");
  }
  std::array<double, kNumPageClasses> w = options.weights;
  double sum = 0;
  for (double x : w) {
    if (x < 0) return absl::InvalidArgumentError("negative mix weight");
    sum += x;
  }
  if (sum <= 0) return absl::InvalidArgumentError("all weights are zero");
  for (double& x : w) x /= sum;

  // Cumulative rounding, so the classes add up to exactly total_pages.
  const size_t total = options.total_pages;
  PageCorpus corpus;
  double cum = 0;
  size_t assigned = 0;
  for (int c = 0; c < kNumPageClasses; ++c) {
    cum += w[c];
    size_t upto = static_cast<size_t>(std::llround(cum * total));
    corpus.wanted[c] = upto - assigned;
    assigned = upto;
  }
  corpus.bytes.reserve(total * kPageSize);

  if (corpus.wanted[kBinaryPage] > 0) {
    std::vector<std::string> files = ListFiles(options.binary_dirs);
    ShuffleWith(files, rng);
    AddBinaryPages(files, corpus.wanted[kBinaryPage], options.max_pages_per_file,
                   rng, &corpus);
  }
  if (corpus.wanted[kTextPage] > 0) {
    std::vector<std::string> files = ListFiles(options.text_dirs);
    ShuffleWith(files, rng);
    AddTextPages(files, corpus.wanted[kTextPage], options.max_pages_per_file,
                 rng, &corpus);
  }
  for (size_t i = 0; i < corpus.wanted[kZeroPage]; ++i) {
    std::memset(AddPage(kZeroPage, &corpus), 0, kPageSize);
  }
  for (size_t i = 0; i < corpus.wanted[kRandomPage]; ++i) {
    uint8_t* p = AddPage(kRandomPage, &corpus);
    for (size_t off = 0; off < kPageSize; off += sizeof(uint64_t)) {
      uint64_t x = rng();
      std::memcpy(p + off, &x, sizeof(x));
    }
  }
  return corpus;
}

uint64_t PageCorpusFingerprint(const PageCorpus& corpus) {
  return XXH3_64bits(corpus.bytes.data(), corpus.bytes.size());
}

}  // namespace ramster
