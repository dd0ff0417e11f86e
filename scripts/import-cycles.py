#!/usr/bin/env python3
"""Finds import circles between the modules of a Rust crate: its top-level modules, and the
child modules of every directory module (`crate::domain::{a, b}`), level by level.

Usage: scripts/import-cycles.py [--graph] SRC_DIR [SRC_DIR ...]
       (for example: scripts/import-cycles.py dns-svc/src)
       scripts/import-cycles.py --self-test   (checks the parser on a small crate of its own)

A top-level module is a file `SRC_DIR/<m>.rs` or a directory `SRC_DIR/<m>/` (with `mod.rs` or
a sibling `<m>.rs`); every file under the directory belongs to `<m>`. The crate roots (`lib.rs`,
`main.rs`) and `bin/` are not modules: the root sits above every module.

Module `a` depends on module `b` when code in `a` names `crate::b…`: in a `use` (also
`pub(crate) use`, grouped and nested trees such as `use crate::{b, c::{d, e}}`, where each
branch counts) or inline (`crate::b::f()`, `crate::b::T` in a type or a doc-free attribute).
`super::` chains that climb to the crate root count the same way, and so does a name the
root brings in from a module (`pub use engine::Gateway;` in lib.rs: `crate::Gateway` names
`engine`). Comments (doc comments too),
string and character literals are ignored, as are `$crate` (macros) and `pub(in crate::…)`
visibilities. Test modules count like any other code: a test that needs a module above its own
is a circle too.

Prints every circle found (one strongly connected group of modules at a time, with one concrete
cycle and where each of its references is) and exits 1; exits 0 when there is none, 2 on bad
usage. `--graph` also prints every edge. Python 3 standard library only.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field


def strip(text: str) -> str:
    """`text` with comments and string/char literals blanked out (newlines kept)."""
    out: list[str] = []
    i, n = 0, len(text)

    def blank(s: str) -> str:
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        else:
            m = re.compile(r'b?r(#*)"').match(text, i)
            prev = text[i - 1] if i else " "
            if m and not (prev.isalnum() or prev == "_"):
                end = text.find('"' + m.group(1), m.end())
                j = n if end < 0 else end + 1 + len(m.group(1))
                out.append(blank(text[i:j]))
                i = j
            elif c == '"' or (c == "b" and text.startswith('b"', i) and not (prev.isalnum() or prev == "_")):
                j = i + (2 if c == "b" else 1)
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                out.append(blank(text[i : j + 1]))
                i = j + 1
            elif c == "'":
                # A char literal ('a', '\n', '\u{1F600}', '\''), else a lifetime or label.
                m = re.compile(r"'(\\(u\{[0-9a-fA-F_]*\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'").match(text, i)
                if m:
                    out.append(blank(m.group(0)))
                    i = m.end()
                else:
                    out.append(c)
                    i += 1
            else:
                out.append(c)
                i += 1
    return "".join(out)


TOKEN = re.compile(r"\s*(?:(?P<ident>r#[A-Za-z_]\w*|[A-Za-z_]\w*)|(?P<punct>::|[{}(),;*$]|.))", re.S)


@dataclass
class Token:
    kind: str  # "ident" or "punct"
    text: str
    line: int


def tokens(code: str) -> list[Token]:
    out: list[Token] = []
    line, pos = 1, 0
    while True:
        m = TOKEN.match(code, pos)
        if not m or m.end() == pos:
            break
        line += code.count("\n", pos, m.start(m.lastgroup))
        text = m.group(m.lastgroup)
        if not text.isspace():
            out.append(Token(m.lastgroup, text, line))
        line += text.count("\n")
        pos = m.end()
    return out


@dataclass
class Ref:
    target: str
    path: str
    line: int


def first_segments(toks: list[Token], i: int) -> tuple[list[tuple[str, int]], int]:
    """The first segment of each branch of the path or use tree starting at `toks[i]` (just
    after `crate::`), and the index after it. `{a, b::c, d::{e}}` gives a, b, d."""
    if i >= len(toks):
        return [], i
    t = toks[i]
    if t.kind == "ident":
        return [(t.text.removeprefix("r#"), t.line)], i + 1
    if t.text != "{":
        return [], i
    found: list[tuple[str, int]] = []
    depth, j, at_start = 0, i, True
    while j < len(toks):
        t = toks[j]
        if t.text == "{":
            depth += 1
            at_start = depth == 1
        elif t.text == "}":
            depth -= 1
            if depth == 0:
                return found, j + 1
        elif t.text == "," and depth == 1:
            at_start = True
        elif at_start and depth == 1:
            if t.kind == "ident" and t.text not in ("self", "super", "crate"):
                found.append((t.text.removeprefix("r#"), t.line))
            at_start = False
        j += 1
    return found, j


def use_leaves(toks: list[Token], i: int, first: str | None = None) -> tuple[list[tuple[str, str]], int]:
    """The names a use tree starting at `toks[i]` brings in, each with the first segment of its
    path: `a::{b, c::D as E}` gives (a, b), (a, E). Globs bring no name we can know."""
    leaves: list[tuple[str, str]] = []
    last = None
    while i < len(toks):
        t = toks[i]
        if t.kind == "ident" and t.text != "as":
            name = t.text.removeprefix("r#")
            if first is None and name not in ("crate", "self"):
                first = name
            last = name
            i += 1
        elif t.text == "::":
            i += 1
        elif t.text == "{":
            i += 1
            while i < len(toks) and toks[i].text != "}":
                sub, i = use_leaves(toks, i, first)
                leaves += sub
                if i < len(toks) and toks[i].text == ",":
                    i += 1
            return leaves, i + 1
        else:
            break
    if i + 1 < len(toks) and toks[i].text == "as" and toks[i + 1].kind == "ident":
        last, i = toks[i + 1].text, i + 2
    if first is not None and last is not None and last != "self" and (i >= len(toks) or toks[i].text != "*"):
        leaves.append((first, last))
    return leaves, i


def root_reexports(src: str, modules: set[str]) -> dict[str, str]:
    """Names that the crate root (`lib.rs`) brings in from a module with a top-level `use`
    (`pub use engine::Gateway;`): `crate::Gateway` in any module then depends on `engine`."""
    path = os.path.join(src, "lib.rs")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        toks = tokens(strip(f.read()))
    found: dict[str, str] = {}
    depth = 0
    for i, t in enumerate(toks):
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
        elif t.text == "use" and depth == 0:
            for first, name in use_leaves(toks, i + 1)[0]:
                if first in modules and name not in modules:
                    found[name] = first
    return found


def after_prefix(toks: list[Token], i: int, prefix: list[str]) -> int | None:
    """The index after `prefix` written as `a::b::` from `toks[i]`, or None if it is not there."""
    for seg in prefix:
        if i + 1 < len(toks) and toks[i].text == seg and toks[i + 1].text == "::":
            i += 2
        else:
            return None
    return i


def references(path: str, depth: int, text: str, prefix: list[str] | None = None) -> list[tuple[str, int]]:
    """Module names that the file at `path` (whose own code sits `depth` modules below the
    module it belongs to) names through `crate::` or `super::` chains, with their lines: the
    crate's top-level modules, or with `prefix` (`["domain"]`) the children of `crate::domain`."""
    prefix = prefix or []
    toks = tokens(strip(text))
    found: list[tuple[str, int]] = []
    brace = 0
    inline_mods: list[int] = []  # brace depths at which inline `mod x {` blocks opened
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.text == "{":
            brace += 1
        elif t.text == "}":
            brace -= 1
            if inline_mods and inline_mods[-1] == brace:
                inline_mods.pop()
        elif t.text == "mod" and i + 2 < len(toks) and toks[i + 1].kind == "ident" and toks[i + 2].text == "{":
            inline_mods.append(brace)
            brace += 1
            i += 3
            continue
        elif t.text == "crate" and i + 1 < len(toks) and toks[i + 1].text == "::":
            prev = toks[i - 1].text if i else ""
            prev2 = toks[i - 2].text if i > 1 else ""
            if prev != "$" and not (prev == "in" and prev2 == "("):
                start = after_prefix(toks, i + 2, prefix)
                if start is None:
                    i += 2
                    continue
                segs, j = first_segments(toks, start)
                found += segs
                i = j
                continue
        elif t.text == "super" and (i == 0 or toks[i - 1].text != "::"):
            # Count `super::super::…`; reaching the crate root names a top-level module next.
            k, j = 0, i
            while j + 1 < len(toks) and toks[j].text == "super" and toks[j + 1].text == "::":
                k, j = k + 1, j + 2
            if k and k == depth + len(inline_mods) + 1:
                segs, j = first_segments(toks, j)
                found += segs
            i = max(j, i + 1)
            continue
        i += 1
    return found


