// Python operators, `in`, str/dict/list methods and the template globals.
#include <cmath>
#include <ctime>

#include "template/interp.h"
#include "template/ustring.h"

namespace maas::tmpl::detail {

const Value* find_arg(const CallArgs& args, size_t index, std::string_view name) {
  for (const auto& kv : args.kw) {
    if (kv.first == name) return &kv.second;
  }
  if (index < args.pos.size()) return &args.pos[index];
  return nullptr;
}

Value arg_or(const CallArgs& args, size_t index, std::string_view name, Value fallback) {
  const Value* v = find_arg(args, index, name);
  return v ? *v : std::move(fallback);
}

std::string printf_format(Interp& in, const std::string& fmt, const Value& arg);

namespace {

[[noreturn]] void type_error(const char* op, const Value& a, const Value& b) {
  throw Error(std::string("unsupported operand type(s) for ") + op + ": '" + type_name(a) +
              "' and '" + type_name(b) + "'");
}

// Python ints do not overflow; ours are 64-bit and refuse to wrap.
int64_t add_checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw Error("integer overflow");
  return r;
}
int64_t sub_checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) throw Error("integer overflow");
  return r;
}
int64_t mul_checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw Error("integer overflow");
  return r;
}

Value repeat(Interp& in, const Value& seq, int64_t times) {
  if (times <= 0)
    return seq.is_string() ? Value::string("") : Value::make_list({}, seq.list->tuple);
  if (seq.is_string()) {
    if (seq.s.size() * static_cast<unsigned __int128>(times) > in.limits().max_output_bytes) {
      throw Error("template builds a value that is too large");
    }
    std::string out;
    for (int64_t k = 0; k < times; ++k) out += seq.s;
    in.charge_bytes(out.size());
    return Value::string(std::move(out));
  }
  const size_t n = seq.list->items.size();
  if (n * static_cast<unsigned __int128>(times) > in.limits().max_output_bytes / 8) {
    throw Error("template builds a value that is too large");
  }
  std::vector<Value> items;
  for (int64_t k = 0; k < times; ++k) {
    items.insert(items.end(), seq.list->items.begin(), seq.list->items.end());
  }
  in.step(items.size());
  return Value::make_list(std::move(items), seq.list->tuple);
}

double py_fmod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

}  // namespace

Value binary_op(Interp& in, const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  const bool nums = a.is_number() && b.is_number();
  const bool ints = a.is_int() && b.is_int();
  switch (op[0]) {
    case '+':
      if (ints) return Value::integer(add_checked(a.as_int(), b.as_int()));
      if (nums) return Value::number(a.as_double() + b.as_double());
      if (a.is_string() && b.is_string()) {
        in.charge_bytes(a.s.size() + b.s.size());
        return Value::string(a.s + b.s);
      }
      if (a.is_list() && b.is_list() && a.list->tuple == b.list->tuple) {
        std::vector<Value> items = a.list->items;
        items.insert(items.end(), b.list->items.begin(), b.list->items.end());
        in.step(items.size());
        return Value::make_list(std::move(items), a.list->tuple);
      }
      if (a.is_string()) {
        throw Error(std::string("can only concatenate str (not \"") + type_name(b) + "\") to str");
      }
      type_error("+", a, b);
    case '-':
      if (ints) return Value::integer(sub_checked(a.as_int(), b.as_int()));
      if (nums) return Value::number(a.as_double() - b.as_double());
      type_error("-", a, b);
    case '*':
      if (op == "**") {
        if (!nums) type_error("** or pow()", a, b);
        if (ints && b.as_int() >= 0) {
          int64_t base = a.as_int(), e = b.as_int(), result = 1;
          while (e > 0) {
            in.step();
            if (e & 1) result = mul_checked(result, base);
            e >>= 1;
            if (e > 0) base = mul_checked(base, base);
          }
          return Value::integer(result);
        }
        if (a.as_double() == 0 && b.as_double() < 0) {
          throw Error("0.0 cannot be raised to a negative power");
        }
        return Value::number(std::pow(a.as_double(), b.as_double()));
      }
      if (ints) return Value::integer(mul_checked(a.as_int(), b.as_int()));
      if (nums) return Value::number(a.as_double() * b.as_double());
      if ((a.is_string() || a.is_list()) && b.is_int()) return repeat(in, a, b.as_int());
      if ((b.is_string() || b.is_list()) && a.is_int()) return repeat(in, b, a.as_int());
      type_error("*", a, b);
    case '/':
      if (!nums) type_error(op.c_str(), a, b);
      if (b.as_double() == 0) {
        throw Error(op == "//" ? "integer division or modulo by zero" : "division by zero");
      }
      if (op == "//") {
        if (ints) {
          const int64_t x = a.as_int(), y = b.as_int();
          if (x == INT64_MIN && y == -1) throw Error("integer overflow");
          int64_t q = x / y;
          if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
          return Value::integer(q);
        }
        return Value::number(std::floor(a.as_double() / b.as_double()));
      }
      return Value::number(a.as_double() / b.as_double());
    case '%':
      if (a.is_string()) return Value::string(printf_format(in, a.s, b));
      if (!nums) type_error("%", a, b);
      if (b.as_double() == 0) throw Error("integer division or modulo by zero");
      if (ints) {
        const int64_t x = a.as_int(), y = b.as_int();
        if (y == -1) return Value::integer(0);
        int64_t m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        return Value::integer(m);
      }
      return Value::number(py_fmod(a.as_double(), b.as_double()));
    default:
      throw Error("unknown operator " + op);
  }
}

