// Runtime values of the template language, modelled on the Python objects jinja2 works with:
// None, bool, int, float, str, list/tuple, dict (insertion ordered), jinja2's Namespace and
// Undefined, and callables (globals, bound methods, macros).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "template/template.h"

namespace maas::tmpl::detail {

struct Value;
class Interp;

struct ListBox {
  std::vector<Value> items;
  bool tuple = false;
};

struct DictBox {
  std::vector<std::pair<Value, Value>> items;  // insertion order, unique keys
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);
};

struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

struct Callable {
  std::string name;
  std::function<Value(Interp&, CallArgs&)> call;
};

struct Value {
  enum class Kind : uint8_t {
    Undefined,
    None,
    Bool,
    Int,
    Float,
    String,
    List,
    Dict,
    Namespace,
    Callable
  };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  int depth = 0;  // container nesting below this value, bounded to keep recursion safe
  std::string s;  // String contents; for Undefined, what is missing (for error messages)
  std::shared_ptr<ListBox> list;
  std::shared_ptr<DictBox> dict;  // Dict and Namespace
  std::shared_ptr<Callable> fn;

  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value make_list(std::vector<Value> items, bool tuple = false);
  static Value make_dict(std::vector<std::pair<Value, Value>> items = {});
  static Value make_namespace();
  static Value callable(std::string name, std::function<Value(Interp&, CallArgs&)> call);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_int() const { return kind == Kind::Int || kind == Kind::Bool; }  // bool is an int
  bool is_number() const { return is_int() || kind == Kind::Float; }
  int64_t as_int() const { return kind == Kind::Bool ? int64_t{b} : i; }
  double as_double() const { return kind == Kind::Float ? f : static_cast<double>(as_int()); }
};

// Deepest container nesting a value may have (Python would hit its recursion limit).
inline constexpr int kMaxValueDepth = 256;

// Python type name as in error messages: 'str', 'int', 'dict', ...
const char* type_name(const Value& v);
// jinja2's error for using an undefined value.
[[noreturn]] void fail_undefined(const Value& v);

// True when v is or contains a namespace or a callable. Namespaces are the only mutable values
// and macros point at their defining scope, so storing such values in a namespace is refused:
// it could form reference cycles or let a macro outlive its scope.
bool holds_reference(const Value& v);

bool truthy(const Value& v);
std::string to_str(const Value& v);   // Python str(); Undefined gives ""
std::string to_repr(const Value& v);  // Python repr()
std::string float_repr(double d);     // Python repr(float)
bool equals(const Value& a, const Value& b);
// Python ordering (<, via negative/zero/positive); throws Error for unorderable types.
int compare(const Value& a, const Value& b);

// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys); indent < 0 is None.
// separators: (item, key) as in json.dumps; empty strings mean the default for the indent.
std::string to_json(const Value& v, int indent, const std::string& indent_str = {},
                    bool sort_keys = false, const std::string* item_sep = nullptr,
                    const std::string* key_sep = nullptr);

Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

}  // namespace maas::tmpl::detail
