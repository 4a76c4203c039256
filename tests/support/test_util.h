// Helpers for tests: scratch files, running the maas binary, reading shared material.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace maas::test {

// ../shared next to the source tree (CI lays a copy there).
std::string shared_dir();
// Path of the built maas binary.
std::string maas_binary();
// A fresh directory under the build tree, unique to the calling test.
std::string scratch_dir();

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

struct CommandResult {
  int exit_code = -1;  // the process's exit status, or 128+signal if it was killed
  std::string out;
  std::string err;
};
// Runs argv (no shell) with optional stdin, capturing stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& stdin_data = "");
// Runs a shell command line (for pipelines and interpreters such as /usr/bin/python3).
CommandResult run_shell(const std::string& command_line, const std::string& stdin_data = "");

}  // namespace maas::test
