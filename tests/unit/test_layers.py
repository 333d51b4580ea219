"""The import contract and the size limits, checked from the source alone (``ast``, no tool).

Every import counts, function-level ones included; imports under ``if TYPE_CHECKING:`` do not.
The contract (docs/architecture.md) is the one ``lint-imports`` checks from ``pyproject.toml``:

- inside ``runner``, a layer imports only the layers below it (``:`` siblings may import each
  other, ``|`` siblings may not);
- ``cluster`` → {``mech`` | ``interventions``} → ``runner``;
- no cycle among modules, anywhere (a package's ``__init__`` is a module like any other);
- library code never imports ``tests``;
- no module over 400 lines and no function over 60 lines, unless :data:`ALLOWED` says why.

The ``test_checker_*`` tests plant violations and assert that the checker reports them.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runner", "mech", "interventions", "cluster")
BANNED = ("tests",)

# import-linter's layer syntax: top first; "a : b" may import each other, "a | b" may not.
RUNNER_LAYERS = [
    "runner.report",
    "runner.analysis",
    "runner.train",
    ("runner.attention : runner.data : runner.model : runner.scoring : runner.store : runner.store_write : "
     "runner.trajectory"),
    "runner.config : runner.grid",
    "runner.world | runner.doses",
    "runner._io | runner.registry | runner._progress | runner.hookpoints",
]
PACKAGE_LAYERS = ["cluster", "mech | interventions", "runner"]

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# "path" (a module) or "path::Qualified.name" (a function) -> why it may be over the limit.
# test_allow_list_has_no_stale_entries fails once an entry is within the limits: remove it then.
ALLOWED: dict[str, str] = {}


# ---- the checker ------------------------------------------------------------------------------

@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)  # dotted name -> file
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # importer -> imported
    lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (importer, imported) -> line
    raw: list[tuple[str, str, int]] = field(default_factory=list)  # (importer, any imported name, line)

    def add(self, a: str, b: str, line: int) -> None:
        if a != b:
            self.edges[a].add(b)
            self.lines.setdefault((a, b), line)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, at any depth, outside
    ``if TYPE_CHECKING:`` blocks; relative imports resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((target, [a.name for a in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def build_graph(root: Path, packages=PACKAGES) -> Graph:
    g = Graph()
    trees = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            parts = list(f.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            g.modules[name] = f
            trees[name] = (ast.parse(f.read_text(), filename=str(f)), is_package)

    def known(name: str) -> str | None:
        while name and name not in g.modules:
            name = name.rpartition(".")[0]
        return name or None

    for name, (tree, is_package) in trees.items():
        for target, names, line in _imports(tree, name, is_package):
            g.raw.append((name, target, line))
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in g.modules]
            for t in subs or [known(target)]:
                if t:
                    g.add(name, t, line)
    return g


def _parse_layers(layers: list[str]) -> list[tuple[list[str], bool]]:
    """[(components, independent)] from import-linter's syntax."""
    out = []
    for layer in layers:
        independent = "|" in layer
        out.append(([c.strip() for c in layer.replace("|", ":").split(":")], independent))
    return out


def _locate(module: str, layers) -> tuple[int, str] | None:
    for i, (components, _) in enumerate(layers):
        for c in components:
            if module == c or module.startswith(c + "."):
                return i, c
    return None


def layer_violations(g: Graph, layers: list[str], name: str) -> list[str]:
    parsed = _parse_layers(layers)
    out = []
    for a in sorted(g.edges):
        for b in sorted(g.edges[a]):
            la, lb = _locate(a, parsed), _locate(b, parsed)
            if la is None or lb is None or la[1] == lb[1]:
                continue
            where = f"{g.modules[a].as_posix()}:{g.lines[(a, b)]}"
            if lb[0] < la[0]:
                out.append(f"{name}: {a} imports {b}, a higher layer ({la[1]} is below {lb[1]}) [{where}]")
            elif lb[0] == la[0] and parsed[la[0]][1]:
                out.append(f"{name}: {a} imports {b}; {la[1]} and {lb[1]} are independent [{where}]")
    return out


def banned_imports(g: Graph, banned=BANNED) -> list[str]:
    return [f"{a} imports {t} (library code never imports {t.split('.')[0]}) [{g.modules[a].as_posix()}:{line}]"
            for a, t, line in g.raw if t.split(".")[0] in banned]


