// Tokenizer following jinja2's lexer: text and tags at the top level, expression tokens inside
// {{ }} and {% %}, comments dropped. Whitespace control as configured by transformers:
// trim_blocks (drop the newline after %} and #}) and lstrip_blocks (drop spaces and tabs before
// {% and {# that start a line), plus the explicit "-" and "+" markers.
#include <cstdlib>
#include <string>

#include "template/ast.h"
#include "template/ustring.h"

namespace maas::tmpl::detail {

void syntax_error(int line, int col, const std::string& message) {
  throw Error("template:" + std::to_string(line) + ":" + std::to_string(col) + ": " + message);
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Python's str.rstrip() on the text before a "-" tag.
void rstrip_text(std::string& text) { text = py_strip(text, nullptr, false, true); }

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) lex_root();
    push(Tok::End, "");
    return std::move(out_);
  }

 private:
  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  size_t line_start_ = 0;
  bool line_starting_ = true;
  std::vector<Token> out_;

  int col_at(size_t p) const { return static_cast<int>(p - line_start_) + 1; }

  // Moves to `to`, keeping line and column bookkeeping.
  void advance(size_t to) {
    for (; pos_ < to; ++pos_) {
      if (src_[pos_] == '\n') ++line_, line_start_ = pos_ + 1;
    }
  }

  void push(Tok t, std::string text, int line = 0, int col = 0) {
    Token tok;
    tok.type = t;
    tok.text = std::move(text);
    tok.line = line ? line : line_;
    tok.col = col ? col : col_at(pos_);
    out_.push_back(std::move(tok));
  }

  void push_text(std::string text, int line, int col) {
    if (text.empty()) return;
    if (!out_.empty() && out_.back().type == Tok::Text) {
      out_.back().text += text;
    } else {
      push(Tok::Text, std::move(text), line, col);
    }
  }

  void skip_whitespace_after() {
    size_t p = pos_;
    // \s* in Python's re: Unicode whitespace.
    while (p < src_.size()) {
      const auto c = static_cast<unsigned char>(src_[p]);
      if (c < 0x80) {
        if (!py_isspace(c)) break;
        ++p;
        continue;
      }
      size_t n = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
      if (p + n > src_.size()) break;
      const std::vector<uint32_t> cp = decode_utf8(std::string_view(src_).substr(p, n));
      if (cp.size() != 1 || !py_isspace(cp[0])) break;
      p += n;
    }
    advance(p);
  }

  void note_line_start(size_t end) { line_starting_ = end > 0 && src_[end - 1] == '\n'; }

  void lex_root() {
    const int text_line = line_, text_col = col_at(pos_);
    size_t tag = pos_;
    while (true) {
      tag = src_.find('{', tag);
      if (tag == std::string::npos || tag + 1 >= src_.size()) {
        tag = std::string::npos;
        break;
      }
      const char c = src_[tag + 1];
      if (c == '{' || c == '%' || c == '#') break;
      ++tag;
    }
    if (tag == std::string::npos) {
      push_text(src_.substr(pos_), text_line, text_col);
      advance(src_.size());
      return;
    }
    std::string text = src_.substr(pos_, tag - pos_);
    const char kind = src_[tag + 1];
    const char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
    if (sign == '-') {
      rstrip_text(text);
    } else if (sign != '+' && kind != '{') {
      const size_t nl = text.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if (l_pos > 0 || line_starting_) {
        if (text.find_first_not_of(" \t", l_pos) == std::string::npos) text.resize(l_pos);
      }
    }
    push_text(std::move(text), text_line, text_col);
    advance(tag);
    const int tag_line = line_, tag_col = col_at(pos_);
    advance(tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0));
    if (kind == '#') {
      lex_comment(tag_line, tag_col);
    } else if (kind == '%' && try_raw(tag_line, tag_col)) {
      return;
    } else {
      lex_tag(kind == '{' ? Tok::VarBegin : Tok::BlockBegin, tag_line, tag_col);
    }
  }

  void lex_comment(int line, int col) {
    const size_t end = src_.find("#}", pos_);
    if (end == std::string::npos) syntax_error(line, col, "missing end of comment tag");
    const char before = end > pos_ ? src_[end - 1] : '\0';
    advance(end + 2);
    if (before == '-') {
      skip_whitespace_after();
    } else if (before != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
      advance(pos_ + 1);
    }
    note_line_start(pos_);
  }

  // {% raw %} ... {% endraw %}: the body is literal text.
  bool try_raw(int line, int col) {
    size_t p = pos_;
    while (p < src_.size() && py_isspace(static_cast<unsigned char>(src_[p]))) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3]))) {
      return false;
    }
    p += 3;
    while (p < src_.size() && py_isspace(static_cast<unsigned char>(src_[p]))) ++p;
    bool strip_after = false;
    if (src_.compare(p, 3, "-%}") == 0) {
      strip_after = true, p += 3;
    } else if (src_.compare(p, 2, "%}") == 0) {
      p += 2;
    } else {
      return false;
    }
    advance(p);
    if (strip_after) skip_whitespace_after();
    const int body_line = line_, body_col = col_at(pos_);
    // Find "{%" [-+] ws "endraw" ws ("-%}" | "+%}" | "%}").
    size_t search = pos_;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos) syntax_error(line, col, "missing end of raw directive");
      size_t q = open + 2;
      const char sign = q < src_.size() ? src_[q] : '\0';
      if (sign == '-' || sign == '+') ++q;
      while (q < src_.size() && py_isspace(static_cast<unsigned char>(src_[q]))) ++q;
      if (src_.compare(q, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      q += 6;
      while (q < src_.size() && py_isspace(static_cast<unsigned char>(src_[q]))) ++q;
      char end_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) end_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) {
        search = open + 2;
        continue;
      }
      std::string text = src_.substr(pos_, open - pos_);
      if (sign == '-') {
        rstrip_text(text);
      } else if (sign != '+') {
        const size_t nl = text.rfind('\n');
        const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
        if (l_pos > 0 && text.find_first_not_of(" \t", l_pos) == std::string::npos) {
          text.resize(l_pos);
        }
      }
      push_text(std::move(text), body_line, body_col);
      advance(q + 2);
      if (end_sign == '-') {
        skip_whitespace_after();
      } else if (end_sign != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
        advance(pos_ + 1);
      }
      note_line_start(pos_);
      return true;
    }
  }

  // Tokens inside {{ ... }} or {% ... %} up to and including the closing delimiter.
  void lex_tag(Tok begin, int line, int col) {
    push(begin, "", line, col);
    const bool block = begin == Tok::BlockBegin;
    const char closer = block ? '%' : '}';
    int open_brackets = 0;
    while (true) {
      if (pos_ >= src_.size()) {
        syntax_error(line, col,
                     block ? "unexpected end of template, expected '%}'"
                           : "unexpected end of template, expected '}}'");
      }
      const char c = src_[pos_];
      // Closing delimiter (checked first, as jinja2's rules are ordered), except inside brackets
      // where jinja2 skips it: {{ {'a': {'b': 1}} }} is one expression.
      const bool balanced = open_brackets <= 0;
      if (balanced && c == '-' && src_.compare(pos_ + 1, 2, std::string(1, closer) + "}") == 0) {
        push(block ? Tok::BlockEnd : Tok::VarEnd, "");
        advance(pos_ + 3);
        skip_whitespace_after();
        note_line_start(pos_);
        return;
      }
      if (balanced && block && c == '+' && src_.compare(pos_ + 1, 2, "%}") == 0) {
        push(Tok::BlockEnd, "");
        advance(pos_ + 3);
        note_line_start(pos_);
        return;
      }
      if (balanced && c == closer && pos_ + 1 < src_.size() && src_[pos_ + 1] == '}') {
        push(block ? Tok::BlockEnd : Tok::VarEnd, "");
        advance(pos_ + 2);
        if (block && pos_ < src_.size() && src_[pos_] == '\n') advance(pos_ + 1);
        note_line_start(pos_);
        return;
      }
      if (py_isspace(static_cast<unsigned char>(c))) {
        advance(pos_ + 1);
        continue;
      }
      if (is_digit(c)) {
        lex_number();
      } else if (is_name_start(c)) {
        size_t e = pos_;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        push(Tok::Name, src_.substr(pos_, e - pos_));
        advance(e);
      } else if (c == '\'' || c == '"') {
        lex_string();
      } else {
        lex_operator(open_brackets);
      }
    }
  }

  void lex_number() {
    size_t e = pos_;
    auto digits = [&](size_t p) {
      // (\d+_)*\d+ starting at p; returns the end or p if none.
      size_t q = p;
      if (q >= src_.size() || !is_digit(src_[q])) return p;
      while (q < src_.size() && (is_digit(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() &&
                                                       is_digit(src_[q + 1])))) {
        ++q;
      }
      return q;
    };
    e = digits(pos_);
    bool is_float = false;
    const bool after_dot = !out_.empty() && out_.back().type == Tok::Op && out_.back().text == ".";
    if (!after_dot) {
      size_t f = e;
      if (f < src_.size() && src_[f] == '.' && digits(f + 1) > f + 1) {
        f = digits(f + 1);
        is_float = true;
      }
      if (f < src_.size() && (src_[f] == 'e' || src_[f] == 'E')) {
        size_t g = f + 1;
        if (g < src_.size() && (src_[g] == '+' || src_[g] == '-')) ++g;
        if (digits(g) > g) {
          f = digits(g);
          is_float = true;
        }
      }
      if (is_float) e = f;
    }
    std::string text;
    for (size_t k = pos_; k < e; ++k) {
      if (src_[k] != '_') text.push_back(src_[k]);
    }
    Token tok;
    tok.line = line_;
    tok.col = col_at(pos_);
    tok.text = text;
    if (is_float) {
      tok.type = Tok::Float;
      tok.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      tok.type = Tok::Int;
      errno = 0;
      const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
      if (errno == ERANGE || v > static_cast<unsigned long long>(INT64_MAX)) {
        syntax_error(line_, col_at(pos_), "integer literal too large");
      }
      tok.int_value = static_cast<int64_t>(v);
    }
    out_.push_back(std::move(tok));
    advance(e);
  }

  void lex_string() {
    const char quote = src_[pos_];
    const int line = line_, col = col_at(pos_);
    size_t p = pos_ + 1;
    std::string value;
    while (true) {
      if (p >= src_.size()) syntax_error(line, col, "unterminated string literal");
      const char c = src_[p];
      if (c == quote) break;
      if (c != '\\') {
        value.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) syntax_error(line, col, "unterminated string literal");
      const char e = src_[p + 1];
      p += 2;
      // Python's unicode-escape decoding; unknown escapes stay as written.
      auto hex = [&](int n) -> bool {
        if (p + n > src_.size()) return false;
        uint32_t cp = 0;
        for (int k = 0; k < n; ++k) {
          const char h = src_[p + k];
          int d = is_digit(h)              ? h - '0'
                  : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                  : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                           : -1;
          if (d < 0) return false;
          cp = cp * 16 + d;
        }
        if (cp > 0x10FFFF) return false;
        append_utf8(value, cp);
        p += n;
        return true;
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
          value.push_back('\\');
          break;
        case '\'':
          value.push_back('\'');
          break;
        case '"':
          value.push_back('"');
          break;
        case 'a':
          value.push_back('\a');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'n':
          value.push_back('\n');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case 'x':
          if (!hex(2)) syntax_error(line, col, "truncated \\xXX escape");
          break;
        case 'u':
          if (!hex(4)) syntax_error(line, col, "truncated \\uXXXX escape");
          break;
        case 'U':
          if (!hex(8)) syntax_error(line, col, "truncated \\UXXXXXXXX escape");
          break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = e - '0';
            for (int k = 0; k < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++k) {
              cp = cp * 8 + (src_[p++] - '0');
            }
            append_utf8(value, cp);
          } else {
            value.push_back('\\');
            value.push_back(e);
          }
      }
    }
    Token tok;
    tok.type = Tok::String;
    tok.text = std::move(value);
    tok.line = line;
    tok.col = col;
    out_.push_back(std::move(tok));
    advance(p + 1);
  }

  void lex_operator(int& open_brackets) {
    static const char* const kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwo) {
      if (src_.compare(pos_, 2, op) == 0) {
        push(Tok::Op, op);
        advance(pos_ + 2);
        return;
      }
    }
    const char c = src_[pos_];
    static const std::string kOne = "+-/*%~[](){}><=.:|,;";
    if (kOne.find(c) == std::string::npos) {
      syntax_error(line_, col_at(pos_), std::string("unexpected char '") + c + "'");
    }
    if (c == '(' || c == '[' || c == '{') ++open_brackets;
    if (c == ')' || c == ']' || c == '}') --open_brackets;
    push(Tok::Op, std::string(1, c));
    advance(pos_ + 1);
  }
};

}  // namespace

std::vector<Token> lex(std::string_view source) {
  // jinja2 normalizes \r\n and \r to \n and drops one trailing newline.
  std::string src;
  src.reserve(source.size());
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src.push_back('\n');
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src.push_back(source[k]);
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src)).run();
}

}  // namespace maas::tmpl::detail
