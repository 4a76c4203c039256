#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "gguf/gguf.h"

namespace maas::gguf {
namespace {

TEST(Value, TypeIdsMatchTheSpec) {
  EXPECT_EQ(Value(uint8_t{1}).type(), ValueType::UINT8);
  EXPECT_EQ(Value(int8_t{1}).type(), ValueType::INT8);
  EXPECT_EQ(Value(uint16_t{1}).type(), ValueType::UINT16);
  EXPECT_EQ(Value(int16_t{1}).type(), ValueType::INT16);
  EXPECT_EQ(Value(uint32_t{1}).type(), ValueType::UINT32);
  EXPECT_EQ(Value(int32_t{1}).type(), ValueType::INT32);
  EXPECT_EQ(Value(1.0f).type(), ValueType::FLOAT32);
  EXPECT_EQ(Value(true).type(), ValueType::BOOL);
  EXPECT_EQ(Value(std::string("x")).type(), ValueType::STRING);
  EXPECT_EQ(Value(Array{}).type(), ValueType::ARRAY);
  EXPECT_EQ(Value(uint64_t{1}).type(), ValueType::UINT64);
  EXPECT_EQ(Value(int64_t{1}).type(), ValueType::INT64);
  EXPECT_EQ(Value(1.0).type(), ValueType::FLOAT64);
  EXPECT_EQ(static_cast<uint32_t>(ValueType::FLOAT64), 12u);
  EXPECT_EQ(value_type_name(ValueType::FLOAT32), "float32");
  EXPECT_EQ(value_type_name(ValueType::ARRAY), "array");
  EXPECT_EQ(value_type_name(static_cast<ValueType>(13)), "unknown");
}

TEST(Value, Conversions) {
  EXPECT_EQ(Value(uint8_t{200}).as_uint(), 200u);
  EXPECT_EQ(Value(int16_t{7}).as_uint(), 7u);
  EXPECT_EQ(Value(std::numeric_limits<uint64_t>::max()).as_uint(),
            std::numeric_limits<uint64_t>::max());
  EXPECT_THROW(Value(int32_t{-1}).as_uint(), Error);
  EXPECT_THROW(Value(1.0f).as_uint(), Error);
  EXPECT_THROW(Value(true).as_uint(), Error);
  EXPECT_THROW(Value(std::string("1")).as_uint(), Error);

  EXPECT_EQ(Value(int8_t{-5}).as_int(), -5);
  EXPECT_EQ(Value(uint32_t{4000000000u}).as_int(), 4000000000);
  EXPECT_EQ(Value(uint64_t{1} << 63).type(), ValueType::UINT64);
  EXPECT_THROW(Value(uint64_t{1} << 63).as_int(), Error);
  EXPECT_EQ(Value(int64_t{std::numeric_limits<int64_t>::min()}).as_int(),
            std::numeric_limits<int64_t>::min());
  EXPECT_THROW(Value(2.0).as_int(), Error);

  EXPECT_DOUBLE_EQ(Value(0.5f).as_double(), 0.5);
  EXPECT_DOUBLE_EQ(Value(1e-300).as_double(), 1e-300);
  EXPECT_DOUBLE_EQ(Value(int32_t{-3}).as_double(), -3.0);
  EXPECT_THROW(Value(false).as_double(), Error);
  EXPECT_THROW(Value(std::string("1.0")).as_double(), Error);

  EXPECT_TRUE(Value(true).as_bool());
  EXPECT_THROW(Value(uint8_t{1}).as_bool(), Error);
  EXPECT_EQ(Value(std::string("hi")).as_string(), "hi");
  EXPECT_THROW(Value(uint8_t{1}).as_string(), Error);
  EXPECT_EQ(Value::int32s({1, 2}).as_array().items.size(), 2u);
  EXPECT_THROW(Value(std::string("[]")).as_array(), Error);

  EXPECT_TRUE(Value(uint64_t{0}).is_integer());
  EXPECT_FALSE(Value(true).is_integer());
  EXPECT_TRUE(Value(0.0).is_float());
  EXPECT_FALSE(Value(int64_t{0}).is_float());
}

TEST(Value, ConversionErrorsSayWhatWasFound) {
  try {
    (void)Value(int32_t{-7}).as_uint();
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("int32 -7"), std::string::npos) << e.what();
  }
  try {
    (void)Value(std::string("x")).as_bool();
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("string"), std::string::npos) << e.what();
  }
}

