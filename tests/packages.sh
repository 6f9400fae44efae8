# Sourced by tests/run.sh and bench/run.sh: installs the Debian packages of the commands that are
# missing. install_missing CALLER command:package [command:package ...]
install_missing() {
  local caller="$1"
  shift
  local needed=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || needed+=("${pair#*:}")
  done
  [ "${#needed[@]}" -gt 0 ] || return 0
  echo "$caller: installing ${needed[*]}" >&2
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # Package services (docker-registry's would take :5000) are not what the suites use: they start
  # their own processes on ports of their own.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
}
