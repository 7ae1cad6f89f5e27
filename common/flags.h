// Command lines in the style ops scripts expect (--memory-limit=64M) parsed
// with Abseil flags, whose names use underscores (memory_limit).
#ifndef RAMSTER_COMMON_FLAGS_H_
#define RAMSTER_COMMON_FLAGS_H_

#include <vector>

namespace ramster {

// Parses the command line after turning dashes in flag names into
// underscores ("--memory-limit=64M" -> "--memory_limit=64M"; values and
// positional arguments are left alone). Returns the positional arguments,
// argv[0] first, as absl::ParseCommandLine does.
std::vector<char*> ParseCommandLineWithDashes(int argc, char** argv);

}  // namespace ramster

#endif  // RAMSTER_COMMON_FLAGS_H_
