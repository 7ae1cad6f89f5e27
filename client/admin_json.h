// A small JSON writer for ramsterctl's machine-readable output.
//
// Protobuf's JSON printer writes uint64 fields as strings; scripts that read
// `ramsterctl --json` want numbers, so the admin views write JSON themselves
// through this class. Output is indented by two spaces per level, with
// `"key": value` pairs, and is always valid UTF-8 JSON: strings are escaped
// and any byte sequence that is not valid UTF-8 becomes U+FFFD.
//
// Thread safety: none; one writer per thread.
#ifndef RAMSTER_CLIENT_ADMIN_JSON_H_
#define RAMSTER_CLIENT_ADMIN_JSON_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace ramster::admin {

// `text` as a JSON string literal, quotes included.
std::string JsonQuote(absl::string_view text);

// `value` as a JSON number in its shortest exact form; "null" for NaN and
// infinities, which JSON cannot represent.
std::string JsonDouble(double value);

// Usage:
//   JsonWriter w;
//   w.BeginObject();
//   w.Key("nodes");
//   w.BeginArray();
//   ...
//   w.EndArray();
//   w.EndObject();
//   std::string text = std::move(w).Finish();
//
// REQUIRES: calls nest properly, every value inside an object is preceded by
// Key(), and Key() is called only directly inside an object. Violations are
// programming errors and abort in debug builds.
class JsonWriter {
 public:
  void BeginObject();
  void EndObject();
  void BeginArray();
  void EndArray();
  void Key(absl::string_view key);

  void String(absl::string_view value);
  void Uint(uint64_t value);
  void Double(double value);
  void Bool(bool value);

  // The document, ending in a newline.
  // REQUIRES: every container that was begun has been ended.
  std::string Finish() &&;

 private:
  struct Level {
    bool is_object;
    int count;  // values (or key/value pairs) written so far
  };

  // Writes the separator and indentation that precede a value (or a key),
  // unless a Key() has just written them.
  void BeforeValue();
  void Begin(bool is_object, char open);
  void End(bool is_object, char close);
  void Indent();

  std::string out_;
  std::vector<Level> levels_;
  bool after_key_ = false;
};

}  // namespace ramster::admin

#endif  // RAMSTER_CLIENT_ADMIN_JSON_H_
