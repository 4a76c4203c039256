// The HTTP transport over real sockets: keep-alive, pipelining, limits, malformed input, timeouts.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "http_test_client.h"
#include "http_test_server.h"

namespace maas::test::http {
namespace {

std::string post(std::string_view path, std::string_view body, std::string_view extra = "") {
  return std::string("POST ") + std::string(path) +
         " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra) + "\r\n" + std::string(body);
}

std::string get(std::string_view target, std::string_view extra = "") {
  return std::string("GET ") + std::string(target) + " HTTP/1.1\r\nHost: t\r\n" +
         std::string(extra) + "\r\n";
}

// The transport's own errors are OpenAI-style JSON.
void expect_error_json(const Response& r) {
  EXPECT_EQ(r.header("content-type"), "application/json");
  auto j = nlohmann::json::parse(r.body);
  ASSERT_TRUE(j.contains("error")) << r.body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
  EXPECT_TRUE(j["error"]["type"].is_string());
  EXPECT_TRUE(j["error"].contains("param"));
  EXPECT_TRUE(j["error"].contains("code"));
}

bool is_hex_id(const std::string& s) { return std::regex_match(s, std::regex("[0-9a-f]{32}")); }

TEST(HttpServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  TestServer ts;
  Client c(ts.port());
  std::string last_id;
  for (int i = 0; i < 5; ++i) {
    std::string body = "body number " + std::to_string(i) + std::string(i * 1000, 'x');
    ASSERT_TRUE(c.send(post("/echo?i=" + std::to_string(i), body, "X-Test: hello\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r) << "request " << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, body);
    EXPECT_EQ(r->header("x-echo-method"), "POST");
    EXPECT_EQ(r->header("x-echo-target"), "/echo?i=" + std::to_string(i));
    EXPECT_EQ(r->header("x-echo-path"), "/echo");
    EXPECT_EQ(r->header("x-echo-x-test"), "hello");
    EXPECT_EQ(r->header("x-echo-version"), "11");
    EXPECT_EQ(r->header("x-echo-header-count"), "3");  // host, content-length, x-test
    EXPECT_EQ(r->header("x-echo-remote").rfind("127.0.0.1:", 0), 0u);
    EXPECT_EQ(r->header("content-length"), std::to_string(body.size()));
    EXPECT_FALSE(r->has("connection"));
    EXPECT_TRUE(r->has("date"));
    // A generated request id: 32 hex digits, new for each request.
    EXPECT_TRUE(is_hex_id(r->header("x-request-id"))) << r->header("x-request-id");
    EXPECT_NE(r->header("x-request-id"), last_id);
    last_id = r->header("x-request-id");
  }
  EXPECT_EQ(ts.server.open_connections(), 1u);
}

TEST(HttpServer, ClientRequestIdIsEchoedWhenSane) {
  TestServer ts;
  Client c(ts.port());
  c.send(get("/echo", "X-Request-Id: my-id 42\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("x-request-id"), "my-id 42");
  // Too long: replaced by a generated one.
  c.send(get("/echo", "X-Request-Id: " + std::string(129, 'a') + "\r\n"));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_TRUE(is_hex_id(r->header("x-request-id")));
  // 128 is still fine.
  c.send(get("/echo", "X-Request-Id: " + std::string(128, 'b') + "\r\n"));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("x-request-id"), std::string(128, 'b'));
  // Unknown routes still carry one (the handler's 404).
  c.send(get("/nowhere"));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(is_hex_id(r->header("x-request-id")));
  expect_error_json(*r);
}

TEST(HttpServer, PipelinedRequestsAreAnsweredInOrder) {
  TestServer ts;
  Client c(ts.port());
  std::string all;
  for (int i = 0; i < 8; ++i) all += post("/echo", "pipelined-" + std::to_string(i));
  ASSERT_TRUE(c.send(all));  // one write: the server sees them back to back
  for (int i = 0; i < 8; ++i) {
    auto r = c.read_response();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->body, "pipelined-" + std::to_string(i));
  }
}

TEST(HttpServer, PipelinedRequestWaitsBehindAStream) {
  TestServer ts;
  Client c(ts.port());
  ASSERT_TRUE(c.send(get("/hold") + post("/echo", "after the stream")));
  auto h = ts.held(0);
  ASSERT_TRUE(h);
  auto head = c.read_head();
  ASSERT_TRUE(head);
  h->writer->write("one");
  EXPECT_EQ(c.read_chunk(), "one");
  // The echo must not be answered while the stream is open.
  EXPECT_EQ(c.read_more(100ms), Client::Read::Timeout);
  h->writer->end_stream();
  EXPECT_EQ(c.read_chunk(), "");
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "after the stream");
}

TEST(HttpServer, MalformedRequestsGet400AndCloseWhileOthersAreServed) {
  TestServer ts;
  Client good(ts.port());
  const std::vector<std::string> bad = {
      "GARBAGE\r\n\r\n",
      "GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
      "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
      "GET /\x01 HTTP/1.1\r\n\r\n",
      std::string("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 29),
  };
  for (const auto& request : bad) {
    Client c(ts.port());
    ASSERT_TRUE(c.send(request));
    auto r = c.read_response();
    ASSERT_TRUE(r) << request;
    EXPECT_EQ(r->status, 400) << request;
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(is_hex_id(r->header("x-request-id")));
    expect_error_json(*r);
    EXPECT_TRUE(c.wait_closed(2000ms)) << request;
    // Meanwhile the other connection is served as usual.
    ASSERT_TRUE(good.send(post("/echo", "still fine")));
    auto ok = good.read_response();
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->body, "still fine");
  }
}

TEST(HttpServer, UnsupportedVersionAndExpectation) {
  TestServer ts;
  {
    Client c(ts.port());
    // Only HTTP/1.0 and 1.1 are spoken; anything else is malformed for this parser.
    c.send("GET / HTTP/2.0\r\nHost: t\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
  }
  {
    Client c(ts.port());
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: something\r\nContent-Length: 2\r\n\r\nhi");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 417);
    expect_error_json(*r);
  }
}

TEST(HttpServer, HugeHeaderGets431) {
  TestServer ts;  // 16 KiB header limit
  Client c(ts.port());
  c.send(get("/echo", "X-Big: " + std::string(20 * 1024, 'a') + "\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  expect_error_json(*r);
  EXPECT_TRUE(c.wait_closed(3000ms));
  // Just under the limit passes.
  Client ok(ts.port());
  ok.send(get("/echo", "X-Big: " + std::string(15 * 1024, 'a') + "\r\n"));
  r = ok.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServer, HugeHeaderWithoutEndIsRefusedAtTheLimit) {
  TestServer ts;
  Client c(ts.port());
  // Never ends the header: the server must not buffer without bound.
  c.send("GET / HTTP/1.1\r\nX-Endless: ");
  for (int i = 0; i < 40; ++i) {
    if (!c.send(std::string(1024, 'z'))) break;
  }
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
}

TEST(HttpServer, BodyOverTheLimitGets413) {
  TestServer ts;  // 1 MiB body limit
  {
    // Declared too large: refused from the header, before any body byte.
    Client c(ts.port());
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    expect_error_json(*r);
    EXPECT_TRUE(c.wait_closed(3000ms));
  }
  {
    // Chunked: refused once the received chunks pass the limit.
    Client c(ts.port());
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::string chunk = "10000\r\n" + std::string(0x10000, 'c') + "\r\n";
    for (int i = 0; i < 17; ++i) {
      if (!c.send(chunk)) break;
    }
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(c.wait_closed(3000ms));
  }
  {
    // Exactly at the limit, chunked in 16 pieces: accepted and intact.
    Client c(ts.port());
    std::string req = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::string expected;
    for (int i = 0; i < 16; ++i) {
      std::string piece(0x10000, static_cast<char>('a' + i));
      req += "10000\r\n" + piece + "\r\n";
      expected += piece;
    }
    req += "0\r\n\r\n";
    c.send(req);
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body.size(), 1048576u);
    EXPECT_TRUE(r->body == expected);
  }
}

TEST(HttpServer, RequestTrickledByteByByteIsParsed) {
  TestServer ts;
  Client c(ts.port());
  // An empty chunked body first: Beast 1.81 asserted on its last chunk arriving bytewise.
  const std::string req =
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
      "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n1;x=y\r\n!\r\n0\r\nTrailer: z\r\n\r\n";
  for (char ch : req) {
    ASSERT_TRUE(c.send(std::string_view(&ch, 1)));
    std::this_thread::sleep_for(std::chrono::microseconds(300));
  }
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "");
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello!");
}

TEST(HttpServer, InvalidUtf8BodyIsPassedThroughUntouched) {
  TestServer ts;
  Client c(ts.port());
  std::string body = "{\"x\":\"\xff\xfe\xc3\x28\xed\xa0\x80\"}";
  body.push_back('\0');
  body += "tail";
  c.send(post("/echo", body));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, body);
}

TEST(HttpServer, Expect100ContinueIsAnsweredBeforeTheBody) {
  TestServer ts;
  Client c(ts.port());
  c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  auto interim = c.read_head(2000ms);
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  c.send("hello");
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
}

TEST(HttpServer, HeadGetsHeadersWithoutBody) {
  TestServer ts;
  Client c(ts.port());
  c.send("HEAD /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd");
  auto r = c.read_response(5000ms, /*head_request=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-length"), "4");
  // No body bytes followed: the next response starts right away on the same connection.
  c.send(post("/echo", "next"));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "next");
}

TEST(HttpServer, ConnectionCloseAndHttp10AreHonoured) {
  TestServer ts;
  {
    Client c(ts.port());
    c.send(get("/echo", "Connection: close\r\n"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(c.wait_closed(2000ms));
  }
  {
    Client c(ts.port());
    c.send("GET /echo HTTP/1.0\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("x-echo-version"), "10");
    EXPECT_TRUE(c.wait_closed(2000ms));
  }
  {
    // HTTP/1.0 with keep-alive stays open and says so.
    Client c(ts.port());
    c.send("GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(lower(r->header("connection")), "keep-alive");
    c.send("GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    EXPECT_TRUE(c.read_response());
  }
}

TEST(HttpServer, HandlerThatDropsOrThrowsYields500) {
  TestServer ts;
  Client c(ts.port());
  for (const char* path : {"/drop", "/throw", "/drop"}) {
    c.send(get(path));
    auto r = c.read_response();
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 500) << path;
    expect_error_json(*r);
  }
  EXPECT_TRUE(eventually([&] { return ts.server.in_flight() == 0; }, 1000ms));
}

TEST(HttpServer, SlowHeaderIsCutAtTheHeaderTimeout) {
  HttpConfig cfg = test_config();
  cfg.header_timeout = 300ms;
  TestServer ts(cfg);
  Client c(ts.port());
  const auto start = Clock::now();
  c.send("GET /echo HTTP/1.1\r\n");
  // Trickle a header line every 50 ms: each byte is progress, but the whole header is late.
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {
    if (!c.send("X-Slow: " + std::to_string(i) + "\r\n")) break;
    auto rr = c.read_more(50ms);
    closed = rr == Client::Read::Eof || rr == Client::Read::Reset;
  }
  if (!closed) closed = c.wait_closed(1000ms);
  const auto took = Clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 1500ms);
  // It said 408 before closing.
  EXPECT_EQ(c.buffer().rfind("HTTP/1.1 408 ", 0), 0u) << c.buffer().substr(0, 40);
}

TEST(HttpServer, SilentConnectionAndSlowBodyAreCut) {
  HttpConfig cfg = test_config();
  cfg.header_timeout = 200ms;
  cfg.body_timeout = 300ms;
  TestServer ts(cfg);
  {
    Client silent(ts.port());
    auto start = Clock::now();
    EXPECT_TRUE(silent.wait_closed(2000ms));
    EXPECT_LT(Clock::now() - start, 1000ms);
    EXPECT_TRUE(silent.buffer().empty());  // nothing to answer: closed quietly
  }
  {
    Client c(ts.port());
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npartial");
    auto start = Clock::now();
    auto r = c.read_response(2000ms);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 408);
    EXPECT_GE(Clock::now() - start, 200ms);
    EXPECT_TRUE(c.wait_closed(2000ms));
  }
}

TEST(HttpServer, IdleKeepAliveConnectionIsClosed) {
  HttpConfig cfg = test_config();
  cfg.idle_timeout = 200ms;
  TestServer ts(cfg);
  Client c(ts.port());
  c.send(get("/echo"));
  ASSERT_TRUE(c.read_response());
  auto start = Clock::now();
  EXPECT_TRUE(c.wait_closed(2000ms));
  EXPECT_GE(Clock::now() - start, 150ms);
  EXPECT_LT(Clock::now() - start, 1000ms);
  // Closing idle connections is bookkeeping too.
  EXPECT_TRUE(eventually([&] { return ts.server.open_connections() == 0; }, 1000ms));
}

TEST(HttpServer, HalfClosedPartialRequestIsAnsweredAndClosed) {
  TestServer ts;
  {
    Client c(ts.port());
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Le");
    c.shutdown_write();
    auto r = c.read_response(2000ms);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_TRUE(c.wait_closed(1000ms));
  }
  {
    Client c(ts.port());
    c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    c.shutdown_write();
    auto r = c.read_response(2000ms);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_TRUE(c.wait_closed(1000ms));
  }
  {
    // Nothing sent at all: just closed.
    Client c(ts.port());
    c.shutdown_write();
    EXPECT_TRUE(c.wait_closed(1000ms));
    EXPECT_TRUE(c.buffer().empty());
  }
  EXPECT_TRUE(eventually([&] { return ts.server.open_connections() == 0; }, 1000ms));
}

TEST(HttpServer, ConnectionsBeyondTheCapGet503) {
  HttpConfig cfg = test_config();
  cfg.max_connections = 2;
  TestServer ts(cfg);
  Client a(ts.port()), b(ts.port());
  a.send(get("/echo"));
  b.send(get("/echo"));
  ASSERT_TRUE(a.read_response());
  ASSERT_TRUE(b.read_response());
  {
    Client c(ts.port());
    c.send(get("/echo"));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    expect_error_json(*r);
    EXPECT_TRUE(c.wait_closed(3000ms));
  }
  a.close();
  ASSERT_TRUE(eventually([&] { return ts.server.open_connections() <= 1; }, 1000ms));
  Client d(ts.port());
  d.send(get("/echo"));
  auto r = d.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServer, TakenPortIsAClearError) {
  TestServer ts;
  HttpConfig cfg = test_config();
  cfg.port = ts.port();
  HttpServer second(cfg, [](HttpRequest&&, std::shared_ptr<ResponseWriter>) {});
  try {
    second.start();
    FAIL() << "bound a port that is in use";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(std::to_string(ts.port())), std::string::npos) << what;
    EXPECT_NE(what.find("in use"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace maas::test::http
