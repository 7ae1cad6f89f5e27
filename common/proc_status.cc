#include "common/proc_status.h"

#include <fstream>
#include <sstream>

namespace ramster {
namespace {

std::string ProcPath(int pid, const char* file) {
  return (pid == 0 ? std::string("/proc/self/") : "/proc/" + std::to_string(pid) + "/") + file;
}

}  // namespace

std::optional<uint64_t> ProcKbField(const std::string& path, std::string_view field) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > field.size() && line.compare(0, field.size(), field) == 0 &&
        line[field.size()] == ':') {
      uint64_t kb = 0;
      std::istringstream(line.substr(field.size() + 1)) >> kb;
      return kb * 1024;
    }
  }
  return std::nullopt;
}

uint64_t RssBytes(int pid) { return ProcKbField(ProcPath(pid, "status"), "VmRSS").value_or(0); }

uint64_t LazyFreeBytes(int pid) {
  return ProcKbField(ProcPath(pid, "smaps_rollup"), "LazyFree").value_or(0);
}

}  // namespace ramster
