#include "support/postgres_server.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "support/test_util.h"

namespace maas::test {
namespace {

const char* const kInstallHint =
    "PostgreSQL server programs (initdb, pg_ctl, postgres, psql, pg_dump) not found under "
    "/usr/lib/postgresql/*/bin: run scripts/install-deps.sh (or set MAAS_PG_BIN to their "
    "directory)";

bool has_programs(const std::filesystem::path& dir) {
  for (const char* p : {"initdb", "pg_ctl", "postgres", "psql", "pg_dump"}) {
    if (::access((dir / p).c_str(), X_OK) != 0) return false;
  }
  return true;
}

// MAAS_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin with every program.
std::string find_bin_dir() {
  if (const char* env = std::getenv("MAAS_PG_BIN"); env != nullptr && *env != '\0') {
    if (!has_programs(env)) throw std::runtime_error(kInstallHint);
    return env;
  }
  std::vector<std::pair<int, std::string>> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    auto bin = entry.path() / "bin";
    if (!has_programs(bin)) continue;
    int version = std::atoi(entry.path().filename().c_str());
    found.emplace_back(version, bin.string());
  }
  if (found.empty()) throw std::runtime_error(kInstallHint);
  return std::max_element(found.begin(), found.end())->second;
}

void check(const CommandResult& r, const std::string& what) {
  if (r.exit_code != 0) {
    throw std::runtime_error(what + " failed (exit " + std::to_string(r.exit_code) + "): " + r.err +
                             r.out);
  }
}

void append_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::app);
  if (!out) throw std::runtime_error("cannot append to " + path);
  out << text;
}

}  // namespace

PostgresServer& PostgresServer::shared() {
  static std::mutex mu;
  static std::unique_ptr<PostgresServer> server;
  static std::string failure;
  std::lock_guard lock(mu);
  if (server) return *server;
  // A failed start is not retried by every test: they all fail with the first message.
  if (!failure.empty()) throw std::runtime_error(failure);
  try {
    server.reset(new PostgresServer());
  } catch (const std::exception& e) {
    failure = std::string("cannot start the test PostgreSQL server: ") + e.what();
    throw std::runtime_error(failure);
  }
  return *server;
}

PostgresServer::PostgresServer() : owner_pid_(::getpid()) {
  bin_ = find_bin_dir();
  // Under /tmp: the postgres user must be able to reach it (the build tree may sit below
  // directories it cannot enter), and the socket path must stay under 108 bytes.
  char dir_template[] = "/tmp/maas-pg-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) throw std::runtime_error("mkdtemp failed under /tmp");
  dir_ = dir_template;
  data_ = dir_ + "/data";
  as_postgres_user_ = ::geteuid() == 0;
  if (as_postgres_user_) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) {
      throw std::runtime_error(
          "running as root, but there is no `postgres` system user to run the server as: run "
          "scripts/install-deps.sh");
    }
    if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      throw std::runtime_error("cannot chown " + dir_ + " to postgres");
    }
  }

  // The watchdog: a process of its own session that waits for this process to go away (its
  // pipe closes, however the process ends) and then stops the server, so that a crashed or
  // killed test run leaves no server behind. Everything it runs is built before fork().
  const std::string stop_command = (as_postgres_user_ ? "runuser -u postgres -- " : "") + bin_ +
                                   "/pg_ctl -D " + data_ +
                                   " -m immediate -s stop >/dev/null 2>&1;"
                                   " rm -rf " +
                                   dir_;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  const pid_t watchdog = ::fork();
  if (watchdog < 0) throw std::runtime_error("fork failed");
  if (watchdog == 0) {
    ::setsid();
    ::signal(SIGINT, SIG_IGN);
    const int null_fd = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null_fd, fd);
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != fds[0]) ::close(fd);
    }
    char byte;
    while (::read(fds[0], &byte, 1) != 0) {
    }
    const char* argv[] = {"/bin/sh", "-c", stop_command.c_str(), nullptr};
    ::execv("/bin/sh", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(fds[0]);
  watchdog_fd_ = fds[1];

  try {
    std::vector<std::string> initdb = {bin_ + "/initdb", "-D",         data_,      "-U",
                                       "postgres",       "-A",         "trust",    "-E",
                                       "UTF8",           "--locale=C", "--no-sync"};
    if (as_postgres_user_) initdb.insert(initdb.begin(), {"runuser", "-u", "postgres", "--"});
    check(run_command(initdb), "initdb");
    // Appended as root, the files keep their owner. fsync=off: the tests check what the store
    // asks of the server (synchronous commits), not the server's own crash safety, and
    // CREATE DATABASE per test is twice as fast without it.
    append_file(data_ + "/postgresql.conf", "\nlisten_addresses = ''\nunix_socket_directories = '" +
                                                dir_ +
                                                "'\nmax_connections = 60\n"
                                                "fsync = off\n");
    // The superuser may connect freely; every other role must give its password.
    write_file(data_ + "/pg_hba.conf", "local all postgres trust\nlocal all all scram-sha-256\n");
    start();
  } catch (...) {
    shutdown_now();
    throw;
  }
}

