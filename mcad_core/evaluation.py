"""Test-split evaluation of students and teachers (DESIGN §5): metrics, a table and a figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.io import atomic_path

if TYPE_CHECKING:
    import numpy as np
    import torch

RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


def twin_index(records: list[dict]) -> list[int]:
    """For each record, the index of its twin in ``records`` (-1 when it has none)."""
    ids = {r["image_id"]: i for i, r in enumerate(records)}
    return [ids.get(r.get("twin"), -1) if r.get("twin") else -1 for r in records]


def embedding_metrics(image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray,
                      cap_image: list[int], twin_of: list[int]) -> dict[str, float]:
    """Retrieval R@K both ways, RSUM and, where the data has twins, ``twin_acc``."""
    from mcad_core.retrieval import retrieval_metrics, twin_accuracy

    out = {k: round(float(v), 2) for k, v in retrieval_metrics(image_emb, text_emb, cap_image).items()}
    if any(t >= 0 for t in twin_of):
        out["twin_acc"] = round(float(twin_accuracy(image_emb, text_emb, cap_image, twin_of)), 2)
    return out


def results_markdown(metrics: dict[str, dict[str, float]]) -> str:
    """A table a person can read: one row per model."""
    cols = [*RECALL_KEYS, "rsum", "twin_acc", "params_m"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in metrics.items():
        cells = [f"{row[c]:.2f}" if isinstance(row.get(c), (int, float)) else "–" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def recall_rows(metrics: dict[str, dict[str, float]]) -> list[dict]:
    """Flat rows for a DVC bar plot: one per (model, recall metric)."""
    return [{"model": name, "metric": k, "recall": row[k]} for name, row in metrics.items() for k in RECALL_KEYS if k in row]


def plot_recalls(metrics: dict[str, dict[str, float]], png_path: str | Path) -> None:
    """Grouped bars of R@1/5/10 per model, both directions, as a PNG (opens offline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    width = 0.8 / max(1, len(names))
    for ax, direction in zip(axes, ("t2i", "i2t")):
        ks = [f"{direction}_r{k}" for k in (1, 5, 10)]
        for j, name in enumerate(names):
            vals = [metrics[name].get(k, np.nan) for k in ks]
            ax.bar(np.arange(3) + j * width, vals, width, label=name)
        ax.set_xticks(np.arange(3) + width * (len(names) - 1) / 2, ["R@1", "R@5", "R@10"])
        ax.set_title("text → image" if direction == "t2i" else "image → text")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("recall (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def student_metrics(model: object, tokenizer: object, records: list[dict], prepared_dir: Path,
                    images: np.ndarray | None = None) -> dict[str, float]:
    """A student's retrieval, twin accuracy and size on a split (``images``: preloaded uint8, optional)."""
    import torch

    from mcad_core.data.images import load_images_uint8
    from mcad_core.data.manifest import flatten_captions
    from mcad_core.mcad.train import encode_all
    from mcad_core.models.student import params_m

    captions, cap_image = flatten_captions(records)
    if images is None:
        images = load_images_uint8(prepared_dir, records, model.config.image.image_size)
    f, g = encode_all(model, torch.from_numpy(images), torch.from_numpy(tokenizer.encode(captions)))
    return {**embedding_metrics(f, g, cap_image, twin_index(records)), "params_m": round(params_m(model), 3)}
