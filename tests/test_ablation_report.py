"""The seed ablation's tables from hand-made runs (no training)."""

from __future__ import annotations

import pytest

from mcad_tools.ablation_report import ablation_markdown, summarise
from mcad_core.errors import McadError


def _run(rsum: float, twin_acc: float, twin_relation: float) -> dict:
    return {"t2i_r1": 50.0, "t2i_r5": 90.0, "i2t_r1": 55.0, "i2t_r5": 91.0, "rsum": rsum, "twin_acc": twin_acc,
            "twin_colour": 70.0, "twin_size": 60.0, "twin_relation": twin_relation}


# Three seeds per variant, in the same seed order.
RUNS = {
    "contrastive": [_run(440, 52, 50), _run(450, 55, 51), _run(445, 54, 49)],
    "dual_kd": [_run(490, 62, 55), _run(500, 66, 58), _run(495, 63, 56)],
    "mcad": [_run(494, 62, 56), _run(498, 66, 60), _run(501, 63, 56)],
}


def test_summarise_means_stds_and_paired_differences():
    s = summarise(RUNS)
    assert s["stats"]["dual_kd"]["rsum"] == {"mean": 495.0, "std": 5.0}
    assert s["stats"]["mcad"]["twin_colour"] == {"mean": 70.0, "std": 0.0}
    assert set(s["paired"]) == {"dual_kd", "contrastive"}
    assert set(s["paired"]["dual_kd"]) == {"contrastive", "mcad"}  # a baseline is not compared with itself
    # mcad - dual_kd per seed: rsum +4 / -2 / +6: mean 2.67, std 4.16 -> within 2 std
    rsum = s["paired"]["dual_kd"]["mcad"]["rsum"]
    assert rsum["diffs"] == [4, -2, 6]
    assert rsum["mean"] == pytest.approx(8 / 3) and rsum["std"] == pytest.approx(4.1633, abs=1e-4)
    assert rsum["beyond_2std"] is False
    # dual_kd - contrastive: rsum +50 / +50 / +50 (std 0) and twin_acc +10 / +11 / +9: both clear
    kd = s["paired"]["contrastive"]["dual_kd"]
    assert kd["rsum"] == {"diffs": [50, 50, 50], "mean": 50, "std": 0.0, "beyond_2std": True}
    assert kd["twin_acc"]["mean"] == 10 and kd["twin_acc"]["std"] == 1 and kd["twin_acc"]["beyond_2std"]
    assert set(kd) == {"rsum", "twin_acc", "twin_colour", "twin_size", "twin_relation"}


def test_one_seed_is_never_beyond_two_std_and_missing_columns_are_left_out():
    runs = {"dual_kd": [{"rsum": 500.0}], "mcad": [{"rsum": 510.0}]}  # data without twins: no twin keys
    s = summarise(runs)
    assert s["stats"]["mcad"] == {"rsum": {"mean": 510.0, "std": 0.0}}
    assert s["paired"] == {"dual_kd": {"mcad": {"rsum": {"diffs": [10.0], "mean": 10.0, "std": 0.0,
                                                         "beyond_2std": False}}}}
    assert summarise({"mcad": [{"rsum": 1.0}]})["paired"] == {}  # no baseline ran


def test_runs_must_pair_up_seed_by_seed():
    with pytest.raises(McadError, match="one run per seed"):
        summarise({"dual_kd": [_run(1, 1, 1)] * 3, "mcad": [_run(1, 1, 1)] * 2})


def test_ablation_markdown_tables():
    configs = {"contrastive": [], "dual_kd": ["distill.w_hard=1.0"], "mcad": ["fuse.lambda=0"]}
    md = ablation_markdown(summarise(RUNS), [0, 1, 2], configs, [100])
    lines = md.splitlines()
    assert lines[0] == "# Ablation: 3 seeds (0, 1, 2), test split, mean ± std"
    assert "with distill.seed 100" in lines[2]
    assert "- `mcad`: `fuse.lambda=0`" in lines and "- `contrastive`: params.yaml as is" in lines
    assert ("| variant | t2i_r1 | t2i_r5 | i2t_r1 | i2t_r5 | rsum | twin_acc | twin_colour | twin_size"
            " | twin_relation |") in lines
    assert "| dual_kd | 50.00 ± 0.00 | 90.00 ± 0.00 | 55.00 ± 0.00 | 91.00 ± 0.00 | 495.00 ± 5.00 |" in md
    assert "| variant | baseline | Δ rsum | Δ twin_acc | Δ twin_colour | Δ twin_size | Δ twin_relation |" in lines
    zero = "+0.00 ± 0.00 (+0.00 / +0.00 / +0.00)"
    assert (f"| mcad | dual_kd | +2.67 ± 4.16 (+4.00 / -2.00 / +6.00) | {zero} | {zero} | {zero}"
            " | +1.00 ± 1.00 (+1.00 / +2.00 / +0.00) |") in lines
    assert ("| dual_kd | contrastive | **+50.00 ± 0.00** (+50.00 / +50.00 / +50.00) | **+10.00 ± 1.00**"
            f" (+10.00 / +11.00 / +9.00) | {zero} | {zero} | **+6.33 ± 1.15** (+5.00 / +7.00 / +7.00) |") in lines
    # A header and 3 variants, then a header and 2 baselines x 2 other variants.
    assert sum(line.startswith("| ") for line in lines) == 1 + 3 + 1 + 4
