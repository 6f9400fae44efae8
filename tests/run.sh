#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing:
# Debian's docker-registry (the real registry the suites start on loopback), Debian's
# etcd-server (the control plane's store) and cargo-nextest, and provides the real control
# plane: kube-apiserver and kube-controller-manager unpacked from ../shared/envtest into a cache
# outside the clone, checked against SHA256SUMS, found by the tests through KUBEBUILDER_ASSETS.
#
# KUBEBUILDER_ASSETS already set (a folder with kube-apiserver, etcd, kube-controller-manager,
# as setup-envtest makes it): used as it is. Without the binaries, the control-plane tests say
# so and are skipped; under CI=true they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && ! command -v etcd >/dev/null 2>&1; then
  need_apt+=(etcd-server)
fi
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "tests/run.sh: installing ${need_apt[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # The package's own service would grab :5000; the suites start their registries themselves.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

envtest_source="${PULLGUARD_ENVTEST_SOURCE:-../shared/envtest}"
if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -f "$envtest_source/SHA256SUMS" ]; then
  assets="${PULLGUARD_ENVTEST_CACHE:-$HOME/.cache/pullguard/envtest}/$(sha256sum "$envtest_source/SHA256SUMS" | cut -c1-16)"
  mkdir -p "$assets"
  for binary in kube-apiserver kube-controller-manager; do
    expected=$(awk -v name="$binary" '$2 == name {print $1}' "$envtest_source/SHA256SUMS")
    if [ ! -x "$assets/$binary" ] || [ "$(sha256sum "$assets/$binary" | cut -d' ' -f1)" != "$expected" ]; then
      echo "tests/run.sh: unpacking $binary into $assets" >&2
      (cd "$envtest_source" && grep " $binary.xz\$" SHA256SUMS | sha256sum -c --quiet -)
      xz -dc "$envtest_source/$binary.xz" > "$assets/$binary.partial"
      [ "$(sha256sum "$assets/$binary.partial" | cut -d' ' -f1)" = "$expected" ] || {
        echo "tests/run.sh: $binary does not match $envtest_source/SHA256SUMS" >&2
        exit 1
      }
      chmod +x "$assets/$binary.partial"
      mv "$assets/$binary.partial" "$assets/$binary"
    fi
  done
  ln -sf "$(command -v etcd)" "$assets/etcd"
  ln -sf "$(command -v kubectl)" "$assets/kubectl"
  export KUBEBUILDER_ASSETS="$assets"
fi
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  echo "tests/run.sh: control plane from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
elif [ "${CI:-}" = "true" ]; then
  echo "tests/run.sh: no control plane (no KUBEBUILDER_ASSETS, no $envtest_source): CI=true needs it" >&2
  exit 1
else
  skipped_control_plane=1
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
  echo "tests/run.sh: WARNING: the real-control-plane tests were SKIPPED (see above)." >&2
fi
exit "$status"
