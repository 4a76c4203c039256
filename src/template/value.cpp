#include "template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "template/ustring.h"

namespace maas::tmpl::detail {

namespace {

int child_depth(const Value& v) { return v.depth; }

int checked_depth(int d) {
  if (d > kMaxValueDepth) throw Error("value nesting is too deep");
  return d;
}

}  // namespace

const Value* DictBox::find(const Value& key) const {
  for (const auto& kv : items) {
    if (equals(kv.first, key)) return &kv.second;
  }
  return nullptr;
}

const Value* DictBox::find(std::string_view key) const {
  for (const auto& kv : items) {
    if (kv.first.kind == Value::Kind::String && kv.first.s == key) return &kv.second;
  }
  return nullptr;
}

void DictBox::set(Value key, Value value) {
  for (auto& kv : items) {
    if (equals(kv.first, key)) {
      kv.second = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

Value Value::undefined(std::string hint) {
  Value v;
  v.s = std::move(hint);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.b = b;
  return v;
}
Value Value::integer(int64_t i) {
  Value v;
  v.kind = Kind::Int;
  v.i = i;
  return v;
}
Value Value::number(double f) {
  Value v;
  v.kind = Kind::Float;
  v.f = f;
  return v;
}
Value Value::string(std::string s) {
  Value v;
  v.kind = Kind::String;
  v.s = std::move(s);
  return v;
}
Value Value::make_list(std::vector<Value> items, bool tuple) {
  Value v;
  v.kind = Kind::List;
  int d = 0;
  for (const Value& x : items) d = std::max(d, child_depth(x));
  v.depth = checked_depth(d + 1);
  v.list = std::make_shared<ListBox>();
  v.list->items = std::move(items);
  v.list->tuple = tuple;
  return v;
}
Value Value::make_dict(std::vector<std::pair<Value, Value>> items) {
  Value v;
  v.kind = Kind::Dict;
  int d = 0;
  for (const auto& kv : items) d = std::max({d, child_depth(kv.first), child_depth(kv.second)});
  v.depth = checked_depth(d + 1);
  v.dict = std::make_shared<DictBox>();
  for (auto& kv : items) v.dict->set(std::move(kv.first), std::move(kv.second));
  return v;
}
Value Value::make_namespace() {
  Value v;
  v.kind = Kind::Namespace;
  v.depth = 1;
  v.dict = std::make_shared<DictBox>();
  return v;
}
Value Value::callable(std::string name, std::function<Value(Interp&, CallArgs&)> call) {
  Value v;
  v.kind = Kind::Callable;
  v.fn = std::make_shared<Callable>(Callable{std::move(name), std::move(call)});
  return v;
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return "Undefined";
    case Value::Kind::None:
      return "NoneType";
    case Value::Kind::Bool:
      return "bool";
    case Value::Kind::Int:
      return "int";
    case Value::Kind::Float:
      return "float";
    case Value::Kind::String:
      return "str";
    case Value::Kind::List:
      return v.list->tuple ? "tuple" : "list";
    case Value::Kind::Dict:
      return "dict";
    case Value::Kind::Namespace:
      return "Namespace";
    case Value::Kind::Callable:
      return "function";
  }
  return "object";
}

void fail_undefined(const Value& v) {
  throw Error(v.s.empty() ? std::string("value is undefined") : v.s);
}

bool holds_reference(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Namespace:
    case Value::Kind::Callable:
      return true;
    case Value::Kind::List:
      return std::any_of(v.list->items.begin(), v.list->items.end(), holds_reference);
    case Value::Kind::Dict:
      return std::any_of(v.dict->items.begin(), v.dict->items.end(),
                         [](const auto& kv) { return holds_reference(kv.second); });
    default:
      return false;
  }
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None:
      return false;
    case Value::Kind::Bool:
      return v.b;
    case Value::Kind::Int:
      return v.i != 0;
    case Value::Kind::Float:
      return v.f != 0.0;
    case Value::Kind::String:
      return !v.s.empty();
    case Value::Kind::List:
      return !v.list->items.empty();
    case Value::Kind::Dict:
      return !v.dict->items.empty();
    case Value::Kind::Namespace:
    case Value::Kind::Callable:
      return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci looks like "-1.2345e+07": split into sign, digits and exponent.
  const bool neg = sci[0] == '-';
  const size_t epos = sci.find('e');
  std::string digits;
  for (size_t k = neg ? 1 : 0; k < epos; ++k) {
    if (sci[k] != '.') digits.push_back(sci[k]);
  }
  const int exp = std::stoi(sci.substr(epos + 1));
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char e[16];
  std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  return out + e;
}

namespace {

bool py_printable(uint32_t cp) {
  if (cp & 0x80000000u) return false;
  if (cp < 0x20 || cp == 0x7F) return false;
  if (cp < 0x7F) return true;
  if (cp <= 0xA0 || cp == 0xAD) return false;
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F))
    return false;
  if ((cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF) return false;
  if ((cp >= 0xD800 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB)) return false;
  return true;
}

std::string str_repr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t cp : decode_utf8(s)) {
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (py_printable(cp)) {
      append_utf8(out, cp);
    } else {
      const uint32_t c = cp & 0x7FFFFFFFu;
      char buf[16];
      if (c < 0x100) {
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
      } else if (c < 0x10000) {
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
      } else {
        std::snprintf(buf, sizeof buf, "\\U%08x", c);
      }
      out += buf;
    }
  }
  out.push_back(quote);
  return out;
}

}  // namespace

