// The tree-walking evaluator: scopes, statements, expressions, and the hooks filters, tests and
// methods use to call back into it.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "template/ast.h"
#include "template/value.h"

namespace maas::tmpl::detail {

// A variable scope. jinja2 opens one for every loop iteration, macro call and with-block;
// `if` bodies share their parent's.
struct Frame {
  Frame* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* lookup(std::string_view name) const;
  void set(const std::string& name, Value v);
};

enum class Flow { Normal, Break, Continue };

class Interp {
 public:
  Interp(const Limits& limits, std::string& out) : limits_(limits), out_(&out) {}

  void run(const Node& root, Frame& globals);

  // Counts work; throws once the budget is spent. Bytes built count 1/16 step each.
  void step(size_t n = 1) {
    steps_ += n;
    if (steps_ > limits_.max_steps) throw Error("template needs too much work (step limit)");
  }
  void charge_bytes(size_t n) {
    if (n > limits_.max_output_bytes) throw Error("template builds a value that is too large");
    step(n / 16);
  }
  const Limits& limits() const { return limits_; }
  int& call_depth() { return call_depth_; }
  // Renders statements into a fresh buffer (macro bodies, block sets, filter blocks).
  std::string capture(const std::vector<NodePtr>& body, Frame& f);

  Value eval(const Node& n, Frame& f);
  Value call(const Value& callee, CallArgs& args);
  Value getattr(const Value& obj, const std::string& name);
  Value getitem(const Value& obj, const Value& key);
  // Python iteration: list items, dict keys, string code points; Undefined gives nothing.
  std::vector<Value> iterate(const Value& v);

  Value filter(const std::string& name, Value operand, CallArgs& args);
  bool test(const std::string& name, const Value& operand, CallArgs& args);

 private:
  const Limits& limits_;
  std::string* out_;
  size_t steps_ = 0;
  int call_depth_ = 0;

  void emit(std::string_view s);
  Flow exec(const Node& n, Frame& f);
  Flow exec_body(const std::vector<NodePtr>& body, Frame& f);
  Flow exec_for(const Node& n, Frame& f);
  void exec_set(const Node& target, Value v, Frame& f);
  Value make_macro(const Node& n, Frame& f, const Node* caller_body = nullptr,
                   Frame* caller_frame = nullptr);
  Value eval_call(const Node& n, Frame& f);
  Value eval_filter(const Node& n, Value operand, Frame& f);
  void eval_args(const Node& n, size_t first, Frame& f, CallArgs& out);
};

// Python binary operators on values ("+", "-", "*", "/", "//", "%", "**").
Value binary_op(Interp& in, const std::string& op, const Value& a, const Value& b);
// `a in b`.
bool contains(Interp& in, const Value& container, const Value& item);
// Bound methods of str, dict and list; Undefined with a hint when there is none.
Value method(const Value& self, const std::string& name);
// jinja2's message for a missing attribute: "'dict object' has no attribute 'x'".
std::string undefined_attr(const Value& obj, const std::string& name);
// Globals: range, dict, namespace, raise_exception, strftime_now, ...
const Value* global_function(std::string_view name);

// Argument helpers for builtins: positional index or keyword name, else the default.
const Value* find_arg(const CallArgs& args, size_t index, std::string_view name);
Value arg_or(const CallArgs& args, size_t index, std::string_view name, Value fallback);

}  // namespace maas::tmpl::detail
