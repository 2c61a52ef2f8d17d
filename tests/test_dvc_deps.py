"""Every mcad_core file a stage imports (at any depth, top-level or inside functions) is covered
by one of the stage's dvc.yaml deps, so changing it makes `dvc status` report the stage."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The file of an mcad_core module or package, relative to the repo root."""
    if not name.startswith("mcad_core"):
        return None
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT)
    return None


def imported_files(path: Path) -> set[Path]:
    """mcad_core files one source file imports, with the packages on the way (their __init__ runs)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:depth]))
                if file is not None:
                    found.add(file)
    return found


def closure(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for dep in imported_files(path) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def covered(file: Path, deps: list[str]) -> bool:
    return any(file == Path(d) or Path(d) in file.parents for d in deps)


def test_every_imported_module_is_a_dependency():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        script = Path(stage["cmd"].split()[1])
        gaps = sorted(str(f) for f in closure(script) if not covered(f, stage["deps"]))
        if gaps:
            missing[name] = gaps
    assert not missing, f"dvc.yaml deps miss imported modules: {missing}"


def test_the_closure_sees_imports_inside_functions():
    # distill imports the training loop inside main(); the closure must follow it to the student.
    files = closure(Path("stages/distill.py"))
    assert Path("mcad_core/mcad/train.py") in files and Path("mcad_core/student/model.py") in files


def test_the_lock_hashes_nothing_that_changes_run_to_run():
    """Checkpoints (resume state, written with timings and RNG states) are not DVC outputs, so a
    fresh clone's `make repro` leaves dvc.lock as committed."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages.values() for o in s.get("outs", [])]
    assert outs and not [o for o in outs if o.startswith("models/checkpoints")]