PostgresServer::~PostgresServer() { shutdown_now(); }

void PostgresServer::shutdown_now() {
  // A child forked by a test (and exiting normally) must not stop its parent's server.
  if (::getpid() != owner_pid_ || dir_.empty()) return;
  std::vector<std::string> argv = {bin_ + "/pg_ctl", "-D", data_, "-m", "immediate", "-s", "stop"};
  if (as_postgres_user_) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  if (std::filesystem::exists(data_ + "/postmaster.pid")) run_command(argv);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  dir_.clear();
  if (watchdog_fd_ >= 0) ::close(watchdog_fd_);
  watchdog_fd_ = -1;
}

void PostgresServer::start() {
  std::vector<std::string> argv = {
      bin_ + "/pg_ctl", "-D", data_, "-l", dir_ + "/server.log", "-w", "-t", "60", "-s", "start"};
  if (as_postgres_user_) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  auto r = run_command(argv);
  if (r.exit_code != 0) {
    throw std::runtime_error("pg_ctl start failed: " + r.err + r.out + "\nserver log:\n" + log());
  }
}

void PostgresServer::stop() {
  std::vector<std::string> argv = {bin_ + "/pg_ctl", "-D", data_, "-m", "fast", "-w", "-s", "stop"};
  if (as_postgres_user_) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  check(run_command(argv), "pg_ctl stop");
}

void PostgresServer::restart() {
  stop();
  start();
}

std::string PostgresServer::log() const {
  try {
    return read_file(dir_ + "/server.log");
  } catch (const std::exception&) {
    return "";
  }
}

std::string PostgresServer::url(const std::string& db, const std::string& user,
                                const std::string& password) const {
  std::string u = "postgresql:///" + db + "?host=" + dir_ + "&user=" + user;
  if (!password.empty()) u += "&password=" + password;
  return u;
}

std::string PostgresServer::psql(const std::string& db, const std::string& sql) const {
  auto r = run_command({bin_ + "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", dir_,
                        "-U", "postgres", "-d", db, "-f", "-"},
                       sql);
  check(r, "psql " + sql.substr(0, 200));
  return r.out;
}

std::string PostgresServer::dump(const std::string& db) const {
  auto r = run_command({bin_ + "/pg_dump", "-h", dir_, "-U", "postgres", "-d", db});
  check(r, "pg_dump " + db);
  return r.out;
}

std::string PostgresServer::create_database(const std::string& owner) {
  const std::string name = "maas_test_" + std::to_string(next_database_++);
  psql("postgres", "CREATE DATABASE " + name +
                       " TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C' "
                       "OWNER " +
                       owner);
  return name;
}

}  // namespace maas::test
