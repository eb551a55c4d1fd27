"""The package map holds: imports run one way (cli -> serve -> sync -> runtime -> read -> store
-> upstream -> the wire), the mock shares only the wire with the cache, and no module
imports itself back through any chain, lazily inside a function or not.

Read from the source with `ast`, so a new cycle or an upward import fails here before
anyone has to notice it in a traceback.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "sgcache"

#: Rank of each part of the tree: a module may import its own rank or lower ones only.
LAYERS: list[tuple[str, int]] = [
    ("sgcache", 0), ("sgcache.config", 0), ("sgcache.logs", 0), ("sgcache.schema", 0),
    ("sgcache.launch", 0), ("sgcache.protocol", 0),
    ("sgcache.upstream", 1),
    ("sgcache.store", 2),
    ("sgcache.read", 3),
    ("sgcache.runtime", 4),
    ("sgcache.sync", 5),
    ("sgcache.serve", 6),
    ("sgcache.cli", 8),
]
#: The mock is a site of its own: beside the cache, it shares only the wire (rank 0).
MOCK = "sgcache.mock"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """module -> the sgcache modules it imports anywhere in its body."""
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from pkg import module` names a module; `from module import name` does not
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t.startswith("sgcache") and t != name:
                    found.add(t)
        out[name] = found
    return out


def _rank(module: str) -> int:
    if module == MOCK or module.startswith(MOCK + "."):
        return 0
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _in_mock(module: str) -> bool:
    return module == MOCK or module.startswith(MOCK + ".")


GRAPH = _imports()


def test_graph_was_read() -> None:
    # guards the reader itself: a parser that found nothing would pass every check below
    assert len(GRAPH) > 40
    assert "sgcache.store.tables" in GRAPH["sgcache.read.engine"]
    assert "sgcache.sync.events" in GRAPH["sgcache.sync.loop"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_downward(module: str) -> None:
    upward = sorted(t for t in GRAPH[module]
                    if not _in_mock(t) and not _in_mock(module) and _rank(t) > _rank(module))
    assert not upward, f"{module} (rank {_rank(module)}) imports a higher layer: {upward}"


def test_mock_shares_only_the_wire() -> None:
    leaks = {m: sorted(t for t in ts if not _in_mock(t) and _rank(t) > 0)
             for m, ts in GRAPH.items() if _in_mock(m)}
    assert not {m: v for m, v in leaks.items() if v}
    users = sorted(m for m, ts in GRAPH.items() if not _in_mock(m) and not m.startswith("sgcache.cli")
                   and any(_in_mock(t) for t in ts))
    assert not users, f"the cache must not import the mock: {users}"


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components over every import, lazy ones included
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
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
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


#: All the mock may take from outside itself: the wire (faults, encodings, codec) and the schema model.
MOCK_MAY_USE = {"sgcache.protocol", "sgcache.protocol.errors", "sgcache.protocol.values",
                "sgcache.protocol.jsoncodec", "sgcache.schema"}
#: The wire: what both sides must agree on byte for byte, and nothing about query meaning.
WIRE_MODULES = {"sgcache.protocol", "sgcache.protocol.errors", "sgcache.protocol.values",
                "sgcache.protocol.jsoncodec"}


def test_mock_is_an_independent_oracle() -> None:
    # the mock parses filters, resolves paths, groups summaries and names links with its own
    # code: anything shared with the cache would make a bug in it invisible to every
    # differential test (issue 17)
    used = {t: sorted(m for m, ts in GRAPH.items() if _in_mock(m) and t in ts)
            for t in {t for m, ts in GRAPH.items() if _in_mock(m) for t in ts if not _in_mock(t)}}
    assert not any(t.startswith("sgcache.read") for t in used), used
    assert set(used) <= MOCK_MAY_USE, {t: ms for t, ms in used.items() if t not in MOCK_MAY_USE}
    for own in ("filters", "grouping", "names"):
        assert f"sgcache.mock.{own}" in GRAPH


def test_the_wire_holds_no_query_semantics() -> None:
    wire = {m for m in GRAPH if m == "sgcache.protocol" or m.startswith("sgcache.protocol.")}
    assert wire == WIRE_MODULES, f"only faults, value encodings and the codec belong to the wire: {wire}"
    # the cache's readings of the protocol live in sgcache/read, beside the engine using them
    for moved in ("sgcache.read.filters", "sgcache.read.grouping", "sgcache.read.names"):
        assert moved in GRAPH
    semantic = ("filter", "relation", "group", "name_field", "path")
    for name in ("values", "jsoncodec"):
        tree = ast.parse((PKG / "protocol" / f"{name}.py").read_text(encoding="utf-8"))
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        defined += [t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)]
        assert not [d for d in defined if any(s in d.lower() for s in semantic)], (name, defined)


#: Past this many lines a module must say at its top why it is one module.
LONG_MODULE = 550


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG.parent)))
def test_long_modules_say_why_they_are_one(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if text.count("\n") <= LONG_MODULE:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "Why" in doc and "one module" in doc or "Why this module" in doc, (
        f"{path.relative_to(PKG.parent)} has {text.count(chr(10))} lines: split it, or say at its top "
        "why it is one module")
