#include "client/ramsterctl_args.h"

#include <algorithm>

#include <utility>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/byte_size.h"

ABSL_FLAG(std::vector<std::string>, server, {},
          "a node's Admin address, HOST:PORT; repeat the flag or give a comma "
          "list to ask several nodes at once");
ABSL_FLAG(bool, json, false,
          "print JSON, {\"nodes\": [...]}, instead of a table");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(2),
          "how long to wait for each node's answer; a node that does not "
          "answer in time is reported as down");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the admin token, for nodes started with "
          "--admin-token-file");

namespace ramster::ctl {
namespace {

// The flags ramsterctl understands, in the order --help lists them, with the
// placeholder it shows for their value (empty for a bool).
struct FlagSpec {
  absl::string_view name;
  absl::string_view value_name;
};
constexpr FlagSpec kFlags[] = {
    {"server", "HOST:PORT"},
    {"json", ""},
    {"timeout", "DURATION"},
    {"admin_token_file", "PATH"},
};

// One of our flags by name; nullptr for any other name, including flags that
// libraries linked into the binary may have registered.
absl::CommandLineFlag* FindOurFlag(absl::string_view name) {
  for (const FlagSpec& spec : kFlags) {
    if (spec.name == name) return absl::FindCommandLineFlag(name);
  }
  return nullptr;
}

// `text` filled into lines of at most `width` columns, each indented by
// `indent` spaces and ending in a newline.
std::string Wrap(absl::string_view text, size_t indent, size_t width) {
  std::string out;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  return out;
}

absl::Status UsageError(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

}  // namespace

absl::StatusOr<Options> ParseArgs(absl::Span<char* const> argv) {
  // Flags are process-wide; start every parse from their defaults.
  for (const FlagSpec& spec : kFlags) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(spec.name);
    std::string error;
    flag->ParseFrom(flag->DefaultValue(), &error);
  }

  Options options;
  bool flags_ended = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    absl::string_view arg = argv[i];
    if (flags_ended || arg.size() < 2 || arg[0] != '-') {
      options.words.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_ended = true;
      continue;
    }
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t equals = arg.find('=');
    const bool has_value = equals != absl::string_view::npos;
    // --admin-token-file and --admin_token_file are the same flag.
    std::string name_storage(arg.substr(0, equals));
    std::replace(name_storage.begin(), name_storage.end(), '-', '_');
    absl::string_view name = name_storage;
    std::string value(has_value ? arg.substr(equals + 1) : "");

    if (name == "help" || name == "h") {
      options.help = true;
      continue;
    }
    absl::CommandLineFlag* flag = FindOurFlag(name);
    if (flag == nullptr && absl::ConsumePrefix(&name, "no")) {
      flag = FindOurFlag(name);
      if (flag == nullptr || !flag->IsOfType<bool>() || has_value) {
        return UsageError(absl::StrCat("unknown flag: ", argv[i]));
      }
      value = "false";
    } else if (flag == nullptr) {
      return UsageError(absl::StrCat("unknown flag: ", argv[i]));
    } else if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argv.size()) {
        value = argv[++i];
      } else {
        return UsageError(absl::StrCat("--", name, " needs a value"));
      }
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return UsageError(absl::StrCat("bad value for --", name, ": ", error));
    }
    if (name == "server") {
      for (const std::string& s : absl::GetFlag(FLAGS_server)) {
        absl::string_view address = absl::StripAsciiWhitespace(s);
        if (!address.empty()) options.servers.emplace_back(address);
      }
    }
  }
  absl::SetFlag(&FLAGS_server, options.servers);
  options.json = absl::GetFlag(FLAGS_json);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.admin_token_file = absl::GetFlag(FLAGS_admin_token_file);

  if (!options.words.empty() && options.words[0] == "help") options.help = true;
  if (options.help) return options;
  if (options.servers.empty()) {
    return UsageError("no --server given");
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return UsageError("--timeout must be positive");
  }
  return options;
}

