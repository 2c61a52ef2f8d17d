"""Choosing each variant's config from val runs: the best mean val RSUM over the tuning seeds."""

from mcad_tools.tuning import choose, tuning_markdown


def _run(variant, overrides, seed, rsum, twin=60.0):
    return {"variant": variant, "overrides": overrides, "seed": seed, "val": {"rsum": rsum, "twin_acc": twin}}


RUNS = [
    _run("mcad", ["a=1"], 1, 500), _run("mcad", ["a=1"], 2, 520),     # mean 510
    _run("mcad", ["a=2"], 1, 530), _run("mcad", ["a=2"], 2, 480),     # mean 505: best single run, worse mean
    _run("dual_kd", [], 1, 490), _run("dual_kd", [], 2, 490),
    _run("dual_kd", ["b=1"], 1, 490), _run("dual_kd", ["b=1"], 2, 490),  # a tie: the first listed wins
]


def test_choose_takes_the_best_mean_over_seeds_per_variant():
    assert choose(RUNS) == {"mcad": {"overrides": ["a=1"], "val_rsum": 510.0},
                            "dual_kd": {"overrides": [], "val_rsum": 490.0}}
    assert choose(RUNS, "twin_acc")["mcad"]["overrides"] == ["a=1"]


def test_markdown_marks_the_chosen_rows():
    md = tuning_markdown(RUNS, choose(RUNS), [1, 2])
    assert "distill.seed 1, 2" in md.splitlines()[0]
    assert "| mcad | **`a=1`** | 510.00 | 60.00 |" in md and "| mcad | `a=2` | 505.00 |" in md
    assert "| dual_kd | **(defaults)** |" in md
