#!/usr/bin/env bash
# Makes pullguard's serving certificate with openssl alone: a CA (kept and reused) and a
# certificate for the Service pullguard.<namespace>.svc signed by it, then writes the Secret
# manifest and the caBundle patch that deploy/overlays/self-managed consumes.
#
#   certs/make-certs.sh [options] [NAMESPACE]
#
#   NAMESPACE, -n NS     namespace of the Service (default: pullguard)
#   -o, --out DIR        output directory (default: certs/out)
#   --overlay DIR        where the overlay's files go (default:
#                        deploy/overlays/self-managed/generated); --no-overlay: nowhere
#   --days N             validity of the serving certificate in days (default: 365)
#   --ca-days N          validity of a new CA in days (default: 3650)
#   --new-ca             make a new CA even if DIR holds one (default: reuse it)
#   --also-trust FILE    add the CA certificate(s) in FILE to the caBundle (CA rotation)
#
# stdout gets the base64 caBundle only; everything else goes to stderr. Needs OpenSSL 1.1.1
# or later. Files written to DIR: ca.crt, ca.key, tls.crt, tls.key, ca-bundle.pem,
# secret-pullguard-tls.yaml, cabundle-patch.yaml (keys and the Secret are mode 0600).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(dirname "$script_dir")"

namespace=pullguard
out_dir="$script_dir/out"
overlay_dir="$repo_dir/deploy/overlays/self-managed/generated"
days=365
ca_days=3650
new_ca=false
also_trust=""

usage() { sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }
die() { echo "make-certs.sh: $*" >&2; exit 2; }
need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    -n | --namespace) need_value "$@"; namespace="$2"; shift 2 ;;
    -o | --out) need_value "$@"; out_dir="$2"; shift 2 ;;
    --overlay) need_value "$@"; overlay_dir="$2"; shift 2 ;;
    --no-overlay) overlay_dir=""; shift ;;
    --days) need_value "$@"; days="$2"; shift 2 ;;
    --ca-days) need_value "$@"; ca_days="$2"; shift 2 ;;
    --new-ca) new_ca=true; shift ;;
    --also-trust) need_value "$@"; also_trust="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; die "unknown option $1" ;;
    *) namespace="$1"; shift ;;
  esac
done

