#!/usr/bin/env bash
# The house rules the compiler does not check by itself, in one command (run by .ci/run):
#  1. the core (pullguard-core) depends on no HTTP, Kubernetes-client or async-runtime crate,
#     directly or through another crate;
#  2. no import circle between the modules of pullguard and pullguard-core (a module's
#     `pub use` of its own children is its tree's front door, not an import; any other use is);
#  3. no source file over 600 lines unless its first lines say why (a `//! Size:` line).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
forbidden="tokio reqwest hyper axum axum-server kube kube-client kube-runtime oci-client moka tower rustls"
deps="$(cargo tree --locked -p pullguard-core -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)"
for crate in $forbidden; do
  if grep -qx "$crate" <<<"$deps"; then
    echo "layers: pullguard-core depends on $crate:" >&2
    cargo tree --locked -p pullguard-core -e normal -i "$crate" >&2 || true
    status=1
  fi
done
[ "$status" = 0 ] && echo "layers: pullguard-core depends on none of: $forbidden"

python3 - webhook/src webhook/core/src <<'PY' || status=1
import os, re, sys

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
            found[path] = tuple(parts)
    return found

USE = re.compile(r"(\bpub(?:\([^)]*\))?\s+)?\buse\s+((?:crate|super|self)\b[^;]*);", re.S)
INLINE = re.compile(r"\b((?:crate|super)(?:::\w+)+)")
INLINE_MOD = re.compile(r"\bmod\s+\w+\s*\{")

def expand(tree):
    """`crate::{a::{b, c}, d}` -> ['crate::a::b', 'crate::a::c', 'crate::d']."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)::\{(.*)\}$", tree)
    if not m:
        return [tree.split(" as ")[0]]
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

circles = []
for root in sys.argv[1:]:
    mods = modules(root)
    by_path = {v: k for k, v in mods.items()}
    edges = {f: set() for f in mods}
    for path, mod in mods.items():
        text = open(path).read()
        is_dir_module = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        # `super` inside an inline module (`mod tests { use super::*; }`) is the file's module.
        inline = [m.end() for m in INLINE_MOD.finditer(text)]
        nesting = lambda at: sum(1 for start in inline if start < at)
        refs = [(r, bool(m.group(1)), nesting(m.start())) for m in USE.finditer(text) for r in expand(m.group(2))]
        refs += [(m.group(1), False, nesting(m.start())) for m in INLINE.finditer(text)]
        for ref, reexport, depth in refs:
            segs = ref.split("::")
            while depth and segs[0] == "super":
                segs = ["self"] + segs[1:] if len(segs) == 1 else segs[1:]
                depth -= 1
            base = list(mod) if is_dir_module else list(mod[:-1]) + [mod[-1]]
            if segs[0] == "crate":
                target, rest = [], segs[1:]
            else:
                target = base[:]
                rest = segs
                while rest and rest[0] in ("super", "self"):
                    if rest[0] == "super":
                        target = target[:-1]
                    rest = rest[1:]
            # The longest module the path names.
            best = tuple(target)
            for seg in rest:
                if tuple(target + [seg]) in by_path:
                    target.append(seg); best = tuple(target)
                else:
                    break
            if best == mod or best not in by_path:
                continue
            # A module re-exporting its own children is its tree, not an import.
            if reexport and best[: len(mod)] == mod and len(best) > len(mod):
                continue
            edges[path].add(by_path[best])
    # Tarjan's strongly connected components.
    index, low, stack, on, counter = {}, {}, [], set(), [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in edges[v]:
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
                circles.append(sorted(component))
    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    print(f"layers: {root}: {len(mods)} modules, {sum(map(len, edges.values()))} imports between them", flush=True)
if circles:
    for circle in circles:
        print("layers: import circle: " + " <-> ".join(circle), file=sys.stderr)
    sys.exit(1)
print("layers: no import circle")
PY

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
