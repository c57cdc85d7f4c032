"""The import graph of planner/ follows the layers (walked with ``ast``, every import counted,
function-level and TYPE_CHECKING ones included):

    core < hardware, sources < model < runtimes < solve < report < cli, api

A module imports only its own layer or lower ones; runtimes/X never imports runtimes/Y (base and
registry are shared); solve never imports runtimes; hardware and sources never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PLANNER = Path(__file__).resolve().parents[1] / "planner"
RANK = {"core": 0, "hardware": 1, "sources": 1, "model": 2, "runtimes": 3, "solve": 4, "report": 5, "cli": 6, "api": 6}
SHARED_RUNTIME_MODULES = {"base", "registry", "__init__"}


def _module(path: Path) -> str:
    rel = path.relative_to(PLANNER.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == "planner" or m.startswith("planner.")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _edges() -> list[tuple[str, str]]:
    return [(_module(p), imp) for p in sorted(PLANNER.rglob("*.py")) for imp in _imports(p)]


def _violations(edges: list[tuple[str, str]]) -> list[str]:
    out = []
    for src, dst in edges:
        a, b = _layer(src), _layer(dst)
        if a is None or b is None or b not in RANK or a not in RANK:
            continue  # planner/__init__ (the version) and unknown names: no layer
        if RANK[b] > RANK[a]:
            out.append(f"{src} imports {dst}: {b} is above {a}")
        if {a, b} == {"hardware", "sources"}:
            out.append(f"{src} imports {dst}: hardware and sources are side by side")
        if a == "runtimes" and b == "runtimes":
            x, y = src.split(".")[2:3], dst.split(".")[2:3]
            if x and y and x != y and not ({x[0], y[0]} & SHARED_RUNTIME_MODULES):
                out.append(f"{src} imports {dst}: runtimes never import each other")
        if a == "solve" and b == "runtimes":
            out.append(f"{src} imports {dst}: the solver never imports a runtime")
    return out


def test_every_module_has_a_layer() -> None:
    modules = [_module(p) for p in PLANNER.rglob("*.py")]
    assert [m for m in modules if _layer(m) not in (*RANK, None) and _layer(m) != "__main__"] == []


def test_imports_follow_the_layers() -> None:
    edges = _edges()
    assert len(edges) > 100  # the walk saw the package
    assert _violations(edges) == []


def test_the_rule_catches_what_it_forbids() -> None:
    """The checker itself: each forbidden kind of edge is reported."""
    bad = [("planner.sources.hub", "planner.model.arch"), ("planner.solve.solver", "planner.runtimes.transformers.plans"),
           ("planner.runtimes.gguf.plans", "planner.runtimes.transformers.emit"), ("planner.core.records", "planner.api"),
           ("planner.hardware.probe", "planner.sources.resolve")]
    assert len(_violations(bad)) == len(bad)
    good = [("planner.runtimes.gguf.runtime", "planner.runtimes.base"), ("planner.api", "planner.runtimes.registry"),
            ("planner.report.schema", "planner.runtimes.registry")]
    assert _violations(good) == []
