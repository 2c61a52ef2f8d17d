"""Recall of the int8 gallery search with real queries: test captions over student image embeddings.

Random unit vectors flatter a quantized CLIP gallery: text and image embeddings sit apart (the
modality gap), so a caption's true neighbours are close in score to many others, and int8
rounding swaps more of them than random queries show. Here the queries are the test split's
captions through the exported text tower, and the gallery rows are photos through the image
tower: the test split itself, then a 100k gallery (test photos first, then train and val photos,
then those photos again under a random crop and flip, as a phone library holds near-duplicates).
Recall@k is held to exact fp32 search of the same float embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mcad_core.runtime.search import quantize_gallery, scan_topk


def scan_recall(queries: np.ndarray, emb: np.ndarray, k: int, block: int = 64) -> float:
    """Share of each query's exact fp32 top-``k`` rows of ``emb`` that the int8 scan returns."""
    gallery = quantize_gallery(emb)
    k = min(k, len(emb))
    hits = 0
    for i in range(0, len(queries), block):
        qs = queries[i:i + block]
        truth = np.argpartition(-(qs @ emb.T), k - 1, axis=1)[:, :k]
        hits += sum(len(set(scan_topk(q, gallery, k)[0].tolist()) & set(t.tolist())) for q, t in zip(qs, truth))
    return hits / (len(queries) * k)


def augmented(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` uint8 images [n, 3, S, S]: random photos of ``images``, each under a random crop (60-100%
    of the side, resized back) and a coin-flip mirror."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = images.shape[-1]
    out = np.empty((n, *images.shape[1:]), np.uint8)
    for j in range(n):
        src = images[rng.integers(len(images))].transpose(1, 2, 0)
        side = int(rng.integers(int(0.6 * size), size + 1))
        x, y = rng.integers(0, size - side + 1, 2)
        crop = Image.fromarray(np.ascontiguousarray(src[y:y + side, x:x + side])).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop)
        out[j] = (arr[:, ::-1] if rng.random() < 0.5 else arr).transpose(2, 0, 1)
    return out


CHUNK = 4096  # gallery rows embedded at a time


def gallery_rows(photos: np.ndarray, n: int, seed: int) -> Iterator[np.ndarray]:
    """The big gallery's ``n`` rows in ``CHUNK``-row pieces: the photos as they are, then augmented."""
    for i in range(0, n, CHUNK):
        stop = min(n, i + CHUNK)
        real = photos[i:min(stop, len(photos))]
        extra = stop - max(i, len(photos)) if stop > len(photos) else 0
        yield np.concatenate([real, augmented(photos, extra, seed + i)]) if extra else real


def real_query_recall(model_dir: str | Path, prepared_dir: str | Path, fmt: str, big: int, k: int,
                      seed: int = 0, progress: bool = True) -> dict:
    """recall@``k`` of the int8 search against exact fp32 for every test caption, over the test
    photos and over a ``big``-row gallery (see the module note), with the exported ``fmt`` towers."""
    from tqdm import tqdm

    from mcad_core.data.images import load_images_uint8
    from mcad_core.data.manifest import flatten_captions, read_manifest
    from mcad_core.runtime.encoder import TFLiteEncoder, model_filename
    from mcad_core.student.tokenizer import StudentTokenizer

    model_dir, prepared_dir = Path(model_dir), Path(prepared_dir)
    image_enc = TFLiteEncoder(model_dir / model_filename("image", fmt))
    text_enc = TFLiteEncoder(model_dir / model_filename("text", fmt))
    tokenizer = StudentTokenizer.load(model_dir / "tokenizer.json")
    test = read_manifest(prepared_dir / "test.jsonl")
    records = test + read_manifest(prepared_dir / "train.jsonl") + read_manifest(prepared_dir / "val.jsonl")
    queries = text_enc.encode(tokenizer.encode(flatten_captions(test)[0]))
    photos = load_images_uint8(prepared_dir, records, image_enc.input_shape[-1], progress=progress)
    emb = np.empty((big, text_enc.embed_dim), np.float32)
    for i, rows in enumerate(tqdm(gallery_rows(photos, big, seed), total=-(-big // CHUNK), desc="real-query gallery",
                                  disable=not progress)):
        emb[i * CHUNK:i * CHUNK + len(rows)] = image_enc.encode(rows.astype(np.float32) / 255.0)
    return {"queries": len(queries), "k": k, "format": fmt,
            "galleries": {"test": {"size": len(test), "recall_vs_fp32": scan_recall(queries, emb[:len(test)], k)},
                          "big": {"size": len(emb), "recall_vs_fp32": scan_recall(queries, emb, k)}}}
