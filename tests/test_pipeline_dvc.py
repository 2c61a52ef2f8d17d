"""The whole DVC pipeline on a tiny config, as a user drives it: repro, a no-op repro, exp run -S."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"synthetic": {"n_train": 48, "n_val": 16, "n_test": 16, "n_teacher": 48, "n_teacher_val": 16,
                           "captions_per_image": 2}},
    "teachers": {"dual": {"epochs": 1, "batch_size": 16}, "single": {"epochs": 1, "batch_size": 16}, "rerank_k": 4},
    "cache": {"batch_size": 64, "hard_k": 3},
    "distill": {"variants": ["contrastive", "mcad"], "epochs": 1, "batch_size": 16},
    "export": {"formats": ["fp32"], "calib_samples": 8},
    "bench": {"threads": [1], "runs": 3, "warmup": 1, "gallery_sizes": [100]},
}


def merge(base: dict, over: dict) -> dict:
    return {k: merge(base[k], v) if isinstance(v, dict) else v for k, v in over.items()} | \
        {k: v for k, v in base.items() if k not in over}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "2",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_repro_noop_and_experiment(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "stages", "mcad_core", ".gitignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / item)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "init"], repo)

    run(["dvc", "repro"], repo)
    results = json.loads((repo / "reports/results.json").read_text())
    assert {"contrastive", "mcad", "teacher_dual"} <= results.keys()
    assert "twin_acc" in results["mcad"] and results["mcad"]["params_m"] > 0
    # The DVC metrics hold only what experiments compare (a readable `dvc exp show`).
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics.keys() == results.keys()
    assert {"rsum", "twin_acc"} <= metrics["mcad"].keys() <= {"rsum", "twin_acc", "twin_colour", "twin_size",
                                                               "twin_relation"}
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert {path for rev in shown.values() for path in rev["data"]} == {
        "reports/metrics.json", "reports/export_metrics.json", "reports/search_metrics.json",
        # each variant's val figures (DVCLive, last epoch): what experiments are chosen on
        "reports/live/contrastive/metrics.json", "reports/live/mcad/metrics.json"}
    assert json.loads((repo / "reports/export_metrics.json").read_text()).keys() == {"fp32"}
    for path in ("reports/recall.png", "reports/twins.png", "reports/results.md", "reports/search_latency.png",
                 "reports/export.json", "reports/latency.json", "reports/search_metrics.json",
                 "reports/live/mcad/metrics.json", "models/tflite/text_fp32.tflite", "models/student/mcad"):
        assert (repo / path).exists(), path

    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout, again.stdout

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    run(["dvc", "exp", "run", "-S", "fuse.lambda=0", "-S", "distill.w_hard=1", "-S", "distill.seed=1"], repo)
    diff = run(["dvc", "params", "diff"], repo)
    assert all(key in diff.stdout for key in ("fuse.lambda", "distill.w_hard", "distill.seed"))
    shown = run(["dvc", "metrics", "diff", "--all"], repo)
    assert "reports/metrics.json" in shown.stdout