bool contains(Interp& in, const Value& container, const Value& item) {
  switch (container.kind) {
    case Value::Kind::Undefined:
      return false;
    case Value::Kind::String:
      if (!item.is_string()) {
        throw Error(std::string("'in <string>' requires string as left operand, not ") +
                    type_name(item));
      }
      return container.s.find(item.s) != std::string::npos;
    case Value::Kind::List:
      in.step(container.list->items.size() / 16);
      for (const Value& v : container.list->items) {
        if (equals(v, item)) return true;
      }
      return false;
    case Value::Kind::Dict:
      return container.dict->find(item) != nullptr;
    default:
      throw Error(std::string("argument of type '") + type_name(container) + "' is not iterable");
  }
}

// ---- methods ----

namespace {

const std::string* opt_string(const CallArgs& args, size_t index, std::string_view name) {
  const Value* v = find_arg(args, index, name);
  if (!v || v->is_none()) return nullptr;
  if (!v->is_string()) throw Error(std::string(name) + " must be a str or None");
  return &v->s;
}

int64_t opt_int(const CallArgs& args, size_t index, std::string_view name, int64_t fallback) {
  const Value* v = find_arg(args, index, name);
  if (!v || v->is_none()) return fallback;
  if (!v->is_int()) throw Error(std::string(name) + " must be an integer");
  return v->as_int();
}

const std::string& need_string(const CallArgs& args, size_t index, const char* what) {
  const Value* v = find_arg(args, index, "");
  if (!v || !v->is_string()) throw Error(std::string(what) + " expects a str argument");
  return v->s;
}

Value string_list(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.push_back(Value::string(std::move(p)));
  return Value::make_list(std::move(items));
}

bool affix_match(const Value& self, const CallArgs& args, bool prefix) {
  const Value* arg = find_arg(args, 0, "");
  if (!arg) throw Error("startswith/endswith expects an argument");
  std::vector<const std::string*> options;
  if (arg->is_string()) {
    options.push_back(&arg->s);
  } else if (arg->is_list() && arg->list->tuple) {
    for (const Value& v : arg->list->items) {
      if (!v.is_string()) throw Error("tuple for startswith/endswith must only contain str");
      options.push_back(&v.s);
    }
  } else {
    throw Error("startswith/endswith first arg must be str or a tuple of str");
  }
  for (const std::string* o : options) {
    const std::string& s = self.s;
    if (o->size() > s.size()) continue;
    if (prefix ? s.compare(0, o->size(), *o) == 0
               : s.compare(s.size() - o->size(), o->size(), *o) == 0) {
      return true;
    }
  }
  return false;
}

bool all_cps(const std::string& s, bool (*pred)(uint32_t)) {
  const std::vector<uint32_t> cps = decode_utf8(s);
  if (cps.empty()) return false;
  for (uint32_t cp : cps) {
    if (!pred(cp)) return false;
  }
  return true;
}

std::string str_format(Interp& in, const std::string& fmt, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t k = 0; k < fmt.size(); ++k) {
    const char c = fmt[k];
    if (c == '}') {
      if (k + 1 < fmt.size() && fmt[k + 1] == '}') {
        out.push_back('}');
        ++k;
        continue;
      }
      throw Error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (k + 1 < fmt.size() && fmt[k + 1] == '{') {
      out.push_back('{');
      ++k;
      continue;
    }
    const size_t end = fmt.find('}', k);
    if (end == std::string::npos) throw Error("Single '{' encountered in format string");
    const std::string field = fmt.substr(k + 1, end - k - 1);
    if (field.find_first_of(":!.[") != std::string::npos) {
      throw Error("format specs in str.format are not supported");
    }
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < args.pos.size() ? &args.pos[auto_index] : nullptr;
      ++auto_index;
    } else if (field.find_first_not_of("0123456789") == std::string::npos && field.size() < 9) {
      const size_t idx = std::stoul(field);
      v = idx < args.pos.size() ? &args.pos[idx] : nullptr;
    } else {
      for (const auto& kv : args.kw) {
        if (kv.first == field) v = &kv.second;
      }
    }
    if (!v) throw Error("format field '" + field + "' has no argument");
    out += to_str(*v);
    in.charge_bytes(out.size());
    k = end;
  }
  return out;
}

