# Sourced by tests/run.sh and bench/run.sh: provides the real control plane the suites start.
# Sets KUBEBUILDER_ASSETS (the envtest convention: a folder with kube-apiserver, etcd,
# kube-controller-manager and kubectl) unless it is set already, unpacking kube-apiserver and
# kube-controller-manager from ../shared/envtest (PULLGUARD_ENVTEST_SOURCE) into a cache outside
# the clone (PULLGUARD_ENVTEST_CACHE, default ~/.cache/pullguard/envtest), each checked against
# SHA256SUMS; etcd is Debian's etcd-server, installed when missing. Leaves KUBEBUILDER_ASSETS
# unset when there is nothing to provide it from.

provide_envtest() {
  [ -n "${KUBEBUILDER_ASSETS:-}" ] && return 0
  local source="${PULLGUARD_ENVTEST_SOURCE:-../shared/envtest}"
  [ -f "$source/SHA256SUMS" ] || return 0
  local need=()
  command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
  command -v xz >/dev/null 2>&1 || need+=(xz-utils)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "envtest: installing ${need[*]}" >&2
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    # etcd-server's own service is not started here; the suites run their own etcd.
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  local assets
  assets="${PULLGUARD_ENVTEST_CACHE:-$HOME/.cache/pullguard/envtest}/$(sha256sum "$source/SHA256SUMS" | cut -c1-16)"
  mkdir -p "$assets"
  local binary expected
  for binary in kube-apiserver kube-controller-manager; do
    expected=$(awk -v name="$binary" '$2 == name {print $1}' "$source/SHA256SUMS")
    if [ ! -x "$assets/$binary" ] || [ "$(sha256sum "$assets/$binary" | cut -d' ' -f1)" != "$expected" ]; then
      echo "envtest: unpacking $binary into $assets" >&2
      (cd "$source" && grep " $binary.xz\$" SHA256SUMS | sha256sum -c --quiet -) || return 1
      xz -dc "$source/$binary.xz" > "$assets/$binary.partial"
      if [ "$(sha256sum "$assets/$binary.partial" | cut -d' ' -f1)" != "$expected" ]; then
        echo "envtest: $binary does not match $source/SHA256SUMS" >&2
        return 1
      fi
      chmod +x "$assets/$binary.partial"
      mv "$assets/$binary.partial" "$assets/$binary"
    fi
  done
  ln -sf "$(command -v etcd)" "$assets/etcd"
  ln -sf "$(command -v kubectl)" "$assets/kubectl"
  export KUBEBUILDER_ASSETS="$assets"
}
