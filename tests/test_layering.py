"""The import layering of src/spikeyolo (drawn in docs/internals.md), read from the source with ``ast``.

A module may import from a lower floor or from its own package; never from a floor above, never sideways
into another package or module on its own floor, and no import cycle. Imports inside functions are only for
optional heavy dependencies, each with a comment saying so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "spikeyolo"

# Floors, low to high. Each name is a top-level module or package of spikeyolo.
FLOORS = [
    ["utils"],
    ["metrics"],
    ["nn"],
    ["models"],
    ["forms"],
    ["export"],
    ["inference"],
    ["events"],
    ["data"],
    ["energy"],
    ["engine"],
    ["demo"],
    ["cli"],
    ["__init__", "__main__"],
]
# what a function body may import (heavy or optional dependencies), always with a comment on the line
LAZY_OK = ("matplotlib", "onnx", "onnxruntime", "faster_coco_eval", "pycocotools", "faery",
           "torch.utils.tensorboard")


def lazy_ok(name: str) -> bool:
    """An allowed lazy import: a listed package, or a listed dotted module (torch's optional TensorBoard)."""
    return any(name == ok or name.startswith(ok + ".") for ok in LAZY_OK)


def floor_of(module: str) -> int:
    """The floor of a dotted module name ``spikeyolo.x.y`` (the root package itself is the top floor)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise KeyError(f"{module}: not on any floor; add it to FLOORS here and to docs/internals.md")


def module_name(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, is_package: bool, node, known: set[str]) -> list[str]:
    """The spikeyolo modules one import statement loads (``from pkg import sub`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "spikeyolo"]
    base = _resolve(module, is_package, node)
    if base.split(".")[0] != "spikeyolo":
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in known else base)
    return out


def import_graph(src: Path = SRC) -> tuple[dict[str, set[str]], list[tuple[str, int, str, bool]]]:
    """``{module: imported spikeyolo modules}`` and every in-function import as
    ``(module, line, imported name, has comment)``."""
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    known = set(files)
    graph, lazy = {}, []
    for mod, path in files.items():
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        lines = text.splitlines()
        is_package = path.name == "__init__.py"
        graph[mod] = set()
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_func = {id(n) for f in funcs for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = _targets(mod, is_package, node, known)
            graph[mod].update(t for t in targets if t != mod)
            if id(node) in in_func:
                name = node.names[0].name if isinstance(node, ast.Import) else _resolve(mod, is_package, node)
                lazy.append((mod, node.lineno, name, "#" in lines[node.lineno - 1]))
    return graph, lazy


def layering_errors(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up a floor or sideways to another package on the same floor."""
    errors = []
    for mod, targets in graph.items():
        for t in sorted(targets):
            same_package = mod.split(".")[:2] == t.split(".")[:2]
            if same_package or t == "spikeyolo":
                if t == "spikeyolo" and mod != "spikeyolo":
                    errors.append(f"{mod} imports the package root (import the module that owns the name)")
                continue
            if floor_of(t) >= floor_of(mod):
                errors.append(f"{mod} (floor {floor_of(mod)}) imports {t} (floor {floor_of(t)})")
    return errors


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_upward_or_sideways_imports():
    graph, _ = import_graph()
    assert layering_errors(graph) == []


def test_no_import_cycle():
    graph, _ = import_graph()
    assert find_cycle(graph) is None


def test_every_module_has_a_floor():
    graph, _ = import_graph()
    for mod in graph:
        if mod != "spikeyolo":
            floor_of(mod)


def test_in_function_imports_only_for_optional_heavy_deps():
    _, lazy = import_graph()
    bad = [(m, line, name) for m, line, name, commented in lazy
           if not (lazy_ok(name) and commented)]
    assert bad == []


def test_checks_catch_bad_graphs():
    """The checks on made-up graphs: an upward import, a sideways one and a cycle are all reported."""
    up = {"spikeyolo.nn.neuron": {"spikeyolo.engine.trainer"}, "spikeyolo.engine.trainer": set()}
    assert layering_errors(up) == ["spikeyolo.nn.neuron (floor 2) imports spikeyolo.engine.trainer (floor 10)"]
    sideways = {"spikeyolo.__main__": {"spikeyolo.__init__"}}  # two top-level modules on one floor
    assert len(layering_errors(sideways)) == 1
    down = {"spikeyolo.engine.trainer": {"spikeyolo.data.dataset", "spikeyolo.engine.loss"}}
    assert layering_errors(down) == []
    cyc = {"spikeyolo.engine.a": {"spikeyolo.engine.b"}, "spikeyolo.engine.b": {"spikeyolo.engine.a"}}
    assert find_cycle(cyc) == ["spikeyolo.engine.a", "spikeyolo.engine.b", "spikeyolo.engine.a"]
    assert find_cycle(down) is None
    with pytest.raises(KeyError, match="not on any floor"):
        floor_of("spikeyolo.newthing")


def test_graph_reader_sees_function_and_relative_imports(tmp_path):
    pkg = tmp_path / "spikeyolo"
    for sub in ("engine", "nn"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "nn" / "neuron.py").write_text("def f():\n    from ..engine import trainer\n")
    (pkg / "engine" / "trainer.py").write_text("from ..nn.neuron import f\n")
    graph, lazy = import_graph(pkg)
    assert graph["spikeyolo.nn.neuron"] == {"spikeyolo.engine.trainer"}
    assert graph["spikeyolo.engine.trainer"] == {"spikeyolo.nn.neuron"}
    assert lazy == [("spikeyolo.nn.neuron", 2, "spikeyolo.engine", False)]
    assert find_cycle(graph) is not None and layering_errors(graph) != []
