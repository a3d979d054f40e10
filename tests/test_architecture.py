"""The shape of the package: the registry is a leaf, and no two modules import each other,
directly or around a loop (counting imports inside functions too: a lazy import only hides
a cycle)."""
import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "mixbench"


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path) -> set[str]:
    """The mixbench modules ``path`` imports: ``from a.b import c`` counts as a.b.c when
    that is a module, else as a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                         else node.module for a in node.names)
    return {name for name in found if name in MODULES}


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_loop_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # the timm backbone reads a user's weights file with an import inside its factory
    assert "mixbench.engine.checkpoint" in graph["mixbench.models.timm_adapter"]
    # methods reach the backbone inside DDP / compile wrappers with timm's unwrap_model,
    # not through the engine (which imports the methods)
    assert not any(name.startswith("mixbench.engine")
                   for name in graph["mixbench.methods.model_access"])


def test_no_import_cycles_among_mixbench_modules():
    assert find_cycle(import_graph()) is None, f"import cycle: {find_cycle(import_graph())}"


def test_importing_the_registry_imports_no_component_package():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, mixbench.registry; "
         "print(sorted(m for m in sys.modules if m.startswith('mixbench')))"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(ast.literal_eval(out.stdout.strip()))
    assert loaded <= {"mixbench", "mixbench.config", "mixbench.errors", "mixbench.registry"}, \
        loaded


def test_the_registry_module_imports_nothing_of_mixbench_but_its_errors():
    assert import_graph()["mixbench.registry"] == {"mixbench.errors"}


def test_the_engine_is_below_the_protocols_and_the_application():
    """engine/ is the low-level layer: protocols and the commands (mixbench.app) use it,
    never the other way round."""
    graph = import_graph()
    upward = {f"{name} -> {dep}" for name, deps in graph.items()
              if name.startswith("mixbench.engine") for dep in deps
              if dep.startswith(("mixbench.protocols", "mixbench.app"))}
    assert not upward
    # and the layer check sees a real import: the application does import the protocols
    assert "mixbench.protocols" in graph["mixbench.app.train"]


def test_only_the_application_imports_the_application():
    graph = import_graph()
    assert not {name for name, deps in graph.items() if not name.startswith("mixbench.app")
                and any(dep.startswith("mixbench.app") for dep in deps)}