std::string to_repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return "Undefined";
    case Value::Kind::String:
      return str_repr(v.s);
    case Value::Kind::List: {
      const bool tuple = v.list->tuple;
      std::string out = tuple ? "(" : "[";
      const auto& items = v.list->items;
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += ", ";
        out += to_repr(items[k]);
      }
      if (tuple && items.size() == 1) out += ",";
      return out + (tuple ? ")" : "]");
    }
    case Value::Kind::Dict:
    case Value::Kind::Namespace: {
      std::string out = v.kind == Value::Kind::Namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [key, val] : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += to_repr(key) + ": " + to_repr(val);
      }
      return out + (v.kind == Value::Kind::Namespace ? "}>" : "}");
    }
    default:
      return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return "";
    case Value::Kind::None:
      return "None";
    case Value::Kind::Bool:
      return v.b ? "True" : "False";
    case Value::Kind::Int:
      return std::to_string(v.i);
    case Value::Kind::Float:
      return float_repr(v.f);
    case Value::Kind::String:
      return v.s;
    case Value::Kind::Callable:
      return "<function " + v.fn->name + ">";
    default:
      return to_repr(v);
  }
}

bool equals(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind == K::Float || b.kind == K::Float) return a.as_double() == b.as_double();
    return a.as_int() == b.as_int();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::Undefined:
    case K::None:
      return true;
    case K::String:
      return a.s == b.s;
    case K::List: {
      if (a.list == b.list) return true;
      const auto& x = a.list->items;
      const auto& y = b.list->items;
      if (a.list->tuple != b.list->tuple || x.size() != y.size()) return false;
      for (size_t k = 0; k < x.size(); ++k) {
        if (!equals(x[k], y[k])) return false;
      }
      return true;
    }
    case K::Dict: {
      if (a.dict == b.dict) return true;
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [key, val] : a.dict->items) {
        const Value* other = b.dict->find(key);
        if (!other || !equals(val, *other)) return false;
      }
      return true;
    }
    case K::Namespace:
      return a.dict == b.dict;
    case K::Callable:
      return a.fn == b.fn;
    default:
      return false;
  }
}

int compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::Kind::Float || b.kind == Value::Kind::Float) {
      const double x = a.as_double(), y = b.as_double();
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) return a.s < b.s ? -1 : (a.s > b.s ? 1 : 0);
  if (a.is_list() && b.is_list() && a.list->tuple == b.list->tuple) {
    const auto& x = a.list->items;
    const auto& y = b.list->items;
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (!equals(x[k], y[k])) return compare(x[k], y[k]);
    }
    return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  }
  throw Error(std::string("'<' not supported between instances of '") + type_name(a) + "' and '" +
              type_name(b) + "'");
}