@dataclass
class Crate:
    src: str
    modules: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # module -> (file, depth)


def crate_modules(src: str, is_root: bool = True) -> Crate:
    crate = Crate(src)
    roots = ("lib.rs", "main.rs") if is_root else ("mod.rs",)
    for entry in sorted(os.listdir(src)):
        full = os.path.join(src, entry)
        if os.path.isdir(full):
            if entry == "bin":
                continue
            files = []
            for root, _, names in os.walk(full):
                for name in sorted(names):
                    if not name.endswith(".rs"):
                        continue
                    rel = os.path.relpath(os.path.join(root, name), full)
                    parts = rel[:-3].split(os.sep)
                    if parts[-1] == "mod":
                        parts = parts[:-1]
                    # src/m/x.rs is module m::x: its code sits one level below m.
                    files.append((os.path.join(root, name), len(parts)))
            if files:
                crate.modules.setdefault(entry, []).extend(files)
        elif entry.endswith(".rs") and entry not in roots:
            crate.modules.setdefault(entry[:-3], []).append((full, 0))
    return crate


def graph(crate: Crate, prefix: list[str] | None = None) -> dict[str, dict[str, Ref]]:
    edges: dict[str, dict[str, Ref]] = {m: {} for m in crate.modules}
    reexports = {} if prefix else root_reexports(crate.src, set(crate.modules))
    for module, files in crate.modules.items():
        for path, depth in files:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            for target, line in references(path, depth, text, prefix):
                target = reexports.get(target, target)
                if target in crate.modules and target != module:
                    edges[module].setdefault(target, Ref(target, path, line))
    return edges


