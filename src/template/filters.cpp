// jinja2's builtin filters and tests (the ones chat templates use), with transformers' tojson.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "template/interp.h"
#include "template/ustring.h"

namespace maas::tmpl::detail {

namespace {

const char* const kFilters[] = {
    "abs",      "attr",  "capitalize", "center", "count",      "d",           "default",
    "dictsort", "e",     "escape",     "first",  "float",      "forceescape", "format",
    "indent",   "int",   "items",      "join",   "last",       "length",      "list",
    "lower",    "map",   "max",        "min",    "replace",    "reject",      "rejectattr",
    "reverse",  "round", "safe",       "select", "selectattr", "sort",        "string",
    "sum",      "title", "tojson",     "trim",   "unique",     "upper",       "wordcount"};

const char* const kTests[] = {
    "boolean", "callable",  "defined", "divisibleby", "eq",     "equalto",     "escaped",
    "even",    "false",     "float",   "ge",          "gt",     "greaterthan", "in",
    "integer", "iterable",  "le",      "lessthan",    "lower",  "lt",          "mapping",
    "ne",      "none",      "number",  "odd",         "sameas", "sequence",    "string",
    "true",    "undefined", "upper",   "==",          "!=",     "<",           "<=",
    ">",       ">="};

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

int64_t length_of(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return 0;
    case Value::Kind::String:
      return static_cast<int64_t>(utf8_length(v.s));
    case Value::Kind::List:
      return static_cast<int64_t>(v.list->items.size());
    case Value::Kind::Dict:
      return static_cast<int64_t>(v.dict->items.size());
    default:
      throw Error(std::string("object of type '") + type_name(v) + "' has no len()");
  }
}

// jinja2's make_attrgetter: "a.b.0" looks up items (then attributes) part by part.
Value attr_path(Interp& in, Value v, const Value& path) {
  if (!path.is_string()) return in.getitem(v, path);
  size_t start = 0;
  const std::string& p = path.s;
  while (true) {
    const size_t dot = p.find('.', start);
    const std::string part =
        p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool digits = !part.empty() &&
                        part.find_first_not_of("0123456789") == std::string::npos &&
                        part.size() < 18;
    v = in.getitem(v, digits ? Value::integer(std::stoll(part)) : Value::string(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

// Sort key for the case-insensitive comparisons of sort, dictsort, unique, min and max.
Value fold(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::string(py_lower(v.s));
  return v;
}

bool parse_py_int(const std::string& raw, int64_t& out) {
  std::string s = py_strip(raw, nullptr, true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return false;
  size_t k = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  if (k == s.size() || s.find_first_not_of("0123456789", k) != std::string::npos) return false;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), nullptr, 10);
  if (errno == ERANGE) return false;
  out = v;
  return true;
}

bool parse_py_float(const std::string& raw, double& out) {
  const std::string s = py_strip(raw, nullptr, true, true);
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && s.find_first_of("xXpP") == std::string::npos;
}

double py_round(double x, int64_t digits) {
  if (!std::isfinite(x) || digits > 300) return x;
  if (digits < -308) return 0.0 * x;
  if (digits >= 0) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(digits, 300)), x);
    return std::strtod(buf, nullptr);
  }
  const double scale = std::pow(10.0, static_cast<double>(-digits));
  double y = x / scale;
  double r = std::nearbyint(y);  // ties to even, as Python
  return r * scale;
}

std::vector<Value> sorted_values(Interp& in, std::vector<Value> items, bool reverse,
                                 bool case_sensitive, const Value* attribute) {
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t k = 0; k < items.size(); ++k) {
    Value key = attribute ? attr_path(in, items[k], *attribute) : items[k];
    keyed.emplace_back(fold(key, case_sensitive), k);
  }
  in.step(items.size() * 4);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    return reverse ? compare(b.first, a.first) < 0 : compare(a.first, b.first) < 0;
  });
  std::vector<Value> out;
  for (const auto& kv : keyed) out.push_back(items[kv.second]);
  return out;
}

}  // namespace

