// Tests of what only the PostgreSQL store has: its schema against SQLite's, migrations (from v1,
// refusing newer and foreign schemas, concurrent opens by replicas), reconnecting after a server
// restart, connection failures, password masking, text PostgreSQL cannot hold, and choosing the
// backend from flags and the environment.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <latch>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "platform/keys.h"
#include "platform/store.h"
#include "store_test_support.h"
#include "support/postgres_server.h"
#include "support/test_util.h"

namespace maas::platform::testing {
namespace {

test::PostgresServer& server() { return test::PostgresServer::shared(); }

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class PostgresStore : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = server().create_database();
    url_ = server().url(db_);
  }
  std::string sql(const std::string& q) const { return trimmed(server().psql(db_, q)); }

  // Expects opening url to throw StoreError whose message has every needle; returns it.
  static std::string expect_refused(const std::string& url, std::vector<std::string> needles) {
    try {
      open_postgres_store(url);
      ADD_FAILURE() << "opening " << url << " should have failed";
      return "";
    } catch (const StoreError& e) {
      std::string msg = e.what();
      for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << n << " in " << msg;
      return msg;
    }
  }

  std::string db_, url_;
};

// The first schema as it shipped (written out here, independently of the store's migrations).
const char* const kVersionOneSchema = R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE tenants (id TEXT PRIMARY KEY, weight DOUBLE PRECISION NOT NULL DEFAULT 1,
                      created_at BIGINT NOT NULL);
CREATE TABLE api_keys (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id),
  secret_sha256 TEXT NOT NULL UNIQUE, rpm BIGINT, tpm BIGINT, daily_tokens BIGINT,
  monthly_tokens BIGINT, expires_at BIGINT, created_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE TABLE api_key_models (key_id TEXT NOT NULL REFERENCES api_keys(id), model TEXT NOT NULL,
                             PRIMARY KEY (key_id, model));
CREATE TABLE usage_ledger (request_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL,
  key_id TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens BIGINT NOT NULL,
  cached_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, status INTEGER NOT NULL,
  finish_reason TEXT NOT NULL, queued_at BIGINT NOT NULL, first_token_at BIGINT,
  ended_at BIGINT NOT NULL, day TEXT NOT NULL);
)sql";

TEST_F(PostgresStore, MigratesAFreshDatabaseAndReopenIsIdempotent) {
  EXPECT_EQ(postgres_schema_version(), sqlite_schema_version());
  {
    auto store = open_postgres_store(url_);
    EXPECT_EQ(store->location(), url_);
    store->put_tenant("acme", 2.5, {}, kT0);
  }
  EXPECT_EQ(sql("SELECT version FROM schema_version"), std::to_string(postgres_schema_version()));
  for (int i = 0; i < 2; ++i) {
    auto store = open_postgres_store(url_);
    ASSERT_TRUE(store->find_tenant("acme"));
    EXPECT_EQ(store->find_tenant("acme")->weight, 2.5);
  }
  EXPECT_EQ(sql("SELECT COUNT(*) FROM schema_version"), "1");
}

