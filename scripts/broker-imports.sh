#!/usr/bin/env bash
# The broker's module graph, checked: prints which of the top-level modules
# of crates/broker/src import which (from `crate::`, `super::` and `self::`
# paths, tests included), lower layers first, and fails when modules import
# each other round a cycle: between top-level modules, or between the
# modules of one folder. A path through a re-export (`pub use`) counts as an
# import of the module the item comes from. It also fails when a source file
# is missing from the "Where is the code?" table of ARCHITECTURE.md beside
# SRC_DIR.
#
#   scripts/broker-imports.sh [SRC_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "${1:-crates/broker/src}" <<'PY'
import os
import re
import sys

root = sys.argv[1]

# Module path (a tuple of names) -> source file.
files = {}
for folder, _, names in os.walk(root):
    rel = os.path.relpath(folder, root)
    parts = () if rel == "." else tuple(rel.split(os.sep))
    for name in names:
        if not name.endswith(".rs"):
            continue
        stem = name[:-3]
        if parts == () and stem in ("lib", "main"):
            files[()] = os.path.join(folder, name)
        elif stem == "mod":
            files[parts] = os.path.join(folder, name)
        else:
            files[parts + (stem,)] = os.path.join(folder, name)

STRING = re.compile(r'r(#*)"(?:.|\n)*?"\1|b?"(?:\\.|[^"\\])*"|b?\'(?:\\.|[^\'\\])\'')
COMMENT = re.compile(r"//[^\n]*|/\*(?:.|\n)*?\*/")
TOKEN = re.compile(r"\bmod\s+(\w+)\s*\{|(\{)|(\})|\b(crate|super|self)::")


def code_of(path):
    text = open(path, encoding="utf-8").read()
    # Strings first (they may hold `//`), then comments.
    text = STRING.sub('""', text)
    return COMMENT.sub(" ", text)


def parse_tree(text, i):
    """Parses a use tree (or a path) at text[i:]; returns (paths, end)."""
    paths = []
    prefix = []
    while True:
        m = re.compile(r"\s*(\w+|\*|\{)").match(text, i)
        if not m:
            break
        tok = m.group(1)
        i = m.end()
        if tok == "{":
            while True:
                sub, i = parse_tree(text, i)
                paths += [prefix + p for p in sub]
                m = re.compile(r"\s*([,}])").match(text, i)
                if not m:
                    return paths, i
                i = m.end()
                if m.group(1) == "}":
                    return paths, i
                if re.compile(r"\s*\}").match(text, i):
                    i = re.compile(r"\s*\}").match(text, i).end()
                    return paths, i
        prefix.append(tok)
        m = re.compile(r"\s*::").match(text, i)
        if not m:
            break
        i = m.end()
    if prefix:
        alias = re.compile(r"\s+as\s+(\w+)").match(text, i)
        if alias:
            i = alias.end()
            prefix = prefix + ["as " + alias.group(1)]
        paths.append(prefix)
    return paths, i


def references(path, module):
    """(inner module, absolute path) for every path the file names."""
    text = code_of(path)
    stack = []  # (inline module name, brace depth at which it closes)
    depth = 0
    refs = []
    skip = 0  # the end of the last path read: tokens inside it are its own
    for m in TOKEN.finditer(text):
        if m.start() < skip:
            continue
        if m.group(1):
            depth += 1
            stack.append((m.group(1), depth))
        elif m.group(2):
            depth += 1
        elif m.group(3):
            if stack and stack[-1][1] == depth:
                stack.pop()
            depth -= 1
        else:
            here = module + tuple(n for n, _ in stack)
            head, j = m.group(4), m.end()
            if head == "crate":
                base = ()
            elif head == "self":
                base = here
            else:
                # `super::super::x` climbs once per `super`.
                base = here[:-1]
                while text.startswith("super::", j):
                    base, j = base[:-1], j + len("super::")
            tree, skip = parse_tree(text, j)
            refs += [(here, base + tuple(p)) for p in tree]
    return refs, stack


modules = set(files)
inline = set()
refs = []
for module, path in files.items():
    found, _ = references(path, module)
    refs += found
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", code_of(path)):
        inline.add(module + (m.group(1),))
modules |= inline

# Re-exports: (module, exported name) -> the path it comes from.
reexports = {}
PUB_USE = re.compile(r"\bpub(?:\s*\([^)]*\))?\s+use\s+")
for module, path in files.items():
    text = code_of(path)
    for m in PUB_USE.finditer(text):
        tree, _ = parse_tree(text, m.end())
        for p in tree:
            name = p[-1][3:] if p[-1].startswith("as ") else p[-1]
            p = [s for s in p if not s.startswith("as ")]
            if p[0] == "crate":
                target = tuple(p[1:])
            elif p[0] == "self":
                target = module + tuple(p[1:])
            elif p[0] == "super":
                target = module[:-1] + tuple(p[1:])
            elif module + (p[0],) in modules:
                target = module + tuple(p)
            else:
                continue
            reexports[(module, name)] = target


def resolve(target, seen=0):
    """The path with every re-export along it replaced by its source."""
    for n in range(1, len(target) + 1):
        key = (target[: n - 1], target[n - 1])
        if key in reexports and seen < 10 and target[:n] not in modules:
            return resolve(reexports[key] + target[n:], seen + 1)
    return target


edges = {}  # level -> {from: set(to)}
for here, target in refs:
    target = tuple(s for s in target if not s.startswith("as "))
    target = resolve(target)
    common = 0
    while common < min(len(here), len(target)) and here[common] == target[common]:
        common += 1
    if common == len(here) or common == len(target):
        continue  # a module naming its own items, an ancestor or a descendant
    level = here[:common]
    if level + (target[common],) not in modules:
        continue  # an item of the common ancestor itself
    source, dest = here[common], target[common]
    edges.setdefault(level, {}).setdefault(source, set()).add(dest)


def cycles(graph):
    """Each strongly connected component with more than one module."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


top = edges.get((), {})
nodes = sorted({m[0] for m in modules if len(m) == 1})
# Lower layers first: a module after everything it imports (when acyclic).
order, done = [], set()


def place(v, path=()):
    if v in done or v in path:
        return
    for w in sorted(top.get(v, ())):
        place(w, path + (v,))
    done.add(v)
    order.append(v)


for v in nodes:
    place(v)
width = max(len(v) for v in nodes)
for v in order:
    deps = ", ".join(sorted(top.get(v, ())))
    print(f"{v:<{width}} -> {deps}" if deps else f"{v:<{width}}")

failed = False
for level in sorted(edges):
    for comp in cycles(edges[level]):
        failed = True
        where = "crate" if level == () else "crate::" + "::".join(level)
        graph = edges[level]
        links = [
            f"{a} -> {b}" for a in comp for b in sorted(graph.get(a, ())) if b in comp
        ]
        print(f"import cycle among {where}'s modules: {', '.join(links)}", file=sys.stderr)
architecture = os.path.join(os.path.dirname(os.path.abspath(root)), "ARCHITECTURE.md")
if os.path.exists(architecture):
    text = open(architecture, encoding="utf-8").read()
    table = text[text.find("## Where is the code?"):]
    crate = os.path.dirname(os.path.abspath(root))
    for path in sorted(files.values()):
        rel = os.path.relpath(path, crate)
        if f"`{rel}`" not in table:
            failed = True
            print(f"{rel} is not in {architecture}'s \"Where is the code?\"", file=sys.stderr)
sys.exit(1 if failed else 0)
PY
