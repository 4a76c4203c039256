// Request parsing (Boost.Beast's parser with the server's limits) and response framing.
//
// Beast 1.81's chunked-body parser asserts n >= 5 when a last chunk ("0\r\n") is re-parsed with
// only one more byte (basic_parser.ipp, parse_chunk_header): a false alarm, the code is right
// without it, but in a build with assertions any client trickling a chunked body could abort the
// server. Its assertions stay off in this file, the only one that instantiates the parser
// (found by fuzz_server; the input is in its corpus).
#define BOOST_DISABLE_ASSERTS 1

#include "server/http_message.h"

#include <fmt/format.h>

#include <array>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

namespace maas::server {

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

std::string error_body(std::string_view message, std::string_view type, std::string_view code) {
  nlohmann::json error = {{"message", std::string(message)},
                          {"type", std::string(type)},
                          {"param", nullptr},
                          {"code", nullptr}};
  if (!code.empty()) error["code"] = std::string(code);
  return nlohmann::json{{"error", std::move(error)}}.dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
}

}  // namespace maas::server

namespace maas::server::detail {

namespace http = boost::beast::http;

struct RequestParser::Impl {
  std::optional<http::request_parser<http::string_body>> parser;
};

RequestParser::RequestParser(size_t max_header_bytes, size_t max_body_bytes)
    : impl_(std::make_unique<Impl>()),
      max_header_bytes_(max_header_bytes),
      max_body_bytes_(max_body_bytes) {
  reset();
}

RequestParser::~RequestParser() = default;

void RequestParser::reset() {
  auto& p = impl_->parser.emplace();
  p.header_limit(static_cast<uint32_t>(
      std::min<size_t>(max_header_bytes_, std::numeric_limits<uint32_t>::max())));
  p.body_limit(static_cast<uint64_t>(max_body_bytes_));
  // Stop after the header so that Expect: 100-continue can be answered before the body.
  p.eager(false);
  state_ = State::NeedMore;
  header_reported_ = false;
  error_status_ = 0;
  error_message_.clear();
}

void RequestParser::fail(int status, std::string message) {
  state_ = State::Error;
  error_status_ = status;
  error_message_ = std::move(message);
}

size_t RequestParser::put(std::string_view bytes) {
  if (state_ == State::Done || state_ == State::Error || bytes.empty()) return 0;
  state_ = State::NeedMore;
  auto& p = *impl_->parser;
  // Beast applies header_limit to the start line and to the fields separately when a header
  // arrives in one piece; showing it at most max_header_bytes_ makes the limit exact (the whole
  // header block, blank line included).
  const bool in_header = !p.is_header_done();
  const std::string_view view = in_header ? bytes.substr(0, max_header_bytes_) : bytes;
  boost::beast::error_code ec;
  const size_t used = p.put(boost::asio::const_buffer(view.data(), view.size()), ec);
  if (ec && ec != http::error::need_more) {
    if (ec == http::error::header_limit) {
      fail(431, fmt::format("request header larger than {} bytes", max_header_bytes_));
    } else if (ec == http::error::body_limit) {
      fail(413, fmt::format("request body larger than {} bytes", max_body_bytes_));
    } else {
      fail(400, "malformed HTTP request: " + ec.message());
    }
    return used;
  }
  if (in_header && !p.is_header_done() && bytes.size() >= max_header_bytes_) {
    fail(431, fmt::format("request header larger than {} bytes", max_header_bytes_));
    return used;
  }
  if (p.is_header_done() && !header_reported_) {
    header_reported_ = true;
    check_header();
    if (state_ == State::Error) return used;
    if (!p.is_done()) {
      state_ = State::HeaderDone;
      return used;
    }
  }
  if (p.is_done()) state_ = State::Done;
  return used;
}

void RequestParser::put_eof() {
  if (state_ == State::Done || state_ == State::Error) return;
  if (!impl_->parser->got_some()) return;
  // Requests never end at EOF (their length is explicit), so anything begun is incomplete.
  fail(400, "incomplete HTTP request (connection closed by the client)");
}

// Header checks beyond what Beast enforces (RFC 9112 sections 2.5, 6.1 and RFC 9110 10.1.1).
void RequestParser::check_header() {
  const auto& p = *impl_->parser;
  const auto& h = p.get();
  // (Beast itself refuses versions other than 1.0 and 1.1, as a malformed request.)
  // A transfer coding other than chunked (last) leaves the body length unknown: a request
  // smuggling risk, so refuse rather than guess.
  if (h.count(http::field::transfer_encoding) > 0 && !p.chunked()) {
    fail(400, "unsupported transfer-encoding (only chunked is accepted)");
    return;
  }
  auto expect = h.find(http::field::expect);
  if (expect != h.end() && h.version() == 11 &&
      !boost::beast::iequals(expect->value(), "100-continue")) {
    fail(417, "unsupported expectation: only 100-continue is supported");
  }
}

bool RequestParser::got_some() const { return impl_->parser->got_some(); }

bool RequestParser::expects_continue() const {
  const auto& p = *impl_->parser;
  if (!p.is_header_done()) return false;
  const auto& h = p.get();
  auto expect = h.find(http::field::expect);
  return h.version() == 11 && expect != h.end() &&
         boost::beast::iequals(expect->value(), "100-continue");
}

bool RequestParser::keep_alive() const {
  const auto& p = *impl_->parser;
  return p.is_header_done() && p.keep_alive();
}

int RequestParser::version() const {
  const auto& p = *impl_->parser;
  return p.is_header_done() ? static_cast<int>(p.get().version()) : 11;
}

HttpRequest RequestParser::take_request() {
  auto& p = *impl_->parser;
  HttpRequest req;
  req.keep_alive = p.keep_alive();
  auto msg = p.release();
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  req.path = req.target.substr(0, req.target.find('?'));
  req.version = static_cast<int>(msg.version());
  req.headers.reserve(std::distance(msg.begin(), msg.end()));
  for (const auto& field : msg) {
    std::string name(field.name_string());
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    req.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  req.body = std::move(msg.body());
  req.request_id = make_request_id(req.header("x-request-id"));
  return req;
}

std::string make_request_id(const std::string* client_value) {
  if (client_value != nullptr && !client_value->empty() && client_value->size() <= 128) {
    bool sane = true;
    for (unsigned char c : *client_value) sane = sane && c >= 0x20 && c <= 0x7e;
    if (sane) return *client_value;
  }
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }()};
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

const char* reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

namespace {

// IMF-fixdate (RFC 9110 5.6.7), formatted without the C locale's help and cached per second.
std::string_view http_date() {
  thread_local std::time_t cached_second = -1;
  thread_local std::array<char, 40> text{};
  thread_local size_t length = 0;
  const std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&now, &tm);
    auto end =
        fmt::format_to_n(text.data(), text.size(), "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} GMT",
                         kDays[tm.tm_wday % 7], tm.tm_mday, kMonths[tm.tm_mon % 12],
                         tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    length = std::min(end.size, text.size());
    cached_second = now;
  }
  return {text.data(), length};
}

bool is_token_char(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool is_safe_value(std::string_view value) {
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

bool iequals_ascii(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

}  // namespace

std::string format_response_head(int status, std::string_view content_type, BodyFraming framing,
                                 size_t body_size, std::string_view request_id, int version,
                                 bool keep_alive, const HeaderList& extra_headers) {
  if (status < 100 || status > 999) status = 500;
  std::string head;
  head.reserve(192 + content_type.size() + request_id.size());
  fmt::format_to(std::back_inserter(head), "HTTP/1.1 {} {}\r\ndate: {}\r\nserver: maas\r\n", status,
                 reason_phrase(status), http_date());
  if (!content_type.empty() && is_safe_value(content_type)) {
    head.append("content-type: ").append(content_type).append("\r\n");
  }
  switch (framing) {
    case BodyFraming::ContentLength:
      fmt::format_to(std::back_inserter(head), "content-length: {}\r\n", body_size);
      break;
    case BodyFraming::Chunked:
      head.append("transfer-encoding: chunked\r\n");
      break;
    case BodyFraming::UntilClose:
    case BodyFraming::None:
      break;
  }
  if (!request_id.empty() && is_safe_value(request_id)) {
    head.append("x-request-id: ").append(request_id).append("\r\n");
  }
  if (!keep_alive) {
    head.append("connection: close\r\n");
  } else if (version == 10) {
    head.append("connection: keep-alive\r\n");
  }
  for (const auto& [name, value] : extra_headers) {
    bool name_ok = !name.empty();
    for (unsigned char c : name) name_ok = name_ok && is_token_char(c);
    if (!name_ok || !is_safe_value(value)) continue;
    if (iequals_ascii(name, "content-length") || iequals_ascii(name, "transfer-encoding") ||
        iequals_ascii(name, "connection") || iequals_ascii(name, "x-request-id")) {
      continue;
    }
    head.append(name).append(": ").append(value).append("\r\n");
  }
  head.append("\r\n");
  return head;
}

void append_chunk(std::string& out, std::string_view data) {
  if (data.empty()) return;  // an empty chunk would end the body
  fmt::format_to(std::back_inserter(out), "{:x}\r\n", data.size());
  out.append(data).append("\r\n");
}

std::string format_error_response(int status, std::string_view message, std::string_view type,
                                  std::string_view request_id, bool keep_alive) {
  std::string body = error_body(message, type);
  std::string out = format_response_head(status, "application/json", BodyFraming::ContentLength,
                                         body.size(), request_id, 11, keep_alive, {});
  out += body;
  return out;
}

}  // namespace maas::server::detail
