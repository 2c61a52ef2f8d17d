"""The prepare stage's work: manifests per split, a dataset card and a contact sheet.

The whole prepared folder is built in a temporary sibling and renamed into place at the
end, so a failure never leaves a partial manifest and a previous good folder survives.
"""

from __future__ import annotations

from pathlib import Path

from mcad_core.data.user_split import user_split
from mcad_core.data.card import dataset_card, write_contact_sheet
from mcad_core.data.karpathy import load_karpathy
from mcad_core.data.manifest import (SOURCE_FILE, SPLITS, TEACHER_SPLITS, TEXTS_FILE, TRUTH_FILE, twin_index,
                                     write_manifest, write_texts)
from mcad_core.data.synthetic import generate_split, write_split
from mcad_core.io import atomic_path, write_json
from mcad_core.params import DataParams


def prepare_dataset(data_params: DataParams, out_dir: Path, card_path: Path, contact_sheet_path: Path,
                    progress: bool = True) -> dict:
    """Build ``out_dir/{train,val,test,teacher,teacher_val}.jsonl``, ``texts.jsonl``, the train
    truth and ``source.json``; write the card and sheet; return the card.

    ``train.jsonl`` is the user's split (docs/DESIGN.md §2, "Protocol"). The teachers' corpus is another
    random stream of the generator; with a Karpathy dataset it is the captioned train photos.
    """
    # Everything that can fail on bad input runs before the folder is touched.
    if data_params.source == "synthetic":
        syn = data_params.synthetic
        sizes = {"train": syn.n_train, "val": syn.n_val, "test": syn.n_test, "teacher": syn.n_teacher,
                 "teacher_val": syn.n_teacher_val}
        scenes = {split: generate_split(split, sizes[split], data_params.seed, syn.image_size,
                                        syn.captions_per_image, syn.max_objects, syn.partial_captions) for split in (*SPLITS, *TEACHER_SPLITS)}
        image_root, skipped = ".", None
    else:
        dataset = load_karpathy(data_params.karpathy, progress)
        image_root, skipped = str(dataset.image_root), dataset.skipped_images

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if data_params.source == "synthetic":
            splits = {split: write_split(scenes[split], tmp, split, syn.image_size, progress) for split in scenes}
        else:
            splits = dict(dataset.splits)
        knobs = data_params.user_split
        user = user_split(splits["train"], twin_index(splits["train"]), knobs.uncaptioned_frac, knobs.pool_captions,
                          knobs.mismatched_frac, data_params.seed)
        splits["train"] = user.photos
        if data_params.source == "karpathy":
            splits.update(teacher=[r for r in user.photos if r["captions"]], teacher_val=[])
        for split, records in splits.items():
            write_manifest(tmp / f"{split}.jsonl", records)
        write_manifest(tmp / TRUTH_FILE, user.truth)
        write_texts(tmp / TEXTS_FILE, user.texts)
        write_json(tmp / SOURCE_FILE, {"source": data_params.source, "image_root": image_root})
        card = dataset_card(data_params.source, {**splits, "train": user.truth}, skipped)
        card["user_split"] = {"captioned_photos": sum(bool(r["captions"]) for r in user.photos),
                              "uncaptioned_photos": sum(not r["captions"] for r in user.photos),
                              "mismatched_photos": sum(p["captions"] != t["captions"] and bool(p["captions"])
                                                       for p, t in zip(user.photos, user.truth)),
                              "unpaired_texts": len(user.texts)}
        write_json(card_path, card)
        write_contact_sheet(contact_sheet_path, tmp, user.truth)
    return card
