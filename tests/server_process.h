// Starts and stops real ramster-server processes for tests that cross
// process boundaries. The server listens on a loopback port it picks itself;
// Start() reads the port from the server's ready line.
#ifndef RAMSTER_TESTS_SERVER_PROCESS_H_
#define RAMSTER_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace ramster {

class ServerProcess {
 public:
  // `binary`: path to ramster-server; `args`: its flags except --listen.
  ServerProcess(std::string binary, std::vector<std::string> args);
  // Kills the process if it still runs.
  ~ServerProcess();

  // Starts it and waits (up to 30 s) for its ready line. `port` 0: any port;
  // otherwise that port (to restart on the same address).
  bool Start(int port = 0);
  // SIGTERM and wait; returns the exit status (-1 on failure).
  int Stop();
  // SIGKILL and wait.
  void Kill();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // Flags for the next Start.
  void set_args(std::vector<std::string> args) { args_ = std::move(args); }
  const std::vector<std::string>& args() const { return args_; }

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // What the server wrote to stderr since the last Start (complete after
  // Stop or Kill).
  const std::string& log() const { return log_; }

 private:
  void DrainLog();

  const std::string binary_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  int stderr_fd_ = -1;
  int port_ = 0;
  std::string log_;
};

// The path of a binary in the test's runfiles, e.g. "server/ramster-server".
std::string RunfilePath(const std::string& relative);

}  // namespace ramster

#endif  // RAMSTER_TESTS_SERVER_PROCESS_H_
