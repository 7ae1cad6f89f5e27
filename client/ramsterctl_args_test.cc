#include "client/ramsterctl_args.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ramster::ctl {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

absl::StatusOr<Options> Parse(std::vector<std::string> args) {
  std::vector<char*> argv;
  static char program[] = "ramsterctl";
  argv.push_back(program);
  for (std::string& a : args) argv.push_back(a.data());
  return ParseArgs(argv);
}

TEST(ParseArgsTest, ServersAccumulateAcrossRepeatsAndCommaLists) {
  absl::StatusOr<Options> o =
      Parse({"--server=a:1,b:2", "status", "--server", "c:3", "-server= d:4 ,"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_THAT(o->servers, ElementsAre("a:1", "b:2", "c:3", "d:4"));
  EXPECT_THAT(o->words, ElementsAre("status"));
  EXPECT_FALSE(o->json);
  EXPECT_EQ(o->timeout, absl::Seconds(2));
}

TEST(ParseArgsTest, FlagsAfterTheCommandAndTypedValues) {
  absl::StatusOr<Options> o = Parse(
      {"quota", "set", "host-a", "64M", "--json", "--timeout=250ms", "--server=a:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_THAT(o->words, ElementsAre("quota", "set", "host-a", "64M"));
  EXPECT_TRUE(o->json);
  EXPECT_EQ(o->timeout, absl::Milliseconds(250));
}

TEST(ParseArgsTest, EachParseStartsFromDefaults) {
  ASSERT_TRUE(Parse({"--server=a:1", "--json", "--timeout=1s"}).ok());
  absl::StatusOr<Options> o = Parse({"--server=b:1"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_THAT(o->servers, ElementsAre("b:1"));
  EXPECT_FALSE(o->json);
  EXPECT_EQ(o->timeout, absl::Seconds(2));
}

TEST(ParseArgsTest, BoolForms) {
  absl::StatusOr<Options> o = Parse({"--server=a:1", "--json=true", "--nojson"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->json);
}

TEST(ParseArgsTest, DoubleDashEndsFlags) {
  absl::StatusOr<Options> o =
      Parse({"--server=a:1", "quota", "set", "--", "-odd-client", "1G"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_THAT(o->words, ElementsAre("quota", "set", "-odd-client", "1G"));
}

TEST(ParseArgsTest, Help) {
  for (const char* help : {"--help", "-h", "help"}) {
    absl::StatusOr<Options> o = Parse({help});
    ASSERT_TRUE(o.ok()) << help << ": " << o.status();
    EXPECT_TRUE(o->help) << help;
  }
}

TEST(ParseArgsTest, UsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"status"}, "no --server given"},
      {{"--server=", "status"}, "no --server given"},
      {{"--server=a:1", "--bogus"}, "unknown flag: --bogus"},
      {{"--server=a:1", "--flagfile=x"}, "unknown flag: --flagfile=x"},
      {{"--server=a:1", "--noserver"}, "unknown flag: --noserver"},
      {{"--server=a:1", "--nojson=1"}, "unknown flag: --nojson=1"},
      {{"status", "--server"}, "--server needs a value"},
      {{"--server=a:1", "--timeout=soon"}, "bad value for --timeout"},
      {{"--server=a:1", "--timeout=0s"}, "--timeout must be positive"},
      {{"--server=a:1", "--json=maybe"}, "bad value for --json"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Options> o = Parse(c.args);
    EXPECT_EQ(o.status().code(), absl::StatusCode::kInvalidArgument)
        << c.args.back();
    EXPECT_THAT(std::string(o.status().message()), HasSubstr(c.message));
  }
}

TEST(ParseCommandTest, Commands) {
  absl::StatusOr<Command> c = ParseCommand({"status"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kStatus);

  c = ParseCommand({"clients"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kClients);

  c = ParseCommand({"drain"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kDrain);

  c = ParseCommand({"undrain"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kUndrain);

  c = ParseCommand({"quota", "set", "host-a", "64M"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kSetQuota);
  EXPECT_EQ(c->client_id, "host-a");
  EXPECT_EQ(c->bytes, 64u << 20);

  c = ParseCommand({"memory-limit", "set", "4096"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, Command::Kind::kSetMemoryLimit);
  EXPECT_EQ(c->bytes, 4096u);
}

TEST(ParseCommandTest, UsageErrors) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"stats"},
      {"status", "extra"},
      {"quota"},
      {"quota", "get", "host-a", "1M"},
      {"quota", "set", "host-a"},
      {"quota", "set", "", "1M"},
      {"quota", "set", "host-a", "lots"},
      {"quota", "set", "host-a", "1M", "extra"},
      {"memory-limit", "set"},
      {"memory-limit", "set", "-1"},
      {"memory-limit", "set", "99999999999T"},
  };
  for (const std::vector<std::string>& words : cases) {
    EXPECT_EQ(ParseCommand(words).status().code(),
              absl::StatusCode::kInvalidArgument)
        << testing::PrintToString(words);
  }
}

TEST(UsageTest, NamesEveryCommandAndFlag) {
  const std::string usage = Usage();
  for (const char* s :
       {"status", "clients", "quota set CLIENT BYTES", "memory-limit set BYTES",
        "drain", "undrain", "--server=HOST:PORT", "--json",
        "--timeout=DURATION", "(default 2s)", "Exit status"}) {
    EXPECT_THAT(usage, HasSubstr(s));
  }
}

}  // namespace
}  // namespace ramster::ctl
