// ramsterctl: the admin CLI. Asks every --server one question over the Admin
// service and prints each node's answer; see Usage() in ramsterctl_args.cc.
//
// Exit status: 0 all nodes answered, 1 some node is down or refused, 2 usage.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/types/span.h"
#include "client/admin_client.h"
#include "client/admin_reply.h"
#include "client/admin_view.h"
#include "client/ramsterctl_args.h"

namespace ramster::ctl {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitNodeFailed = 1;
constexpr int kExitUsage = 2;

// Asks every server, prints the answers, and returns the exit status.
template <typename Call>
int AskAll(const Options& options, const Call& call) {
  auto replies = admin::CallEach(options.servers, options.timeout, call);
  std::cout << (options.json ? admin::FormatJson(replies)
                             : admin::FormatTable(replies));
  std::cout.flush();
  return admin::AllOk(replies) ? kExitOk : kExitNodeFailed;
}

int Run(const Options& options, const Command& command) {
  using admin::AdminClient;
  switch (command.kind) {
    case Command::Kind::kStatus:
      return AskAll(options, [](AdminClient& c) { return c.GetStatus(); });
    case Command::Kind::kClients:
      return AskAll(options, [](AdminClient& c) { return c.ListClients(); });
    case Command::Kind::kSetQuota:
      return AskAll(options, [&command](AdminClient& c) {
        return c.SetClientQuota(command.client_id, command.bytes);
      });
    case Command::Kind::kSetMemoryLimit:
      return AskAll(options, [&command](AdminClient& c) {
        return c.SetMemoryLimit(command.bytes);
      });
    case Command::Kind::kDrain:
      return AskAll(options, [](AdminClient& c) { return c.Drain(true); });
    case Command::Kind::kUndrain:
      return AskAll(options, [](AdminClient& c) { return c.Drain(false); });
  }
  return kExitUsage;  // unreachable: every kind is handled above
}

int UsageError(const absl::Status& error) {
  std::cerr << "ramsterctl: " << error.message()
            << "\nTry 'ramsterctl --help' for more information.\n";
  return kExitUsage;
}

int Main(int argc, char** argv) {
  absl::StatusOr<Options> options = ParseArgs(absl::MakeConstSpan(argv, argc));
  if (!options.ok()) return UsageError(options.status());
  if (options->help) {
    std::cout << Usage();
    return kExitOk;
  }
  absl::StatusOr<Command> command = ParseCommand(options->words);
  if (!command.ok()) return UsageError(command.status());
  if (!options->admin_token_file.empty()) {
    std::ifstream in(options->admin_token_file);
    std::stringstream token;
    token << in.rdbuf();
    std::string t(absl::StripAsciiWhitespace(token.str()));
    if (!in || t.empty()) {
      return UsageError(absl::InvalidArgumentError(
          "cannot read an admin token from " + options->admin_token_file));
    }
    admin::SetAdminToken(std::move(t));
  }
  return Run(*options, *command);
}

}  // namespace
}  // namespace ramster::ctl

int main(int argc, char** argv) { return ramster::ctl::Main(argc, argv); }