bool is_known_filter(std::string_view name) {
  return std::any_of(std::begin(kFilters), std::end(kFilters),
                     [&](const char* f) { return name == f; });
}

bool is_known_test(std::string_view name) {
  return std::any_of(std::begin(kTests), std::end(kTests),
                     [&](const char* t) { return name == t; });
}

// Python's printf-style `fmt % arg` for %s %r %d %i %f %x %%, with flags, width and precision.
std::string printf_format(Interp& in, const std::string& fmt, const Value& arg) {
  std::vector<Value> args;
  if (arg.is_list() && arg.list->tuple) {
    args = arg.list->items;
  } else {
    args.push_back(arg);
  }
  size_t next = 0;
  std::string out;
  for (size_t k = 0; k < fmt.size(); ++k) {
    if (fmt[k] != '%') {
      out.push_back(fmt[k]);
      continue;
    }
    size_t j = k + 1;
    std::string flags;
    while (j < fmt.size() && std::string("-+ #0").find(fmt[j]) != std::string::npos)
      flags += fmt[j++];
    size_t width = 0;
    while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) {
      width = std::min<size_t>(width * 10 + (fmt[j++] - '0'), 4096);
    }
    int precision = -1;
    if (j < fmt.size() && fmt[j] == '.') {
      ++j;
      precision = 0;
      while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) {
        precision = std::min(precision * 10 + (fmt[j++] - '0'), 100);
      }
    }
    std::string spec = "%" + flags + (width ? std::to_string(width) : "") +
                       (precision >= 0 ? "." + std::to_string(precision) : "");
    if (j >= fmt.size()) throw Error("incomplete format");
    const char conv = fmt[j];
    k = j;
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (next >= args.size()) throw Error("not enough arguments for format string");
    const Value& v = args[next++];
    char buf[8192];
    if (conv == 's' || conv == 'r') {
      std::string s = conv == 's' ? to_str(v) : to_repr(v);
      if (precision >= 0) {
        const std::vector<uint32_t> cps = decode_utf8(s);
        s = encode_utf8(cps, 0, std::min<size_t>(cps.size(), static_cast<size_t>(precision)));
      }
      // Width counts code points, so pad by hand rather than with snprintf.
      const size_t len = utf8_length(s);
      const std::string pad = width > len ? std::string(width - len, ' ') : "";
      out += flags.find('-') != std::string::npos ? s + pad : pad + s;
    } else if (conv == 'd' || conv == 'i' || conv == 'x' || conv == 'X' || conv == 'o') {
      if (!v.is_number()) throw Error("%d format: a real number is required");
      const long long n =
          v.kind == Value::Kind::Float ? static_cast<long long>(std::trunc(v.f)) : v.as_int();
      std::snprintf(buf, sizeof buf, (spec + "ll" + (conv == 'i' ? 'd' : conv)).c_str(), n);
      out += buf;
    } else if (conv == 'f' || conv == 'F' || conv == 'e' || conv == 'E' || conv == 'g' ||
               conv == 'G') {
      if (!v.is_number()) throw Error("must be real number");
      std::snprintf(buf, sizeof buf, (spec + conv).c_str(), v.as_double());
      out += buf;
    } else {
      throw Error(std::string("unsupported format character '") + conv + "'");
    }
    in.charge_bytes(out.size());
  }
  if (next < args.size()) throw Error("not all arguments converted during string formatting");
  return out;
}

