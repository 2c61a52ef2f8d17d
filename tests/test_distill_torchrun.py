"""Distillation under torchrun, driven as the README's several-GPU recipe says (2 CPU processes, gloo):
from no checkpoint folder, after a kill, and with a stale folder; then `dvc commit` records it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mcad_core.mcad import distributed
from tests.test_pipeline_dvc import ROOT, TINY, merge, run

# The commands of the README's "Several GPUs" section, run here on the CPU.
REPRO = ["dvc", "repro", "cache", "fuse"]
TORCHRUN = ["torchrun", "--standalone", "--nproc_per_node", "2", "stages/distill.py", "--variant", "mcad"]
COMMIT = ["dvc", "commit", "-f", "distill@mcad"]
EPOCHS = 4
CKPT = Path("models/checkpoints/mcad")


def test_only_rank_zero_prepares_the_checkpoint_folder(tmp_path, monkeypatch):
    waited: list[int] = []
    monkeypatch.setattr(distributed, "barrier", waited.append)
    stale = tmp_path / "ckpt"
    stale.mkdir()
    (stale / "RUN_KEY").write_text("old\n")
    (stale / "last.pt").write_text("old run")

    assert distributed.shared_checkpoint_dir(stale, "new", rank=1, world=2) == stale
    assert sorted(p.name for p in stale.iterdir()) == ["RUN_KEY", "last.pt"]  # rank 1 left it alone
    distributed.shared_checkpoint_dir(stale, "new", rank=0, world=2)
    assert [p.name for p in stale.iterdir()] == ["RUN_KEY"] and (stale / "RUN_KEY").read_text() == "new\n"
    assert waited == [2, 2]  # both ranks met at the barrier


def _env() -> dict[str, str]:
    # one thread per rank: two ranks on a 2-core machine
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def _torchrun(repo: Path) -> str:
    """The stage under torchrun; its stderr (progress bars, warnings)."""
    out = subprocess.run(TORCHRUN, cwd=repo, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"torchrun failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stderr


def _torchrun_killed_after_an_epoch(repo: Path) -> int:
    """Start the stage and SIGKILL torchrun and both ranks (each in its own session) as soon as a
    checkpoint lands; the epoch it holds."""
    import torch

    proc = subprocess.Popen(TORCHRUN, cwd=repo, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved, deadline = repo / CKPT / "last.pt", time.monotonic() + 600
    while not saved.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "torchrun ended before its first checkpoint"
        time.sleep(0.002)
    tasks = Path(f"/proc/{proc.pid}/task").iterdir()
    ranks = [int(pid) for task in tasks for pid in (task / "children").read_text().split()]
    assert len(ranks) == 2, ranks
    for pid in (*ranks, proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    return torch.load(saved, weights_only=False)["epoch"]


def _epochs_run(stderr: str) -> list[int]:
    """Epochs whose (single) progress bar finished, in order."""
    return [int(e) for e in re.findall(rf"distill mcad epoch (\d+)/{EPOCHS}: 100%", stderr)]


def _set_params(repo: Path, over: dict) -> None:
    path = repo / "params.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(path.read_text()), over), sort_keys=False))


@pytest.mark.slow
def test_torchrun_two_ranks_fresh_killed_stale_then_dvc_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "stages", "mcad_core", ".gitignore", "params.yaml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / item)
    _set_params(repo, merge(TINY, {"distill": {"variants": ["mcad"], "epochs": EPOCHS}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"],
                REPRO):
        run(cmd, repo)
    assert not (repo / CKPT).exists()

    # no checkpoint folder: both ranks start, rank 0 creates it; killed once an epoch is saved
    done = _torchrun_killed_after_an_epoch(repo)
    assert 1 <= done < EPOCHS, "the run ended before it could be killed"
    # resumable folder: the re-run continues from the saved epoch, one progress bar per epoch
    resumed = _torchrun(repo)
    assert _epochs_run(resumed) == list(range(done + 1, EPOCHS + 1)), resumed[-2000:]
    assert "find_unused_parameters" not in resumed, resumed[-2000:]  # DDP's per-step search is off
    key = (repo / CKPT / "RUN_KEY").read_text()

    # stale folder (other params): rank 0 clears it and the run starts from epoch 1
    _set_params(repo, {"distill": {"lr": 0.001}})
    stale = _torchrun(repo)
    assert _epochs_run(stale) == list(range(1, EPOCHS + 1)), stale[-2000:]
    assert (repo / CKPT / "RUN_KEY").read_text() != key

    run(COMMIT, repo)
    status = run(["dvc", "status", "distill@mcad"], repo)
    assert "up to date" in status.stdout, status.stdout