command -v openssl >/dev/null 2>&1 || die "openssl is not installed"
# A namespace is a DNS label (RFC 1123): it becomes part of the certificate's names.
[[ "$namespace" =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "not a valid namespace: $namespace"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days: not a positive number: $days"
[[ "$ca_days" =~ ^[1-9][0-9]*$ ]] || die "--ca-days: not a positive number: $ca_days"
if [ -n "$also_trust" ]; then
  [ -r "$also_trust" ] || die "--also-trust: cannot read $also_trust"
  grep -q -- '-----BEGIN CERTIFICATE-----' "$also_trust" || die "--also-trust: no PEM certificate in $also_trust"
fi

service=pullguard
dns_names=("$service" "$service.$namespace" "$service.$namespace.svc" "$service.$namespace.svc.cluster.local")

umask 077
mkdir -p "$out_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Read now: with --new-ca, --also-trust may name the CA this run replaces (DIR/ca.crt).
[ -z "$also_trust" ] || cp "$also_trust" "$work/also-trust.pem"

b64() { openssl base64 -A -in "$1"; }

# openssl configuration of our own, so that the distribution's openssl.cnf adds nothing.
cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = @alt_names
[alt_names]
EOF
for i in "${!dns_names[@]}"; do
  echo "DNS.$((i + 1)) = ${dns_names[$i]}" >>"$work/openssl.cnf"
done

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 16)"; }

# The CA: reused when DIR holds one, so renewing the serving certificate keeps the caBundle.
if [ "$new_ca" = false ] && [ -s "$out_dir/ca.crt" ] && [ -s "$out_dir/ca.key" ]; then
  openssl x509 -in "$out_dir/ca.crt" -noout -checkend $((days * 86400)) >/dev/null \
    || die "the CA in $out_dir expires within $days days; run with --new-ca (see certs/README.md, rotation)"
  echo "make-certs.sh: reusing the CA in $out_dir" >&2
else
  new_key "$work/ca.key"
  openssl req -config "$work/openssl.cnf" -new -x509 -sha256 -key "$work/ca.key" \
    -subj "/CN=pullguard-ca ($namespace)" -days "$ca_days" -set_serial "$(serial)" \
    -extensions ca_ext -out "$work/ca.crt"
  mv "$work/ca.key" "$out_dir/ca.key"
  mv "$work/ca.crt" "$out_dir/ca.crt"
  chmod 0644 "$out_dir/ca.crt"
  echo "make-certs.sh: made a new CA in $out_dir" >&2
fi

# The serving certificate: a new key each time.
new_key "$work/tls.key"
openssl req -config "$work/openssl.cnf" -new -sha256 -key "$work/tls.key" \
  -subj "/CN=${dns_names[2]}" -out "$work/tls.csr"
openssl x509 -req -sha256 -in "$work/tls.csr" -CA "$out_dir/ca.crt" -CAkey "$out_dir/ca.key" \
  -set_serial "$(serial)" -days "$days" -extfile "$work/openssl.cnf" -extensions leaf_ext \
  -out "$work/tls.crt" 2>/dev/null
openssl verify -CAfile "$out_dir/ca.crt" -purpose sslserver "$work/tls.crt" >/dev/null \
  || die "the new certificate does not verify against the CA"
mv "$work/tls.key" "$out_dir/tls.key"
mv "$work/tls.crt" "$out_dir/tls.crt"
chmod 0644 "$out_dir/tls.crt"

# The caBundle: this CA, plus any CA still to be trusted during a rotation.
cp "$out_dir/ca.crt" "$work/ca-bundle.pem"
[ -z "$also_trust" ] || cat "$work/also-trust.pem" >>"$work/ca-bundle.pem"
mv "$work/ca-bundle.pem" "$out_dir/ca-bundle.pem"
chmod 0644 "$out_dir/ca-bundle.pem"
ca_bundle="$(b64 "$out_dir/ca-bundle.pem")"

cat >"$work/secret-pullguard-tls.yaml" <<EOF
# Written by certs/make-certs.sh: the serving certificate and its key.
apiVersion: v1
kind: Secret
metadata:
  name: pullguard-tls
  namespace: $namespace
  labels:
    app.kubernetes.io/name: pullguard
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$out_dir/tls.crt")
  tls.key: $(b64 "$out_dir/tls.key")
  ca.crt: $(b64 "$out_dir/ca.crt")
EOF
mv "$work/secret-pullguard-tls.yaml" "$out_dir/secret-pullguard-tls.yaml"

cat >"$work/cabundle-patch.yaml" <<EOF
# Written by certs/make-certs.sh: the CA(s) the API server trusts for pullguard.
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: pullguard
webhooks:
  - name: images.pullguard.io
    clientConfig:
      caBundle: $ca_bundle
EOF
chmod 0644 "$work/cabundle-patch.yaml"
mv "$work/cabundle-patch.yaml" "$out_dir/cabundle-patch.yaml"

if [ -n "$overlay_dir" ]; then
  mkdir -p "$overlay_dir"
  cp -p "$out_dir/secret-pullguard-tls.yaml" "$out_dir/cabundle-patch.yaml" "$overlay_dir/"
  echo "make-certs.sh: wrote secret-pullguard-tls.yaml and cabundle-patch.yaml to $overlay_dir" >&2
  if [ "$namespace" != pullguard ]; then
    echo "make-certs.sh: note: deploy/ installs into namespace pullguard, not $namespace" >&2
  fi
fi

expiry="$(openssl x509 -in "$out_dir/tls.crt" -noout -enddate | cut -d= -f2)"
echo "make-certs.sh: serving certificate for ${dns_names[*]} (valid until $expiry) in $out_dir" >&2
echo "make-certs.sh: caBundle (base64):" >&2
echo "$ca_bundle"
