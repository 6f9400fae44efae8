#!/usr/bin/env bash
# Load and faults together (issue 7): `bash tests/soak.sh [SECONDS]` (default 300).
#
# Builds the release `pullguard` and the `soak` driver, then runs the driver: a real registry
# (Debian's docker-registry) and `pullguard serve` as processes of their own on loopback, the
# closed-loop maximum throughput measured for 10 s, then an open-loop load at half of it for
# SECONDS while the registry is killed and restarted (20 s every 60 s) and the serving
# certificate is rotated (every 45 s) through a kubelet-style `..data` symlink swap. It prints a
# figures table and `soak: passed` or `soak: FAILED (...)`, and exits non-zero on failure.
#
# Bounded: the driver stops itself; a hard `timeout` of SECONDS + 60 s ends it (and, through its
# process group, the registry and pullguard) if it does not. Logs stay in target/soak/.
# SOAK_MAX_RATE=N caps the open-loop rate (req/s) on a machine shared with other work.
# SOAK_PROFILE=dev soaks the debug build instead (what `.ci/run` does: no release build to wait
# for; the rate follows, since it is half of the build's own measured maximum).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-300}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: bash tests/soak.sh [SECONDS]" >&2; exit 2 ;;
esac

if ! command -v docker-registry >/dev/null 2>&1; then
  echo "tests/soak.sh: docker-registry missing; run bash tests/run.sh once (it installs it)" >&2
  exit 2
fi

profile="${SOAK_PROFILE:-release}"
case "$profile" in
  release) out=target/release ;;
  dev) out=target/debug ;;
  *) echo "tests/soak.sh: SOAK_PROFILE is release or dev" >&2; exit 2 ;;
esac
cargo build --profile "$profile" --locked -q -p pullguard -p pullguard-tests --bin pullguard --bin soak

work=target/soak
rm -rf "$work"
mkdir -p "$work"
args=(--seconds "$seconds" --pullguard "$out/pullguard" --work "$work")
if [ -n "${SOAK_MAX_RATE:-}" ]; then
  args+=(--max-rate "$SOAK_MAX_RATE")
fi

# `timeout` runs the driver in a process group of its own (the group id is its pid) and signals
# the whole group, so the registry and pullguard the driver started go too. SIGTERM first: the
# driver then kills its children and reports; SIGKILL 10 s later if it does not. A Ctrl-C or
# SIGTERM to this script is passed on to that group the same way.
limit=$((seconds + 60))
timeout --kill-after=10 "$limit" "$out/soak" "${args[@]}" &
soak_pid=$!
trap 'kill -TERM -- "-$soak_pid" 2>/dev/null || true' INT TERM
status=0
while :; do
  if wait "$soak_pid"; then status=0; else status=$?; fi
  # wait also returns when a trapped signal arrives; only a finished group ends the loop.
  kill -0 "$soak_pid" 2>/dev/null || break
done
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "soak: FAILED (hard timeout after $limit s)"
fi
exit "$status"