// Both backends create the same tables and columns, with the same types and nullability.
TEST_F(PostgresStore, SchemaMatchesSqlite) {
  open_postgres_store(url_);
  std::set<std::string> pg_columns;
  std::stringstream rows(sql(
      "SELECT table_name || ' ' || column_name || ' ' || upper(data_type) || ' ' || is_nullable "
      "FROM information_schema.columns WHERE table_schema = 'public'"));
  for (std::string line; std::getline(rows, line);) pg_columns.insert(line);

  const std::string dir = test::scratch_dir();
  open_sqlite_store(dir);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir + "/maas.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db,
                               "SELECT m.name || ' ' || p.name || ' ' || upper(p.type) || ' ' || "
                               "CASE WHEN p.\"notnull\" OR p.pk THEN 'NO' ELSE 'YES' END "
                               "FROM sqlite_master m, pragma_table_info(m.name) p "
                               "WHERE m.type = 'table'",
                               -1, &st, nullptr),
            SQLITE_OK);
  std::set<std::string> sqlite_columns;
  while (sqlite3_step(st) == SQLITE_ROW) {
    sqlite_columns.insert(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  EXPECT_GT(pg_columns.size(), 30u);
  EXPECT_EQ(pg_columns, sqlite_columns);
}

TEST_F(PostgresStore, VersionOneDatabaseIsMigrated) {
  const std::string secret = "sk-maas-" + std::string(43, 'Q');
  const std::string digest =
      python("import hashlib;print(hashlib.sha256(b'" + secret + "').hexdigest())");
  sql(std::string(kVersionOneSchema) + "INSERT INTO tenants VALUES ('acme', 3, " +
      std::to_string(kT0) +
      ");"
      "INSERT INTO api_keys (id, tenant_id, secret_sha256, rpm, created_at) VALUES "
      "('key_0123456789ab', 'acme', '" +
      digest + "', 7, " + std::to_string(kT0) +
      ");"
      "INSERT INTO api_key_models VALUES ('key_0123456789ab', 'llama')");
  auto store = open_postgres_store(url_);
  EXPECT_EQ(sql("SELECT version FROM schema_version"), std::to_string(postgres_schema_version()));
  auto t = store->find_tenant("acme");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->weight, 3);
  EXPECT_EQ(t->created_at, kT0);
  EXPECT_EQ(t->limits, TenantLimits{});
  AuthResult auth = store->authenticate(secret, kT0 + 1);
  ASSERT_TRUE(auth);
  EXPECT_EQ(auth.key->id, "key_0123456789ab");
  EXPECT_EQ(auth.key->options.rpm, 7);
  EXPECT_EQ(auth.key->options.models, std::vector<std::string>{"llama"});
  EXPECT_EQ(store->put_tenant("acme", 3, TenantLimits{1, 2, 3, 4}, kT0).limits,
            (TenantLimits{1, 2, 3, 4}));
}

TEST_F(PostgresStore, NewerForeignAndDamagedSchemasAreRefused) {
  open_postgres_store(url_);
  sql("UPDATE schema_version SET version = " + std::to_string(postgres_schema_version() + 1));
  expect_refused(url_, {url_, "newer"});

  const std::string foreign_db = server().create_database();
  server().psql(foreign_db, "CREATE TABLE photos (id INTEGER)");
  expect_refused(server().url(foreign_db), {server().url(foreign_db), "not a maas database"});

  const std::string broken_db = server().create_database();
  const std::string broken = server().url(broken_db);
  open_postgres_store(broken);
  server().psql(broken_db, "DROP TABLE api_key_models");
  expect_refused(broken, {broken, "api_key_models"});

  const std::string two_rows_db = server().create_database();
  open_postgres_store(server().url(two_rows_db));
  server().psql(two_rows_db, "INSERT INTO schema_version VALUES (1)");
  expect_refused(server().url(two_rows_db), {"schema_version"});

  const std::string text_version_db = server().create_database();
  open_postgres_store(server().url(text_version_db));
  server().psql(text_version_db,
                "ALTER TABLE schema_version ALTER COLUMN version TYPE TEXT; "
                "UPDATE schema_version SET version = 'two'");
  expect_refused(server().url(text_version_db), {"schema_version"});
}

