"""The layer rule of docs/architecture.md, checked statically: no import cycle, no import from a lower layer
to a higher one. Imports inside functions and under TYPE_CHECKING count too: a lazy import is still an
arrow."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "delrec").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """delrec modules `path` imports (`from delrec import dist` is the module delrec.dist)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "delrec"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "delrec":
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs if len(subs) == len(node.names) else subs | {node.module}
    return found & known


def layers() -> list[list[str]]:
    """The `Layers:` line of docs/architecture.md, top first: `cli -> recommend -> ... -> io, dist`."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    line = re.search(r"^Layers: `(.+)`$", text, re.MULTILINE)
    assert line, "docs/architecture.md needs a line  Layers: `a -> b, c -> ...`"
    return [[n.strip() for n in group.split(",")] for group in line.group(1).split("->")]


def layer_of(module: str, order: list[list[str]]) -> int:
    """Index of the layer holding `module`, by its first name below delrec (the package itself: `delrec`)."""
    name = module.split(".")[1] if "." in module else "delrec"
    for i, group in enumerate(order):
        if name in group:
            return i
    raise AssertionError(f"{module} is in no layer of docs/architecture.md; add {name!r} to the Layers line")


def test_no_import_goes_up_a_layer():
    mods, order = modules(), layers()
    upward = []
    for mod, path in mods.items():
        for target in imports(path, set(mods)):
            if layer_of(target, order) < layer_of(mod, order):
                upward.append(f"{mod} -> {target}")
    assert not upward, "imports against the layer order: " + "; ".join(sorted(upward))


def test_no_import_cycle():
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n] if n in path else [m, n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_checker_sees_lazy_and_submodule_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from delrec import dist, DelrecError\n    from delrec.lm import packed\n")
    assert imports(probe, set(modules())) == {"delrec", "delrec.dist", "delrec.lm.packed"}


def test_no_module_calls_another_modules_private_methods():
    """A name with a leading underscore is its module's own: another module that needs it needs a public
    name (the scoring passes share `CandidateScorer.embed`, `reduce`, `autocast`, `first_position_scores`)."""
    mods = modules()
    trees = {m: ast.parse(p.read_text()) for m, p in mods.items()}

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    defined = {m: {n.name for n in ast.walk(t) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and private(n.name)} for m, t in trees.items()}
    everywhere = set().union(*defined.values())
    reached = []
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and private(node.attr) and node.attr in everywhere
                    and node.attr not in defined[m]):
                reached.append(f"{m}:{node.lineno} .{node.attr}")
    assert not reached, "private names used outside their module: " + "; ".join(sorted(reached))


def test_only_the_method_table_decodes_method_names():
    """Which row a name is (hint, fused, trained, ...) is read from delrec.methods; no other module builds or
    matches a row name from pieces (`name + "+fusion"`, `name.endswith("+hint")`, `name == "lsr-only"`)."""
    from delrec.methods import METHODS

    rows = {n for n in METHODS if n not in ("delrec", "popularity", "teachers")}  # also ordinary words here
    found = []
    for mod, path in modules().items():
        if mod == "delrec.methods":
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            named = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
            if named and (node.value in rows or any(s in node.value for s in ("+hint", "+fusion", "+ensemble"))):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, "method names spelt outside delrec.methods: " + "; ".join(found)
