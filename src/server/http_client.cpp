// The synchronous HTTP client over Boost.Beast.
#include "server/http_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <stdexcept>

namespace maas::server {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;

const std::string* HttpClientResponse::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return &value;
  }
  return nullptr;
}

namespace {

struct ParsedUrl {
  std::string host, port, target;
};

ParsedUrl parse_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    throw std::runtime_error(fmt::format("'{}' is not an http:// URL", url));
  }
  ParsedUrl u;
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  u.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.empty()) throw std::runtime_error(fmt::format("'{}' has no host", url));
  if (authority.front() == '[') {  // [v6]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) {
      throw std::runtime_error(fmt::format("'{}' has a malformed host", url));
    }
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        throw std::runtime_error(fmt::format("'{}' has a malformed host", url));
      }
      u.port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) u.port = authority.substr(colon + 1);
  }
  if (u.port.empty()) u.port = "80";
  if (u.host.empty() || u.port.size() > 5 ||
      !std::all_of(u.port.begin(), u.port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(u.port) > 65535) {
    throw std::runtime_error(fmt::format("'{}' has a malformed host or port", url));
  }
  return u;
}

}  // namespace

HttpClientResponse http_request(const std::string& method, const std::string& url,
                                const HeaderList& headers, const std::string& body,
                                std::chrono::milliseconds timeout) {
  const ParsedUrl u = parse_url(url);
  const bhttp::verb verb = bhttp::string_to_verb(method);
  if (verb == bhttp::verb::unknown) {
    throw std::runtime_error(fmt::format("'{}' is not an HTTP method", method));
  }
  boost::asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  const std::string where = fmt::format("{}:{}", u.host, u.port);
  beast::error_code ec;
  tcp::resolver resolver(ioc);
  const auto endpoints = resolver.resolve(u.host, u.port, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot resolve {}: {}", u.host, ec.message()));
  stream.expires_after(timeout);
  stream.connect(endpoints, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot connect to {}: {}", where, ec.message()));

  bhttp::request<bhttp::string_body> req(verb, u.target, 11);
  req.set(bhttp::field::host, u.host);
  req.set(bhttp::field::user_agent, "maas");
  for (const auto& [name, value] : headers) req.set(name, value);
  if (!body.empty() || verb == bhttp::verb::post || verb == bhttp::verb::put) {
    req.body() = body;
    req.prepare_payload();
  }
  bhttp::write(stream, req, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot send to {}: {}", where, ec.message()));

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64u << 20);
  bhttp::read(stream, buffer, parser, ec);
  if (ec == beast::error::timeout) {
    throw std::runtime_error(fmt::format("{} did not answer within {} ms", where, timeout.count()));
  }
  if (ec) {
    throw std::runtime_error(fmt::format("no valid answer from {}: {}", where, ec.message()));
  }
  HttpClientResponse out;
  const auto& res = parser.get();
  out.status = static_cast<int>(res.result_int());
  for (const auto& field : res) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    out.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  out.body = res.body();
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return out;
}

}  // namespace maas::server
