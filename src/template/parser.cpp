// Recursive-descent parser with jinja2's grammar and operator precedence (lowest first):
// inline if-else, or, and, not, comparisons and `in`, + -, ~, * / // %, ** (left associative as
// in jinja2), unary - +, then postfix access, calls, filters and tests.
#include <set>

#include "template/ast.h"

namespace maas::tmpl::detail {

namespace {

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, int max_depth) : t_(tokens), max_depth_(max_depth) {}

  NodePtr parse_template() {
    auto root = std::make_unique<Node>(NodeKind::Block, 1, 1);
    root->body = subparse({});
    if (cur().type != Tok::End) fail_here("unexpected tag");
    return root;
  }

 private:
  const std::vector<Token>& t_;
  size_t p_ = 0;
  int depth_ = 0;
  int max_depth_;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > p.max_depth_) p.fail_here("template nesting is too deep");
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  const Token& next() {
    const Token& tok = t_[p_];
    if (p_ + 1 < t_.size()) ++p_;
    return tok;
  }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Tok::Name && cur().text == name; }

  [[noreturn]] void fail_here(const std::string& msg) const {
    syntax_error(cur().line, cur().col, msg);
  }

  static std::string describe(const Token& tok) {
    switch (tok.type) {
      case Tok::Text:
        return "text";
      case Tok::VarBegin:
        return "'{{'";
      case Tok::VarEnd:
        return "end of print statement";
      case Tok::BlockBegin:
        return "'{%'";
      case Tok::BlockEnd:
        return "end of statement block";
      case Tok::Name:
        return "'" + tok.text + "'";
      case Tok::String:
        return "string";
      case Tok::Int:
        return "integer";
      case Tok::Float:
        return "float";
      case Tok::Op:
        return "'" + tok.text + "'";
      case Tok::End:
        return "end of template";
    }
    return "token";
  }

  void expect_op(const char* op) {
    if (!is_op(op)) fail_here(std::string("expected '") + op + "', got " + describe(cur()));
    next();
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type) fail_here(std::string("expected ") + what + ", got " + describe(cur()));
    next();
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail_here("expected a name, got " + describe(cur()));
    return next().text;
  }

  NodePtr make(NodeKind kind, const Token& at) {
    return std::make_unique<Node>(kind, at.line, at.col);
  }

  // Records the expression's height; long operator chains are bounded like deep nesting.
  NodePtr seal(NodePtr n) {
    int h = 0;
    for (const auto& a : n->args) {
      if (a) h = std::max(h, a->height);
    }
    for (const auto& kw : n->kwargs) {
      if (kw.second) h = std::max(h, kw.second->height);
    }
    n->height = h + 1;
    if (n->height > max_depth_) syntax_error(n->line, n->col, "expression is too deeply nested");
    return n;
  }

  // ---- statements ----

  // Parses until a {% name %} with name in `ends` (left unconsumed, positioned at the name).
  std::vector<NodePtr> subparse(const std::set<std::string>& ends) {
    std::vector<NodePtr> body;
    while (cur().type != Tok::End) {
      const Token& tok = cur();
      if (tok.type == Tok::Text) {
        auto n = make(NodeKind::Text, tok);
        n->name = tok.text;
        next();
        body.push_back(std::move(n));
      } else if (tok.type == Tok::VarBegin) {
        next();
        auto n = make(NodeKind::Print, tok);
        n->args.push_back(parse_tuple(false));
        expect(Tok::VarEnd, "end of print statement");
        body.push_back(std::move(n));
      } else if (tok.type == Tok::BlockBegin) {
        next();
        if (cur().type == Tok::Name && ends.count(cur().text)) return body;
        body.push_back(parse_statement());
      } else {
        fail_here("unexpected " + describe(tok));
      }
    }
    if (!ends.empty()) {
      std::string names;
      for (const auto& e : ends) names += (names.empty() ? "'" : " or '") + e + "'";
      fail_here("unexpected end of template, expected " + names);
    }
    return body;
  }

  void end_block() { expect(Tok::BlockEnd, "end of statement block"); }

  NodePtr parse_statement() {
    DepthGuard guard(*this);
    const Token& tok = cur();
    if (tok.type != Tok::Name) fail_here("tag name expected");
    const std::string& kw = tok.text;
    if (kw == "if") return parse_if();
    if (kw == "for") return parse_for();
    if (kw == "set") return parse_set();
    if (kw == "macro") return parse_macro();
    if (kw == "call") return parse_call_block();
    if (kw == "filter") return parse_filter_block();
    if (kw == "with") return parse_with();
    if (kw == "break" || kw == "continue") {
      auto n = make(kw == "break" ? NodeKind::Break : NodeKind::Continue, tok);
      next();
      end_block();
      return n;
    }
    if (kw == "generation") {
      // transformers' AssistantTracker extension: the body renders as is, in its own scope
      // (it is a call block in jinja2), which a With without assignments gives.
      auto n = make(NodeKind::With, tok);
      next();
      end_block();
      n->body = subparse({"endgeneration"});
      next();
      end_block();
      return n;
    }
    fail_here("encountered unknown tag '" + kw + "'");
  }

  NodePtr parse_if() {
    auto n = make(NodeKind::If, cur());
    next();
    n->args.push_back(parse_tuple(false));
    end_block();
    n->body = subparse({"elif", "else", "endif"});
    if (is_name("elif")) {
      n->else_body.push_back(parse_if());  // consumes through endif
      return n;
    }
    if (is_name("else")) {
      next();
      end_block();
      n->else_body = subparse({"endif"});
    }
    next();  // endif
    end_block();
    return n;
  }

  NodePtr parse_assign_target(bool allow_tuple, bool allow_ns) {
    const Token& at = cur();
    auto one = [&]() -> NodePtr {
      const Token& t = cur();
      std::string name = expect_name();
      if (allow_ns && is_op(".")) {
        next();
        auto n = make(NodeKind::GetAttr, t);
        auto base = make(NodeKind::Name, t);
        base->name = name;
        n->args.push_back(std::move(base));
        n->name = expect_name();
        return n;
      }
      auto n = make(NodeKind::Name, t);
      n->name = name;
      return n;
    };
    NodePtr first = one();
    if (!allow_tuple || !is_op(",")) return first;
    auto tuple = make(NodeKind::TupleLit, at);
    tuple->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (cur().type != Tok::Name) break;
      tuple->args.push_back(one());
    }
    return tuple;
  }

  NodePtr parse_for() {
    auto n = make(NodeKind::For, cur());
    next();
    n->args.push_back(parse_assign_target(true, false));
    if (!is_name("in")) fail_here("expected 'in', got " + describe(cur()));
    next();
    n->args.push_back(parse_tuple(false, /*no_condexpr=*/true, /*stop_at_recursive=*/true));
    NodePtr cond;
    if (is_name("if")) {
      next();
      cond = parse_expression();
    }
    n->args.push_back(std::move(cond));
    if (is_name("recursive")) {
      next();
      n->flag = true;
    }
    end_block();
    n->body = subparse({"endfor", "else"});
    if (is_name("else")) {
      next();
      end_block();
      n->else_body = subparse({"endfor"});
    }
    next();
    end_block();
    return n;
  }

  NodePtr parse_set() {
    const Token& at = cur();
    next();
    NodePtr target = parse_assign_target(true, true);
    if (is_op("=")) {
      next();
      auto n = make(NodeKind::Set, at);
      n->args.push_back(std::move(target));
      n->args.push_back(parse_tuple(false));
      end_block();
      return n;
    }
    auto n = make(NodeKind::SetBlock, at);
    n->args.push_back(std::move(target));
    while (is_op("|")) n->args.push_back(parse_filter(nullptr));
    end_block();
    n->body = subparse({"endset"});
    next();
    end_block();
    return n;
  }

  void parse_signature(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.kwargs.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string name = expect_name();
      NodePtr def;
      if (is_op("=")) {
        next();
        def = parse_expression();
      }
      n.kwargs.emplace_back(std::move(name), std::move(def));
    }
    next();
  }

  NodePtr parse_macro() {
    auto n = make(NodeKind::Macro, cur());
    next();
    n->name = expect_name();
    parse_signature(*n);
    end_block();
    n->body = subparse({"endmacro"});
    next();
    if (cur().type == Tok::Name) next();  // optional macro name after endmacro
    end_block();
    return n;
  }

  NodePtr parse_call_block() {
    auto n = make(NodeKind::CallBlock, cur());
    next();
    if (is_op("(")) {
      parse_signature(*n);
    }
    NodePtr call = parse_expression();
    if (call->kind != NodeKind::Call) syntax_error(call->line, call->col, "expected call");
    n->args.push_back(std::move(call));
    end_block();
    n->body = subparse({"endcall"});
    next();
    end_block();
    return n;
  }

  NodePtr parse_filter_block() {
    auto n = make(NodeKind::FilterBlock, cur());
    next();
    n->args.push_back(parse_filter(nullptr, /*leading_pipe=*/false));
    while (is_op("|")) n->args.push_back(parse_filter(nullptr));
    end_block();
    n->body = subparse({"endfilter"});
    next();
    end_block();
    return n;
  }

  NodePtr parse_with() {
    auto n = make(NodeKind::With, cur());
    next();
    while (cur().type != Tok::BlockEnd) {
      if (!n->kwargs.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      n->kwargs.emplace_back(std::move(name), parse_expression());
    }
    end_block();
    n->body = subparse({"endwith"});
    next();
    end_block();
    return n;
  }

  // ---- expressions ----

  bool at_tuple_end(bool stop_at_recursive) const {
    const Token& tok = cur();
    if (tok.type == Tok::VarEnd || tok.type == Tok::BlockEnd || tok.type == Tok::End) return true;
    if (tok.type == Tok::Op && tok.text == ")") return true;
    if (stop_at_recursive && tok.type == Tok::Name &&
        (tok.text == "if" || tok.text == "recursive")) {
      return true;
    }
    return false;
  }

  NodePtr parse_tuple(bool explicit_parens, bool no_condexpr = false,
                      bool stop_at_recursive = false) {
    const Token& at = cur();
    std::vector<NodePtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (at_tuple_end(stop_at_recursive)) break;
      items.push_back(no_condexpr ? parse_or() : parse_expression());
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens) fail_here("expected an expression, got " + describe(cur()));
    }
    auto n = make(NodeKind::TupleLit, at);
    n->args = std::move(items);
    return seal(std::move(n));
  }

  NodePtr parse_expression() {
    DepthGuard guard(*this);
    NodePtr expr = parse_or();
    while (is_name("if")) {
      const Token& at = cur();
      next();
      auto n = make(NodeKind::CondExpr, at);
      NodePtr cond = parse_or();
      NodePtr other;
      if (is_name("else")) {
        next();
        other = parse_expression();
      }
      n->args.push_back(std::move(expr));
      n->args.push_back(std::move(cond));
      n->args.push_back(std::move(other));
      expr = seal(std::move(n));
    }
    return expr;
  }

  NodePtr binary(NodeKind kind, const Token& at, std::string op, NodePtr l, NodePtr r) {
    auto n = make(kind, at);
    n->name = std::move(op);
    n->args.push_back(std::move(l));
    n->args.push_back(std::move(r));
    return seal(std::move(n));
  }

  NodePtr parse_or() {
    NodePtr left = parse_and();
    while (is_name("or")) {
      const Token& at = next();
      left = binary(NodeKind::Or, at, "or", std::move(left), parse_and());
    }
    return left;
  }

  NodePtr parse_and() {
    NodePtr left = parse_not();
    while (is_name("and")) {
      const Token& at = next();
      left = binary(NodeKind::And, at, "and", std::move(left), parse_not());
    }
    return left;
  }

  NodePtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(*this);
      const Token& at = next();
      auto n = make(NodeKind::Unary, at);
      n->name = "not";
      n->args.push_back(parse_not());
      return seal(std::move(n));
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    const Token& at = cur();
    NodePtr first = parse_math1();
    std::vector<std::string> ops;
    std::vector<NodePtr> operands;
    while (true) {
      std::string op;
      if (cur().type == Tok::Op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && peek().type == Tok::Name && peek().text == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      ops.push_back(op);
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto n = make(NodeKind::Compare, at);
    n->args.push_back(std::move(first));
    for (auto& o : operands) n->args.push_back(std::move(o));
    n->ops = std::move(ops);
    return seal(std::move(n));
  }

  NodePtr parse_math1() {
    NodePtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = next();
      left = binary(NodeKind::Binary, at, at.text, std::move(left), parse_concat());
    }
    return left;
  }

  NodePtr parse_concat() {
    NodePtr left = parse_math2();
    while (is_op("~")) {
      const Token& at = next();
      left = binary(NodeKind::Binary, at, "~", std::move(left), parse_math2());
    }
    return left;
  }

  NodePtr parse_math2() {
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      left = binary(NodeKind::Binary, at, at.text, std::move(left), parse_pow());
    }
    return left;
  }

  NodePtr parse_pow() {
    NodePtr left = parse_unary(true);
    while (is_op("**")) {
      const Token& at = next();
      left = binary(NodeKind::Binary, at, "**", std::move(left), parse_unary(true));
    }
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    NodePtr node;
    if (is_op("-") || is_op("+")) {
      const Token& at = next();
      auto n = make(NodeKind::Unary, at);
      n->name = at.text;
      n->args.push_back(parse_unary(false));
      node = seal(std::move(n));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  NodePtr parse_primary() {
    DepthGuard guard(*this);
    const Token& tok = cur();
    switch (tok.type) {
      case Tok::Name: {
        next();
        const std::string& s = tok.text;
        auto lit = [&](Value v) {
          auto n = make(NodeKind::Literal, tok);
          n->value = std::move(v);
          return n;
        };
        if (s == "true" || s == "True") return lit(Value::boolean(true));
        if (s == "false" || s == "False") return lit(Value::boolean(false));
        if (s == "none" || s == "None") return lit(Value::none());
        auto n = make(NodeKind::Name, tok);
        n->name = s;
        return n;
      }
      case Tok::String: {
        std::string s;
        while (cur().type == Tok::String) s += next().text;  // adjacent literals concatenate
        auto n = make(NodeKind::Literal, tok);
        n->value = Value::string(std::move(s));
        return n;
      }
      case Tok::Int:
      case Tok::Float: {
        next();
        auto n = make(NodeKind::Literal, tok);
        n->value =
            tok.type == Tok::Int ? Value::integer(tok.int_value) : Value::number(tok.float_value);
        return n;
      }
      case Tok::Op:
        if (tok.text == "(") {
          next();
          NodePtr inner = parse_tuple(true);
          expect_op(")");
          return inner;
        }
        if (tok.text == "[") {
          next();
          auto n = make(NodeKind::ListLit, tok);
          while (!is_op("]")) {
            if (!n->args.empty()) expect_op(",");
            if (is_op("]")) break;
            n->args.push_back(parse_expression());
          }
          next();
          return seal(std::move(n));
        }
        if (tok.text == "{") {
          next();
          auto n = make(NodeKind::DictLit, tok);
          while (!is_op("}")) {
            if (!n->args.empty()) expect_op(",");
            if (is_op("}")) break;
            n->args.push_back(parse_expression());
            expect_op(":");
            n->args.push_back(parse_expression());
          }
          next();
          return seal(std::move(n));
        }
        break;
      default:
        break;
    }
    fail_here("unexpected " + describe(tok));
  }

  NodePtr parse_postfix(NodePtr node) {
    while (true) {
      if (is_op(".")) {
        const Token& at = next();
        if (cur().type == Tok::Name) {
          auto n = make(NodeKind::GetAttr, at);
          n->name = next().text;
          n->args.push_back(std::move(node));
          node = seal(std::move(n));
        } else if (cur().type == Tok::Int) {
          auto n = make(NodeKind::GetItem, at);
          auto idx = make(NodeKind::Literal, cur());
          idx->value = Value::integer(next().int_value);
          n->args.push_back(std::move(node));
          n->args.push_back(std::move(idx));
          node = seal(std::move(n));
        } else {
          fail_here("expected name or number after '.'");
        }
      } else if (is_op("[")) {
        const Token& at = next();
        auto n = make(NodeKind::GetItem, at);
        n->args.push_back(std::move(node));
        std::vector<NodePtr> idx;
        while (!is_op("]")) {
          if (!idx.empty()) expect_op(",");
          idx.push_back(parse_subscribed());
        }
        next();
        if (idx.empty()) syntax_error(at.line, at.col, "expected subscript expression");
        if (idx.size() == 1) {
          n->args.push_back(std::move(idx[0]));
        } else {
          auto t = make(NodeKind::TupleLit, at);
          t->args = std::move(idx);
          n->args.push_back(seal(std::move(t)));
        }
        node = seal(std::move(n));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  NodePtr parse_subscribed() {
    const Token& at = cur();
    NodePtr first;
    if (!is_op(":")) {
      first = parse_expression();
      if (!is_op(":")) return first;
    }
    auto n = make(NodeKind::Slice, at);
    next();  // ':'
    NodePtr stop, step;
    if (!is_op("]") && !is_op(",") && !is_op(":")) stop = parse_expression();
    if (is_op(":")) {
      next();
      if (!is_op("]") && !is_op(",")) step = parse_expression();
    }
    n->args.push_back(std::move(first));
    n->args.push_back(std::move(stop));
    n->args.push_back(std::move(step));
    return seal(std::move(n));
  }

  void parse_call_args(Node& n) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail_here("*args and **kwargs are not supported");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string key = next().text;
        next();
        n.kwargs.emplace_back(std::move(key), parse_expression());
      } else {
        if (!n.kwargs.empty()) fail_here("positional argument after keyword argument");
        n.args.push_back(parse_expression());
      }
    }
    next();
  }

  NodePtr parse_call(NodePtr callee) {
    auto n = make(NodeKind::Call, cur());
    n->args.push_back(std::move(callee));
    parse_call_args(*n);
    return seal(std::move(n));
  }

  NodePtr parse_filter(NodePtr operand, bool leading_pipe = true) {
    if (leading_pipe) expect_op("|");
    const Token& at = cur();
    std::string name = expect_name();
    while (is_op(".")) {
      next();
      name += "." + expect_name();
    }
    if (!is_known_filter(name)) syntax_error(at.line, at.col, "no filter named '" + name + "'");
    auto n = make(NodeKind::Filter, at);
    n->name = name;
    n->args.push_back(std::move(operand));
    if (is_op("(")) parse_call_args(*n);
    return seal(std::move(n));
  }

  NodePtr parse_test(NodePtr operand) {
    next();  // 'is'
    bool negated = false;
    if (is_name("not")) {
      next();
      negated = true;
    }
    const Token& at = cur();
    std::string name = expect_name();
    while (is_op(".")) {
      next();
      name += "." + expect_name();
    }
    if (!is_known_test(name)) syntax_error(at.line, at.col, "no test named '" + name + "'");
    auto n = make(NodeKind::Test, at);
    n->name = name;
    n->args.push_back(std::move(operand));
    const Token& c = cur();
    if (is_op("(")) {
      parse_call_args(*n);
    } else if ((c.type == Tok::Name || c.type == Tok::String || c.type == Tok::Int ||
                c.type == Tok::Float || (c.type == Tok::Op && (c.text == "[" || c.text == "{"))) &&
               !(c.type == Tok::Name && (c.text == "else" || c.text == "or" || c.text == "and"))) {
      if (is_name("is")) fail_here("you cannot chain multiple tests with is");
      n->args.push_back(parse_postfix(parse_primary()));
    }
    NodePtr out = seal(std::move(n));
    if (negated) {
      auto neg = make(NodeKind::Unary, at);
      neg->name = "not";
      neg->args.push_back(std::move(out));
      out = seal(std::move(neg));
    }
    return out;
  }

  NodePtr parse_filter_expr(NodePtr node) {
    while (true) {
      if (is_op("|")) {
        node = parse_filter(std::move(node));
      } else if (is_name("is")) {
        node = parse_test(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }
};

}  // namespace

NodePtr parse_tokens(const std::vector<Token>& tokens, int max_depth) {
  return Parser(tokens, max_depth).parse_template();
}

}  // namespace maas::tmpl::detail
