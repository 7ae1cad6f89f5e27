// ramsterctl's command line: flags and the command words.
//
// Flags are absl flags (defined in ramsterctl_args.cc, parsed with their
// absl types), but the command line is walked here rather than by
// absl::ParseCommandLine, for two reasons: absl keeps only the last value
// of a repeated flag, and ramsterctl promises that --server may be repeated;
// and absl exits with status 1 on a bad flag or --help, where ramsterctl
// promises 2 for usage errors and keeps 1 for "a node is down".
#ifndef RAMSTER_CLIENT_RAMSTERCTL_ARGS_H_
#define RAMSTER_CLIENT_RAMSTERCTL_ARGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace ramster::ctl {

// What was asked, before any node is contacted.
struct Options {
  // Every --server value, comma lists split, blanks dropped, in order.
  std::vector<std::string> servers;
  bool json = false;
  absl::Duration timeout;
  // Empty: no admin token is sent.
  std::string admin_token_file;
  // --help, -h or the word "help": print Usage() and exit 0.
  bool help = false;
  // The words that are not flags: "quota", "set", "host-a", "64M".
  std::vector<std::string> words;
};

// Parses argv (argv[0] is the program name). Flags may come before, between
// or after the words; "--" ends the flags. Accepts --flag=value, --flag value
// (non-bool flags), --json, --nojson, and a single leading dash.
// kInvalidArgument for an unknown flag, a bad value or a missing one.
// Sets the absl flags as a side effect (FLAGS_server holds every --server).
absl::StatusOr<Options> ParseArgs(absl::Span<char* const> argv);

struct Command {
  enum class Kind {
    kStatus,
    kClients,
    kSetQuota,
    kSetMemoryLimit,
    kDrain,
    kUndrain,
  };
  Kind kind;
  std::string client_id;  // kSetQuota
  uint64_t bytes = 0;     // kSetQuota, kSetMemoryLimit
};

// The command the words name. kInvalidArgument for an unknown command, the
// wrong number of words, an empty client id or a bad byte size.
absl::StatusOr<Command> ParseCommand(const std::vector<std::string>& words);

// The --help text: synopsis, commands, flags and exit statuses.
std::string Usage();

}  // namespace ramster::ctl

#endif  // RAMSTER_CLIENT_RAMSTERCTL_ARGS_H_
