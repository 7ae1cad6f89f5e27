// Tests: a fresh directory under the test's TEST_TMPDIR (Bazel), or /tmp.
#ifndef RAMSTER_COMMON_TEST_TEMP_DIR_H_
#define RAMSTER_COMMON_TEST_TEMP_DIR_H_

#include <stdlib.h>

#include <string>

namespace ramster {

// A new directory named `prefix`_XXXXXX; empty if it cannot be made.
inline std::string MakeTestTempDir(const std::string& prefix) {
  const char* root = getenv("TEST_TMPDIR");
  std::string tmpl = std::string(root != nullptr ? root : "/tmp") + "/" + prefix + "_XXXXXX";
  return mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string();
}

}  // namespace ramster

#endif  // RAMSTER_COMMON_TEST_TEMP_DIR_H_
