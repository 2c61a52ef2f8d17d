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

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mcad_core.runtime.search import quantize_gallery, scan_topk

Loader = Callable[[Sequence[int]], np.ndarray]  # photo indices -> uint8 [len, 3, S, S]


def topk_overlap(queries: np.ndarray, found: Sequence[np.ndarray], exact: np.ndarray, k: int,
                 block: int = 64) -> float:
    """Share of each query's exact fp32 top-``k`` rows of ``exact`` among the rows a search ``found``
    for it: the one hit count behind every recall the bench reports."""
    hits = 0
    for i in range(0, len(queries), block):
        truth = np.argpartition(-(queries[i:i + block] @ exact.T), k - 1, axis=1)[:, :k]
        hits += sum(len(set(got.tolist()) & set(t.tolist())) for got, t in zip(found[i:i + block], truth))
    return hits / (len(queries) * k)


def scan_recall(queries: np.ndarray, emb: np.ndarray, k: int) -> float:
    """Share of each query's exact fp32 top-``k`` rows of ``emb`` that the int8 scan returns."""
    gallery = quantize_gallery(emb)
    k = min(k, len(emb))
    return topk_overlap(queries, [scan_topk(q, gallery, k)[0] for q in queries], emb, k)


def augmented(load: Loader, n_photos: int, size: int, n: int, seed: int) -> np.ndarray:
    """``n`` uint8 images [n, 3, size, size]: random photos of the ``n_photos`` that ``load`` reads,
    each under a random crop (60-100% of the side, resized back) and a coin-flip mirror. The draws
    come first, so only the photos drawn are read."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(n):
        src, side = int(rng.integers(n_photos)), int(rng.integers(int(0.6 * size), size + 1))
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        plan.append((src, side, x, y, bool(rng.random() < 0.5)))
    sources = sorted({p[0] for p in plan})
    pixels = dict(zip(sources, load(sources) if sources else ()))
    out = np.empty((n, 3, size, size), np.uint8)
    for j, (src, side, x, y, mirror) in enumerate(plan):
        crop = pixels[src].transpose(1, 2, 0)[y:y + side, x:x + side]
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BILINEAR))
        out[j] = (arr[:, ::-1] if mirror else arr).transpose(2, 0, 1)
    return out


CHUNK = 4096  # gallery rows embedded at a time


def gallery_rows(load: Loader, n_photos: int, size: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """The big gallery's ``n`` rows in ``CHUNK``-row pieces: the photos as they are, then augmented.
    Photos are read a chunk at a time (Flickr30K's 31k at 224 px would be 4.6 GB at once)."""
    for i in range(0, n, CHUNK):
        stop = min(n, i + CHUNK)
        real = load(range(i, max(i, min(stop, n_photos))))
        extra = stop - max(i, n_photos) if stop > n_photos else 0
        yield np.concatenate([real, augmented(load, n_photos, size, extra, seed + i)]) if extra else real


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
    size = image_enc.input_shape[-1]

    def load(indices: Sequence[int]) -> np.ndarray:
        return load_images_uint8(prepared_dir, [records[j] for j in indices], size, progress=False)

    emb = np.empty((big, text_enc.embed_dim), np.float32)
    rows_iter = gallery_rows(load, len(records), size, big, seed)
    for i, rows in enumerate(tqdm(rows_iter, total=-(-big // CHUNK), desc="real-query gallery", disable=not progress)):
        emb[i * CHUNK:i * CHUNK + len(rows)] = image_enc.encode(rows.astype(np.float32) / 255.0)
    return {"queries": len(queries), "k": k, "format": fmt,
            "galleries": {"test": {"size": len(test), "recall_vs_fp32": scan_recall(queries, emb[:len(test)], k)},
                          "big": {"size": len(emb), "recall_vs_fp32": scan_recall(queries, emb, k)}}}
