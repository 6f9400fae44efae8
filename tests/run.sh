#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing:
# Debian's docker-registry (the real registry the suites start on loopback) and cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # The package's own service would grab :5000; the suites start their registries themselves.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
