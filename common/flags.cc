#include "common/flags.h"

#include <cstring>
#include <string>

#include "absl/flags/parse.h"

namespace ramster {

std::vector<char*> ParseCommandLineWithDashes(int argc, char** argv) {
  // The rewritten strings must live as long as the program: Abseil keeps
  // pointers to positional arguments.
  static std::vector<std::string>* storage = new std::vector<std::string>();
  storage->reserve(argc);
  std::vector<char*> args;
  bool only_positional = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && !only_positional && a.size() > 2 && a[0] == '-') {
      if (a == "--") {
        only_positional = true;
      } else {
        size_t start = a[1] == '-' ? 2 : 1;
        size_t end = a.find('=');
        if (end == std::string::npos) end = a.size();
        for (size_t j = start; j < end; ++j) {
          if (a[j] == '-') a[j] = '_';
        }
      }
    }
    storage->push_back(std::move(a));
  }
  for (std::string& s : *storage) args.push_back(s.data());
  return absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
}

}  // namespace ramster
