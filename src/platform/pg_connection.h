// libpq wrappers for the PostgreSQL store: URL masking, one connection with its results, and a
// small connection pool. Internal to the platform layer (only pg_*.cpp include it), so libpq's
// header stays out of store.h.
#pragma once

#include <libpq-fe.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "platform/store.h"

namespace maas::platform::pg {

// The passwords written in a URL or key=value connection string, as written (percent-encoded or
// quoted forms included), so that error messages can be scrubbed of them.
std::vector<std::string> url_passwords(std::string_view url);

// What every message about one database starts with, and the secrets it must never show.
class Where {
 public:
  explicit Where(std::string_view url);
  const std::string& location() const { return location_; }  // the masked URL
  // "database <masked url>: <what>: <detail>", with the URL in detail masked (libpq quotes a
  // whole URI it cannot parse) and any password left in detail replaced by ***.
  std::string describe(std::string_view what, std::string_view detail) const;

 private:
  std::string url_, location_;
  std::vector<std::string> passwords_;
};

// An error from the server or libpq. lost_connection: the connection is gone (server restarted,
// network broke), so the operation may be retried once on a fresh connection.
class PgError : public StoreError {
 public:
  PgError(const std::string& message, std::string sqlstate, bool lost_connection)
      : StoreError(message), sqlstate_(std::move(sqlstate)), lost_connection_(lost_connection) {}
  const std::string& sqlstate() const { return sqlstate_; }
  bool lost_connection() const { return lost_connection_; }

 private:
  std::string sqlstate_;
  bool lost_connection_;
};

// A successful result. Cells are read as text and parsed strictly: a cell of the wrong type (a
// tampered schema) throws StoreError rather than yielding a made-up value; NULL reads as 0 or "".
class Result {
 public:
  Result(PGresult* result, const Where& where) : result_(result), where_(&where) {}
  Result(Result&& other) noexcept : result_(other.result_), where_(other.where_) {
    other.result_ = nullptr;
  }
  Result& operator=(Result&&) = delete;
  ~Result() { PQclear(result_); }

  int rows() const { return PQntuples(result_); }
  // Rows inserted, updated or deleted by the command.
  std::int64_t affected() const;
  bool is_null(int row, int col) const;
  std::string text(int row, int col) const;
  std::int64_t int64(int row, int col) const;
  std::optional<std::int64_t> opt_int64(int row, int col) const;
  double real(int row, int col) const;

 private:
  const char* cell(int row, int col) const;
  [[noreturn]] void bad_cell(int row, int col, std::string_view why) const;

  PGresult* result_;
  const Where* where_;
};

// Parameters are sent as text; nullopt is SQL NULL.
using Param = std::optional<std::string>;
inline Param param(std::int64_t v) { return std::to_string(v); }
inline Param param(const std::optional<std::int64_t>& v) {
  return v ? Param(std::to_string(*v)) : std::nullopt;
}
inline Param param(std::string v) { return Param(std::move(v)); }

// One libpq connection. Not thread-safe: the pool lends it to one thread at a time.
class Connection {
 public:
  // Connects (waiting at most connect_timeout, 10 s unless the URL says otherwise) and
  // configures the session. Throws StoreError naming the masked URL.
  Connection(const std::string& url, const Where& where);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs SQL text (several statements allowed) through the simple-query protocol.
  Result exec(const std::string& sql, std::string_view what = "query failed");
  void prepare(const std::string& name, const std::string& sql);
  Result run(const std::string& name, const std::vector<Param>& params,
             std::string_view what = "query failed");
  // Connected and outside any transaction: safe to hand to the next user.
  bool reusable() const;
  // Rolls back an open transaction, ignoring errors (used while unwinding).
  void rollback_quietly();

 private:
  Result check(PGresult* result, std::string_view what);

  PGconn* conn_ = nullptr;
  const Where& where_;
  bool broken_ = false;
};

// BEGIN ... COMMIT; rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(Connection& conn) : conn_(conn) { conn_.exec("BEGIN"); }
  ~Transaction() {
    if (!done_) conn_.rollback_quietly();
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    done_ = true;
    conn_.exec("COMMIT", "commit failed");
  }

 private:
  Connection& conn_;
  bool done_ = false;
};

// Up to max_size connections, opened on demand by `open` and reused; a caller finding all of
// them busy waits for one. A lease returns its connection when it ends, unless the connection
// broke or was left inside a transaction, in which case it is closed.
class Pool {
 public:
  using Opener = std::function<std::unique_ptr<Connection>()>;
  Pool(std::size_t max_size, Opener open) : max_size_(max_size), open_(std::move(open)) {}

  class Lease {
   public:
    Lease(Pool& pool, std::unique_ptr<Connection> conn) : pool_(&pool), conn_(std::move(conn)) {}
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection& operator*() { return *conn_; }
    Connection* operator->() { return conn_.get(); }
    // Closes the connection instead of returning it.
    void discard();

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // Throws StoreError if a new connection is needed and cannot be opened.
  Lease acquire();
  // Hands in a connection opened outside acquire() (the store's first one).
  void adopt(std::unique_ptr<Connection> conn);
  // Closes every idle connection: after one connection was lost (a server restart), the others
  // most likely were too, and a retry must not pick another dead one.
  void drop_idle();
  std::size_t open_count();

 private:
  void give_back(std::unique_ptr<Connection> conn);

  const std::size_t max_size_;
  const Opener open_;
  std::mutex mu_;
  std::condition_variable freed_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_count_ = 0;  // idle + lent + being opened
};

}  // namespace maas::platform::pg