Value bind(const Value& self, const std::string& name,
           Value (*impl)(Interp&, const Value&, CallArgs&)) {
  return Value::callable(name,
                         [self, impl](Interp& in, CallArgs& args) { return impl(in, self, args); });
}

using MethodImpl = Value (*)(Interp&, const Value&, CallArgs&);

struct MethodEntry {
  const char* name;
  MethodImpl impl;
};

const MethodEntry kStringMethods[] = {
    {"strip",
     [](Interp&, const Value& s, CallArgs& a) {
       return Value::string(py_strip(s.s, opt_string(a, 0, "chars"), true, true));
     }},
    {"lstrip",
     [](Interp&, const Value& s, CallArgs& a) {
       return Value::string(py_strip(s.s, opt_string(a, 0, "chars"), true, false));
     }},
    {"rstrip",
     [](Interp&, const Value& s, CallArgs& a) {
       return Value::string(py_strip(s.s, opt_string(a, 0, "chars"), false, true));
     }},
    {"split",
     [](Interp& in, const Value& s, CallArgs& a) {
       const std::string* sep = opt_string(a, 0, "sep");
       if (sep && sep->empty()) throw Error("empty separator");
       in.step(s.s.size() / 16);
       return string_list(py_split(s.s, sep, opt_int(a, 1, "maxsplit", -1)));
     }},
    {"rsplit",
     [](Interp& in, const Value& s, CallArgs& a) {
       const std::string* sep = opt_string(a, 0, "sep");
       if (sep && sep->empty()) throw Error("empty separator");
       in.step(s.s.size() / 16);
       return string_list(py_rsplit(s.s, sep, opt_int(a, 1, "maxsplit", -1)));
     }},
    {"splitlines",
     [](Interp&, const Value& s, CallArgs& a) {
       return string_list(
           py_splitlines(s.s, truthy(arg_or(a, 0, "keepends", Value::boolean(false)))));
     }},
    {"startswith",
     [](Interp&, const Value& s, CallArgs& a) { return Value::boolean(affix_match(s, a, true)); }},
    {"endswith",
     [](Interp&, const Value& s, CallArgs& a) { return Value::boolean(affix_match(s, a, false)); }},
    {"upper", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_upper(s.s)); }},
    {"lower", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_lower(s.s)); }},
    {"title", [](Interp&, const Value& s, CallArgs&) { return Value::string(py_title(s.s)); }},
    {"capitalize",
     [](Interp&, const Value& s, CallArgs&) { return Value::string(py_capitalize(s.s)); }},
    {"replace",
     [](Interp& in, const Value& s, CallArgs& a) {
       const std::string& old = need_string(a, 0, "replace");
       const Value* repl = find_arg(a, 1, "");
       if (!repl || !repl->is_string()) throw Error("replace expects a str argument");
       const int64_t count = opt_int(a, 2, "count", -1);
       const size_t worst = old.empty() ? (s.s.size() + 1) * repl->s.size() + s.s.size()
                                        : s.s.size() / old.size() * repl->s.size() + s.s.size();
       in.charge_bytes(worst);
       return Value::string(py_replace(s.s, old, repl->s, count));
     }},
    {"find",
     [](Interp&, const Value& s, CallArgs& a) {
       return Value::integer(py_find(s.s, need_string(a, 0, "find"), false));
     }},
    {"rfind",
     [](Interp&, const Value& s, CallArgs& a) {
       return Value::integer(py_find(s.s, need_string(a, 0, "rfind"), true));
     }},
    {"index",
     [](Interp&, const Value& s, CallArgs& a) {
       const int64_t i = py_find(s.s, need_string(a, 0, "index"), false);
       if (i < 0) throw Error("substring not found");
       return Value::integer(i);
     }},
    {"count",
     [](Interp&, const Value& s, CallArgs& a) {
       const std::string& sub = need_string(a, 0, "count");
       if (sub.empty()) return Value::integer(static_cast<int64_t>(utf8_length(s.s)) + 1);
       int64_t n = 0;
       for (size_t at = s.s.find(sub); at != std::string::npos; at = s.s.find(sub, at + sub.size()))
         ++n;
       return Value::integer(n);
     }},
    {"join",
     [](Interp& in, const Value& s, CallArgs& a) {
       const Value* seq = find_arg(a, 0, "");
       if (!seq) throw Error("join expects an argument");
       std::string out;
       bool first = true;
       for (const Value& v : in.iterate(*seq)) {
         if (!v.is_string())
           throw Error(std::string("sequence item: expected str instance, ") + type_name(v) +
                       " found");
         if (!first) out += s.s;
         first = false;
         out += v.s;
         in.charge_bytes(out.size());
       }
       return Value::string(std::move(out));
     }},
    {"format",
     [](Interp& in, const Value& s, CallArgs& a) { return Value::string(str_format(in, s.s, a)); }},
    {"isdigit",
     [](Interp&, const Value& s, CallArgs&) {
       return Value::boolean(all_cps(s.s, [](uint32_t c) { return c >= '0' && c <= '9'; }));
     }},
    {"isalpha",
     [](Interp&, const Value& s, CallArgs&) { return Value::boolean(all_cps(s.s, py_isalpha)); }},
    {"isalnum",
     [](Interp&, const Value& s, CallArgs&) { return Value::boolean(all_cps(s.s, py_isalnum)); }},
    {"isspace",
     [](Interp&, const Value& s, CallArgs&) { return Value::boolean(all_cps(s.s, py_isspace)); }},
    {"islower",
     [](Interp&, const Value& s, CallArgs&) {
       return Value::boolean(py_lower(s.s) == s.s && py_upper(s.s) != s.s);
     }},
    {"isupper",
     [](Interp&, const Value& s, CallArgs&) {
       return Value::boolean(py_upper(s.s) == s.s && py_lower(s.s) != s.s);
     }},
    {"removeprefix",
     [](Interp&, const Value& s, CallArgs& a) {
       const std::string& p = need_string(a, 0, "removeprefix");
       return Value::string(s.s.compare(0, p.size(), p) == 0 ? s.s.substr(p.size()) : s.s);
     }},
    {"removesuffix",
     [](Interp&, const Value& s, CallArgs& a) {
       const std::string& p = need_string(a, 0, "removesuffix");
       const bool has =
           p.size() <= s.s.size() && s.s.compare(s.s.size() - p.size(), p.size(), p) == 0;
       return Value::string(has && !p.empty() ? s.s.substr(0, s.s.size() - p.size()) : s.s);
     }},
};

