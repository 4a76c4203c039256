// Tokens and syntax tree shared by the lexer, parser and evaluator.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "template/template.h"
#include "template/value.h"

namespace maas::tmpl::detail {

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };

struct Token {
  Tok type;
  std::string text;  // Text data, name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
  int col = 1;
};

// Jinja2's lexer with trim_blocks and lstrip_blocks on; {% raw %} blocks come out as Text.
std::vector<Token> lex(std::string_view source);

[[noreturn]] void syntax_error(int line, int col, const std::string& message);

enum class NodeKind {
  // Expressions
  Literal,   // value
  Name,      // name
  ListLit,   // args
  TupleLit,  // args
  DictLit,   // args: key, value, key, value, ...
  GetAttr,   // args[0] . name
  GetItem,   // args[0] [ args[1] ]
  Slice,     // args: start, stop, step (null when absent); used as GetItem's index
  Call,      // args[0] ( args[1..], kwargs )
  Filter,    // name; args[0] is the operand (null inside a filter block), args[1..] and kwargs
  Test,      // name; args[0] operand, args[1..], kwargs
  Unary,     // name: "-", "+", "not"
  Binary,    // name: "+", "-", "*", "/", "//", "%", "**", "~"; args[0], args[1]
  And,
  Or,
  Compare,   // args[0] op1 args[1] op2 args[2] ...; ops in `ops`
  CondExpr,  // args: value, condition, else value (null when absent)
  // Statements
  Text,         // name holds the text
  Print,        // args[0]
  If,           // args[0] condition; body; else_body
  For,          // args: target, iterable, filter condition (null); body; else_body; flag recursive
  Set,          // args: target, value
  SetBlock,     // args: target, then Filter nodes to apply; body
  Macro,        // name; params (kwargs with null defaults); body
  CallBlock,    // args[0]: the Call; params for caller; body
  FilterBlock,  // args: Filter nodes; body
  With,         // kwargs: assignments; body
  Break,
  Continue,
  Block,  // a list of statements (template root, generation blocks)
};

struct Node {
  NodeKind kind;
  int line = 0;
  int col = 0;
  std::string name;
  Value value;
  bool flag = false;
  int height = 1;  // longest path to a leaf among args and kwargs, bounded by the parser
  std::vector<std::unique_ptr<Node>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Node>>> kwargs;
  std::vector<std::string> ops;
  std::vector<std::unique_ptr<Node>> body;
  std::vector<std::unique_ptr<Node>> else_body;

  Node(NodeKind k, int l, int c) : kind(k), line(l), col(c) {}
};
using NodePtr = std::unique_ptr<Node>;

NodePtr parse_tokens(const std::vector<Token>& tokens, int max_depth);

// Registered names, checked at parse time as jinja2's compiler does.
bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);

}  // namespace maas::tmpl::detail
