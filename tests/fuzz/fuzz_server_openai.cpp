// Fuzz target: the OpenAI request bodies, as the API parses them (JSON with strict UTF-8, then
// the chat, completion and embedding schemas). A clear ApiError is the expected refusal; any
// other exception, a crash or a sanitizer report is a bug. Errors must render as valid JSON.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "server/openai_schema.h"

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_server_openai: invariant broken: %s\n", what);
    std::abort();
  }
}

template <typename Parse>
void try_parse(const maas::server::Json& body, Parse parse) {
  try {
    parse(body);
  } catch (const maas::server::ApiError& e) {
    check(e.status >= 400 && e.status < 500, "error status");
    // The error object is always valid JSON, whatever bytes the message quotes.
    auto j = maas::server::Json::parse(maas::server::error_json(e));
    check(j.contains("error"), "error object");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace maas::server;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  Json body;
  try {
    body = parse_body(text);
  } catch (const ApiError& e) {
    check(e.status == 400, "body error status");
    return 0;
  }
  try_parse(body, [](const Json& b) { parse_chat_request(b); });
  try_parse(body, [](const Json& b) { parse_completion_request(b); });
  try_parse(body, [](const Json& b) { parse_embedding_request(b); });
  return 0;
}
