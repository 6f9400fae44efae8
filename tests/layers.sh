#!/usr/bin/env bash
# The house rules the compiler does not check by itself, in one command (run by .ci/run):
#  1. the core (pullguard-core) depends directly only on the crates it lists below, and through
#     them on no HTTP, Kubernetes-client or async-runtime crate; its code opens no file, socket
#     or process;
#  2. no import circle between the modules of pullguard or of pullguard-core, file by file and
#     folder by folder (a module's `pub use` of its own children is its front door, not an import;
#     test modules are left out: a test may use whatever it tests with);
#  3. no source file over 600 lines unless its first lines say why (a `//! Size:` line).
# `tests/layers.sh --self-test` runs the circle finder on small trees with known answers.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
if [ "${1:-}" != "--self-test" ]; then
  allowed="base64 futures hex k8s-openapi serde serde-saphyr serde_json sha2 thiserror"
  forbidden="tokio reqwest hyper hyper-util h2 axum axum-server kube kube-client kube-runtime oci-client moka tower rustls ureq async-std smol mio socket2"
  direct="$(cargo tree --locked -p pullguard-core -e normal --depth 1 --prefix none --format '{p}' --target all \
    | awk 'NR > 1 {print $1}' | sort -u)"
  for crate in $direct; do
    if ! grep -qw -- "$crate" <<<"$allowed"; then
      echo "layers: pullguard-core depends on $crate, which is not on its list (tests/layers.sh)" >&2
      status=1
    fi
  done
  every="$(cargo tree --locked -p pullguard-core -e normal --prefix none --format '{p}' --target all | awk '{print $1}' | sort -u)"
  for crate in $forbidden; do
    if grep -qx -- "$crate" <<<"$every"; then
      echo "layers: pullguard-core reaches $crate:" >&2
      cargo tree --locked -p pullguard-core -e normal --target all -i "$crate" >&2 || true
      status=1
    fi
  done
  if grep -rnE 'std::(fs|process)\b|\b(TcpStream|TcpListener|UdpSocket|ToSocketAddrs)\b' webhook/core/src; then
    echo "layers: pullguard-core code does I/O (above)" >&2
    status=1
  fi
  [ "$status" = 0 ] && echo "layers: pullguard-core depends on $allowed only, reaches none of: $forbidden, opens nothing"
fi

python3 - "$@" <<'PY' || status=1
import os, re, sys, tempfile

def strip(text):
    """The code without comments, strings and char literals (their text is no import)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    out.append("\n" if text[i] == "\n" else "")
                    i += 1
        elif re.match(r'(b?r)(#*)"', text[i:i + 20]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'(b?r)(#*)"', text[i:])
            end = '"' + m.group(2)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:i + 4]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)

def without_test_modules(code):
    """Drops `#[cfg(test)] mod x { ... }` blocks; tests may use anything."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[: m.start()] + "\n" * code.count("\n", m.start(), j) + code[j:]

def expand(tree):
    """`crate::{a::{b, c as d}, e}` -> ['crate::a::b', 'crate::a::c', 'crate::e']."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)::\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, body = m.groups()
    parts, depth, cur = [], 0, ""
    for ch in body:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in filter(None, parts):
        out += expand(prefix if part == "self" else f"{prefix}::{part}")
    return out

def modules(root):
    """File -> module path (tuple) for one crate's src folder."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[0] == "bin":
                continue
            # A binary's root beside the library's is a crate of its own.
            if os.path.relpath(path, root) == "main.rs" and os.path.exists(os.path.join(root, "lib.rs")):
                continue
            found[path] = tuple(parts)
    return found

USE = re.compile(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+([^;]*);")
PATH = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::[A-Za-z_]\w*)+)")

def edges_of(root):
    mods = modules(root)
    by_mod = {v: k for k, v in mods.items()}
    edges = {f: set() for f in mods}
    for path, mod in mods.items():
        code = without_test_modules(strip(open(path).read()))
        refs = [(r, bool(m.group(1))) for m in USE.finditer(code) for r in expand(m.group(2))]
        rest = USE.sub("", code)
        refs += [(m.group(1), False) for m in PATH.finditer(rest)]
        for ref, reexport in refs:
            segs = ref.split("::")
            if segs[0] == "crate":
                target, segs = [], segs[1:]
            elif segs[0] in ("super", "self"):
                target = list(mod)
                while segs and segs[0] in ("super", "self"):
                    if segs[0] == "super":
                        target = target[:-1]
                    segs = segs[1:]
            elif tuple(mod) + (segs[0],) in by_mod:
                target = list(mod)  # a child module named without `self::`
            else:
                continue  # another crate, a type's associated item, a local name
            best = tuple(target)
            for seg in segs:
                if tuple(target + [seg]) in by_mod:
                    target.append(seg); best = tuple(target)
                else:
                    break
            if best == mod or best not in by_mod:
                continue
            # A module re-exporting its own children is its front door, not an import.
            if reexport and best[: len(mod)] == mod and len(best) > len(mod):
                continue
            edges[path].add(by_mod[best])
    return mods, edges

