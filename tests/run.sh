#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing:
# Debian's docker-registry (the real registry the suites start on loopback) and cargo-nextest,
# and provides the real control plane (tests/envtest.sh): kube-apiserver and
# kube-controller-manager unpacked from ../shared/envtest into a cache outside the clone,
# checked against SHA256SUMS, with Debian's etcd-server; the tests find them through
# KUBEBUILDER_ASSETS.
#
# KUBEBUILDER_ASSETS already set (a folder with kube-apiserver, etcd, kube-controller-manager,
# as setup-envtest makes it): used as it is. Without the binaries, the control-plane tests say
# so and are skipped; under CI=true they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

. tests/packages.sh
install_missing tests/run.sh docker-registry:docker-registry

. tests/envtest.sh
provide_envtest
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "tests/run.sh: control plane from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
elif [ "${CI:-}" = "true" ]; then
  echo "tests/run.sh: no control plane (no KUBEBUILDER_ASSETS, no ../shared/envtest): CI=true needs it" >&2
  exit 1
else
  skipped_control_plane=1
  skipped_log="$(mktemp)"
  export PULLGUARD_SKIPPED_LOG="$skipped_log"
  cat >&2 <<'MSG'
tests/run.sh: WARNING: no control plane: the tests against a real kube-apiserver will be SKIPPED.
  Provide it with a folder holding kube-apiserver, etcd and kube-controller-manager
  (setup-envtest's layout) in KUBEBUILDER_ASSETS, or with ../shared/envtest beside the clone.
MSG
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "tests/run.sh: installing cargo-nextest" >&2
  cargo install --locked cargo-nextest >/dev/null 2>&1 || true
fi

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi
if [ "${skipped_control_plane:-0}" = 1 ]; then
  echo "tests/run.sh: WARNING: these tests were SKIPPED for want of a control plane (see above):" >&2
  sort -u "$skipped_log" | sed 's/^/  /' >&2
  rm -f "$skipped_log"
fi
exit "$status"
