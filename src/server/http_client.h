// A small synchronous HTTP/1.1 client (one request per connection) for the CLI's commands that
// talk to a running server, such as `maas models`. Plain http:// only.
#pragma once

#include <chrono>
#include <string>

#include "server/http_server.h"

namespace maas::server {

struct HttpClientResponse {
  int status = 0;
  HeaderList headers;  // names lower-cased
  std::string body;

  const std::string* header(std::string_view lower_name) const;
};

// Sends `method url` (url: http://HOST[:PORT]/PATH[?QUERY]) with the headers and body, and reads
// the whole response. Throws std::runtime_error with a clear message if the URL is malformed,
// the server cannot be reached, the response is malformed or larger than 64 MiB, or the exchange
// takes longer than `timeout`.
HttpClientResponse http_request(const std::string& method, const std::string& url,
                                const HeaderList& headers = {}, const std::string& body = {},
                                std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace maas::server
