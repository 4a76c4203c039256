#include "platform/pg_connection.h"

#include "platform/store_rules.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include <fmt/format.h>

namespace maas::platform {
namespace {

// A password's place in a URL: [begin, end) of its text as written, and its decoded value.
struct Span {
  std::size_t begin, end;
  std::string decoded;
};

// Percent-decoding as libpq does it for URIs ('+' is not a space); malformed escapes are kept.
std::string percent_decode(std::string_view s) { return detail::percent_decode(s, false); }

// scheme://...: libpq knows only postgresql:// and postgres://, but other URLs (mistakes such as
// mysql://) are masked the same way before they appear in a message.
bool is_uri(std::string_view url) {
  const std::size_t colon = url.find("://");
  if (colon == std::string_view::npos || colon == 0) return false;
  return std::all_of(url.begin(), url.begin() + static_cast<std::ptrdiff_t>(colon), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '-' || c == '.';
  });
}

// The URI form: postgresql://[user[:password]@][hosts][/dbname][?key=value&...]. The user
// information ends at the first '@' before any '/', as libpq reads it; "password" may also be a
// query parameter (whose name libpq percent-decodes too).
std::vector<Span> uri_password_spans(std::string_view url) {
  std::vector<Span> spans;
  const std::size_t start = url.find("://") + 3;
  std::size_t p = start;
  while (p < url.size() && url[p] != '@' && url[p] != '/') ++p;
  std::size_t after_userinfo = start;
  if (p < url.size() && url[p] == '@') {
    std::string_view userinfo = url.substr(start, p - start);
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      spans.push_back({start + colon + 1, p, percent_decode(userinfo.substr(colon + 1))});
    }
    after_userinfo = p + 1;
  }
  std::size_t query = url.find('?', after_userinfo);
  if (query == std::string_view::npos) return spans;
  std::size_t i = query + 1;
  while (i <= url.size()) {
    std::size_t amp = url.find('&', i);
    if (amp == std::string_view::npos) amp = url.size();
    std::string_view pair = url.substr(i, amp - i);
    if (auto eq = pair.find('='); eq != std::string_view::npos) {
      if (percent_decode(pair.substr(0, eq)) == "password") {
        spans.push_back({i + eq + 1, amp, percent_decode(pair.substr(eq + 1))});
      }
    }
    i = amp + 1;
  }
  return spans;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }

// The key=value form: key = value pairs separated by spaces; values may be single-quoted, and a
// backslash escapes the next character.
std::vector<Span> keyword_password_spans(std::string_view s) {
  std::vector<Span> spans;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    std::size_t key_begin = i;
    while (i < s.size() && s[i] != '=' && !is_space(s[i])) ++i;
    std::string_view key = s.substr(key_begin, i - key_begin);
    while (i < s.size() && is_space(s[i])) ++i;
    if (i >= s.size() || s[i] != '=') break;  // malformed: libpq refuses it anyway
    ++i;
    while (i < s.size() && is_space(s[i])) ++i;
    std::size_t value_begin = i;
    std::string value;
    if (i < s.size() && s[i] == '\'') {
      ++i;
      while (i < s.size() && s[i] != '\'') {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i++];
      }
      if (i < s.size()) ++i;  // the closing quote
    } else {
      while (i < s.size() && !is_space(s[i])) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i++];
      }
    }
    if (key == "password") spans.push_back({value_begin, i, std::move(value)});
  }
  return spans;
}

std::vector<Span> password_spans(std::string_view url) {
  return is_uri(url) ? uri_password_spans(url) : keyword_password_spans(url);
}

// One line: libpq's messages end in newlines and indent hints with tabs.
std::string one_line(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (is_space(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

void replace_all(std::string& text, const std::string& needle, std::string_view with) {
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + with.size())) {
    text.replace(at, needle.size(), with);
  }
}

}  // namespace

std::string mask_database_url(const std::string& url) {
  std::string out = url;
  auto spans = password_spans(url);
  // Right to left, so earlier offsets stay valid.
  for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
    out.replace(it->begin, it->end - it->begin, "***");
  }
  return out;
}

