"""Dataset card and contact sheet: what the prepare stage produced, for a person to check at a glance."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from mcad_core.data.manifest import load_image
from mcad_core.io import atomic_path

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def caption_words(caption: str) -> list[str]:
    """Lower-case words of a caption (punctuation dropped), as the card counts them."""
    return _WORD.findall(caption.lower())


def dataset_card(source: str, splits: dict[str, list[dict]], skipped_images: int | None = None) -> dict:
    """Sizes per split, vocabulary size and caption length; twin pairs (synthetic) or skipped images (karpathy)."""
    card: dict = {"source": source, "splits": {}}
    vocabulary: set[str] = set()
    lengths: list[int] = []
    for split, records in splits.items():
        entry = {"images": len(records), "captions": sum(len(r["captions"]) for r in records)}
        if source == "synthetic":
            entry["twin_pairs"] = sum(r["twin"] is not None for r in records) // 2
        card["splits"][split] = entry
        for rec in records:
            for caption in rec["captions"]:
                words = caption_words(caption)
                vocabulary.update(words)
                lengths.append(len(words))
    card["vocabulary_size"] = len(vocabulary)
    card["caption_words"] = {"min": min(lengths), "mean": round(sum(lengths) / len(lengths), 2), "max": max(lengths)}
    if skipped_images is not None:
        card["skipped_images"] = skipped_images
    return card


def write_contact_sheet(path: Path, prepared_dir: Path, records: list[dict], n: int = 12, cols: int = 4) -> None:
    """A PNG grid of ``n`` evenly spread images with their first caption, written atomically.

    Evenly spread rather than random so the sheet is the same on every run (DVC sees no change).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [records[i * len(records) // n] for i in range(min(n, len(records)))]
    rows = -(-len(picked) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.9 * rows), squeeze=False)
    try:
        for ax in axes.flat:
            ax.axis("off")
        for ax, rec in zip(axes.flat, picked):
            image = load_image(prepared_dir, rec)
            image.thumbnail((256, 256))
            ax.imshow(image, interpolation="nearest")
            ax.set_title(rec["image_id"], fontsize=8, color="0.4")
            ax.text(0.5, -0.04, textwrap.fill(rec["captions"][0], 36), transform=ax.transAxes,
                    ha="center", va="top", fontsize=9)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)