namespace {

void json_string(std::string& out, const std::string& s) {
  out.push_back('"');
  for (unsigned char c : s) {
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
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

std::string json_key(const Value& k) {
  switch (k.kind) {
    case Value::Kind::String:
      return k.s;
    case Value::Kind::Bool:
      return k.b ? "true" : "false";
    case Value::Kind::None:
      return "null";
    case Value::Kind::Int:
      return std::to_string(k.i);
    case Value::Kind::Float:
      return float_repr(k.f);
    default:
      throw Error(std::string("keys must be str, int, float, bool or None, not ") + type_name(k));
  }
}

struct JsonWriter {
  const std::string& indent;  // empty with `pretty` set means newlines only (indent=0)
  bool pretty;
  bool sort_keys;
  std::string item_sep;
  std::string key_sep;
  std::string out;

  void newline(int level) {
    out.push_back('\n');
    for (int k = 0; k < level; ++k) out += indent;
  }

  void write(const Value& v, int level) {
    switch (v.kind) {
      case Value::Kind::None:
        out += "null";
        return;
      case Value::Kind::Bool:
        out += v.b ? "true" : "false";
        return;
      case Value::Kind::Int:
        out += std::to_string(v.i);
        return;
      case Value::Kind::Float:
        if (std::isnan(v.f)) {
          out += "NaN";
        } else if (std::isinf(v.f)) {
          out += v.f < 0 ? "-Infinity" : "Infinity";
        } else {
          out += float_repr(v.f);
        }
        return;
      case Value::Kind::String:
        json_string(out, v.s);
        return;
      case Value::Kind::List: {
        const auto& items = v.list->items;
        if (items.empty()) {
          out += "[]";
          return;
        }
        out.push_back('[');
        for (size_t k = 0; k < items.size(); ++k) {
          if (k) out += item_sep;
          if (pretty) newline(level + 1);
          write(items[k], level + 1);
        }
        if (pretty) newline(level);
        out.push_back(']');
        return;
      }
      case Value::Kind::Dict: {
        std::vector<std::pair<std::string, const Value*>> items;
        for (const auto& [key, val] : v.dict->items) items.emplace_back(json_key(key), &val);
        if (sort_keys) {
          std::stable_sort(items.begin(), items.end(),
                           [](const auto& x, const auto& y) { return x.first < y.first; });
        }
        if (items.empty()) {
          out += "{}";
          return;
        }
        out.push_back('{');
        for (size_t k = 0; k < items.size(); ++k) {
          if (k) out += item_sep;
          if (pretty) newline(level + 1);
          json_string(out, items[k].first);
          out += key_sep;
          write(*items[k].second, level + 1);
        }
        if (pretty) newline(level);
        out.push_back('}');
        return;
      }
      default:
        throw Error(std::string("Object of type ") + type_name(v) + " is not JSON serializable");
    }
  }
};

template <typename Json>
Value convert(const Json& j, int depth) {
  if (depth > kMaxValueDepth) throw Error("context nesting is too deep");
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::number(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::number(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value::string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(convert(x, depth + 1));
      return Value::make_list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      // JSON object keys are unique already: fill the box directly instead of set()'s search.
      Value out = Value::make_dict();
      out.dict->items.reserve(j.size());
      int d = 0;
      for (auto it = j.begin(); it != j.end(); ++it) {
        Value v = convert(it.value(), depth + 1);
        d = std::max(d, v.depth);
        out.dict->items.emplace_back(Value::string(it.key()), std::move(v));
      }
      out.depth = d + 1;
      return out;
    }
    default:
      throw Error("unsupported JSON value in the context");
  }
}

}  // namespace

std::string to_json(const Value& v, int indent, const std::string& indent_str, bool sort_keys,
                    const std::string* item_sep, const std::string* key_sep) {
  std::string unit = indent_str;
  if (indent_str.empty() && indent > 0) unit.assign(static_cast<size_t>(indent), ' ');
  const bool pretty = indent >= 0 || !indent_str.empty();
  JsonWriter w{unit,
               pretty,
               sort_keys,
               item_sep ? *item_sep : (pretty ? "," : ", "),
               key_sep ? *key_sep : ": ",
               {}};
  w.write(v, 0);
  return std::move(w.out);
}

Value from_json(const nlohmann::json& j) { return convert(j, 0); }
Value from_json(const nlohmann::ordered_json& j) { return convert(j, 0); }

}  // namespace maas::tmpl::detail
