// Request parsing and response framing of the HTTP transport, without sockets.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>

#include "server/http_message.h"

namespace maas::server::detail {
namespace {

using State = RequestParser::State;

// Feeds `bytes` in pieces of `step` bytes (as a socket might deliver them), the way the
// connection does: unconsumed bytes are offered again together with the next piece.
// Returns the parsed request and how many bytes it used.
std::pair<std::optional<HttpRequest>, size_t> parse_in_steps(RequestParser& p,
                                                             std::string_view bytes, size_t step) {
  std::string pending;
  size_t offered = 0, used_total = 0;
  while (true) {
    if (offered < bytes.size()) {
      size_t n = std::min(step, bytes.size() - offered);
      pending.append(bytes.substr(offered, n));
      offered += n;
    }
    size_t used = p.put(pending);
    pending.erase(0, used);
    used_total += used;
    if (p.state() == State::Done) return {p.take_request(), used_total};
    if (p.state() == State::Error) return {std::nullopt, used_total};
    if (used == 0 && offered == bytes.size()) return {std::nullopt, used_total};
  }
}

const std::string kChunkedRequest =
    "POST /v1/chat/completions?stream=1 HTTP/1.1\r\n"
    "Host: example\r\n"
    "Content-Type: Application/JSON\r\n"
    "X-Request-ID: abc-123\r\n"
    "Transfer-Encoding: chunked\r\n"
    "X-Padded:    value with spaces   \r\n"
    "\r\n"
    "5\r\nhello\r\n"
    "7;ext=1\r\n, world\r\n"
    "0\r\n\r\n";

TEST(HttpMessage, ParsesTheSameWhateverTheSplit) {
  for (size_t step : {size_t{1}, size_t{2}, size_t{7}, size_t{64}, kChunkedRequest.size()}) {
    RequestParser p(16 * 1024, 1024);
    auto [req, used] = parse_in_steps(p, kChunkedRequest, step);
    ASSERT_TRUE(req) << "step " << step << ": " << p.error_message();
    EXPECT_EQ(used, kChunkedRequest.size());
    EXPECT_EQ(req->method, "POST");
    EXPECT_EQ(req->target, "/v1/chat/completions?stream=1");
    EXPECT_EQ(req->path, "/v1/chat/completions");
    EXPECT_EQ(req->body, "hello, world");
    EXPECT_EQ(req->version, 11);
    EXPECT_TRUE(req->keep_alive);
    EXPECT_EQ(req->request_id, "abc-123");
    ASSERT_EQ(req->headers.size(), 5u);
    EXPECT_EQ(req->headers[0].first, "host");
    EXPECT_EQ(req->headers[1].first, "content-type");
    EXPECT_EQ(req->headers[1].second, "Application/JSON");  // values keep their case
    EXPECT_EQ(req->headers[2].first, "x-request-id");
    ASSERT_NE(req->header("x-padded"), nullptr);
    EXPECT_EQ(*req->header("x-padded"), "value with spaces");
    EXPECT_EQ(req->header("X-Padded"), nullptr);  // lookups take lower-case names
  }
}

TEST(HttpMessage, PipelinedRequestsAreParsedOneAtATime) {
  const std::string first = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string second =
      "POST /b HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz";
  const std::string both = first + second;
  RequestParser p(1024, 1024);
  size_t used = p.put(both);
  ASSERT_EQ(p.state(), State::Done);
  EXPECT_EQ(used, first.size());
  EXPECT_EQ(p.take_request().path, "/a");
  p.reset();
  used += p.put(std::string_view(both).substr(used));
  ASSERT_EQ(p.state(), State::HeaderDone);  // the parser stops after a header with a body
  used += p.put(std::string_view(both).substr(used));
  ASSERT_EQ(p.state(), State::Done);
  EXPECT_EQ(used, both.size());
  auto req = p.take_request();
  EXPECT_EQ(req.body, "xyz");
  EXPECT_FALSE(req.keep_alive);
}

TEST(HttpMessage, HeaderLimitBoundary) {
  // The limit counts the whole header block, terminating blank line included.
  const std::string start = "GET / HTTP/1.1\r\nX: ";
  const size_t limit = 200;
  auto header_of = [&](size_t total) {
    return start + std::string(total - start.size() - 4, 'v') + "\r\n\r\n";
  };
  for (size_t total : {limit - 1, limit, limit + 1}) {
    RequestParser p(limit, 0);
    std::string req = header_of(total);
    ASSERT_EQ(req.size(), total);
    p.put(req);
    if (total <= limit) {
      EXPECT_EQ(p.state(), State::Done) << total << ": " << p.error_message();
    } else {
      EXPECT_EQ(p.state(), State::Error) << total;
      EXPECT_EQ(p.error_status(), 431);
    }
  }
}

TEST(HttpMessage, BodyLimitBoundary) {
  for (size_t size : {size_t{99}, size_t{100}, size_t{101}}) {
    RequestParser p(1024, 100);
    std::string req = "POST / HTTP/1.1\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n" +
                      std::string(size, 'b');
    auto [parsed, used] = parse_in_steps(p, req, 13);
    if (size <= 100) {
      ASSERT_TRUE(parsed) << size;
      EXPECT_EQ(parsed->body.size(), size);
    } else {
      EXPECT_FALSE(parsed);
      EXPECT_EQ(p.error_status(), 413);
    }
  }
}

TEST(HttpMessage, ExpectContinueAndEof) {
  RequestParser p(1024, 1024);
  p.put("PUT /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n");
  ASSERT_EQ(p.state(), State::HeaderDone);
  EXPECT_TRUE(p.expects_continue());
  p.put_eof();
  EXPECT_EQ(p.state(), State::Error);
  EXPECT_EQ(p.error_status(), 400);

  RequestParser q(1024, 1024);
  q.put_eof();  // nothing received: not an error
  EXPECT_EQ(q.state(), State::NeedMore);
}

TEST(HttpMessage, ResponseHead) {
  std::string head = format_response_head(
      200, "text/event-stream", BodyFraming::Chunked, 0, "rid-1", 11, true,
      {{"cache-control", "no-cache"},
       {"x-evil", "a\r\nset-cookie: injected"},  // dropped: would inject a header
       {"bad name", "v"},                        // dropped: not a token
       {"Content-Length", "99"},                 // dropped: the transport owns framing
       {"x-ok", "fine"}});
  std::regex expected(
      "HTTP/1\\.1 200 OK\r\n"
      "date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \\d\\d "
      "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \\d{4} \\d\\d:\\d\\d:\\d\\d GMT\r\n"
      "server: maas\r\n"
      "content-type: text/event-stream\r\n"
      "transfer-encoding: chunked\r\n"
      "x-request-id: rid-1\r\n"
      "cache-control: no-cache\r\n"
      "x-ok: fine\r\n"
      "\r\n");
  EXPECT_TRUE(std::regex_match(head, expected)) << head;

  head = format_response_head(404, "application/json", BodyFraming::ContentLength, 17, "r", 10,
                              false, {});
  EXPECT_NE(head.find("HTTP/1.1 404 Not Found\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\ncontent-length: 17\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\nconnection: close\r\n"), std::string::npos);
  head = format_response_head(200, "", BodyFraming::ContentLength, 0, "r", 10, true, {});
  EXPECT_NE(head.find("\r\nconnection: keep-alive\r\n"), std::string::npos);
  EXPECT_EQ(head.find("content-type"), std::string::npos);
}

TEST(HttpMessage, ChunkFraming) {
  std::string out;
  append_chunk(out, std::string(255, 'a'));
  append_chunk(out, "");  // must not emit the terminating empty chunk
  append_chunk(out, "xyz");
  EXPECT_EQ(out, "ff\r\n" + std::string(255, 'a') + "\r\n3\r\nxyz\r\n");
  EXPECT_EQ(kLastChunk, "0\r\n\r\n");
}

TEST(HttpMessage, ErrorBodyIsValidOpenAiJson) {
  std::string body = error_body("bad \"thing\"\n\xff here", "invalid_request_error", "bad_thing");
  auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["error"]["message"], "bad \"thing\"\n\xEF\xBF\xBD here");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(j["error"]["param"].is_null());
  EXPECT_EQ(j["error"]["code"], "bad_thing");
  EXPECT_TRUE(nlohmann::json::parse(error_body("m", "t"))["error"]["code"].is_null());
}

TEST(HttpMessage, RequestIds) {
  std::string sane = "req_01-ABC.def";
  EXPECT_EQ(make_request_id(&sane), sane);
  std::regex hex("[0-9a-f]{32}");
  for (std::string bad : {std::string(), std::string(129, 'x'), std::string("tab\there"),
                          std::string("nl\n"), std::string("\x80\x81")}) {
    EXPECT_TRUE(std::regex_match(make_request_id(&bad), hex)) << bad;
  }
  EXPECT_NE(make_request_id(nullptr), make_request_id(nullptr));
}

}  // namespace
}  // namespace maas::server::detail
