#!/usr/bin/env bash
# The benchmark behind "pullguard never slows a rollout": installs what it needs when it is
# missing (h2load, skopeo, Debian's docker-registry, the control plane of tests/envtest.sh), builds in release mode, runs every
# measurement on loopback (bounded, self-stopping) and prints one markdown table on stdout.
# Progress goes to stderr. Extra arguments go to `pullguard-bench run` (see --help there).
# Set PULLGUARD_BENCH_OUT=FILE to keep a copy of the table.
set -euo pipefail
cd "$(dirname "$0")/.."

. tests/packages.sh
install_missing bench/run.sh h2load:nghttp2-client skopeo:skopeo docker-registry:docker-registry

# The warm part reads a real kube-apiserver, as pullguard does when deployed.
. tests/envtest.sh
provide_envtest

# One cargo invocation, so the dependencies shared by both binaries compile once.
cargo build --release --locked -p pullguard -p pullguard-bench

args=(run --pullguard target/release/pullguard)
[ -n "${PULLGUARD_BENCH_OUT:-}" ] && args+=(--output "$PULLGUARD_BENCH_OUT")

# A hard stop on top of the run's own budget: timeout signals the whole process group, so the
# servers, registries, h2load and skopeo it started end with it.
exec timeout --kill-after=10s 540s target/release/pullguard-bench "${args[@]}" "$@"
