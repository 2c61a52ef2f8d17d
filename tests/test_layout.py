"""The package's structure: no import circle among mcad_core modules, no import that runs back up
the layers the folder names draw, and outputs named once (mcad_core/paths.py) as dvc.yaml declares
them. Imports are read with ast, top-level and inside functions alike."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from mcad_core import paths

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mcad_core"
# Bottom to top: a module may import its own layer and those below, never one above. The shared
# root modules (errors, io, params, paths, cli, precision, tracking, checkpoint) are the floor.
LAYERS = ("", "data", "student", "runtime", "evaluation", "teachers", "mcad", "export", "album")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The mcad_core module a dotted name lives in (``a.b.func`` -> ``a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """mcad_core modules ``module`` imports, anywhere in it (also under TYPE_CHECKING)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = resolve(name) if name.startswith("mcad_core") else None
            if target and target != module:
                found.add(target)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def layer(module: str) -> int:
    """The layer of a module: its first folder under mcad_core ("" for the root modules)."""
    parts = module.split(".")
    return LAYERS.index(parts[1] if len(parts) > 1 and parts[1] in LAYERS else "")


def test_no_import_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, f"import circles: {circles}"


def test_no_import_runs_back_up_the_layers():
    up = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if layer(t) > layer(m))
    assert not up, f"imports of a layer above: {up}"


def test_the_library_never_imports_the_scripts_tools():
    assert not [m for m, p in MODULES.items() if "mcad_tools" in p.read_text()]


def test_the_layers_name_every_folder():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(LAYERS) - {""}


def test_the_checker_sees_imports_inside_functions():
    # the evaluate-stage report imports the student's encoder inside student_metrics()
    assert "mcad_core.student.model" in GRAPH["mcad_core.evaluation.report"]


def test_every_dvc_output_is_named_in_paths():
    """dvc.yaml's outs, metrics and plots are the paths the stages write (mcad_core/paths.py)."""
    named = {v for k, v in vars(paths).items() if k.isupper() and not k.startswith("_") and isinstance(v, Path)}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = [Path(next(iter(o)) if isinstance(o, dict) else o) for s in stages.values()
                for kind in ("outs", "metrics", "plots") for o in s.get(kind, [])]
    unnamed = [str(d) for d in declared if d not in named and not named & set(d.parents)]
    assert declared and not unnamed, f"dvc.yaml outputs not in mcad_core/paths.py: {unnamed}"


def test_every_path_constant_is_used_by_a_stage_or_script():
    sources = "\n".join(p.read_text() for folder in ("stages", "scripts", "mcad_core", "mcad_tools")
                        for p in (ROOT / folder).rglob("*.py") if p.name != "paths.py")
    unused = [k for k, v in vars(paths).items()
              if k.isupper() and not k.startswith("_") and isinstance(v, Path) and k not in sources]
    assert not unused, f"unused constants in mcad_core/paths.py: {unused}"