const MethodEntry kDictMethods[] = {
    {"items",
     [](Interp& in, const Value& d, CallArgs&) {
       std::vector<Value> items;
       for (const auto& kv : d.dict->items)
         items.push_back(Value::make_list({kv.first, kv.second}, true));
       in.step(items.size());
       return Value::make_list(std::move(items));
     }},
    {"keys",
     [](Interp& in, const Value& d, CallArgs&) {
       std::vector<Value> items;
       for (const auto& kv : d.dict->items) items.push_back(kv.first);
       in.step(items.size());
       return Value::make_list(std::move(items));
     }},
    {"values",
     [](Interp& in, const Value& d, CallArgs&) {
       std::vector<Value> items;
       for (const auto& kv : d.dict->items) items.push_back(kv.second);
       in.step(items.size());
       return Value::make_list(std::move(items));
     }},
    {"get",
     [](Interp&, const Value& d, CallArgs& a) {
       const Value* key = find_arg(a, 0, "");
       if (!key) throw Error("get expected at least 1 argument, got 0");
       if (const Value* v = d.dict->find(*key)) return *v;
       return arg_or(a, 1, "", Value::none());
     }},
};

const MethodEntry kListMethods[] = {
    {"index",
     [](Interp&, const Value& l, CallArgs& a) {
       const Value* x = find_arg(a, 0, "");
       if (!x) throw Error("index expected 1 argument");
       for (size_t k = 0; k < l.list->items.size(); ++k) {
         if (equals(l.list->items[k], *x)) return Value::integer(static_cast<int64_t>(k));
       }
       throw Error(to_repr(*x) + " is not in list");
     }},
    {"count",
     [](Interp&, const Value& l, CallArgs& a) {
       const Value* x = find_arg(a, 0, "");
       if (!x) throw Error("count expected 1 argument");
       int64_t n = 0;
       for (const Value& v : l.list->items) n += equals(v, *x) ? 1 : 0;
       return Value::integer(n);
     }},
};

