#!/usr/bin/env bash
# Installs, by Debian package name, everything maas needs to build and test.
# Idempotent: installs only what is missing, and runs apt-get update only when it must.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  clang libclang-rt-14-dev clang-format clang-tidy
  libhwy-dev libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev
  libpcre2-dev libyaml-cpp-dev libboost1.81-dev libssl-dev libsqlite3-dev libpq-dev postgresql
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev python3 python3-sentencepiece python3-numpy python3-jinja2 curl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js and npm run the reference tokenizers and client tests; a machine may already have them
# outside Debian's packages.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