TEST(Value, ToStringScalars) {
  EXPECT_EQ(Value(uint8_t{65}).to_string(), "65");  // a number, not 'A'
  EXPECT_EQ(Value(int8_t{-1}).to_string(), "-1");
  EXPECT_EQ(Value(uint64_t{18446744073709551615u}).to_string(), "18446744073709551615");
  EXPECT_EQ(Value(int64_t{-9}).to_string(), "-9");
  EXPECT_EQ(Value(true).to_string(), "true");
  EXPECT_EQ(Value(false).to_string(), "false");
  EXPECT_EQ(Value(0.1f).to_string(), "0.1");  // shortest form of the float, not of the double
  EXPECT_EQ(Value(1.5).to_string(), "1.5");
  EXPECT_EQ(Value(10000.0f).to_string(), "10000");
}

TEST(Value, ToStringQuotesAndEscapesStrings) {
  EXPECT_EQ(Value(std::string("llama")).to_string(), "\"llama\"");
  EXPECT_EQ(Value(std::string()).to_string(), "\"\"");
  EXPECT_EQ(Value(std::string("a\"b\\c\nd\te\r")).to_string(), R"("a\"b\\c\nd\te\r")");
  EXPECT_EQ(Value(std::string("\x01\x1b[31m\x7f", 7)).to_string(), R"("\x01\x1b[31m\x7f")");
  EXPECT_EQ(Value(std::string("nul\0x", 5)).to_string(), R"("nul\x00x")");
  // Valid UTF-8 is kept (U+2581 is SentencePiece's space marker, U+1F600 four bytes).
  EXPECT_EQ(Value(std::string("\xe2\x96\x81the")).to_string(), "\"\xe2\x96\x81the\"");
  EXPECT_EQ(Value(std::string("\xf0\x9f\x98\x80")).to_string(), "\"\xf0\x9f\x98\x80\"");
  // Broken sequences, overlong forms and surrogates are escaped byte by byte.
  EXPECT_EQ(Value(std::string("\xe2\x96")).to_string(), R"("\xe2\x96")");
  EXPECT_EQ(Value(std::string("\xc0\xaf")).to_string(), R"("\xc0\xaf")");
  EXPECT_EQ(Value(std::string("\xed\xa0\x80")).to_string(), R"("\xed\xa0\x80")");
  EXPECT_EQ(Value(std::string("\xff")).to_string(), R"("\xff")");
}

TEST(Value, ToStringArrays) {
  EXPECT_EQ(Value::int32s({1, -2, 3}).to_string(), "[1, -2, 3]");
  EXPECT_EQ(Value::int32s({}).to_string(), "[]");
  EXPECT_EQ(Value::strings({"a", "b\n"}).to_string(), R"(["a", "b\n"])");
  EXPECT_EQ(Value::floats({0.5f, 2.0f}).to_string(), "[0.5, 2]");
  std::vector<int32_t> many(20);
  for (int i = 0; i < 20; ++i) many[i] = i;
  EXPECT_EQ(Value::int32s(many).to_string(3), "[0, 1, 2, ... (20 items)]");
  EXPECT_EQ(Value::int32s(many).to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, ... (20 items)]");
  EXPECT_EQ(Value::int32s(many).to_string(0), "[... (20 items)]");
  EXPECT_EQ(Value::int32s({1, 2, 3}).to_string(3), "[1, 2, 3]");
  Array nested{ValueType::ARRAY, {Value::int32s({1, 2}), Value::int32s({})}};
  EXPECT_EQ(Value(nested).to_string(), "[[1, 2], []]");
}

}  // namespace
}  // namespace maas::gguf