def circles(nodes, edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop(); on.discard(w); component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found

def check(root):
    mods, edges = edges_of(root)
    found = [("files", c) for c in circles(mods, edges)]
    # Folder by folder: each top-level module of the crate (a file, or a folder with its files).
    top = {path: os.path.join(root, mod[0]) if mod else os.path.join(root, "lib") for path, mod in mods.items()}
    folder_edges = {}
    for a, targets in edges.items():
        for b in targets:
            if top[a] != top[b]:
                folder_edges.setdefault(top[a], set()).add(top[b])
    found += [("folders", c) for c in circles(set(top.values()), folder_edges)]
    return len(mods), sum(map(len, edges.values())), found

def self_test():
    cases = {
        "a folder circle (a file to a folder and back)": ({
            "lib.rs": "mod platform; mod registry;",
            "platform.rs": "use crate::registry::manifest::Platform;",
            "registry/mod.rs": "pub mod manifest; pub mod transport;",
            "registry/manifest.rs": "pub struct Platform;",
            "registry/transport.rs": "use crate::platform::x;",
        }, True),
        "a parent using a child by its bare name, the child using the parent": ({
            "lib.rs": "mod a;",
            "a/mod.rs": "mod child; use child::C; pub struct P;",
            "a/child.rs": "use super::P; pub struct C;",
        }, True),
        "an expression path into a sibling and back": ({
            "lib.rs": "mod a; mod b;",
            "a.rs": "fn f() { crate::b::g(); }",
            "b.rs": "fn g() { crate::a::f(); }",
        }, True),
        "an alias inside braces": ({
            "lib.rs": "mod a; mod b;",
            "a.rs": "use crate::{b as bee};",
            "b.rs": "use crate::a::X;",
        }, True),
        "comments, strings and tests are no imports": ({
            "lib.rs": "mod a; mod b;",
            "a.rs": "use crate::b::X;",
            "b.rs": '/// see crate::a::f\nconst S: &str = "crate::a::f";\n#[cfg(test)]\nmod tests { use crate::a::X; }\nfn later() {}',
        }, False),
        "a front door re-exporting its children": ({
            "lib.rs": "mod checks;",
            "checks/mod.rs": "mod one; pub use self::one::run; pub struct Subject;",
            "checks/one.rs": "use super::Subject; pub fn run() {}",
        }, False),
    }
    failed = 0
    for name, (files, circular) in cases.items():
        with tempfile.TemporaryDirectory() as root:
            for rel, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                open(os.path.join(root, rel), "w").write(text)
            found = bool(check(root)[2])
        verdict = "ok" if found == circular else "WRONG"
        failed += found != circular
        print(f"layers self-test: {verdict}: {name}: {'circle' if found else 'no circle'}")
    sys.exit(1 if failed else 0)

if sys.argv[1:] == ["--self-test"]:
    self_test()
any_circle = False
for root in ["webhook/src", "webhook/core/src"]:
    count, imports, found = check(root)
    print(f"layers: {root}: {count} modules, {imports} imports between them", flush=True)
    for kind, circle in found:
        any_circle = True
        print(f"layers: import circle ({kind}): " + " <-> ".join(circle), file=sys.stderr, flush=True)
if any_circle:
    sys.exit(1)
print("layers: no import circle, by file or by folder")
PY
[ "${1:-}" = "--self-test" ] && exit "$status"

limit=600
too_long=0
while IFS= read -r file; do
  lines=$(wc -l <"$file")
  if [ "$lines" -gt "$limit" ] && ! head -n 12 "$file" | grep -q '^//! Size:'; then
    echo "layers: $file has $lines lines (over $limit) and no '//! Size:' line saying why" >&2
    too_long=1
  fi
done < <(git ls-files '*.rs')
if [ "$too_long" = 1 ]; then status=1; else echo "layers: no source file over $limit lines without a reason"; fi
exit "$status"
