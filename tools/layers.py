#!/usr/bin/env python3
"""Import circles among libksf's modules.

A module is a .c file together with the .h of the same name; module A uses module B
when A's .c or .h includes B's header. A circle is a strongly connected set of two or
more modules. Prints each circle and exits 1 when there is one; exits 0 when there are
none. With --layers, also checks the layer order (LAYERS, lowest first): an include
from a folder to a higher one, or between server/ and client/, is printed and makes
the exit status 1. Usage: tools/layers.py [framework-dir] [--graph] [--layers]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules(root):
    """Module name (path without extension, relative to root) -> its files."""
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(('.c', '.h')):
                path = os.path.join(dirpath, name)
                mod = os.path.relpath(path, root)[:-2]
                found.setdefault(mod, []).append(path)
    return found


def resolve(include, src, root, mods):
    """The module a quoted include names, looked up beside the file, then from root."""
    for base in (os.path.dirname(src), root):
        cand = os.path.relpath(os.path.normpath(os.path.join(base, include)), root)
        if cand.endswith('.h') and cand[:-2] in mods:
            return cand[:-2]
    return None


def graph(root):
    mods = modules(root)
    edges = {m: set() for m in mods}
    for mod, files in mods.items():
        for path in files:
            with open(path, encoding='utf-8') as f:
                for inc in INCLUDE.findall(f.read()):
                    dep = resolve(inc, path, root, mods)
                    if dep and dep != mod:
                        edges[mod].add(dep)
    return edges


def circles(edges):
    """Tarjan's strongly connected components of two or more modules."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# The layer folders, lowest first; folders of one rank must not include each other.
LAYERS = [['base'], ['codec'], ['obs'], ['kafka'], ['group'], ['server', 'client']]


def rank(mod):
    """The layer of a module (its folder), or None outside the layer folders."""
    top = mod.split(os.sep)[0]
    for i, folders in enumerate(LAYERS):
        if top in folders:
            return i
    return None


def upward(edges):
    """Includes against the layer order: (module, included module), sorted."""
    bad = []
    for mod in sorted(edges):
        for dep in sorted(edges[mod]):
            a, b = rank(mod), rank(dep)
            if a is None or b is None:
                continue
            if b > a or (a == b and mod.split(os.sep)[0] != dep.split(os.sep)[0]):
                bad.append((mod, dep))
    return bad


def main(argv):
    args = [a for a in argv if not a.startswith('--')]
    root = args[0] if args else os.path.join(os.path.dirname(__file__), '..', 'framework')
    edges = graph(root)
    if '--graph' in argv:
        for m in sorted(edges):
            print(f"{m}: {' '.join(sorted(edges[m]))}")
    found = circles(edges)
    for comp in found:
        inner = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        print(f"circle of {len(comp)}: {', '.join(comp)}")
        for e in inner:
            print(f"    {e}")
    print(f"{len(found)} circle(s) among {len(edges)} modules")
    bad = upward(edges) if '--layers' in argv else []
    if '--layers' in argv:
        for mod, dep in bad:
            print(f"upward include: {mod} -> {dep}")
        order = ' < '.join('/'.join(f) for f in LAYERS)
        print(f"{len(bad)} include(s) against the layer order ({order})")
    return 1 if found or bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
