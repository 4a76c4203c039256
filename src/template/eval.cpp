// Statement execution and expression evaluation.
#include <algorithm>

#include "template/interp.h"
#include "template/ustring.h"

namespace maas::tmpl::detail {

const Value* Frame::lookup(std::string_view name) const {
  for (const Frame* f = this; f; f = f->parent) {
    for (const auto& kv : f->vars) {
      if (kv.first == name) return &kv.second;
    }
  }
  return nullptr;
}

void Frame::set(const std::string& name, Value v) {
  for (auto& kv : vars) {
    if (kv.first == name) {
      kv.second = std::move(v);
      return;
    }
  }
  vars.emplace_back(name, std::move(v));
}

namespace {

// Restores the output target when a capture ends, also on errors.
struct OutputSwap {
  std::string*& slot;
  std::string* saved;
  OutputSwap(std::string*& s, std::string* replacement) : slot(s), saved(s) { slot = replacement; }
  ~OutputSwap() { slot = saved; }
};

struct DepthCount {
  int& depth;
  DepthCount(int& d, int max) : depth(d) {
    if (++depth > max) {
      --depth;
      throw Error("maximum recursion depth exceeded in macro calls");
    }
  }
  ~DepthCount() { --depth; }
};

int64_t slice_index(const Value& v, const char* what) {
  if (v.is_int()) return v.as_int();
  throw Error(std::string("slice ") + what + " must be an integer or None");
}

Value do_slice(Interp& in, const Value& obj, const Value& start_v, const Value& stop_v,
               const Value& step_v) {
  const bool none_start = start_v.is_none() || start_v.is_undefined();
  const bool none_stop = stop_v.is_none() || stop_v.is_undefined();
  int64_t step = (step_v.is_none() || step_v.is_undefined()) ? 1 : slice_index(step_v, "step");
  if (step == 0) throw Error("slice step cannot be zero");
  std::vector<uint32_t> cps;
  int64_t len = 0;
  if (obj.is_string()) {
    cps = decode_utf8(obj.s);
    len = static_cast<int64_t>(cps.size());
  } else if (obj.is_list()) {
    len = static_cast<int64_t>(obj.list->items.size());
  } else if (obj.is_undefined()) {
    fail_undefined(obj);
  } else {
    throw Error(std::string("'") + type_name(obj) + "' object is not subscriptable");
  }
  auto adjust = [&](int64_t i, bool is_stop) {
    (void)is_stop;
    if (i < 0) {
      i += len;
      if (i < 0) i = step < 0 ? -1 : 0;
    } else if (i >= len) {
      i = step < 0 ? len - 1 : len;
    }
    return i;
  };
  int64_t start =
      none_start ? (step < 0 ? len - 1 : 0) : adjust(slice_index(start_v, "start"), false);
  int64_t stop = none_stop ? (step < 0 ? -1 : len) : adjust(slice_index(stop_v, "stop"), true);
  std::vector<int64_t> picks;
  if (step > 0) {
    for (int64_t i = start; i < stop; i += step) picks.push_back(i);
  } else {
    for (int64_t i = start; i > stop; i += step) picks.push_back(i);
  }
  in.step(picks.size() / 16);
  if (obj.is_string()) {
    std::string out;
    for (int64_t i : picks) append_utf8(out, cps[static_cast<size_t>(i)]);
    return Value::string(std::move(out));
  }
  std::vector<Value> items;
  items.reserve(picks.size());
  for (int64_t i : picks) items.push_back(obj.list->items[static_cast<size_t>(i)]);
  return Value::make_list(std::move(items), obj.list->tuple);
}

}  // namespace

std::string undefined_attr(const Value& obj, const std::string& name) {
  // Appended piecewise: GCC 12 warns falsely (-Wrestrict) on "'" + std::string(...).
  std::string msg = "'";
  msg += type_name(obj);
  msg += " object' has no attribute '";
  msg += name;
  msg += "'";
  return msg;
}

void Interp::run(const Node& root, Frame& globals) { exec_body(root.body, globals); }

void Interp::emit(std::string_view s) {
  if (out_->size() + s.size() > limits_.max_output_bytes) {
    throw Error("template output exceeds the size limit");
  }
  out_->append(s);
}

Flow Interp::exec_body(const std::vector<NodePtr>& body, Frame& f) {
  for (const auto& n : body) {
    const Flow flow = exec(*n, f);
    if (flow != Flow::Normal) return flow;
  }
  return Flow::Normal;
}

std::string Interp::capture(const std::vector<NodePtr>& body, Frame& f) {
  std::string buf;
  OutputSwap swap(out_, &buf);
  if (exec_body(body, f) != Flow::Normal) throw Error("'break' or 'continue' outside of a loop");
  return buf;
}

Flow Interp::exec(const Node& n, Frame& f) {
  step();
  switch (n.kind) {
    case NodeKind::Text:
      emit(n.name);
      return Flow::Normal;
    case NodeKind::Print: {
      const Value v = eval(*n.args[0], f);
      if (v.is_string()) {
        emit(v.s);
      } else {
        const std::string s = to_str(v);
        charge_bytes(s.size());
        emit(s);
      }
      return Flow::Normal;
    }
    case NodeKind::If:
      return exec_body(truthy(eval(*n.args[0], f)) ? n.body : n.else_body, f);
    case NodeKind::For:
      return exec_for(n, f);
    case NodeKind::Set:
      exec_set(*n.args[0], eval(*n.args[1], f), f);
      return Flow::Normal;
    case NodeKind::SetBlock: {
      Value v = Value::string(capture(n.body, f));
      for (size_t k = 1; k < n.args.size(); ++k) v = eval_filter(*n.args[k], std::move(v), f);
      exec_set(*n.args[0], std::move(v), f);
      return Flow::Normal;
    }
    case NodeKind::Macro:
      f.set(n.name, make_macro(n, f));
      return Flow::Normal;
    case NodeKind::CallBlock: {
      const Node& call = *n.args[0];
      Value callee = eval(*call.args[0], f);
      CallArgs args;
      eval_args(call, 1, f, args);
      args.kw.emplace_back("caller", make_macro(n, f));
      const Value v = this->call(callee, args);
      emit(to_str(v));
      return Flow::Normal;
    }
    case NodeKind::FilterBlock: {
      Value v = Value::string(capture(n.body, f));
      for (const auto& filt : n.args) v = eval_filter(*filt, std::move(v), f);
      emit(to_str(v));
      return Flow::Normal;
    }
    case NodeKind::With: {
      Frame inner{&f, {}};
      for (const auto& [name, expr] : n.kwargs) inner.set(name, eval(*expr, f));
      return exec_body(n.body, inner);
    }
    case NodeKind::Break:
      return Flow::Break;
    case NodeKind::Continue:
      return Flow::Continue;
    case NodeKind::Block:
      return exec_body(n.body, f);
    default:
      throw Error("internal error: expression used as statement");
  }
}

void Interp::exec_set(const Node& target, Value v, Frame& f) {
  if (target.kind == NodeKind::Name) {
    f.set(target.name, std::move(v));
    return;
  }
  if (target.kind == NodeKind::GetAttr) {
    const Value* ns = f.lookup(target.args[0]->name);
    if (!ns || ns->kind != Value::Kind::Namespace) {
      throw Error("cannot assign attribute on non-namespace object");
    }
    step(v.depth);
    if (holds_reference(v)) {
      throw Error("cannot store a namespace or callable in a namespace attribute");
    }
    ns->dict->set(Value::string(target.name), std::move(v));
    return;
  }
  // Tuple unpacking.
  std::vector<Value> items = iterate(v);
  if (items.size() != target.args.size()) {
    throw Error(items.size() > target.args.size() ? "too many values to unpack"
                                                  : "not enough values to unpack");
  }
  for (size_t k = 0; k < items.size(); ++k) exec_set(*target.args[k], std::move(items[k]), f);
}

Flow Interp::exec_for(const Node& n, Frame& f) {
  if (n.flag) throw Error("recursive loops are not supported");
  const Value iterable = eval(*n.args[1], f);
  std::vector<Value> items = iterate(iterable);
  if (n.args[2]) {
    std::vector<Value> kept;
    for (Value& item : items) {
      step();
      Frame probe{&f, {}};
      exec_set(*n.args[0], item, probe);
      if (truthy(eval(*n.args[2], probe))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    Frame inner{&f, {}};
    return exec_body(n.else_body, inner) == Flow::Break ? Flow::Normal : Flow::Normal;
  }
  const int64_t len = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < len; ++i) {
    step();
    Frame inner{&f, {}};
    std::vector<std::pair<Value, Value>> loop;
    auto put = [&](const char* k, Value v) { loop.emplace_back(Value::string(k), std::move(v)); };
    put("index0", Value::integer(i));
    put("index", Value::integer(i + 1));
    put("revindex0", Value::integer(len - i - 1));
    put("revindex", Value::integer(len - i));
    put("first", Value::boolean(i == 0));
    put("last", Value::boolean(i == len - 1));
    put("length", Value::integer(len));
    put("depth", Value::integer(1));
    put("depth0", Value::integer(0));
    if (i > 0) put("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < len) put("nextitem", items[static_cast<size_t>(i + 1)]);
    put("cycle", Value::callable("cycle", [i](Interp&, CallArgs& args) -> Value {
          if (args.pos.empty()) throw Error("no items for cycling given");
          return args.pos[static_cast<size_t>(i) % args.pos.size()];
        }));
    Value loop_value = Value::make_dict();
    loop_value.dict->items = std::move(loop);
    inner.set("loop", std::move(loop_value));
    exec_set(*n.args[0], items[static_cast<size_t>(i)], inner);
    if (exec_body(n.body, inner) == Flow::Break) break;
  }
  return Flow::Normal;
}

Value Interp::make_macro(const Node& n, Frame& f, const Node* caller_body, Frame* caller_frame) {
  (void)caller_body;
  (void)caller_frame;
  const Node* def = &n;
  Frame* closure = &f;
  const std::string name = n.kind == NodeKind::Macro ? n.name : "caller";
  return Value::callable(name, [def, closure](Interp& in, CallArgs& args) -> Value {
    DepthCount depth(in.call_depth(), in.limits().max_depth);
    Frame frame{closure, {}};
    const auto& params = def->kwargs;
    if (args.pos.size() > params.size()) {
      throw Error("macro '" + (def->kind == NodeKind::Macro ? def->name : std::string("caller")) +
                  "' takes not more than " + std::to_string(params.size()) + " argument(s)");
    }
    for (size_t k = 0; k < params.size(); ++k) {
      const std::string& pname = params[k].first;
      const Value* given = k < args.pos.size() ? &args.pos[k] : nullptr;
      for (const auto& kv : args.kw) {
        if (kv.first == pname) given = &kv.second;
      }
      if (given) {
        frame.set(pname, *given);
      } else if (params[k].second) {
        frame.set(pname, in.eval(*params[k].second, frame));
      } else {
        frame.set(pname, Value::undefined("parameter '" + pname + "' was not provided"));
      }
    }
    for (const auto& kv : args.kw) {
      const bool known = std::any_of(params.begin(), params.end(),
                                     [&](const auto& p) { return p.first == kv.first; });
      if (!known) {
        if (kv.first == "caller") {
          frame.set("caller", kv.second);
        } else {
          throw Error("macro takes no keyword argument '" + kv.first + "'");
        }
      }
    }
    return Value::string(in.capture(def->body, frame));
  });
}

void Interp::eval_args(const Node& n, size_t first, Frame& f, CallArgs& out) {
  for (size_t k = first; k < n.args.size(); ++k) out.pos.push_back(eval(*n.args[k], f));
  for (const auto& [name, expr] : n.kwargs) out.kw.emplace_back(name, eval(*expr, f));
}

Value Interp::eval_call(const Node& n, Frame& f) {
  const Value callee = eval(*n.args[0], f);
  CallArgs args;
  eval_args(n, 1, f, args);
  return call(callee, args);
}

Value Interp::call(const Value& callee, CallArgs& args) {
  if (callee.kind == Value::Kind::Callable) return callee.fn->call(*this, args);
  if (callee.is_undefined()) fail_undefined(callee);
  throw Error(std::string("'") + type_name(callee) + "' object is not callable");
}

Value Interp::eval_filter(const Node& n, Value operand, Frame& f) {
  CallArgs args;
  eval_args(n, 1, f, args);
  return filter(n.name, std::move(operand), args);
}

Value Interp::getattr(const Value& obj, const std::string& name) {
  switch (obj.kind) {
    case Value::Kind::Undefined:
      fail_undefined(obj);
    case Value::Kind::Dict: {
      Value m = method(obj, name);
      if (!m.is_undefined()) return m;
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined(undefined_attr(obj, name));
    }
    case Value::Kind::Namespace:
      if (const Value* v = obj.dict->find(name)) return *v;
      return Value::undefined(undefined_attr(obj, name));
    case Value::Kind::String:
    case Value::Kind::List:
      return method(obj, name);
    default:
      return Value::undefined(undefined_attr(obj, name));
  }
}

Value Interp::getitem(const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Value::Kind::Undefined:
      fail_undefined(obj);
    case Value::Kind::Dict: {
      if (const Value* v = obj.dict->find(key)) return *v;
      if (key.is_string()) {
        Value m = method(obj, key.s);
        if (!m.is_undefined()) return m;
        return Value::undefined(undefined_attr(obj, key.s));
      }
      return Value::undefined("'dict object' has no element " + to_repr(key));
    }
    case Value::Kind::Namespace:
      if (key.is_string()) return getattr(obj, key.s);
      return Value::undefined("'Namespace object' has no element " + to_repr(key));
    case Value::Kind::List:
    case Value::Kind::String: {
      if (key.is_string()) return method(obj, key.s);
      if (!key.is_int()) return Value::undefined("invalid index " + to_repr(key));
      int64_t i = key.as_int();
      if (obj.is_list()) {
        const int64_t len = static_cast<int64_t>(obj.list->items.size());
        if (i < 0) i += len;
        if (i < 0 || i >= len) {
          return Value::undefined(std::string("'") + type_name(obj) + " object' has no element " +
                                  std::to_string(key.as_int()));
        }
        return obj.list->items[static_cast<size_t>(i)];
      }
      const std::vector<uint32_t> cps = decode_utf8(obj.s);
      const int64_t len = static_cast<int64_t>(cps.size());
      if (i < 0) i += len;
      if (i < 0 || i >= len) {
        return Value::undefined("'str object' has no element " + std::to_string(key.as_int()));
      }
      std::string out;
      append_utf8(out, cps[static_cast<size_t>(i)]);
      return Value::string(std::move(out));
    }
    default:
      return Value::undefined(std::string("'") + type_name(obj) + " object' has no element " +
                              to_repr(key));
  }
}

std::vector<Value> Interp::iterate(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
      return {};
    case Value::Kind::List:
      step(v.list->items.size() / 16);
      return v.list->items;
    case Value::Kind::Dict: {
      std::vector<Value> keys;
      for (const auto& kv : v.dict->items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::String: {
      std::vector<Value> out;
      for (uint32_t cp : decode_utf8(v.s)) {
        std::string ch;
        append_utf8(ch, cp);
        out.push_back(Value::string(std::move(ch)));
      }
      step(out.size() / 16);
      return out;
    }
    default:
      throw Error(std::string("'") + type_name(v) + "' object is not iterable");
  }
}

Value Interp::eval(const Node& n, Frame& f) {
  step();
  switch (n.kind) {
    case NodeKind::Literal:
      return n.value;
    case NodeKind::Name: {
      if (const Value* v = f.lookup(n.name)) return *v;
      if (const Value* g = global_function(n.name)) return *g;
      return Value::undefined("'" + n.name + "' is undefined");
    }
    case NodeKind::ListLit:
    case NodeKind::TupleLit: {
      std::vector<Value> items;
      items.reserve(n.args.size());
      for (const auto& a : n.args) items.push_back(eval(*a, f));
      return Value::make_list(std::move(items), n.kind == NodeKind::TupleLit);
    }
    case NodeKind::DictLit: {
      std::vector<std::pair<Value, Value>> items;
      for (size_t k = 0; k + 1 < n.args.size(); k += 2) {
        Value key = eval(*n.args[k], f);
        if (key.is_list() && !key.list->tuple) throw Error("unhashable type: 'list'");
        if (key.is_dict() || key.is_undefined()) {
          throw Error(std::string("unhashable type: '") + type_name(key) + "'");
        }
        items.emplace_back(std::move(key), eval(*n.args[k + 1], f));
      }
      return Value::make_dict(std::move(items));
    }
    case NodeKind::GetAttr:
      return getattr(eval(*n.args[0], f), n.name);
    case NodeKind::GetItem: {
      const Value obj = eval(*n.args[0], f);
      const Node& idx = *n.args[1];
      if (idx.kind == NodeKind::Slice) {
        auto part = [&](size_t k) { return idx.args[k] ? eval(*idx.args[k], f) : Value::none(); };
        return do_slice(*this, obj, part(0), part(1), part(2));
      }
      return getitem(obj, eval(idx, f));
    }
    case NodeKind::Call:
      return eval_call(n, f);
    case NodeKind::Filter:
      return eval_filter(n, eval(*n.args[0], f), f);
    case NodeKind::Test: {
      const Value operand = eval(*n.args[0], f);
      CallArgs args;
      eval_args(n, 1, f, args);
      return Value::boolean(test(n.name, operand, args));
    }
    case NodeKind::Unary: {
      const Value v = eval(*n.args[0], f);
      if (n.name == "not") return Value::boolean(!truthy(v));
      if (v.is_undefined()) fail_undefined(v);
      if (n.name == "-") {
        if (v.kind == Value::Kind::Float) return Value::number(-v.f);
        if (v.is_int()) {
          if (v.as_int() == INT64_MIN) throw Error("integer overflow");
          return Value::integer(-v.as_int());
        }
        throw Error(std::string("bad operand type for unary -: '") + type_name(v) + "'");
      }
      if (v.kind == Value::Kind::Float) return v;
      if (v.is_int()) return Value::integer(v.as_int());
      throw Error(std::string("bad operand type for unary +: '") + type_name(v) + "'");
    }
    case NodeKind::Binary: {
      const Value a = eval(*n.args[0], f);
      const Value b = eval(*n.args[1], f);
      if (n.name == "~") {
        std::string s = to_str(a) + to_str(b);
        charge_bytes(s.size());
        return Value::string(std::move(s));
      }
      return binary_op(*this, n.name, a, b);
    }
    case NodeKind::And: {
      Value a = eval(*n.args[0], f);
      return truthy(a) ? eval(*n.args[1], f) : a;
    }
    case NodeKind::Or: {
      Value a = eval(*n.args[0], f);
      return truthy(a) ? a : eval(*n.args[1], f);
    }
    case NodeKind::Compare: {
      Value left = eval(*n.args[0], f);
      for (size_t k = 0; k < n.ops.size(); ++k) {
        Value right = eval(*n.args[k + 1], f);
        const std::string& op = n.ops[k];
        bool ok;
        if (op == "==") {
          ok = equals(left, right);
        } else if (op == "!=") {
          ok = !equals(left, right);
        } else if (op == "in") {
          ok = contains(*this, right, left);
        } else if (op == "notin") {
          ok = !contains(*this, right, left);
        } else {
          if (left.is_undefined()) fail_undefined(left);
          if (right.is_undefined()) fail_undefined(right);
          const int c = compare(left, right);
          ok = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
        }
        if (!ok) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case NodeKind::CondExpr:
      if (truthy(eval(*n.args[1], f))) return eval(*n.args[0], f);
      if (n.args[2]) return eval(*n.args[2], f);
      return Value::undefined("the inline if-expression on line " + std::to_string(n.line) +
                              " evaluated to false and no else section was defined.");
    default:
      throw Error("internal error: statement used as expression");
  }
}

}  // namespace maas::tmpl::detail