Value Interp::filter(const std::string& name, Value v, CallArgs& a) {
  step();
  if (name == "default" || name == "d") {
    const bool boolean = truthy(arg_or(a, 1, "boolean", Value::boolean(false)));
    if (v.is_undefined() || (boolean && !truthy(v)))
      return arg_or(a, 0, "default_value", Value::string(""));
    return v;
  }
  if (name == "length" || name == "count") return Value::integer(length_of(v));
  if (name == "string") return Value::string(to_str(v));
  if (name == "trim") {
    const Value* chars = find_arg(a, 0, "chars");
    const std::string* set = chars && !chars->is_none() ? &chars->s : nullptr;
    return Value::string(py_strip(to_str(v), set, true, true));
  }
  if (name == "upper") return Value::string(py_upper(to_str(v)));
  if (name == "lower") return Value::string(py_lower(to_str(v)));
  if (name == "capitalize") return Value::string(py_capitalize(to_str(v)));
  if (name == "title") {
    // jinja2: capitalize each piece after runs of whitespace, '-', '(', '{', '[' and '<'.
    std::string out;
    bool start = true;
    for (uint32_t cp : decode_utf8(to_str(v))) {
      const bool sep =
          py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
      append_utf8(out, sep ? cp : (start ? py_upper(cp) : py_lower(cp)));
      start = sep;
    }
    return Value::string(std::move(out));
  }
  if (name == "replace") {
    const Value old = arg_or(a, 0, "old", Value::string(""));
    const Value repl = arg_or(a, 1, "new", Value::string(""));
    const Value count = arg_or(a, 2, "count", Value::none());
    const std::string s = to_str(v), o = to_str(old), r = to_str(repl);
    charge_bytes(o.empty() ? (s.size() + 1) * r.size() + s.size()
                           : s.size() / o.size() * r.size() + s.size());
    return Value::string(py_replace(s, o, r, count.is_int() ? count.as_int() : -1));
  }
  if (name == "join") {
    const std::string sep = to_str(arg_or(a, 0, "d", Value::string("")));
    const Value* attribute = find_arg(a, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += to_str(attribute ? attr_path(*this, item, *attribute) : item);
      charge_bytes(out.size());
    }
    return Value::string(std::move(out));
  }
  if (name == "first") {
    if (v.is_undefined()) return Value::undefined("No first item, sequence was empty.");
    std::vector<Value> items = iterate(v);
    return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
  }
  if (name == "last") {
    std::vector<Value> items = iterate(v);
    return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
  }
  if (name == "list") return Value::make_list(iterate(v));
  if (name == "reverse") {
    if (v.is_string()) {
      std::vector<uint32_t> cps = decode_utf8(v.s);
      std::reverse(cps.begin(), cps.end());
      return Value::string(encode_utf8(cps, 0, cps.size()));
    }
    std::vector<Value> items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "tojson") {
    const Value indent = arg_or(a, 1, "indent", Value::none());
    const bool sort_keys = truthy(arg_or(a, 4, "sort_keys", Value::boolean(false)));
    const Value seps = arg_or(a, 3, "separators", Value::none());
    std::string item_sep, key_sep;
    const bool has_seps = seps.is_list() && seps.list->items.size() == 2 &&
                          seps.list->items[0].is_string() && seps.list->items[1].is_string();
    if (has_seps) item_sep = seps.list->items[0].s, key_sep = seps.list->items[1].s;
    std::string out;
    if (indent.is_string()) {
      out = to_json(v, 0, indent.s.empty() ? std::string() : indent.s, sort_keys,
                    has_seps ? &item_sep : nullptr, has_seps ? &key_sep : nullptr);
    } else if (indent.is_int()) {
      const int64_t n = std::clamp<int64_t>(indent.as_int(), -1, 64);
      out = to_json(v, n < 0 ? 0 : static_cast<int>(n), {}, sort_keys,
                    has_seps ? &item_sep : nullptr, has_seps ? &key_sep : nullptr);
    } else if (indent.is_none()) {
      out = to_json(v, -1, {}, sort_keys, has_seps ? &item_sep : nullptr,
                    has_seps ? &key_sep : nullptr);
    } else {
      throw Error("tojson indent must be an int, a str or None");
    }
    charge_bytes(out.size());
    return Value::string(std::move(out));
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::make_list({});
    if (!v.is_dict()) throw Error("can only get item pairs from a mapping.");
    return call(method(v, "items"), a);
  }
  if (name == "dictsort") {
    if (!v.is_dict()) throw Error("dictsort expects a mapping");
    const bool cs = truthy(arg_or(a, 0, "case_sensitive", Value::boolean(false)));
    const Value by = arg_or(a, 1, "by", Value::string("key"));
    const bool reverse = truthy(arg_or(a, 2, "reverse", Value::boolean(false)));
    const size_t pos = (by.is_string() && by.s == "value") ? 1 : 0;
    if (!(by.is_string() && (by.s == "key" || by.s == "value"))) {
      throw Error("You can only sort by either \"key\" or \"value\"");
    }
    std::vector<Value> pairs;
    for (const auto& kv : v.dict->items)
      pairs.push_back(Value::make_list({kv.first, kv.second}, true));
    const Value index = Value::integer(static_cast<int64_t>(pos));
    return Value::make_list(sorted_values(*this, std::move(pairs), reverse, cs, &index));
  }
  if (name == "sort") {
    const bool reverse = truthy(arg_or(a, 0, "reverse", Value::boolean(false)));
    const bool cs = truthy(arg_or(a, 1, "case_sensitive", Value::boolean(false)));
    const Value* attribute = find_arg(a, 2, "attribute");
    return Value::make_list(sorted_values(*this, iterate(v), reverse, cs, attribute));
  }
  if (name == "unique") {
    const bool cs = truthy(arg_or(a, 0, "case_sensitive", Value::boolean(false)));
    const Value* attribute = find_arg(a, 1, "attribute");
    std::vector<Value> out, seen;
    for (const Value& item : iterate(v)) {
      Value key = fold(attribute ? attr_path(*this, item, *attribute) : item, cs);
      step(seen.size() / 16);
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, key); })) {
        seen.push_back(std::move(key));
        out.push_back(item);
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "min" || name == "max") {
    const bool cs = truthy(arg_or(a, 0, "case_sensitive", Value::boolean(false)));
    const Value* attribute = find_arg(a, 1, "attribute");
    std::vector<Value> items = iterate(v);
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    size_t best = 0;
    for (size_t k = 1; k < items.size(); ++k) {
      const Value x = fold(attribute ? attr_path(*this, items[k], *attribute) : items[k], cs);
      const Value y = fold(attribute ? attr_path(*this, items[best], *attribute) : items[best], cs);
      const int c = compare(x, y);
      if (name == "min" ? c < 0 : c > 0) best = k;
    }
    return items[best];
  }
  if (name == "sum") {
    const Value* attribute = find_arg(a, 0, "attribute");
    Value total = arg_or(a, 1, "start", Value::integer(0));
    for (const Value& item : iterate(v)) {
      total = binary_op(*this, "+", total, attribute ? attr_path(*this, item, *attribute) : item);
    }
    return total;
  }
  if (name == "map") {
    std::vector<Value> out;
    const Value* attribute = find_arg(a, SIZE_MAX, "attribute");
    if (attribute) {
      const Value* fallback = find_arg(a, SIZE_MAX, "default");
      for (const Value& item : iterate(v)) {
        Value x = attr_path(*this, item, *attribute);
        out.push_back(x.is_undefined() && fallback ? *fallback : x);
      }
      return Value::make_list(std::move(out));
    }
    if (a.pos.empty() || !a.pos[0].is_string())
      throw Error("map requires a filter name or attribute=");
    const std::string fname = a.pos[0].s;
    if (!is_known_filter(fname)) throw Error("No filter named '" + fname + "'.");
    CallArgs rest;
    rest.pos.assign(a.pos.begin() + 1, a.pos.end());
    rest.kw = a.kw;
    for (const Value& item : iterate(v)) {
      CallArgs copy = rest;
      out.push_back(filter(fname, item, copy));
    }
    return Value::make_list(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_if = name == "select" || name == "selectattr";
    size_t first = 0;
    const Value* attribute = nullptr;
    if (by_attr) {
      if (a.pos.empty()) throw Error(name + " requires an attribute name");
      attribute = &a.pos[0];
      first = 1;
    }
    std::string tname;
    if (a.pos.size() > first) {
      if (!a.pos[first].is_string()) throw Error("test name must be a string");
      tname = a.pos[first].s;
      if (!is_known_test(tname)) throw Error("No test named '" + tname + "'.");
    }
    CallArgs targs;
    if (a.pos.size() > first + 1) targs.pos.assign(a.pos.begin() + first + 1, a.pos.end());
    targs.kw = a.kw;
    std::vector<Value> out;
    for (const Value& item : iterate(v)) {
      const Value x = attribute ? attr_path(*this, item, *attribute) : item;
      const bool ok = tname.empty() ? truthy(x) : test(tname, x, targs);
      if (ok == keep_if) out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "attr") {
    const Value* attr = find_arg(a, 0, "name");
    if (!attr || !attr->is_string()) throw Error("attr expects an attribute name");
    // Attributes only, never items: a dict's keys are not its attributes.
    if (v.is_dict() || v.is_string() || v.is_list()) return method(v, attr->s);
    if (v.is_undefined()) return Value::undefined();
    return getattr(v, attr->s);
  }
  if (name == "int") {
    const Value fallback = arg_or(a, 0, "default", Value::integer(0));
    if (v.is_int()) return Value::integer(v.as_int());
    if (v.kind == Value::Kind::Float) {
      if (!std::isfinite(v.f) || std::fabs(v.f) >= 9.2e18) return fallback;
      return Value::integer(static_cast<int64_t>(std::trunc(v.f)));
    }
    if (v.is_string()) {
      int64_t i = 0;
      double d = 0;
      if (parse_py_int(v.s, i)) return Value::integer(i);
      if (parse_py_float(v.s, d) && std::isfinite(d) && std::fabs(d) < 9.2e18) {
        return Value::integer(static_cast<int64_t>(std::trunc(d)));
      }
    }
    return fallback;
  }
  if (name == "float") {
    const Value fallback = arg_or(a, 0, "default", Value::number(0.0));
    if (v.is_number()) return Value::number(v.as_double());
    double d = 0;
    if (v.is_string() && parse_py_float(v.s, d)) return Value::number(d);
    return fallback;
  }
  if (name == "abs") {
    if (v.kind == Value::Kind::Float) return Value::number(std::fabs(v.f));
    if (v.is_int()) {
      if (v.as_int() == INT64_MIN) throw Error("integer overflow");
      return Value::integer(std::llabs(v.as_int()));
    }
    throw Error(std::string("bad operand type for abs(): '") + type_name(v) + "'");
  }
  if (name == "round") {
    const Value prec = arg_or(a, 0, "precision", Value::integer(0));
    const Value method_v = arg_or(a, 1, "method", Value::string("common"));
    if (!v.is_number()) throw Error("round expects a number");
    if (!prec.is_int()) throw Error("round precision must be an integer");
    const std::string m = to_str(method_v);
    if (m == "common") {
      if (v.is_int()) return Value::integer(v.as_int());
      return Value::number(py_round(v.f, prec.as_int()));
    }
    if (m != "ceil" && m != "floor") throw Error("method must be common, ceil or floor");
    const double scale =
        std::pow(10.0, static_cast<double>(std::clamp<int64_t>(prec.as_int(), -300, 300)));
    const double x = v.as_double() * scale;
    return Value::number((m == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
  }
  if (name == "indent") {
    const Value width = arg_or(a, 0, "width", Value::integer(4));
    const bool first = truthy(arg_or(a, 1, "first", Value::boolean(false)));
    const bool blank = truthy(arg_or(a, 2, "blank", Value::boolean(false)));
    std::string ind;
    if (width.is_string()) {
      ind = width.s;
    } else if (width.is_int()) {
      ind.assign(static_cast<size_t>(std::clamp<int64_t>(width.as_int(), 0, 1 << 16)), ' ');
    } else {
      throw Error("indent width must be an int or a str");
    }
    const std::vector<std::string> lines = py_splitlines(to_str(v) + "\n", false);
    std::string out;
    for (size_t k = 0; k < lines.size(); ++k) {
      if (k > 0) out += "\n";
      if (k > 0 && (blank || !lines[k].empty())) out += ind;
      out += lines[k];
      charge_bytes(out.size());
    }
    if (first) out = ind + out;
    return Value::string(std::move(out));
  }
  if (name == "center") {
    const Value width = arg_or(a, 0, "width", Value::integer(80));
    if (!width.is_int()) throw Error("center width must be an integer");
    const std::string s = to_str(v);
    const int64_t len = static_cast<int64_t>(utf8_length(s));
    const int64_t w = std::min<int64_t>(width.as_int(), 1 << 20);
    if (w <= len) return Value::string(s);
    const int64_t pad = w - len;
    const int64_t left = pad / 2 + (pad & w & 1);
    return Value::string(std::string(static_cast<size_t>(left), ' ') + s +
                         std::string(static_cast<size_t>(pad - left), ' '));
  }
  if (name == "escape" || name == "e" || name == "forceescape")
    return Value::string(html_escape(to_str(v)));
  if (name == "safe") return v;
  if (name == "format") {
    Value args = Value::make_list(a.pos, true);
    return Value::string(printf_format(*this, to_str(v), args));
  }
  if (name == "wordcount") {
    int64_t n = 0;
    bool in_word = false;
    for (uint32_t cp : decode_utf8(to_str(v))) {
      const bool w = py_isalnum(cp) || cp == '_';
      if (w && !in_word) ++n;
      in_word = w;
    }
    return Value::integer(n);
  }
  throw Error("no filter named '" + name + "'");
}

bool Interp::test(const std::string& name, const Value& v, CallArgs& a) {
  step();
  using K = Value::Kind;
  auto other = [&]() -> const Value& {
    if (a.pos.empty()) throw Error("test '" + name + "' needs an argument");
    return a.pos[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == K::Bool;
  if (name == "true") return v.kind == K::Bool && v.b;
  if (name == "false") return v.kind == K::Bool && !v.b;
  if (name == "integer") return v.kind == K::Int;
  if (name == "float") return v.kind == K::Float;
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "sequence") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "callable") return v.kind == K::Callable;
  if (name == "escaped") return false;
  if (name == "lower") return v.is_string() && py_lower(v.s) == v.s && py_upper(v.s) != v.s;
  if (name == "upper") return v.is_string() && py_upper(v.s) == v.s && py_lower(v.s) != v.s;
  if (name == "odd" || name == "even") {
    if (!v.is_int()) throw Error("odd/even expect an integer");
    const bool odd = (v.as_int() % 2) != 0;
    return name == "odd" ? odd : !odd;
  }
  if (name == "divisibleby") {
    const Value& n = other();
    const Value m = binary_op(*this, "%", v, n);
    return equals(m, Value::integer(0));
  }
  if (name == "sameas") {
    const Value& o = other();
    if (v.kind != o.kind) return false;
    switch (v.kind) {
      case K::List:
        return v.list == o.list;
      case K::Dict:
      case K::Namespace:
        return v.dict == o.dict;
      case K::Callable:
        return v.fn == o.fn;
      default:
        return equals(v, o);
    }
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, other());
  if (name == "ne" || name == "!=") return !equals(v, other());
  if (name == "in") return contains(*this, other(), v);
  if (name == "lt" || name == "lessthan" || name == "<") return compare(v, other()) < 0;
  if (name == "le" || name == "<=") return compare(v, other()) <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, other()) > 0;
  if (name == "ge" || name == ">=") return compare(v, other()) >= 0;
  throw Error("no test named '" + name + "'");
}

}  // namespace maas::tmpl::detail