namespace pg {

std::vector<std::string> url_passwords(std::string_view url) {
  std::vector<std::string> out;
  for (const auto& span : password_spans(url)) {
    out.emplace_back(url.substr(span.begin, span.end - span.begin));
    out.push_back(span.decoded);
  }
  return out;
}

Where::Where(std::string_view url)
    : url_(url), location_(mask_database_url(url_)), passwords_(url_passwords(url)) {
  // Longest first, so a password containing another is scrubbed whole. Very short ones are left:
  // scrubbing "ab" would mangle every message, and libpq echoes a password only in rare parse
  // errors.
  std::erase_if(passwords_, [](const std::string& p) { return p.size() < 4; });
  std::sort(passwords_.begin(), passwords_.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
}

std::string Where::describe(std::string_view what, std::string_view detail) const {
  std::string message = detail.empty()
                            ? fmt::format("database {}: {}", location_, what)
                            : fmt::format("database {}: {}: {}", location_, what, one_line(detail));
  if (url_ != location_) replace_all(message, url_, location_);
  for (const auto& p : passwords_) replace_all(message, p, "***");
  return message;
}

const char* Result::cell(int row, int col) const {
  if (row < 0 || row >= PQntuples(result_) || col < 0 || col >= PQnfields(result_)) {
    bad_cell(row, col, "no such cell (the schema is not a maas schema)");
  }
  return PQgetisnull(result_, row, col) ? nullptr : PQgetvalue(result_, row, col);
}

void Result::bad_cell(int row, int col, std::string_view why) const {
  throw StoreError(where_->describe(fmt::format("row {} column {}", row, col), why));
}

std::int64_t Result::affected() const {
  std::string_view s = PQcmdTuples(result_);
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return 0;
  return v;
}

bool Result::is_null(int row, int col) const { return cell(row, col) == nullptr; }

std::string Result::text(int row, int col) const {
  const char* p = cell(row, col);
  if (!p) return {};
  return std::string(p, static_cast<std::size_t>(PQgetlength(result_, row, col)));
}

std::int64_t Result::int64(int row, int col) const {
  const char* p = cell(row, col);
  if (!p) return 0;
  std::string_view s(p, static_cast<std::size_t>(PQgetlength(result_, row, col)));
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    bad_cell(row, col, fmt::format("'{}' is not a 64-bit integer", s.substr(0, 40)));
  }
  return v;
}

std::optional<std::int64_t> Result::opt_int64(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return int64(row, col);
}

double Result::real(int row, int col) const {
  const char* p = cell(row, col);
  if (!p) return 0;
  std::string_view s(p, static_cast<std::size_t>(PQgetlength(result_, row, col)));
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    bad_cell(row, col, fmt::format("'{}' is not a number", s.substr(0, 40)));
  }
  return v;
}

Connection::Connection(const std::string& url, const Where& where) : where_(where) {
  // Later entries override earlier ones, and the URL (dbname, expanded) sits in between: it may
  // set its own timeouts, but text is always exchanged as UTF-8. The TCP settings make a server
  // that vanished from the network (no reset ever arrives) an error within about a minute
  // instead of a call blocked for the kernel's two hours.
  const std::pair<const char*, const char*> settings[] = {
      {"connect_timeout", "10"},     {"keepalives_idle", "30"},
      {"keepalives_interval", "10"}, {"keepalives_count", "3"},
      {"tcp_user_timeout", "60000"}, {"fallback_application_name", "maas"},
      {"dbname", url.c_str()},       {"client_encoding", "UTF8"},
  };
  std::vector<const char*> keys, values;
  for (const auto& [key, value] : settings) {
    keys.push_back(key);
    values.push_back(value);
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (conn_ == nullptr) throw StoreError(where_.describe("cannot connect", "out of memory"));
  try {
    if (PQstatus(conn_) != CONNECTION_OK) {
      throw StoreError(where_.describe("cannot connect", PQerrorMessage(conn_)));
    }
    // Notices (e.g. from DDL) would go to stderr by default.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    if (PQserverVersion(conn_) < 100000) {
      throw StoreError(where_.describe(
          "unsupported server",
          fmt::format("PostgreSQL {} is too old; maas needs 10 or newer", PQserverVersion(conn_))));
    }
    // Weights read back exactly (servers before 12 round float8 output without this).
    exec("SET extra_float_digits = 3");
    // record() promises durability: a server or role configured with synchronous_commit=off
    // would acknowledge commits that a crash can still lose.
    Result sync = exec("SHOW synchronous_commit");
    if (sync.rows() == 1 && sync.text(0, 0) == "off") exec("SET synchronous_commit = on");
  } catch (...) {
    PQfinish(conn_);
    throw;
  }
}

