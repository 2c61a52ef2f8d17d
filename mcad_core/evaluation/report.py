"""The evaluate stage's reports: a student's test metrics, the results table, the DVC metrics and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.evaluation.metrics import RECALL_KEYS, TWIN_KEYS, embedding_metrics
from mcad_core.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# What experiments are compared on (reports/metrics.json, the DVC metric); the rest goes to results.json.
COMPARED_KEYS = ("rsum", *TWIN_KEYS)


def compared_metrics(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per model, only what experiments are compared on: a ``dvc exp show`` a terminal can hold."""
    return {name: {k: row[k] for k in COMPARED_KEYS if k in row} for name, row in results.items()}


def results_markdown(metrics: dict[str, dict[str, float]]) -> str:
    """A table a person can read: one row per model."""
    cols = [*RECALL_KEYS, "rsum", *TWIN_KEYS, "params_m"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in metrics.items():
        cells = [f"{row[c]:.2f}" if isinstance(row.get(c), (int, float)) else "–" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recall_rows(metrics: dict[str, dict[str, float]]) -> list[dict]:
    """Flat rows for a DVC bar plot: one per (model, recall metric)."""
    return [{"model": name, "metric": k, "recall": row[k]} for name, row in metrics.items() for k in RECALL_KEYS if k in row]


def _grouped_bars(ax: Axes, groups: list[str], series: dict[str, list[float]]) -> None:
    """One bar per series in each group, groups side by side, labelled."""
    import numpy as np

    width = 0.8 / max(1, len(series))
    for j, (name, vals) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + j * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)


def _save_png(fig: Figure, png_path: str | Path) -> None:
    """Write a figure atomically (DVC never sees half a PNG) and free it."""
    import matplotlib.pyplot as plt

    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_recalls(metrics: dict[str, dict[str, float]], png_path: str | Path) -> None:
    """Grouped bars of R@1/5/10 per model, both directions, as a PNG (opens offline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, direction in zip(axes, ("t2i", "i2t")):
        ks = [f"{direction}_r{k}" for k in (1, 5, 10)]
        _grouped_bars(ax, ["R@1", "R@5", "R@10"], {name: [row.get(k, float("nan")) for k in ks]
                                                   for name, row in metrics.items()})
        ax.set_title("text → image" if direction == "t2i" else "image → text")
    axes[0].set_ylabel("recall (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save_png(fig, png_path)


def plot_twins(metrics: dict[str, dict[str, float]], png_path: str | Path) -> None:
    """Grouped bars of twin accuracy per model, overall and per twin kind, against chance (50):
    which bindings (colour, size, relation) reached each model. Data without twins gets a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(names) + 1.5), 4))
    _grouped_bars(ax, names, {key: [metrics[n].get(key, float("nan")) for n in names] for key in TWIN_KEYS})
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(ylabel="twin accuracy (%)", title="own scene vs its minimal-pair twin")
    ax.tick_params(axis="x", labelsize=8)
    if not any(k in row for row in metrics.values() for k in TWIN_KEYS):
        ax.text(0.5, 0.75, "no twin pairs in this data", transform=ax.transAxes, ha="center")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    _save_png(fig, png_path)


def student_metrics(model: object, tokenizer: object, records: list[dict], prepared_dir: Path,
                    images: object | None = None, workers: int = 0) -> dict[str, float]:
    """A student's retrieval, twin accuracy and size on a split. ``images``: an image source
    (``mcad_core.data.images``); by default the split streams through a DataLoader."""
    import torch

    from mcad_core.data.claims import caption_matches
    from mcad_core.data.images import StreamedImages
    from mcad_core.data.manifest import flatten_captions, twin_index, twin_kinds
    from mcad_core.student.model import encode_all
    from mcad_core.student.model import params_m

    captions, cap_image = flatten_captions(records)
    if images is None:
        images = StreamedImages(prepared_dir, records, model.config.image.image_size, workers)
    f, g = encode_all(model, images, torch.from_numpy(tokenizer.encode(captions)))
    return {**embedding_metrics(f, g, cap_image, twin_index(records), twin_kinds(records), caption_matches(records)),
            "params_m": round(params_m(model), 3)}