absl::StatusOr<Command> ParseCommand(const std::vector<std::string>& words) {
  if (words.empty()) return UsageError("no command given");
  const std::string& verb = words[0];
  auto expect = [&](size_t count, absl::string_view usage) -> absl::Status {
    if (words.size() != count || (count > 1 && words[1] != "set")) {
      return UsageError(absl::StrCat("usage: ramsterctl [flags] ", usage));
    }
    return absl::OkStatus();
  };
  Command command;
  if (verb == "status" || verb == "clients" || verb == "drain" ||
      verb == "undrain") {
    if (words.size() != 1) {
      return UsageError(absl::StrCat("\"", verb, "\" takes no arguments"));
    }
    command.kind = verb == "status"    ? Command::Kind::kStatus
                   : verb == "clients" ? Command::Kind::kClients
                   : verb == "drain"   ? Command::Kind::kDrain
                                       : Command::Kind::kUndrain;
    return command;
  }
  if (verb == "quota") {
    if (absl::Status s = expect(4, "quota set CLIENT BYTES"); !s.ok()) return s;
    if (words[2].empty()) return UsageError("the client id is empty");
    absl::StatusOr<uint64_t> bytes = ParseByteSize(words[3]);
    if (!bytes.ok()) return UsageError(bytes.status().message());
    command.kind = Command::Kind::kSetQuota;
    command.client_id = words[2];
    command.bytes = *bytes;
    return command;
  }
  if (verb == "memory-limit") {
    if (absl::Status s = expect(3, "memory-limit set BYTES"); !s.ok()) return s;
    absl::StatusOr<uint64_t> bytes = ParseByteSize(words[2]);
    if (!bytes.ok()) return UsageError(bytes.status().message());
    command.kind = Command::Kind::kSetMemoryLimit;
    command.bytes = *bytes;
    return command;
  }
  return UsageError(absl::StrCat("unknown command \"", verb, "\""));
}

std::string Usage() {
  std::string out = R"(Usage: ramsterctl --server=HOST:PORT[,HOST:PORT...] [--json] [--timeout=2s] COMMAND

Administers ramster servers through their Admin gRPC service. The command
goes to every --server at once, and each node's answer is shown separately.

Commands:
  status                  one row per node: state (up, down, draining), RAM
                          and disk used / limit, pages in RAM and on disk,
                          compression ratio, number of clients
  clients                 one row per client per node: boot epoch, pages in
                          RAM and on disk, bytes, quota, lease remaining
  quota set CLIENT BYTES  set CLIENT's quota on each node
  memory-limit set BYTES  set each node's RAM limit; lowering it writes
                          persistent pages back to disk and drops ephemeral
                          ones
  drain                   refuse new stores; clients move their pages away
  undrain                 accept new stores again
  help                    this text

BYTES is a whole number with an optional suffix K, M, G or T (powers of
1024): 4096, 64K, 64M, 2G.

Flags:
)";
  for (const FlagSpec& spec : kFlags) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(spec.name);
    std::string synopsis = absl::StrCat("--", absl::StrReplaceAll(spec.name, {{"_", "-"}}));
    if (!spec.value_name.empty()) absl::StrAppend(&synopsis, "=", spec.value_name);
    std::string help = flag->Help();
    if (!flag->DefaultValue().empty() && !flag->IsOfType<bool>()) {
      absl::StrAppend(&help, " (default ", flag->DefaultValue(), ")");
    }
    absl::StrAppendFormat(&out, "  %s\n", synopsis);
    out += Wrap(help, /*indent=*/6, /*width=*/78);
  }
  out += R"(
Flags may also follow the command. With --json the output is
{"nodes": [ {...}, ... ]}, one object per --server, in order.

Exit status: 0 when every node answered and did what was asked; 1 when a node
is down or refused the command (the others are still asked and reported);
2 for a usage error.
)";
  return out;
}

}  // namespace ramster::ctl
