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


def private(name: str) -> bool:
    """`_name`, not `__dunder__` (nor `__mangled`, which Python keeps to its class) and not a bare `_`."""
    return name.startswith("_") and not name.startswith("__") and name != "_"


def private_definitions(tree: ast.AST) -> set[str]:
    """The underscore names a module defines: functions, methods and classes, module- and class-level names,
    and attributes it sets on `self` / `cls`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, (ast.Module, ast.ClassDef)):
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else \
                    [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")):
            names.add(node.attr)
    return {n for n in names if private(n)}


def private_reaches(trees: dict[str, ast.AST]) -> list[str]:
    """Every `x._name` (called, read or written) in a module that does not define `_name` while another
    delrec module does, and every `from delrec.m import _name` of another module. `x` is usually an object
    of the other module's class; `self._name` counts too when `_name` is not this module's (a private name
    inherited across modules). Names no delrec module defines (a library's private attribute) are not ours."""
    defined = {m: private_definitions(t) for m, t in trees.items()}
    everywhere = set().union(*defined.values())
    reached = []
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and private(node.attr) and node.attr in everywhere
                    and node.attr not in defined[m]):
                reached.append(f"{m}:{node.lineno} {ast.unparse(node.value)}.{node.attr}")
            elif (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "delrec"
                    and node.module != m):
                reached += [f"{m}:{node.lineno} from {node.module} import {a.name}"
                            for a in node.names if private(a.name)]
    return sorted(reached)


def test_no_module_uses_another_modules_private_names():
    """A name with a leading underscore is its module's own: a module that needs another's (a method of its
    class, an attribute of its objects, a helper) needs a public name. The scoring passes share a public row
    toolkit of `CandidateScorer` (prepare, embed, reduce, autocast, first_position_scores) and `pad_rows`:
    the cached, packed (lm/packed.py) and upper-layer (lm/layer_cache.py) passes are its peers."""
    reached = private_reaches({m: ast.parse(p.read_text()) for m, p in modules().items()})
    assert not reached, "private names used outside their module: " + "; ".join(reached)


def test_the_private_name_checker_sees_reads_calls_and_imports():
    owner = ast.parse("class Scorer:\n    def __init__(self):\n        self._memo = {}\n"
                      "    def _embed(self):\n        return self._memo\n_LIMIT = 3\n")
    user = ast.parse("from delrec.a import _LIMIT\n"
                     "class Fast:\n    def __init__(self, s):\n        self._own = s\n"
                     "    def run(self, s):\n        s._embed()\n        s.__init__(self)\n"
                     "        return s._memo, self._own, s._own, self._embed(), s.config._attn_implementation\n")
    assert private_reaches({"delrec.a": owner, "delrec.b": user}) == [
        "delrec.b:1 from delrec.a import _LIMIT", "delrec.b:6 s._embed", "delrec.b:8 s._memo",
        "delrec.b:8 self._embed"]


def test_inference_imports_no_training_module():
    """`delrec recommend` loads a trained run: nothing it imports, directly or through another module, is a
    training stage (the AdaLoRA adapters it loads live in lm/adapters.py)."""
    mods = modules()
    graph = {m: imports(p, set(mods)) - {m} for m, p in mods.items()}
    seen, todo = set(), ["delrec.recommend"]
    while todo:
        for n in graph[todo.pop()] - seen:
            seen.add(n)
            todo.append(n)
    assert not sorted(m for m in seen if m.startswith("delrec.stages")), "delrec.recommend reaches a stage"


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