def cycles(g: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(g.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(g.edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(g.edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def unplaced(g: Graph, layers: list[str], package: str) -> list[str]:
    """Modules of ``package`` that no layer names (the package's own ``__init__`` aside)."""
    parsed = _parse_layers(layers)
    return sorted(m for m in g.modules if m.startswith(package + ".") and _locate(m, parsed) is None)


def _long_functions(tree: ast.AST, prefix: str = "") -> dict[str, int]:
    """{qualified name: lines from ``def`` to the last line} for functions over the limit."""
    out: dict[str, int] = {}
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qual = f"{prefix}{child.name}"
            n = (child.end_lineno or child.lineno) - child.lineno + 1
            if not isinstance(child, ast.ClassDef) and n > MAX_FUNCTION_LINES:
                out[qual] = n
            out.update(_long_functions(child, qual + "."))
        else:
            out.update(_long_functions(child, prefix))
    return out


def size_offenders(root: Path, packages=PACKAGES) -> dict[str, int]:
    """{"path": lines} for modules over the limit, {"path::qualname": lines} for functions."""
    out: dict[str, int] = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            rel = f.relative_to(root).as_posix()
            text = f.read_text()
            if (n := len(text.splitlines())) > MAX_MODULE_LINES:
                out[rel] = n
            out.update({f"{rel}::{q}": n for q, n in _long_functions(ast.parse(text, filename=str(f))).items()})
    return out


# ---- the repository ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(ROOT)


def test_layers_here_are_the_ones_lint_imports_checks():
    """One contract, two checkers: this file and ``[tool.importlinter]`` must say the same."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [c["layers"] for c in cfg["contracts"] if c["type"] == "layers"]
    assert RUNNER_LAYERS in layers and PACKAGE_LAYERS in layers
    assert sorted(cfg["root_packages"]) == sorted(PACKAGES)


def test_runner_layers(graph):
    assert layer_violations(graph, RUNNER_LAYERS, "runner layers") == []


def test_package_layers(graph):
    assert layer_violations(graph, PACKAGE_LAYERS, "packages") == []


def test_every_runner_module_sits_in_a_layer(graph):
    assert unplaced(graph, RUNNER_LAYERS, "runner") == [], "add the new module to a layer (pyproject.toml too)"


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_library_never_imports_tests(graph):
    assert banned_imports(graph) == []


def test_sizes():
    over = {k: n for k, n in size_offenders(ROOT).items() if k not in ALLOWED}
    assert over == {}, (f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function: "
                        "split them (or add them to ALLOWED with a reason)")


def test_allow_list_has_no_stale_entries():
    stale = sorted(set(ALLOWED) - set(size_offenders(ROOT)))
    assert stale == [], f"within the limits now (or gone): remove {stale} from ALLOWED in tests/unit/test_layers.py"


# ---- the checker can fail ---------------------------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


PLANTED = {
    "runner/__init__.py": "",
    "runner/_io.py": "",
    "runner/registry.py": "from runner import _io\n",  # independent siblings
    "runner/world/__init__.py": "",
    "runner/world/rules.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from runner.report import html  # not counted\n"
        "def f():\n"
        "    from ..train import loop  # a late back-import, and a cycle with train.loop\n"
    ),
    "runner/train/__init__.py": "from .loop import fit\n",
    "runner/train/loop.py": "import runner.world.rules\ndef fit(): pass\n",
    "runner/report/__init__.py": "",
    "runner/report/html.py": "from runner.world import rules\n",
    "runner/stray.py": "",
    "mech/__init__.py": "def g():\n    import interventions.doses\n",
    "interventions/__init__.py": "",
    "interventions/doses.py": "from tests.helpers import tiny_run_config\nimport cluster.cli\n",
    "cluster/__init__.py": "",
    "cluster/cli.py": "import mech\n",
}


def test_checker_reports_back_imports_cycles_and_banned_imports(tmp_path):
    g = build_graph(_tree(tmp_path, PLANTED))
    runner = layer_violations(g, RUNNER_LAYERS, "runner layers")
    assert any("runner.world.rules imports runner.train.loop, a higher layer" in v for v in runner), runner
    assert any("runner.registry imports runner._io; runner.registry and runner._io are independent" in v
               for v in runner), runner
    assert not any("runner.report" in v for v in runner), "a TYPE_CHECKING import was counted"
    packages = layer_violations(g, PACKAGE_LAYERS, "packages")
    assert any(v.startswith("packages: interventions.doses imports cluster.cli, a higher layer") for v in packages)
    assert any("mech imports interventions.doses; mech and interventions are independent" in v for v in packages)
    assert ["runner.train.loop", "runner.world.rules"] in cycles(g)
    assert any(v.startswith("interventions.doses imports tests.helpers") for v in banned_imports(g))
    assert unplaced(g, RUNNER_LAYERS, "runner") == ["runner.stray"]


def test_checker_reports_a_cycle_through_a_package_init(tmp_path):
    g = build_graph(_tree(tmp_path, {
        "runner/__init__.py": "",
        "runner/train/__init__.py": "from .loop import fit\n",
        "runner/train/loop.py": "def fit():\n    from runner.train import fit as again\n",
        "mech/__init__.py": "", "interventions/__init__.py": "", "cluster/__init__.py": "",
    }))
    assert cycles(g) == [["runner.train", "runner.train.loop"]]


def test_checker_reports_an_edge_planted_in_the_real_graph(graph):
    g = Graph(modules=graph.modules, edges=defaultdict(set, {k: set(v) for k, v in graph.edges.items()}),
              lines=dict(graph.lines))
    g.add("runner.world.rules", "runner.report.html", 1)
    g.add("runner.report.html", "runner.world.rules", 1)
    assert any("runner.world.rules imports runner.report.html" in v
               for v in layer_violations(g, RUNNER_LAYERS, "runner layers"))
    assert any({"runner.world.rules", "runner.report.html"} <= set(c) for c in cycles(g))


def test_checker_reports_long_modules_and_functions(tmp_path):
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))  # + the def line: one over
    _tree(tmp_path, {
        "runner/__init__.py": "",
        "runner/big.py": "\n" * (MAX_MODULE_LINES + 1),
        "runner/fn.py": f"class A:\n    def ok(self):\n        pass\n\n    def long(self):\n{body}",
        "mech/__init__.py": "", "interventions/__init__.py": "", "cluster/__init__.py": "",
    })
    assert size_offenders(tmp_path) == {"runner/big.py": MAX_MODULE_LINES + 1,
                                        "runner/fn.py::A.long": MAX_FUNCTION_LINES + 1}
