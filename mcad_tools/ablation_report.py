"""The seed ablation's tables (``scripts/ablation.py`` trains, this only counts).

Mean ± std per variant says how noisy each number is; paired differences say more: every
seed trains each variant on the same data and targets (only the init and batch order change),
so a variant's difference to a baseline on the same seed cancels what the seed does to both.
"""

from __future__ import annotations

from statistics import mean, stdev

from mcad_core.errors import McadError

COLUMNS = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5", "rsum", "twin_acc", "twin_colour", "twin_size", "twin_relation")
BASELINES = ("dual_kd", "contrastive")
DIFF_COLUMNS = ("rsum", "twin_acc", "twin_colour", "twin_size", "twin_relation")


def _mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample std (ddof 1; 0 for a single value)."""
    return {"mean": mean(values), "std": stdev(values) if len(values) > 1 else 0.0}


def summarise(runs: dict[str, list[dict]], columns: tuple[str, ...] = COLUMNS,
              baselines: tuple[str, ...] = BASELINES, diff_columns: tuple[str, ...] = DIFF_COLUMNS) -> dict:
    """``{"stats": {variant: {col: {mean, std}}}, "paired": {baseline: {variant: {col: {diffs, mean, std,
    beyond_2std}}}}}`` from ``runs[variant]``: one metrics row per seed, seeds in the same order for
    every variant. ``beyond_2std``: the mean paired difference exceeds twice their std (needs 2+ seeds).
    A column some run lacks (twin keys on data without twins) is left out."""
    counts = {len(rows) for rows in runs.values()}
    if len(counts) > 1 or 0 in counts:
        raise McadError(f"ablation: every variant needs one run per seed, got {({v: len(r) for v, r in runs.items()})}")
    stats = {v: {c: _mean_std([r[c] for r in rows]) for c in columns if all(c in r for r in rows)}
             for v, rows in runs.items()}
    paired: dict[str, dict] = {}
    for base in (b for b in baselines if b in runs):
        for variant, rows in runs.items():
            if variant == base:
                continue
            for c in (c for c in diff_columns if all(c in r for r in rows + runs[base])):
                diffs = [r[c] - b[c] for r, b in zip(rows, runs[base])]
                entry = {"diffs": diffs, **_mean_std(diffs)}
                entry["beyond_2std"] = len(diffs) > 1 and abs(entry["mean"]) > 2 * entry["std"]
                paired.setdefault(base, {}).setdefault(variant, {})[c] = entry
    return {"stats": stats, "paired": paired}


def _paired_cell(entry: dict | None) -> str:
    if entry is None:
        return "–"
    head = f"{entry['mean']:+.2f} ± {entry['std']:.2f}"
    return f"{f'**{head}**' if entry['beyond_2std'] else head} ({' / '.join(f'{d:+.2f}' for d in entry['diffs'])})"


def ablation_markdown(summary: dict, seeds: list[int], configs: dict[str, list[str]] | None = None,
                      tuning_seeds: list[int] | None = None, columns: tuple[str, ...] = COLUMNS,
                      diff_columns: tuple[str, ...] = DIFF_COLUMNS) -> str:
    """``reports/ablation.md``: each variant's config, mean ± std per variant, then the paired
    differences to each baseline."""
    seed_list = ", ".join(map(str, seeds))
    lines = [f"# Ablation: {len(seeds)} seeds ({seed_list}), test split, mean ± std\n"]
    if tuning_seeds is not None:
        lines.append(f"Configs chosen on val with distill.seed {', '.join(map(str, tuning_seeds))} "
                     "(reports/tuning.md); the seeds here were never used in tuning.\n")
    for variant, overrides in (configs or {}).items():
        lines.append(f"- `{variant}`: " + (" ".join(f"`{o}`" for o in overrides) or "params.yaml as is"))
    lines += ["", "| variant | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant, cols in summary["stats"].items():
        lines.append(f"| {variant} | " + " | ".join(f"{cols[c]['mean']:.2f} ± {cols[c]['std']:.2f}" if c in cols
                                                  else "–" for c in columns) + " |")
    if summary["paired"]:
        lines += ["\n## Paired differences: variant − baseline, seed by seed\n",
                  f"Mean ± std of the per-seed differences, then each seed's ({' / '.join(map(str, seeds))}); "
                  "**bold**: the mean exceeds twice the std.\n",
                  "| variant | baseline | " + " | ".join(f"Δ {c}" for c in diff_columns) + " |",
                  "|---" * (len(diff_columns) + 2) + "|"]
        for base, by_variant in summary["paired"].items():
            for variant, cols in by_variant.items():
                lines.append(f"| {variant} | {base} | " + " | ".join(_paired_cell(cols.get(c)) for c in diff_columns)
                             + " |")
    return "\n".join(lines) + "\n"
