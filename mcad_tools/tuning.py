"""Choosing each variant's config from val runs (``scripts/tune.py`` trains, this only counts)."""

from __future__ import annotations

from statistics import mean

TUNING_COLUMNS = ("rsum", "twin_acc", "twin_colour", "twin_size", "twin_relation")


def _grouped(runs: list[dict]) -> dict[tuple[str, tuple[str, ...]], list[dict]]:
    groups: dict[tuple[str, tuple[str, ...]], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["variant"], tuple(run["overrides"])), []).append(run["val"])
    return groups


def choose(runs: list[dict], criterion: str = "rsum") -> dict[str, dict]:
    """Per variant, the overrides with the best mean val ``criterion`` over the tuning seeds
    (first listed wins a tie), with that mean."""
    best: dict[str, dict] = {}
    for (variant, overrides), rows in _grouped(runs).items():
        score = mean(r[criterion] for r in rows)
        if variant not in best or score > best[variant]["val_" + criterion]:
            best[variant] = {"overrides": list(overrides), "val_" + criterion: round(score, 2)}
    return best


def tuning_markdown(runs: list[dict], chosen: dict[str, dict], seeds: list[int]) -> str:
    """``reports/tuning.md``: every config's mean val figures, the chosen one per variant in bold."""
    lines = [f"# Tuning on the val split (distill.seed {', '.join(map(str, seeds))}; test never read)\n",
             "Each variant gets the same number of runs over its own knobs; the chosen config (bold) has the "
             "best mean val RSUM. `scripts/tune.py --grid configs/tuning/grid.yaml` reruns it.\n",
             "| variant | overrides | " + " | ".join(TUNING_COLUMNS) + " | best epoch (val rsum) |",
             "|---" * (len(TUNING_COLUMNS) + 3) + "|"]
    for (variant, overrides), rows in _grouped(runs).items():
        cells = [f"{mean(r[c] for r in rows):.2f}" if all(c in r for r in rows) else "–" for c in TUNING_COLUMNS]
        curve = rows[0].get("val_curve") or []
        best_epoch = max(range(len(curve)), key=lambda e: curve[e].get("rsum", 0)) + 1 if curve else "–"
        text = " ".join(f"`{o}`" for o in overrides) or "(defaults)"
        if chosen.get(variant, {}).get("overrides") == list(overrides):
            text = f"**{text}**"
        lines.append(f"| {variant} | {text} | " + " | ".join(cells) + f" | {best_epoch} |")
    return "\n".join(lines) + "\n"
