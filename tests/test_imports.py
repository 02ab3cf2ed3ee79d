"""The rooms of the house (../shared/DESIGN.md), held by reading every module's imports with ast.

Every import counts, also those inside functions: a lazy import is still a dependency, and a cycle through one
is still a cycle. "At import time" means the module's top level (what `import bigtrain.x` executes).
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bigtrain"
HEAVY = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "deepspeed")

# Which rooms each room may import from (subpackages and top-level modules of bigtrain, by name). A DAG:
# config and data sit at the bottom, tasks at the top.
ALLOWED: dict[str, set[str]] = {
    "bigtrain": set(),
    "errors": set(),
    "atomic": set(),
    "safe_load": {"errors"},
    "quantization": {
        "errors",
        "atomic",
        "model",
    },  # torchao int8 and its plain-tensor file  # the one weights-only checkpoint loader
    "model": set(),
    "data": {"errors", "atomic"},
    "config": {"errors", "data", "model"},  # data: the tokenizer names validation accepts; model: shapes only
    "plan": {"errors", "config", "model"},  # model: its torch-free shapes module only (checked below)
    "parallel": {"errors", "atomic", "config", "model", "safe_load"},
    "hf": {"errors", "data", "model"},
    "checkpoint_io": {"errors", "data", "model", "parallel", "hf", "safe_load", "quantization"},
    "training": {"errors", "atomic", "config", "model", "parallel", "checkpoint_io", "safe_load", "plan"},
    "sweep": {"errors", "config", "plan", "parallel"},
    "tasks": {
        "errors",
        "config",
        "data",
        "model",
        "plan",
        "parallel",
        "training",
        "checkpoint_io",
        "hf",
        "sweep",
        "quantization",
        "atomic",
        "safe_load",
    },
    "worker": {"errors", "config", "tasks"},
    "diskerrors": {"errors", "training"},  # a full or read-only disk as one line naming the newest checkpoint
    "__main__": {"errors", "config", "tasks", "diskerrors"},
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    top_level: bool  # executed when the importing module is imported
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str | None = None) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = top_level and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend(Import(name, a.name, top_level, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                found.append(Import(name, base, top_level, child.lineno))
                # `from bigtrain.x import y` may name a submodule y
                found.extend(Import(name, f"{base}.{a.name}", top_level, child.lineno) for a in child.names)
            visit(child, inside)

    visit(tree, True)
    return found


ALL_IMPORTS = [i for path in sorted(PACKAGE.rglob("*.py")) for i in _imports(path)]


def _room(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != "bigtrain":
        return None
    return parts[1] if len(parts) > 1 else "bigtrain"


def _existing(dotted: str) -> bool:
    """Whether a bigtrain dotted name is a module or package here (not a name imported from one)."""
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _room_edges() -> dict[str, dict[str, list[str]]]:
    edges: dict[str, dict[str, list[str]]] = {}
    for i in ALL_IMPORTS:
        src, dst = _room(i.module), _room(i.target)
        if dst is None or src == dst or not _existing(i.target):
            continue
        edges.setdefault(src, {}).setdefault(dst, []).append(f"{i.module}:{i.line} imports {i.target}")
    return edges


def test_every_room_is_in_the_table():
    rooms = {_room(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(ALLOWED), f"new rooms need a row in ALLOWED: {sorted(rooms - set(ALLOWED))}"


def test_rooms_import_only_what_the_table_allows():
    wrong = [
        where
        for src, targets in _room_edges().items()
        for dst, places in targets.items()
        if dst not in ALLOWED[src]
        for where in places
    ]
    assert not wrong, "imports across rooms the table does not allow:\n" + "\n".join(wrong)


def test_no_package_cycles():
    graph = {src: set(targets) for src, targets in _room_edges().items()}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # report each cycle once, from its smallest room
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    assert not cycles, "package cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_model_imports_torch_and_the_standard_library_only():
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if _room(i.module) == "model"
        and i.target.split(".")[0] not in (*sys.stdlib_module_names, "torch", "__future__")
        and _room(i.target) != "model"
    ]
    assert not wrong, "\n".join(wrong)


def test_plan_and_config_import_of_model_only_its_torch_free_shapes():
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if _room(i.module) in ("plan", "config") and _room(i.target) == "model" and i.target != "bigtrain.model.shapes"
        if _existing(i.target)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("room", "top_level_only"),
    [("plan", False), ("config", True)],  # config checks the local GPUs when launching, lazily, with torch
)
def test_plan_and_config_import_no_torch(room, top_level_only):
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if _room(i.module) == room and i.target.split(".")[0] in HEAVY and (i.top_level or not top_level_only)
    ]
    assert not wrong, "\n".join(wrong)


def test_deepspeed_only_under_parallel():
    wrong = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in ALL_IMPORTS
        if i.target.split(".")[0] == "deepspeed" and _room(i.module) != "parallel"
    ]
    assert not wrong, "\n".join(wrong)


def test_importing_the_light_rooms_loads_no_heavy_library():
    """The transitive check the ast rules stand for: what `import` really loads, in a fresh interpreter."""
    code = (
        "import sys\n"
        "import bigtrain.config, bigtrain.config.validate, bigtrain.config.compose, bigtrain.plan\n"
        "import bigtrain.parallel.traits, bigtrain.parallel.slurm_jobs, bigtrain.sweep.status, bigtrain.model.shapes\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_task_list_is_the_tasks_package():
    from bigtrain.config.validate import TASKS

    modules = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE / "tasks")]) if not m.name.startswith("_"))
    assert list(TASKS) == modules, "add the new task to TASKS in bigtrain/config/validate.py"


def test_the_table_rules_catch_a_violation(tmp_path):
    """The reader sees lazy, relative and from-imports (so the rules above can fail)."""
    bad = tmp_path / "probe.py"
    bad.write_text("from ..plan import search\n\ndef f():\n    import deepspeed\n    from . import gpt\n")
    got = {(i.target, i.top_level) for i in _imports(bad, "bigtrain.model.probe")}
    assert ("bigtrain.plan", True) in got and ("bigtrain.plan.search", True) in got
    assert ("deepspeed", False) in got and ("bigtrain.model.gpt", False) in got
