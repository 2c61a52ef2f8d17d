"""After-the-fact diagnostics of honest mining: how often the teachers found what only the
generator knows. Read by the evaluate stage; nothing that trains ever imports this module."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def mining_report(prepared_dir: Path, cache_dir: Path, teachers_dir: Path, cache_params: Any) -> dict[str, Any]:
    """Per twin kind, the share of train photos whose twin is among their K mined neighbours, and
    the share of uncaptioned photos whose teacher-picked text is one of their hidden captions."""
    from mcad_core.data.manifest import TEXTS_FILE, TRUTH_FILE, flatten_captions, read_manifest, read_texts, twin_index
    from mcad_core.data.vocabulary import TWIN_KINDS
    from mcad_core.mcad.targets import load_cache

    photos = read_manifest(Path(prepared_dir) / "train.jsonl")
    truth = read_manifest(Path(prepared_dir) / TRUTH_FILE)
    texts = flatten_captions(photos)[0] + read_texts(Path(prepared_dir) / TEXTS_FILE)
    cache = load_cache(cache_dir, "train", prepared_dir, teachers_dir, cache_params)
    nbr = cache["nbr"].tolist()
    twin_of = twin_index(truth)
    report: dict[str, Any] = {"hard_k": len(nbr[0]) if nbr else 0}
    for kind in ("all", *TWIN_KINDS):
        rows = [i for i, j in enumerate(twin_of) if j >= 0 and (kind == "all" or truth[i].get("twin_kind") == kind)]
        if rows:
            report[f"twin_in_neighbours_{kind}"] = round(100 * sum(twin_of[i] in nbr[i] for i in rows) / len(rows), 2)
    labelled = cache["slot_labelled"].tolist()
    picks = [(i, j) for i, j, lab in zip(cache["slot_image"].tolist(), cache["slot_text"].tolist(), labelled)
             if not lab]
    if picks:
        hits = sum(texts[j] in truth[i]["captions"] for i, j in picks)
        report["pick_is_hidden_caption"] = round(100 * hits / len(picks), 2)
        report["uncaptioned_photos"] = len(picks)
    return report
