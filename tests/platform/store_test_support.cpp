#include "store_test_support.h"

#include <filesystem>

#include "support/postgres_server.h"
#include "support/test_util.h"

namespace maas::platform::testing {

std::string reference_day(UnixMillis t) {
  std::time_t secs = static_cast<std::time_t>(t >= 0 ? t / 1000 : -((-t + 999) / 1000));
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

std::string base64url_decode(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : s) {
    int v = value(c);
    EXPECT_GE(v, 0) << "bad base64url char " << c;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

std::string python(const std::string& code) {
  auto r = test::run_command({"/usr/bin/python3", "-c", code});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  return r.out;
}

std::string numbered(std::string prefix, long long n) {
  prefix += std::to_string(n);
  return prefix;
}

LedgerEntry entry(std::string id, std::string tenant, std::string model, UnixMillis ended,
                  std::int64_t prompt, std::int64_t completion) {
  LedgerEntry e;
  e.request_id = std::move(id);
  e.tenant = std::move(tenant);
  e.key_id = "key_000000000000";
  e.model = std::move(model);
  e.prompt_tokens = prompt;
  e.cached_tokens = prompt / 2;
  e.completion_tokens = completion;
  e.status = 200;
  e.finish_reason = "stop";
  e.queued_at = ended - 300;
  e.first_token_at = ended - 200;
  e.ended_at = ended;
  return e;
}

void StoreBackend::SetUp() {
  if (GetParam() == Backend::kSqlite) {
    location_ = test::scratch_dir();
  } else {
    auto& server = test::PostgresServer::shared();
    database_ = server.create_database();
    location_ = server.url(database_);
  }
}

std::unique_ptr<Store> StoreBackend::open() const {
  return GetParam() == Backend::kSqlite ? open_sqlite_store(location_)
                                        : open_postgres_store(location_);
}

std::string StoreBackend::stored_bytes() const {
  if (GetParam() == Backend::kPostgres) return test::PostgresServer::shared().dump(database_);
  std::string all;
  for (const auto& entry : std::filesystem::directory_iterator(location_)) {
    all += test::read_file(entry.path().string());
  }
  return all;
}

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kSqlite ? "sqlite" : "postgres";
}

}  // namespace maas::platform::testing
