"""Tuning and ablation runs re-fit fused targets only when what the fuse stage reads changes."""

from pathlib import Path

from mcad_core.mcad import experiment
from mcad_core.params import parse_params, with_overrides


def test_fused_targets_are_refit_once_per_fuse_setting(tmp_path, monkeypatch):
    fits: list[Path] = []

    def fake_fit(params, folder, *args, **kwargs):
        fits.append(folder)
        folder.mkdir()

    monkeypatch.setattr("mcad_core.mcad.targets.write_fused_targets", fake_fit)
    base = parse_params({})
    pipeline = tmp_path / "fused"

    def folder(*overrides):
        return experiment.fused_for(with_overrides(base, list(overrides)), base, tmp_path, pipeline,
                                    tmp_path / "cache", tmp_path / "prepared", tmp_path / "teachers")

    # distill knobs, and a fuse value equal to the pipeline's, use the pipeline's targets
    assert folder("distill.w_hard=1.0") == pipeline
    assert folder(f"fuse.tau_m={base.fuse.tau_m}") == pipeline
    # another fuse setting is fitted once, whatever distill knobs come with it
    first = folder("fuse.tau_m=3.0")
    assert folder("fuse.tau_m=3.0", "distill.w_hard=1.0") == first != pipeline
    assert folder("seed=7") not in (first, pipeline)
    assert fits == [first, folder("seed=7")]


def test_the_ablation_refuses_seeds_used_in_tuning(tmp_path):
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    tuning = tmp_path / "tuning.json"
    tuning.write_text(json.dumps({"seeds": [100, 3], "chosen": {"mcad": {"overrides": []}}}))
    out = subprocess.run([sys.executable, "scripts/ablation.py", "--seeds", "0,3", "--tuning", str(tuning)],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        f"Error: --seeds: [3] were used in tuning ({tuning}); the ablation needs fresh seeds")