def strongly_connected(edges: dict[str, dict[str, Ref]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively; groups of more than one module only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def one_cycle(edges: dict[str, dict[str, Ref]], group: list[str]) -> list[str]:
    """A shortest cycle through the first module of `group`, staying inside the group."""
    members = set(group)
    start = group[0]
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges[node]):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return [start]


def nested_dirs(src: str, prefix: list[str]) -> list[tuple[str, list[str]]]:
    """Every directory module below `src` (`src/domain`, `src/a/b`), with its path as segments."""
    out = []
    for entry in sorted(os.listdir(src)):
        full = os.path.join(src, entry)
        if os.path.isdir(full) and entry != "bin":
            out.append((full, prefix + [entry]))
            out += nested_dirs(full, prefix + [entry])
    return out


def check(src: str, show_graph: bool) -> bool:
    ok = check_one(src, show_graph, None)
    for sub, prefix in nested_dirs(src, []):
        ok = check_one(sub, show_graph, prefix) and ok
    return ok


def check_one(src: str, show_graph: bool, prefix: list[str] | None) -> bool:
    crate = crate_modules(src, prefix is None)
    edges = graph(crate, prefix)
    if show_graph:
        for m in sorted(edges):
            for t, ref in sorted(edges[m].items()):
                print(f"{src}: {m} -> {t}  ({ref.path}:{ref.line})")
    groups = strongly_connected(edges)
    for group in groups:
        cycle = one_cycle(edges, group)
        print(f"{src}: import circle among {', '.join(group)}: {' -> '.join(cycle)}")
        for a, b in zip(cycle, cycle[1:]):
            ref = edges[a][b]
            print(f"  {a} -> {b}: {ref.path}:{ref.line}")
    if not groups:
        level = "top-level modules" if prefix is None else f"modules of crate::{'::'.join(prefix)}"
        print(f"{src}: no import circle between its {len(crate.modules)} {level}")
    return not groups


SELF_TEST = {
    "lib.rs": "mod a; mod b; mod c; mod d; mod e; mod f; mod g;\npub use g::{Thing as Renamed, inner::Deep};\nuse crate::a::X;\n",
    "a/mod.rs": "//! see crate::f for more\nmod deep;\npub(crate) use crate::{b::{self, Y}, c};\n"
    "fn f<'a>(x: &'a str) -> char { let _ = \"crate::f\"; let _ = r#\"crate::f \"q\" \"#; '\"' }\n",
    "a/deep/mod.rs": "mod inner;\nfn g() { super::super::d::h(); super::sibling(); }\n",
    "a/deep/inner.rs": "fn g() { let c = '\\''; super::super::super::e::k(); /* crate::f /* nested */ crate::f */ }\n",
    "b.rs": "macro_rules! m { () => { $crate::f::z() } }\npub(in crate::b) fn q() {}\n"
    "mod tests { use super::*; fn t() { super::super::c::x(); } }\n",
    "c.rs": "fn x() { crate::r#d::y(); }\n",
    "d.rs": "fn y() { super::a::X; }\n",
    "e.rs": "fn k() -> crate::Renamed { crate::Deep }\n",
    "f.rs": "fn z() {}\n",
    "g.rs": "pub struct Thing; pub mod inner { pub struct Deep; }\n",
    "bin/tool.rs": "fn main() { crate::a::x(); }\n",
}
SELF_TEST_EDGES = {"a->b", "a->c", "a->d", "a->e", "b->c", "c->d", "d->a", "e->g"}


def self_test() -> int:
    """Checks the parser on a small crate covering the cases above; 0 when it passes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in SELF_TEST.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        edges = graph(crate_modules(tmp))
        got = {f"{a}->{b}" for a in edges for b in edges[a]}
        groups = strongly_connected(edges)
    if got != SELF_TEST_EDGES or groups != [["a", "b", "c", "d"]]:
        print(f"self-test failed: edges {sorted(got)}, circles {groups}", file=sys.stderr)
        return 1
    print("self-test passed")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--self-test"]:
        return self_test()
    show_graph = "--graph" in argv
    dirs = [a for a in argv if a != "--graph"]
    if not dirs or any(a.startswith("-") for a in dirs):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    ok = True
    for src in dirs:
        if not os.path.isdir(src):
            print(f"{src}: not a directory", file=sys.stderr)
            return 2
        ok = check(src, show_graph) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
