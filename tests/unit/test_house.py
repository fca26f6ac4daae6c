"""The house rules a newcomer relies on (docs/architecture.md, "Where things live").

- No import cycles between product modules: each module can be read knowing only what
  it imports. Imports inside functions count (a local import that dodges a cycle is
  still one); imports under ``if TYPE_CHECKING:`` do not, since they never run.
- No product module over 500 lines, except the wire-format family adapters, the one
  messages module and the CLI.
- Every helper of an actor lives in that actor's package: a private module under
  ``actors/<actor>/`` is imported only from that package, and ``actors/`` itself holds
  only what several actors share.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
PACKAGES: Final = {"omnillm": "omnillm", "actors": "omnillm.actors", "bus": "omnillm.bus"}
PACKAGES_MORE: Final = {"providers": "omnillm.providers"}
MAX_LINES: Final = 500
LONG_ON_PURPOSE: Final = frozenset(
    {
        "omnillm.bus.messages",  # one messages module (STYLE rule 1)
        "omnillm.cli",  # every command's arguments in one place
        "omnillm.providers.anthropic_messages",  # the wire-format family adapters
        "omnillm.providers.cohere_chat",
        "omnillm.providers.gemini",
        "omnillm.providers.openai_chat",
        "omnillm.providers.openai_responses",
    }
)
SHARED_BY_ACTORS: Final = frozenset({"__init__", "base", "boards", "_dispatch", "admin", "prober"})
"""What may sit in ``actors/`` itself: the package, what several actors share, and the
two actors small enough to be one module."""


def product_modules() -> dict[str, Path]:
    """Every product module's dotted name (as installed) and its file."""
    modules: dict[str, Path] = {}
    for folder, package in (PACKAGES | PACKAGES_MORE).items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (i for n in node.orelse for i in _imports_in(n))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    yield from _imports(node)


def _targets(module: str, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The product modules an import statement runs: the module named, the submodules
    it names, and the packages above them (each package's ``__init__`` runs first), but
    not the root ``omnillm`` package, whose imports are lazy, nor a package the importer
    is inside of (it is already running when its modules import each other)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".")[: -node.level] if node.level else []
            base = ".".join([*anchor, *([base] if base else [])])
        names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        for end in range(2, len(parts) + 1):
            prefix = ".".join(parts[:end])
            inside = module.startswith(prefix + ".") and prefix != name
            if prefix in known and not inside:
                found.add(prefix)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = set().union(*(_targets(name, node, known) for node in _imports(tree)))
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_and_passes_a_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_every_layer_and_the_imports_between_them() -> None:
    graph = import_graph()
    assert {"omnillm.actors.planner.actor", "omnillm.bus.messages", "omnillm.cli"} <= set(graph)
    assert "omnillm.bus.messages" in graph["omnillm.actors.planner.actor"]
    # importing a submodule runs its package's __init__ first
    assert "omnillm.actors.planner" in graph["omnillm.actors.gateway.actor"]


def test_no_product_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_no_product_module_is_over_500_lines_but_the_ones_long_on_purpose() -> None:
    lengths = {name: len(path.read_text().splitlines()) for name, path in product_modules().items()}
    long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert sorted(long.keys() - LONG_ON_PURPOSE) == [], long
    assert lengths.keys() >= LONG_ON_PURPOSE  # a rename shows up here, not as a silent pass


def test_actors_holds_only_shared_pieces_and_packages_of_one_actor_each() -> None:
    top = {path.stem for path in (ROOT / "actors").glob("*.py")}
    assert top == SHARED_BY_ACTORS
    packages = {path.parent.name for path in (ROOT / "actors").glob("*/__init__.py")}
    assert packages == {"caller", "classifier", "gateway", "ledger", "planner"}


def test_an_actors_private_modules_are_imported_only_from_its_own_package() -> None:
    graph = import_graph()
    strays = [
        (importer, private)
        for importer, imported in graph.items()
        for private in imported
        if private.startswith("omnillm.actors.")
        and private.count(".") == 3
        and private.rsplit(".", 1)[1].startswith("_")
        and not importer.startswith(private.rsplit(".", 1)[0] + ".")
    ]
    assert strays == []


def test_every_product_package_is_in_the_distribution() -> None:
    """``packages`` in pyproject.toml is a list: a package missing there is missing from
    the wheel, while an editable install still finds it."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    packages = {name for name, path in product_modules().items() if path.name == "__init__.py"}
    assert packages == listed
