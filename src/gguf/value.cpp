// Metadata values: type names, conversions and the human-readable rendering.
#include <fmt/format.h>

#include <limits>

#include "gguf/gguf.h"

namespace maas::gguf {
namespace {

// Appends s quoted, escaping quotes, backslashes, control characters and bytes that are not part
// of a well-formed UTF-8 sequence, so that hostile strings cannot garble a terminal.
void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\r':
          out += "\\r";
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\x{:02x}", c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // Length and lowest code point of a sequence starting with c (overlong forms are invalid).
    size_t len = 0;
    uint32_t min_cp = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2, min_cp = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, min_cp = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, min_cp = 0x10000, cp = c & 0x07;
    }
    bool valid = len != 0 && i + len <= s.size();
    for (size_t k = 1; valid && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      valid = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    valid = valid && cp >= min_cp && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (valid) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  out += '"';
}

void append_value(std::string& out, const Value& v, size_t max_items) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          append_quoted(out, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          out += '[';
          const size_t shown = std::min(max_items, x.items.size());
          for (size_t i = 0; i < shown; ++i) {
            if (i) out += ", ";
            append_value(out, x.items[i], max_items);
          }
          if (shown < x.items.size()) {
            out += fmt::format("{}... ({} items)", shown ? ", " : "", x.items.size());
          }
          out += ']';
        } else if constexpr (std::is_same_v<T, bool>) {
          out += x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
          out += fmt::format("{}", static_cast<int>(x));  // not as a character
        } else {
          out += fmt::format("{}", x);  // floats: shortest form that reads back exactly
        }
      },
      v.v);
}

[[noreturn]] void wrong_type(const Value& v, std::string_view wanted) {
  if (v.type() == ValueType::ARRAY || v.type() == ValueType::STRING) {
    throw Error(fmt::format("expected {}, got {}", wanted, value_type_name(v.type())));
  }
  throw Error(fmt::format("expected {}, got {} {}", wanted, value_type_name(v.type()), v.to_string()));
}

}  // namespace

std::string_view value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8:
      return "uint8";
    case ValueType::INT8:
      return "int8";
    case ValueType::UINT16:
      return "uint16";
    case ValueType::INT16:
      return "int16";
    case ValueType::UINT32:
      return "uint32";
    case ValueType::INT32:
      return "int32";
    case ValueType::FLOAT32:
      return "float32";
    case ValueType::BOOL:
      return "bool";
    case ValueType::STRING:
      return "string";
    case ValueType::ARRAY:
      return "array";
    case ValueType::UINT64:
      return "uint64";
    case ValueType::INT64:
      return "int64";
    case ValueType::FLOAT64:
      return "float64";
  }
  return "unknown";
}

bool Value::is_integer() const {
  switch (type()) {
    case ValueType::UINT8:
    case ValueType::INT8:
    case ValueType::UINT16:
    case ValueType::INT16:
    case ValueType::UINT32:
    case ValueType::INT32:
    case ValueType::UINT64:
    case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

bool Value::is_float() const {
  return type() == ValueType::FLOAT32 || type() == ValueType::FLOAT64;
}

uint64_t Value::as_uint() const {
  return std::visit(
      [this](const auto& x) -> uint64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          if constexpr (std::is_signed_v<T>) {
            if (x < 0) wrong_type(*this, "a non-negative integer");
          }
          return static_cast<uint64_t>(x);
        } else {
          wrong_type(*this, "an unsigned integer");
        }
      },
      v);
}

int64_t Value::as_int() const {
  return std::visit(
      [this](const auto& x) -> int64_t {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            wrong_type(*this, "an integer within int64");
          }
          return static_cast<int64_t>(x);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<int64_t>(x);
        } else {
          wrong_type(*this, "an integer");
        }
      },
      v);
}

double Value::as_double() const {
  return std::visit(
      [this](const auto& x) -> double {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<double>(x);
        } else {
          wrong_type(*this, "a number");
        }
      },
      v);
}

bool Value::as_bool() const {
  if (const bool* b = std::get_if<bool>(&v)) return *b;
  wrong_type(*this, "a bool");
}

const std::string& Value::as_string() const {
  if (const std::string* s = std::get_if<std::string>(&v)) return *s;
  wrong_type(*this, "a string");
}

const Array& Value::as_array() const {
  if (const Array* a = std::get_if<Array>(&v)) return *a;
  wrong_type(*this, "an array");
}

std::string Value::to_string(size_t max_items) const {
  std::string out;
  append_value(out, *this, max_items);
  return out;
}

Value Value::strings(const std::vector<std::string>& xs) {
  Array a{ValueType::STRING, {}};
  a.items.reserve(xs.size());
  for (const auto& x : xs) a.items.emplace_back(x);
  return Value(std::move(a));
}

Value Value::floats(const std::vector<float>& xs) {
  Array a{ValueType::FLOAT32, {}};
  a.items.reserve(xs.size());
  for (float x : xs) a.items.emplace_back(x);
  return Value(std::move(a));
}

Value Value::int32s(const std::vector<int32_t>& xs) {
  Array a{ValueType::INT32, {}};
  a.items.reserve(xs.size());
  for (int32_t x : xs) a.items.emplace_back(x);
  return Value(std::move(a));
}

}  // namespace maas::gguf
