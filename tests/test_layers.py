"""Imports point down: no circle among the kernel's and the bundled plugins' modules, and nothing the kernel
imports imports the kernel back.

Imports are read from the source with ``ast`` at every level: an import inside a function is still a
dependency, only a deferred one, and a circle through it is still a circle. Imports under ``if TYPE_CHECKING:``
never run and do not count. Neither do references by name (``importlib``, the registries ``JOB_FUNCTIONS``,
``SERVICE_MODULES``, ``WEB_MODULES``, RQ's job function): naming a module is how a lower layer reaches code
above it without importing it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = {"gofannon": ROOT / "gofannon", "gofannon_plugins": ROOT / "plugins"}

#: Imports known to close a circle, with the reason they are tolerated for now. Without them the graph has no
#: circle. Do not add to this: break a new circle instead (move what both sides need into a module below them,
#: hand the upper object in as an argument, or name it in a registry); take an entry off when it is gone.
KNOWN_BACK_EDGES: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for top, tree in TREES.items():
        for path in tree.rglob("*.py"):
            parts = [top, *path.relative_to(tree).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _known(name: str) -> str | None:
    """The module ``name`` executes: itself, or the nearest enclosing module we have (``pkg.mod.attr``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The modules an import statement runs: the one it names and the packages above that one, except the
    importer's own packages, which always run first (importing names FROM one's own package still counts)."""
    ancestors = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{alias.name}" for alias in node.names]
    for name in names:
        target = _known(name)
        if target and target != module:
            yield target
        while target and "." in target:  # importing a.b.c runs a and a.b first
            target = target.rpartition(".")[0]
            if target not in ancestors and target != module:
                yield target


def _imports(module: str) -> set[str]:
    """Modules of ours that ``module`` imports when it runs (at any level, TYPE_CHECKING blocks left out)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: set[str] = set()

    def walk(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    walk_node(other)
                continue
            walk_node(child)

    def walk_node(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(_targets(module, node))
        walk(node)

    walk(tree)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        result.append(component)
    return result


def _describe(component: set[str]) -> str:
    lines = [" <-> ".join(sorted(component))]
    for module in sorted(component):
        for target in sorted(GRAPH[module] & component):
            lines.append(f"    {module} imports {target}")
    return "\n".join(lines)


def test_the_import_reader_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    # the reader itself, on modules whose imports are known: without this, an empty graph would pass everything
    assert "gofannon.jobs.rq_queue" in GRAPH["gofannon.kernel"]  # inside Kernel.open_queue
    assert "gofannon.store.specs" in GRAPH["gofannon.store.reference_import"]
    assert "gofannon.sandbox.child.channel" in GRAPH["gofannon.sandbox.child.runtime"]  # a relative import
    assert "gofannon.kernel" not in GRAPH["gofannon.jobs"]  # only under TYPE_CHECKING there
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_among_modules() -> None:
    graph = {m: {t for t in targets if (m, t) not in KNOWN_BACK_EDGES} for m, targets in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import circles (KNOWN_BACK_EDGES says how to break one):\n" + "\n".join(
        _describe(c) for c in cycles)


def _reaches(start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target == goal:
                return True
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return False


def test_known_back_edges_still_close_a_circle() -> None:
    # an entry whose circle is gone comes off the list, so the list never hides a new circle
    stale = [edge for edge in KNOWN_BACK_EDGES if edge[1] not in GRAPH.get(edge[0], set()) or not _reaches(*edge[::-1])]
    assert not stale, f"these imports no longer close a circle; take them off KNOWN_BACK_EDGES: {stale}"


def test_nothing_the_kernel_imports_imports_the_kernel() -> None:
    """The kernel sits above the packages it is built from (jobs, plugins, settings, observability): a module in
    one of them that imports ``gofannon.kernel`` at run time closes a circle at the package level (e.g. the RQ
    worker building its own Kernel). It gets the kernel as an argument instead (``Kernel`` under TYPE_CHECKING)."""
    below: set[str] = set()
    todo = ["gofannon.kernel"]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in below and target != "gofannon.kernel":
                below.add(target)
                todo.append(target)
    packages = {m for m in below if MODULES[m].name == "__init__.py" and m != "gofannon"}
    in_packages = {m for m in MODULES if any(m.startswith(p + ".") for p in packages)}
    offenders = sorted(m for m in below | in_packages if "gofannon.kernel" in GRAPH[m])
    assert "gofannon.jobs" in packages  # what this test is about
    assert not offenders, f"these modules are below the kernel and import it: {offenders}"


def test_the_sandbox_child_imports_only_the_standard_library_and_itself() -> None:
    """The child runs with ``-I -S`` (no site-packages) and, under bubblewrap, sees nothing of gofannon but its own
    package: an import of anything else would stop every child from starting."""
    import sys

    child = "gofannon.sandbox.child"
    outside: list[str] = []
    for module in (m for m in MODULES if m == child or m.startswith(child + ".")):
        for node in ast.walk(ast.parse(MODULES[module].read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and not (module.endswith("__main__") and top == "child"):
                    outside.append(f"{module}: {name}")
    assert outside == []


#: The layers below the HTTP handlers: none of them may import ``gofannon.web`` (handlers call services, never
#: the other way; what both need lives below, e.g. ``gofannon.jsontext``).
BELOW_WEB = ("gofannon.services", "gofannon.llm", "gofannon.store", "gofannon.jobs", "gofannon.sandbox",
             "gofannon.models")


def test_services_and_the_layers_below_never_import_the_web_layer() -> None:
    upward = sorted((m, t) for m, targets in GRAPH.items() if m.startswith(BELOW_WEB)
                    for t in targets if t == "gofannon.web" or t.startswith("gofannon.web."))
    assert not upward, f"imports of the web layer from below it: {upward}"
