"""The export stage's work: calibrate, convert, then measure what quantization cost.

Parity (cosine to PyTorch) is measured on the val split, retrieval (R@K with TFLite
embeddings vs PyTorch) on the test split, so calibration (train), parity and the
reported drop never share samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcad_core.export.tflite import export_student, parity
from mcad_core.runtime.encoder import TFLiteEncoder, model_filename
from mcad_core.runtime.search import quantize_gallery

if TYPE_CHECKING:
    from mcad_core.data.images import StreamedImages
    from mcad_core.student.tokenizer import StudentTokenizer


def load_image_array(prepared_dir: str | Path, records: list[dict], size: int) -> np.ndarray:
    """Manifest images as float32 [N, 3, size, size] in [0, 1] (the image tower's input), resized
    as for training and evaluation so real-data photos of any size export and calibrate alike."""
    from mcad_core.data.images import load_images_uint8

    return load_images_uint8(prepared_dir, records, size).astype(np.float32) / 255.0


def calibration_set(prepared_dir: str | Path, tokenizer: StudentTokenizer, n: int, seed: int, size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random train photos and ``n`` random texts of the user's (captions and the unpaired
    pool; an uncaptioned photo has none): full-int8 activation ranges."""
    from mcad_core.data.manifest import TEXTS_FILE, flatten_captions, read_manifest, read_texts

    records = read_manifest(Path(prepared_dir) / "train.jsonl")
    texts = flatten_captions(records)[0] + read_texts(Path(prepared_dir) / TEXTS_FILE)
    rng = np.random.default_rng(seed)
    picked = [records[i] for i in rng.choice(len(records), size=min(n, len(records)), replace=False)]
    chosen = rng.choice(len(texts), size=len(picked), replace=len(texts) < len(picked))
    return load_image_array(prepared_dir, picked, size), tokenizer.encode([texts[i] for i in chosen])


def _split_inputs(prepared_dir: Path, split: str, tokenizer: StudentTokenizer, size: int
                  ) -> tuple[StreamedImages, np.ndarray, list[int]]:
    """A split's images (streamed: never all in memory), its caption ids and each caption's image."""
    from mcad_core.data.images import StreamedImages
    from mcad_core.data.manifest import flatten_captions, read_manifest

    records = read_manifest(prepared_dir / f"{split}.jsonl")
    captions, cap_image = flatten_captions(records)
    return StreamedImages(prepared_dir, records, size), tokenizer.encode(captions), cap_image


def embed_images(encode: Callable[[np.ndarray], np.ndarray], images: StreamedImages, batch_size: int = 64,
                 desc: str | None = None) -> np.ndarray:
    """Embeddings of a streamed split, ``batch_size`` float images [B, 3, S, S] in [0, 1] at a time."""
    from tqdm import tqdm

    from mcad_core.data.images import in_order

    batches = images.batches(in_order(len(images), batch_size))
    return np.concatenate([encode(x.numpy().astype(np.float32) / 255.0)
                           for x in tqdm(batches, total=-(-len(images) // batch_size), desc=desc,
                                         disable=desc is None, leave=False)])


def _rounded(metrics: dict) -> dict:
    return {k: round(float(v), 2) for k, v in metrics.items()}


def _drop(torch_r: dict, converted_r: dict) -> dict[str, float]:
    return {k: round(torch_r[k] - converted_r[k], 2) for k in ("t2i_r1", "i2t_r1", "rsum")}


def format_retrieval(torch_r: dict, ref: tuple[np.ndarray, np.ndarray], emb: dict[str, np.ndarray],
                     image_index: list[int]) -> dict:
    """One format's test retrieval and its cost against PyTorch (``torch_r``, from the embeddings
    ``ref`` = (image, text)): both towers converted (``test``, ``drop_vs_torch``; ``test`` is None
    unless both converted), and each tower converted alone with the other in PyTorch
    (``drop_per_tower``: ``image_only``, ``text_only``), which tells which tower loses."""
    from mcad_core.evaluation.retrieval import retrieval_metrics

    entry: dict = {"test": None}
    if len(emb) == 2:
        both = retrieval_metrics(emb["image"], emb["text"], image_index)
        entry = {"test": _rounded(both), "drop_vs_torch": _drop(torch_r, both)}
    entry["drop_per_tower"] = {}
    if "image" in emb:
        entry["drop_per_tower"]["image_only"] = _drop(torch_r, retrieval_metrics(emb["image"], ref[1], image_index))
    if "text" in emb:
        entry["drop_per_tower"]["text_only"] = _drop(torch_r, retrieval_metrics(ref[0], emb["text"], image_index))
    return entry


def run_export(student_dir: str | Path, prepared_dir: str | Path, out_dir: str | Path, formats: list[str],
               calib_samples: int, seed: int) -> tuple[dict, dict[str, float]]:
    """Export the student in ``student_dir`` to ``out_dir``; return the export report and the
    conversion seconds per file (apart: timings change run to run, the tracked report must not)."""
    import torch

    from mcad_core.evaluation.retrieval import retrieval_metrics
    from mcad_core.student.model import encode_images_torch, encode_texts_torch, load_student, params_m

    prepared_dir = Path(prepared_dir)
    model, tokenizer = load_student(student_dir)
    size = model.image_tower.image_size
    calib_images, calib_ids = calibration_set(prepared_dir, tokenizer, calib_samples, seed, size)
    files = export_student(model, tokenizer, out_dir, formats, calib_images, calib_ids)
    timings = {status["file"]: status["export_s"] for tower in ("image", "text") for status in files[tower].values()
               if status["status"] == "ok"}

    splits = {s: _split_inputs(prepared_dir, s, tokenizer, size) for s in ("val", "test")}

    def torch_images(x: np.ndarray) -> np.ndarray:
        return encode_images_torch(model, torch.from_numpy(x)).numpy()

    ref = {s: (embed_images(torch_images, im), encode_texts_torch(model, torch.from_numpy(ids)).numpy())
           for s, (im, ids, _) in splits.items()}
    test_index = splits["test"][2]
    torch_r = retrieval_metrics(*ref["test"], test_index)
    gallery_int8 = quantize_gallery(ref["test"][0]).dequantize()
    report: dict = {
        "params_m": round(params_m(model), 3), "calib_samples": len(calib_images),
        "torch": {"test": _rounded(torch_r)},
        "torch_int8_gallery": {"test": _rounded(retrieval_metrics(gallery_int8, ref["test"][1], test_index)),
                               "storage": "image embeddings int8 with per-vector scale, text fp32"},
        "formats": {},
    }
    threads = min(4, os.cpu_count() or 1)
    for fmt in formats:
        entry: dict = {}
        emb: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}
        for tower, col in (("image", 0), ("text", 1)):
            status = files[tower][fmt]
            entry[tower] = {k: v for k, v in status.items() if k != "export_s"}
            if status["status"] != "ok":
                continue
            path = Path(out_dir) / model_filename(tower, fmt)
            enc = TFLiteEncoder(path, num_threads=threads)
            for split, inputs in splits.items():
                emb[split][tower] = (embed_images(enc.encode, inputs[0], desc=f"{path.name} {split}") if tower == "image"
                                     else enc.encode(inputs[1], progress=True))
            entry[tower].update(parity(path, emb["val"][tower], ref["val"][col]))
        # a tower of this format that failed has its reason in entry[tower] and no retrieval
        report["formats"][fmt] = entry | format_retrieval(torch_r, ref["test"], emb["test"], test_index)
    return report, timings


def export_metrics(report: dict) -> dict[str, dict[str, float]]:
    """The export's DVC metric: each converted format's RSUM drop against PyTorch (test split),
    the one number an experiment compares; parity and sizes stay in the full report."""
    return {fmt: {"rsum_drop": entry["drop_vs_torch"]["rsum"]}
            for fmt, entry in report["formats"].items() if entry.get("test") is not None}