Connection::~Connection() { PQfinish(conn_); }

Result Connection::check(PGresult* result, std::string_view what) {
  const ExecStatusType status = result ? PQresultStatus(result) : PGRES_FATAL_ERROR;
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return Result(result, where_);
  std::string sqlstate, detail;
  if (result) {
    if (const char* s = PQresultErrorField(result, PG_DIAG_SQLSTATE)) sqlstate = s;
    if (const char* m = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)) {
      detail = m;
    } else {
      detail = PQresultErrorMessage(result);
    }
    if (detail.empty()) detail = std::string("unexpected result ") + PQresStatus(status);
  }
  if (detail.empty()) detail = PQerrorMessage(conn_);
  PQclear(result);
  // Class 08 is "connection exception"; 57P01/57P02 are the server shutting down.
  const bool lost = PQstatus(conn_) != CONNECTION_OK || sqlstate.starts_with("08") ||
                    sqlstate == "57P01" || sqlstate == "57P02";
  if (lost) broken_ = true;
  if (!sqlstate.empty()) detail += " (SQLSTATE " + sqlstate + ")";
  throw PgError(where_.describe(lost ? "connection lost" : what, detail), sqlstate, lost);
}

Result Connection::exec(const std::string& sql, std::string_view what) {
  return check(PQexec(conn_, sql.c_str()), what);
}

void Connection::prepare(const std::string& name, const std::string& sql) {
  check(PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr),
        "the schema is damaged or not a maas schema");
}

Result Connection::run(const std::string& name, const std::vector<Param>& params,
                       std::string_view what) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return check(PQexecPrepared(conn_, name.c_str(), static_cast<int>(values.size()), values.data(),
                              nullptr, nullptr, 0),
               what);
}

bool Connection::reusable() const {
  return !broken_ && PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

void Connection::rollback_quietly() {
  if (broken_ || PQstatus(conn_) != CONNECTION_OK) return;
  const PGTransactionStatusType tx = PQtransactionStatus(conn_);
  if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR) PQclear(PQexec(conn_, "ROLLBACK"));
}

Pool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}

Pool::Lease::~Lease() {
  if (pool_) pool_->give_back(std::move(conn_));
}

void Pool::Lease::discard() {
  if (!pool_) return;
  auto conn = std::move(conn_);
  std::exchange(pool_, nullptr)->give_back(nullptr);
}

Pool::Lease Pool::acquire() {
  std::unique_lock lock(mu_);
  freed_.wait(lock, [&] { return !idle_.empty() || open_count_ < max_size_; });
  if (!idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(conn));
  }
  ++open_count_;
  lock.unlock();
  std::unique_ptr<Connection> conn;
  try {
    conn = open_();
  } catch (...) {
    give_back(nullptr);
    throw;
  }
  return Lease(*this, std::move(conn));
}

void Pool::adopt(std::unique_ptr<Connection> conn) {
  std::lock_guard lock(mu_);
  ++open_count_;
  idle_.push_back(std::move(conn));
}

void Pool::give_back(std::unique_ptr<Connection> conn) {
  std::unique_ptr<Connection> to_close;
  {
    std::lock_guard lock(mu_);
    if (conn && conn->reusable()) {
      idle_.push_back(std::move(conn));
    } else {
      to_close = std::move(conn);
      --open_count_;
    }
  }
  freed_.notify_one();
}

void Pool::drop_idle() {
  std::vector<std::unique_ptr<Connection>> to_close;
  {
    std::lock_guard lock(mu_);
    to_close.swap(idle_);
    open_count_ -= to_close.size();
  }
  freed_.notify_all();
}

std::size_t Pool::open_count() {
  std::lock_guard lock(mu_);
  return open_count_;
}

}  // namespace pg
}  // namespace maas::platform