// Cells of the wrong type (a tampered table) give StoreError when read, never a made-up value;
// a column the queries cannot use at all is refused at open.
TEST_F(PostgresStore, TamperedColumnsGiveStoreErrors) {
  auto store = open_postgres_store(url_);
  store->put_tenant("acme", 1, {}, kT0);
  store->record(entry("r1", "acme", "llama", kT0));
  sql("ALTER TABLE tenants ALTER COLUMN weight TYPE TEXT; UPDATE tenants SET weight = 'heavy';"
      "ALTER TABLE usage_ledger ALTER COLUMN status TYPE TEXT; UPDATE usage_ledger SET status = "
      "'ok'");
  auto reopened = open_postgres_store(url_);
  EXPECT_THROW(reopened->find_tenant("acme"), StoreError);
  EXPECT_THROW(reopened->list_tenants(), StoreError);
  EXPECT_THROW(reopened->find_record("r1"), StoreError);
  EXPECT_EQ(reopened->count_records(), 1);
  sql("ALTER TABLE usage_ledger ALTER COLUMN prompt_tokens TYPE TEXT");
  expect_refused(url_, {url_, "not a maas schema"});
}

// Replicas starting together on a fresh database: every open succeeds and the schema is created
// once. An event trigger logs every DDL command; the log must equal that of a single open.
TEST_F(PostgresStore, ConcurrentOpensOfAFreshDatabaseMigrateOnce) {
  const char* const kLogDdl = R"sql(
CREATE SCHEMA audit;
CREATE TABLE audit.ddl (n SERIAL, tag TEXT, object TEXT);
CREATE FUNCTION audit.log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    INSERT INTO audit.ddl (tag, object) VALUES (r.command_tag, r.object_identity);
  END LOOP;
END $$;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION audit.log_ddl();
)sql";
  const char* const kReadLog = "SELECT tag || ' ' || object FROM audit.ddl ORDER BY n";
  const std::string reference_db = server().create_database();
  server().psql(reference_db, kLogDdl);
  open_postgres_store(server().url(reference_db));
  const std::string reference_log = trimmed(server().psql(reference_db, kReadLog));
  EXPECT_NE(reference_log.find("CREATE TABLE public.usage_ledger"), std::string::npos);
  EXPECT_NE(reference_log.find("ALTER TABLE public.tenants"), std::string::npos);

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    const std::string db = server().create_database();
    server().psql(db, kLogDdl);
    constexpr int kReplicas = 4;
    std::latch start(kReplicas);
    std::vector<std::string> errors(kReplicas);
    std::vector<std::thread> threads;
    for (int i = 0; i < kReplicas; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        try {
          open_postgres_store(server().url(db))->put_tenant(numbered("t", i), 1, {}, kT0);
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors) EXPECT_EQ(e, "");
    EXPECT_EQ(trimmed(server().psql(db, kReadLog)), reference_log);
    EXPECT_EQ(trimmed(server().psql(db, "SELECT COUNT(*) FROM tenants")), "4");
  }
}

// The server restarts under a store with several pooled connections: all of them die, and the
// next calls reconnect. While the server is down, calls fail with StoreError instead of hanging.
TEST_F(PostgresStore, ReconnectsAfterTheServerRestarts) {
  auto store = open_postgres_store(url_);
  store->put_tenant("acme", 1, {}, kT0);
  // Eight threads at once: the pool opens connections up to its limit of four.
  std::vector<std::thread> threads;
  std::latch start(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < 20; ++i) {
        store->record(entry(numbered("w", t) + numbered("-", i), "acme", "m", kT0));
      }
    });
  }
  for (auto& t : threads) t.join();
  const int pooled = std::stoi(
      sql("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'maas' AND datname = '" +
          db_ + "'"));
  EXPECT_GE(pooled, 2);
  EXPECT_LE(pooled, 4);

  server().restart();
  EXPECT_EQ(store->count_records(), 160);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(store->record(entry(numbered("after-", i), "acme", "m", kT0)),
              RecordOutcome::kRecorded);
  }
  EXPECT_EQ(store->count_records(), 168);

  server().stop();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    store->record(entry("down", "acme", "m", kT0));
    ADD_FAILURE() << "record() with the server down should fail";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find(url_), std::string::npos) << e.what();
  }
  EXPECT_THROW(store->list_tenants(), StoreError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  server().start();
  EXPECT_EQ(store->record(entry("up", "acme", "m", kT0)), RecordOutcome::kRecorded);
  EXPECT_EQ(store->count_records(), 169);
}

