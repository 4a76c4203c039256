// A throwaway PostgreSQL server for the tests of one test process.
//
// shared() runs initdb into a fresh directory under /tmp and starts the server on a unix socket
// in that directory only (no TCP), about a second the first time; the server is stopped and the
// directory removed when the process exits (a watchdog process does it if the test process is
// killed). Running as root, the server programs run as the `postgres` system user, since
// PostgreSQL refuses to run as root. Clients connect as the superuser "postgres" without a
// password; other roles must log in with their password (scram-sha-256).
//
// This helper only runs programs (initdb, pg_ctl, psql, pg_dump), so it needs no libpq.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>

namespace maas::test {

class PostgresServer {
 public:
  // The server of this test process, started on first use. Throws std::runtime_error (failing
  // the test) if PostgreSQL is not installed, telling to run scripts/install-deps.sh.
  static PostgresServer& shared();

  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // The directory holding the server's socket (libpq's host=).
  const std::string& socket_dir() const { return dir_; }
  // Creates a fresh, empty database owned by `owner` and returns its name. Its collation is
  // ICU en-US, as production databases usually have, so code relying on byte-order text
  // comparison without saying COLLATE "C" fails here.
  std::string create_database(const std::string& owner = "postgres");
  // postgresql:///db?host=<socket dir>&user=<user> (+ &password=...).
  std::string url(const std::string& db, const std::string& user = "postgres",
                  const std::string& password = "") const;
  // Runs SQL with psql as the superuser (statements separated by semicolons, stopping at the
  // first error) and returns what it printed: unaligned, tuples only. Throws std::runtime_error
  // with psql's message on failure.
  std::string psql(const std::string& db, const std::string& sql) const;
  // pg_dump of the database as SQL text.
  std::string dump(const std::string& db) const;

  // Stops (fast shutdown: clients are disconnected) and starts the server again on the same
  // socket, as an operator's restart would.
  void stop();
  void start();
  void restart();
  // The server's log, for messages of failed tests.
  std::string log() const;

 private:
  PostgresServer();
  void shutdown_now();

  std::string bin_, dir_, data_;
  bool as_postgres_user_ = false;  // running as root: server programs run as `postgres`
  pid_t owner_pid_;                // only the process that started the server stops it
  int watchdog_fd_ = -1;           // the watchdog stops the server when this closes
  std::atomic<int> next_database_{0};
};

}  // namespace maas::test
