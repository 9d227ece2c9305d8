#!/usr/bin/env python3
"""Checks that the module graph of `src/` is the architecture README.md draws.

usage: tools/layers.py [SRC_DIR]   (default: src; exits 1 on any violation)

Every file is a module (`src/a/b.rs` and `src/a/b/mod.rs` are `crate::a::b`). An edge A -> B is
any `use crate::...` or `use super::...` in A, or an inline `crate::x::y` path, that names B or
an item of B (test modules count too). Three rules:

1. Layers: each top-level folder of `src/` has a rank in LAYERS below; an edge between two
   folders must point to a lower layer (a higher index). Peers never import each other.
2. No circles, inside a folder too. A folder's `mod.rs` holds what the files beside it build
   on (or only declares them); it never names their items, so they can import it freely.
3. The root of `src/` holds only the entry files in ROOT.

The reading is textual (comments skipped by line, strings not parsed): a reading aid that CI
runs, not a compiler.
"""
import os
import re
import sys

# Top to bottom. An arrow may only point down this list.
LAYERS = [
    "cli",       # clap types and one handler per command
    "error",     # how a command fails, and its exit code
    "report",    # the HTML report (uses diagnose and ops)
    "diagnose",  # why a model predicts one class
    "ops",       # audit, export, predict, cache commands
    "pipeline",  # spec, plan, dag, fingerprints, dirty reasons, executor
    "stage",     # the Kind trait and one file per stage kind
    "check",     # validate's and audit's analyses, metrics
    "model",     # layers, optimizers, training, safetensors
    "cache",     # artifact store and stat cache
    "data",      # dataset format, lineage, decode, hashes, folder walks
    "kernel",    # pure pixel math
    "source",    # YAML with positions, diagnostics, typed fields
]
ROOT = {"main.rs", "lib.rs", "error.rs"}


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            mods[tuple(rel)] = os.path.join(root, f)
    return mods


def expand(prefix, body):
    body = body.strip()
    if body.startswith("{") and body.endswith("}"):
        depth, cur, parts = 0, "", []
        for ch in body[1:-1]:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        out = []
        for p in parts:
            if p.strip():
                out += expand(prefix, p)
        return out
    head, sep, rest = body.partition("::")
    head = head.split(" as ")[0].strip()
    if not sep:
        return [prefix + ([head] if head not in ("self", "*", "") else [])]
    return expand(prefix + [head], rest)


def edges_of(mods):
    def resolve(path):
        for k in range(len(path), -1, -1):
            if tuple(path[:k]) in mods:
                return tuple(path[:k])
        return None

    edges = {}
    for mod, path in mods.items():
        text = "\n".join(
            line
            for line in open(path, encoding="utf-8", errors="replace").read().splitlines()
            if not line.lstrip().startswith("//")
        )
        found = []
        for m in re.finditer(r"\buse\s+((?:crate|super)(?:::[\s\S]*?))\s*;", text):
            tree = re.sub(r"\s+", " ", m.group(1))
            head, _, rest = tree.partition("::")
            base = [] if head == "crate" else list(mod[:-1])
            found += expand(base, rest)
        for m in re.finditer(r"(?<![\w:])crate((?:::\w+)+)", text):
            found.append(m.group(1).strip(":").split("::"))
        for child in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            for m in re.finditer(rf"(?<![\w:]){child}::(\w+)", text):
                found.append(list(mod) + [child, m.group(1)])
        for p in found:
            tgt = resolve(p)
            if tgt is not None and tgt != mod and tgt != ():
                edges.setdefault(mod, set()).add(tgt)
    return edges


def circles(mods, edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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

    sys.setrecursionlimit(10000)
    for v in list(mods):
        if v not in index:
            visit(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    mods = modules(src)
    edges = edges_of(mods)
    name = lambda m: "::".join(m) or "crate"
    problems = []
    for f in sorted(os.listdir(src)):
        if os.path.isfile(os.path.join(src, f)) and f not in ROOT:
            problems.append(f"src/{f}: the root holds only {', '.join(sorted(ROOT))}; put it in a layer's folder")
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    for mod in mods:
        if mod and mod[0] not in rank:
            problems.append(f"{name(mod)}: folder `{mod[0]}` is in no layer; add it to LAYERS in tools/layers.py")
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            if not a or a[0] == b[0] or a[0] not in rank or b[0] not in rank:
                continue
            if rank[a[0]] >= rank[b[0]]:
                problems.append(f"{name(a)} -> {name(b)}: `{a[0]}` may not import `{b[0]}` (same or higher layer)")
    for comp in circles(mods, edges):
        inner = [f"{name(a)} -> {name(b)}" for a in comp for b in sorted(edges.get(a, ())) if b in comp]
        problems.append("circle: " + "; ".join(inner))
    for p in problems:
        print(p)
    n_edges = sum(len(t) for t in edges.values())
    print(f"layers: {len(mods)} modules, {n_edges} imports, {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