TEST_F(PostgresStore, ConnectionFailuresAreStoreErrors) {
  // No server behind the socket directory; a database that does not exist.
  expect_refused("postgresql:///maas?host=/nonexistent-maas-dir&user=postgres",
                 {"/nonexistent-maas-dir", "cannot connect"});
  expect_refused(server().url("no_such_db"), {"no_such_db", "does not exist"});
  // Malformed URLs.
  expect_refused("postgresql://host:notaport/db?connect_timeout=2", {"cannot connect"});
  expect_refused("postgresql:///db?no_such_option=1", {"no_such_option"});
  EXPECT_THROW(open_postgres_store(""), std::invalid_argument);

  // A closed TCP port is refused at once; a port that accepts but never answers takes the
  // URL's connect_timeout (2 s), not forever.
  int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string port = std::to_string(ntohs(addr.sin_port));
  expect_refused("postgresql://maas@127.0.0.1:" + port + "/maas", {"127.0.0.1", "refused"});
  ASSERT_EQ(::listen(sock, 4), 0);
  const auto t0 = std::chrono::steady_clock::now();
  expect_refused("postgresql://maas@127.0.0.1:" + port + "/maas?connect_timeout=2",
                 {"cannot connect", "timeout"});
  const auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(1500));
  EXPECT_LT(waited, std::chrono::seconds(6));
  ::close(sock);
}

TEST_F(PostgresStore, PasswordsNeverShow) {
  sql("DO $$ BEGIN CREATE ROLE maas_pw LOGIN PASSWORD 'right-pw-4242'; "
      "EXCEPTION WHEN duplicate_object THEN NULL; END $$");
  const std::string db = server().create_database("maas_pw");
  const std::string dir = server().socket_dir();
  const std::string wrong = "postgresql://maas_pw:wrong-pw-1717@/" + db + "?host=" + dir;
  const std::string msg = expect_refused(wrong, {"password authentication failed", "***"});
  EXPECT_EQ(msg.find("wrong-pw-1717"), std::string::npos) << msg;

  auto store = open_postgres_store("postgresql://maas_pw:right-pw-4242@/" + db + "?host=" + dir);
  EXPECT_EQ(store->location(), "postgresql://maas_pw:***@/" + db + "?host=" + dir);
  store->put_tenant("acme", 1, {}, kT0);
  auto keyword = open_postgres_store("host=" + dir + " dbname=" + db +
                                     " user=maas_pw password='right-pw-4242'");
  EXPECT_EQ(keyword->location(), "host=" + dir + " dbname=" + db + " user=maas_pw password=***");
  EXPECT_TRUE(keyword->find_tenant("acme"));

  // libpq quotes a malformed percent-escape, which here sits inside the password.
  const std::string bad_escape = expect_refused("postgresql://u:leak%zzsecret@/db?host=" + dir, {});
  EXPECT_EQ(bad_escape.find("leak"), std::string::npos) << bad_escape;
  // libpq quotes the whole URI when it cannot parse it, here with a password too short to scrub
  // on its own.
  const std::string unparsable = expect_refused("postgresql://u:pw1@[::1/x", {"u:***@[::1/x"});
  EXPECT_EQ(unparsable.find("pw1"), std::string::npos) << unparsable;
}