const char* const kUnsafeMethods[] = {"append", "extend",     "insert", "pop",
                                      "remove", "clear",      "sort",   "reverse",
                                      "update", "setdefault", "popitem"};

template <size_t N>
Value lookup_method(const MethodEntry (&table)[N], const Value& self, const std::string& name) {
  for (const MethodEntry& m : table) {
    if (name == m.name) return bind(self, name, m.impl);
  }
  return Value::undefined();
}

}  // namespace

Value method(const Value& self, const std::string& name) {
  Value m;
  if (self.is_string()) m = lookup_method(kStringMethods, self, name);
  if (self.is_dict()) m = lookup_method(kDictMethods, self, name);
  if (self.is_list()) m = lookup_method(kListMethods, self, name);
  if (!m.is_undefined()) return m;
  if (self.is_list() || self.is_dict()) {
    for (const char* unsafe : kUnsafeMethods) {
      if (name == unsafe) {
        return Value::undefined("access to attribute '" + name + "' of '" + type_name(self) +
                                "' object is unsafe.");
      }
    }
  }
  return Value::undefined(undefined_attr(self, name));
}

// ---- globals ----

namespace {

Value g_range(Interp& in, CallArgs& a) {
  for (const Value& v : a.pos) {
    if (!v.is_int())
      throw Error(std::string("'") + type_name(v) + "' object cannot be interpreted as an integer");
  }
  int64_t start = 0, stop = 0, step = 1;
  if (a.pos.size() == 1) {
    stop = a.pos[0].as_int();
  } else if (a.pos.size() == 2 || a.pos.size() == 3) {
    start = a.pos[0].as_int();
    stop = a.pos[1].as_int();
    if (a.pos.size() == 3) step = a.pos[2].as_int();
  } else {
    throw Error("range expected 1 to 3 integer arguments");
  }
  if (step == 0) throw Error("range() arg 3 must not be zero");
  std::vector<Value> items;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    // The same bound as jinja2's sandbox (MAX_RANGE).
    if (items.size() >= 100000)
      throw Error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    items.push_back(Value::integer(i));
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  in.step(items.size());
  return Value::make_list(std::move(items));
}

Value g_dict(Interp&, CallArgs& a) {
  Value d = Value::make_dict();
  if (!a.pos.empty()) {
    if (a.pos.size() > 1 || !a.pos[0].is_dict()) throw Error("dict() takes a mapping and keywords");
    d = Value::make_dict(a.pos[0].dict->items);
  }
  for (auto& kv : a.kw) d.dict->set(Value::string(kv.first), kv.second);
  int depth = 0;
  for (const auto& kv : d.dict->items) depth = std::max(depth, kv.second.depth);
  if (depth + 1 > kMaxValueDepth) throw Error("value nesting is too deep");
  d.depth = depth + 1;
  return d;
}

Value g_namespace(Interp&, CallArgs& a) {
  Value ns = Value::make_namespace();
  auto store = [&](const Value& k, const Value& v) {
    if (holds_reference(v)) {
      throw Error("cannot store a namespace or callable in a namespace attribute");
    }
    ns.dict->set(k, v);
  };
  for (const Value& p : a.pos) {
    if (!p.is_dict()) throw Error("namespace() positional arguments must be mappings");
    for (const auto& kv : p.dict->items) store(kv.first, kv.second);
  }
  for (const auto& kv : a.kw) store(Value::string(kv.first), kv.second);
  return ns;
}

Value g_raise(Interp&, CallArgs& a) {
  throw Error(a.pos.empty() ? std::string() : to_str(a.pos[0]));
}

Value g_strftime(Interp&, CallArgs& a) {
  if (a.pos.size() != 1 || !a.pos[0].is_string())
    throw Error("strftime_now expects a format string");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[512];
  const size_t n = std::strftime(buf, sizeof buf, a.pos[0].s.c_str(), &tm);
  return Value::string(std::string(buf, n));
}

}  // namespace

const Value* global_function(std::string_view name) {
  static const std::vector<std::pair<std::string, Value>> globals = {
      {"range", Value::callable("range", g_range)},
      {"dict", Value::callable("dict", g_dict)},
      {"namespace", Value::callable("namespace", g_namespace)},
      {"raise_exception", Value::callable("raise_exception", g_raise)},
      {"strftime_now", Value::callable("strftime_now", g_strftime)},
  };
  for (const auto& g : globals) {
    if (g.first == name) return &g.second;
  }
  return nullptr;
}

}  // namespace maas::tmpl::detail
