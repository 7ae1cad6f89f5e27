#include "client/admin_json.h"

#include <limits>
#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace ramster::admin {
namespace {

TEST(JsonQuoteTest, PlainTextIsQuoted) {
  EXPECT_EQ(JsonQuote(""), R"("")");
  EXPECT_EQ(JsonQuote("node-1:7070/x"), R"("node-1:7070/x")");
}

TEST(JsonQuoteTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(JsonQuote("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(JsonQuote("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(JsonQuote(std::string("\x00\x01\x1b\x1f\x7f", 5)),
            R"("\u0000\u0001\u001b\u001f\u007f")");
}

TEST(JsonQuoteTest, KeepsWellFormedUtf8) {
  // é (2 bytes), € (3 bytes), 😀 (4 bytes).
  EXPECT_EQ(JsonQuote("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"),
            "\"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\"");
}

TEST(JsonQuoteTest, ReplacesMalformedUtf8) {
  const std::string kReplacement = "\xEF\xBF\xBD";
  // A stray continuation byte; a lead byte followed by ASCII; a truncated
  // sequence at the end.
  EXPECT_EQ(JsonQuote("a\x80z"), "\"a" + kReplacement + "z\"");
  EXPECT_EQ(JsonQuote("\xC3(" ), "\"" + kReplacement + "(\"");
  EXPECT_EQ(JsonQuote("\xE2\x82"), "\"" + kReplacement + kReplacement + "\"");
  // Overlong "/" and an encoded surrogate (U+D800) and a code point above
  // U+10FFFF: each byte replaced.
  EXPECT_EQ(JsonQuote("\xC0\xAF"), "\"" + kReplacement + kReplacement + "\"");
  EXPECT_EQ(JsonQuote("\xED\xA0\x80"),
            "\"" + kReplacement + kReplacement + kReplacement + "\"");
  EXPECT_EQ(JsonQuote("\xF4\x90\x80\x80"), "\"" + kReplacement + kReplacement +
                                               kReplacement + kReplacement +
                                               "\"");
  EXPECT_EQ(JsonQuote("\xFF"), "\"" + kReplacement + "\"");
}

TEST(JsonDoubleTest, ShortestExactFormAndNullForNonFinite) {
  EXPECT_EQ(JsonDouble(0), "0");
  EXPECT_EQ(JsonDouble(2.5), "2.5");
  EXPECT_EQ(JsonDouble(0.1), "0.1");
  EXPECT_EQ(JsonDouble(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(JsonDouble(std::numeric_limits<double>::infinity()), "null");
  EXPECT_EQ(JsonDouble(std::numeric_limits<double>::quiet_NaN()), "null");
}

TEST(JsonWriterTest, NestedDocument) {
  JsonWriter w;
  w.BeginObject();
  w.Key("n");
  w.Uint(18446744073709551615u);
  w.Key("list");
  w.BeginArray();
  w.Bool(true);
  w.BeginObject();
  w.Key("s");
  w.String("x\"y");
  w.EndObject();
  w.Double(1.5);
  w.EndArray();
  w.Key("empty_list");
  w.BeginArray();
  w.EndArray();
  w.Key("empty_object");
  w.BeginObject();
  w.EndObject();
  w.EndObject();
  EXPECT_EQ(std::move(w).Finish(), R"({
  "n": 18446744073709551615,
  "list": [
    true,
    {
      "s": "x\"y"
    },
    1.5
  ],
  "empty_list": [],
  "empty_object": {}
}
)");
}

TEST(JsonWriterTest, TopLevelScalar) {
  JsonWriter w;
  w.Bool(false);
  EXPECT_EQ(std::move(w).Finish(), "false\n");
}

}  // namespace
}  // namespace ramster::admin