TEST(PostgresUrl, PasswordsAreMasked) {
  const std::map<std::string, std::string> cases = {
      {"postgresql://alice:s3cret@db.example:5432/maas",
       "postgresql://alice:***@db.example:5432/maas"},
      {"postgres://alice@db/maas", "postgres://alice@db/maas"},
      {"postgresql:///maas?host=/tmp/x&user=postgres",
       "postgresql:///maas?host=/tmp/x&user=postgres"},
      {"postgresql://db/maas?user=alice&password=s3cret&sslmode=require",
       "postgresql://db/maas?user=alice&password=***&sslmode=require"},
      {"postgresql://u:p%40ss@h1:1,h2:2/db?p%61ssword=zz",
       "postgresql://u:***@h1:1,h2:2/db?p%61ssword=***"},
      {"postgresql://alice:a?b/c@h/db", "postgresql://alice:a?b/c@h/db"},
      {"postgresql://alice:a?b@h/db", "postgresql://alice:***@h/db"},
      {"postgresql://:@", "postgresql://:***@"},
      {"postgresql://", "postgresql://"},
      {"host=db password='se cret' user=alice", "host=db password=*** user=alice"},
      {"password = plain dbname=maas", "password = *** dbname=maas"},
      {"host=db password=it\\'s user=x", "host=db password=*** user=x"},
      {"dbname=maas", "dbname=maas"},
      {"", ""},
  };
  for (const auto& [url, masked] : cases) EXPECT_EQ(mask_database_url(url), masked) << url;

  // Random URLs of the characters that matter never crash the parser (ASan runs this), and a
  // plain password in either place never survives.
  std::mt19937 rng(17);
  const std::string alphabet = "ab:@/?&=%'\\ x";
  for (int i = 0; i < 3000; ++i) {
    std::string junk;
    for (int n = static_cast<int>(rng() % 24); n > 0; --n)
      junk += alphabet[rng() % alphabet.size()];
    mask_database_url(junk);
    mask_database_url("postgresql://" + junk);
    const std::string pw = numbered("Pw", rng() % 100000);
    EXPECT_EQ(mask_database_url("postgresql://u:" + pw + "@h/" + junk).find(pw), std::string::npos);
    EXPECT_EQ(mask_database_url("host=h password=" + pw + " " + junk).find(pw), std::string::npos);
  }
}

// PostgreSQL text holds no NUL and only valid UTF-8. Which byte strings are storable is checked
// against Python's strict UTF-8 decoder (which, like PostgreSQL, refuses overlong forms and
// surrogates); storable ones must round-trip byte for byte.
TEST_F(PostgresStore, TextPostgresCannotHoldIsRefused) {
  auto store = open_postgres_store(url_);
  std::mt19937 rng(9);
  const unsigned char interesting[] = {0x00, 0x41, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2,
                                       0xdf, 0xe0, 0xa0, 0xed, 0x9f, 0xef, 0xf0, 0x90,
                                       0xf4, 0x8f, 0xf5, 0xff, 0x9f, 0x98, 0x80, 0xbf};
  // Half random bytes (mostly invalid), half encoded random code points (valid unless a
  // surrogate or NUL is drawn).
  auto encode = [](std::uint32_t cp) {
    std::string out;
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
    return out;
  };
  const std::uint32_t ranges[] = {0x80, 0x800, 0x10000, 0x110000};
  std::vector<std::string> samples;
  for (int i = 0; i < 300; ++i) {
    std::string s = "m";
    const int n = 1 + static_cast<int>(rng() % 5);
    for (int k = 0; k < n; ++k) {
      if (i % 2) {
        s += static_cast<char>(interesting[rng() % sizeof interesting]);
      } else {
        s += encode(static_cast<std::uint32_t>(rng() % ranges[rng() % 4]));
      }
    }
    samples.push_back(s);
  }
  samples.push_back("\xf0\x9f\x98\x80");  // U+1F600, valid
  samples.push_back("\xed\xa0\x80");      // a surrogate, invalid
  std::string hex_list;
  for (const auto& s : samples) {
    hex_list += keys::to_hex(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()) + " ";
  }
  const std::string verdicts = python(
      "import sys\n"
      "def ok(b):\n"
      "  try: b.decode('utf-8')\n"
      "  except UnicodeDecodeError: return '0'\n"
      "  return '0' if 0 in b else '1'\n"
      "print(''.join(ok(bytes.fromhex(h)) for h in '" +
      hex_list + "'.split()))");
  ASSERT_EQ(verdicts.size(), samples.size());
  int stored = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const std::string id = numbered("r", i);
    if (verdicts[i] == '1') {
      ASSERT_EQ(store->record(entry(id, "acme", samples[i], kT0)), RecordOutcome::kRecorded) << i;
      ASSERT_EQ(store->find_record(id)->model, samples[i]) << i;
      ++stored;
    } else {
      EXPECT_THROW(store->record(entry(id, "acme", samples[i], kT0)), std::invalid_argument) << i;
      EXPECT_FALSE(store->find_record(samples[i]));
      EXPECT_FALSE(store->find_tenant(samples[i]));
      EXPECT_FALSE(store->revoke_key(samples[i], kT0));
      EXPECT_EQ(store->tokens_used(UsageScope::key(samples[i]), 0), UsageTotals{});
      EXPECT_TRUE(store->usage_by_model_day(samples[i], 0, kT0 * 2).empty());
      KeyOptions options;
      options.models = {samples[i]};
      store->ensure_tenant("acme", kT0);
      EXPECT_THROW(store->create_key("acme", options, kT0), std::invalid_argument);
    }
  }
  EXPECT_GT(stored, 100);
  EXPECT_LT(stored, static_cast<int>(samples.size()) - 100);
}

