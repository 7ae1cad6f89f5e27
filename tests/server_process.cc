#include "tests/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <regex>

namespace ramster {

std::string RunfilePath(const std::string& relative) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* ws = getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && ws != nullptr) {
    std::string p = std::string(srcdir) + "/" + ws + "/" + relative;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return relative;
}

ServerProcess::ServerProcess(std::string binary, std::vector<std::string> args)
    : binary_(std::move(binary)), args_(std::move(args)) {}

ServerProcess::~ServerProcess() { Kill(); }

bool ServerProcess::Start(int port) {
  log_.clear();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  std::vector<std::string> argv_s = {binary_, "--listen=127.0.0.1:" + std::to_string(port)};
  argv_s.insert(argv_s.end(), args_.begin(), args_.end());
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fds[1], 2);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary_.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  stderr_fd_ = fds[0];
  if (pid_ < 0) return false;
  // Wait for "ready on HOST:PORT".
  std::regex ready(R"(ready on [^ ]*:(\d+))");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{stderr_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char buf[4096];
      ssize_t n = read(stderr_fd_, buf, sizeof(buf));
      if (n <= 0) break;  // exited
      log_.append(buf, n);
      std::smatch m;
      if (std::regex_search(log_, m, ready)) {
        port_ = std::stoi(m[1]);
        return true;
      }
    }
  }
  Kill();
  return false;
}

void ServerProcess::DrainLog() {
  if (stderr_fd_ < 0) return;
  char buf[4096];
  ssize_t n;
  while ((n = read(stderr_fd_, buf, sizeof(buf))) > 0) log_.append(buf, n);
  close(stderr_fd_);
  stderr_fd_ = -1;
}

int ServerProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  DrainLog();
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
  DrainLog();
}

}  // namespace ramster
