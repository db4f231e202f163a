"""The core's shape: no import cycle inside seremo/, and configs validate without Ray or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seremo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``: imports for annotations, never run."""
    return {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for stmt in node.body for n in ast.walk(stmt)}  # fmt: skip


def import_graph() -> dict[str, set[str]]:
    """module -> the seremo modules it imports anywhere it runs (top level or inside functions; not the
    annotation-only imports under ``if TYPE_CHECKING:``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from .y import z
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t not in ("seremo", name)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph()
    assert "seremo.pipeline" in graph["seremo.cli"]  # the walker sees imports inside functions
    assert "seremo.storage" in graph["seremo.pipeline"]
    assert "seremo.bundle" not in graph["seremo.bundle_models"]  # its `if TYPE_CHECKING:` import is not run


def test_seremo_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_validating_configs_imports_neither_ray_nor_torch():
    code = (
        "import sys, glob\n"
        "from seremo import cli, pipeline\n"
        "cli.build_parser()\n"
        "files = sorted(glob.glob('configs/*.yaml'))\n"
        "assert files\n"
        "for f in files:\n"
        "    cfg = pipeline.load(f)\n"
        "print(len(files), sorted(m for m in ('ray', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) >= 5
    assert loaded.strip() == "[]", f"validating configs imported {loaded.strip()}"


def test_the_torch_free_model_registry_is_the_nets_constructors_and_kinds():
    import inspect

    from seremo import deep_models, nets

    assert list(deep_models.MODELS) == list(nets.MODELS)
    for name, cls in nets.MODELS.items():
        params = [p.name for p in inspect.signature(cls).parameters.values()]
        spec = deep_models.MODELS[name]
        assert (spec.data_args, spec.arch) == (tuple(params[:2]), tuple(params[2:])), name
        assert spec.kind == cls.kind, name