// A database or role configured with synchronous_commit=off would acknowledge commits a crash can
// lose: the store's sessions turn it back on. A trigger records the setting each insert ran with.
TEST_F(PostgresStore, CommitsAreSynchronousEvenWhenTheDatabaseSaysOtherwise) {
  open_postgres_store(url_);
  sql("ALTER DATABASE " + db_ +
      " SET synchronous_commit = off;"
      "CREATE SCHEMA audit; CREATE TABLE audit.sync (setting TEXT);"
      "CREATE FUNCTION audit.note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
      "INSERT INTO audit.sync VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$;"
      "CREATE TRIGGER note BEFORE INSERT ON usage_ledger FOR EACH ROW EXECUTE FUNCTION "
      "audit.note()");
  // Control: a plain session of this database runs with the setting off.
  EXPECT_EQ(sql("SHOW synchronous_commit"), "off");
  auto store = open_postgres_store(url_);
  store->record(entry("r1", "acme", "m", kT0));
  EXPECT_EQ(sql("SELECT string_agg(setting, ',') FROM audit.sync"), "on");
}

TEST_F(PostgresStore, OpenStoreChoosesTheBackend) {
  const char* saved = std::getenv("MAAS_DATABASE_URL");
  const std::string saved_value = saved ? saved : "";
  const std::string dir = test::scratch_dir();
  ::unsetenv("MAAS_DATABASE_URL");
  EXPECT_EQ(open_store(dir, "")->location(), dir + "/maas.db");
  EXPECT_EQ(open_store(dir, url_)->location(), url_);
  ::setenv("MAAS_DATABASE_URL", url_.c_str(), 1);
  EXPECT_EQ(resolve_database_url(""), url_);
  EXPECT_EQ(open_store(dir, "")->location(), url_);
  const std::string other = server().url(server().create_database());
  EXPECT_EQ(open_store(dir, other)->location(), other);  // the flag wins
  ::setenv("MAAS_DATABASE_URL", "", 1);
  EXPECT_EQ(open_store(dir, "")->location(), dir + "/maas.db");
  try {
    open_store(dir, "mysql://root:hunter22@db/maas");
    ADD_FAILURE() << "a mysql URL should be refused";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("mysql://root:***@db/maas"), std::string::npos)
        << e.what();
  }
  if (saved) {
    ::setenv("MAAS_DATABASE_URL", saved_value.c_str(), 1);
  } else {
    ::unsetenv("MAAS_DATABASE_URL");
  }
}

}  // namespace
}  // namespace maas::platform::testing
