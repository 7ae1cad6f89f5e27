#include "client/admin_json.h"

#include <cassert>
#include <charconv>
#include <cmath>
#include <system_error>
#include <utility>

#include "absl/strings/str_format.h"

namespace ramster::admin {
namespace {

// Length of the well-formed UTF-8 sequence that starts `s`, or 0 when it is
// not one (a stray continuation byte, a truncated sequence, an overlong
// encoding, a surrogate, or a code point above U+10FFFF).
// REQUIRES: !s.empty()
size_t Utf8SequenceLength(absl::string_view s) {
  const auto lead = static_cast<unsigned char>(s[0]);
  if (lead < 0x80) return 1;
  size_t length;
  uint32_t code_point;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    const auto next = static_cast<unsigned char>(s[i]);
    if ((next & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (next & 0x3F);
  }
  static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kSmallest[length] || code_point > 0x10FFFF ||
      (code_point >= 0xD800 && code_point <= 0xDFFF)) {
    return 0;
  }
  return length;
}

}  // namespace

std::string JsonQuote(absl::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  while (!text.empty()) {
    const char c = text[0];
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        const auto byte = static_cast<unsigned char>(c);
        // DEL is legal JSON but not something to put on a terminal raw.
        if (byte < 0x20 || byte == 0x7F) {
          out += absl::StrFormat("\\u%04x", byte);
          break;
        }
        const size_t length = Utf8SequenceLength(text);
        if (length == 0) {
          out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
          text.remove_prefix(1);
          continue;
        }
        out.append(text.data(), length);
        text.remove_prefix(length);
        continue;
      }
    }
    text.remove_prefix(1);
  }
  out += '"';
  return out;
}

std::string JsonDouble(double value) {
  if (!std::isfinite(value)) return "null";
  char buffer[64];
  // Without a format argument, to_chars writes the shortest text that reads
  // back as the same double, in either fixed or exponent form; both are
  // valid JSON numbers.
  const std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value);
  assert(result.ec == std::errc());
  return std::string(buffer, result.ptr);
}

void JsonWriter::BeginObject() { Begin(/*is_object=*/true, '{'); }
void JsonWriter::EndObject() { End(/*is_object=*/true, '}'); }
void JsonWriter::BeginArray() { Begin(/*is_object=*/false, '['); }
void JsonWriter::EndArray() { End(/*is_object=*/false, ']'); }

void JsonWriter::Key(absl::string_view key) {
  assert(!levels_.empty() && levels_.back().is_object && !after_key_);
  Level& level = levels_.back();
  if (level.count++ > 0) out_ += ',';
  out_ += '\n';
  Indent();
  out_ += JsonQuote(key);
  out_ += ": ";
  after_key_ = true;
}

void JsonWriter::String(absl::string_view value) {
  BeforeValue();
  out_ += JsonQuote(value);
}

void JsonWriter::Uint(uint64_t value) {
  BeforeValue();
  out_ += std::to_string(value);
}

void JsonWriter::Double(double value) {
  BeforeValue();
  out_ += JsonDouble(value);
}

void JsonWriter::Bool(bool value) {
  BeforeValue();
  out_ += value ? "true" : "false";
}

std::string JsonWriter::Finish() && {
  assert(levels_.empty() && !after_key_ && !out_.empty());
  out_ += '\n';
  return std::move(out_);
}

void JsonWriter::BeforeValue() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (levels_.empty()) {
    assert(out_.empty());  // one top-level value per document
    return;
  }
  assert(!levels_.back().is_object);
  Level& level = levels_.back();
  if (level.count++ > 0) out_ += ',';
  out_ += '\n';
  Indent();
}

void JsonWriter::Begin(bool is_object, char open) {
  BeforeValue();
  out_ += open;
  levels_.push_back(Level{is_object, 0});
}

void JsonWriter::End(bool is_object, char close) {
  (void)is_object;  // only checked
  assert(!levels_.empty() && levels_.back().is_object == is_object &&
         !after_key_);
  const Level level = levels_.back();
  levels_.pop_back();
  if (level.count > 0) {
    out_ += '\n';
    Indent();
  }
  out_ += close;
}

void JsonWriter::Indent() { out_.append(2 * levels_.size(), ' '); }

}  // namespace ramster::admin
