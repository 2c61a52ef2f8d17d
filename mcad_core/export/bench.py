"""On-device style benchmark of the exported towers and of text -> image search.

Every measurement runs in a fresh ``bench_worker.py`` process: the parent has torch
loaded (hundreds of MB), so its RSS says nothing about what a phone would hold, and a
fresh process also gives ``benchmark_model``'s cold init and first-inference times.
The search gallery is synthetic (random unit vectors of the text model's embedding
dim), written once per size as a gallery file (``gallery.py``) that every search worker
memory-maps: latency and memory depend on its size and dim, not on its content. Each
worker also measures the memory floor (an fp32 sgemv over as many bytes as the int8 codes)
in its own process, and ``search_recall`` holds the scan's top-k to exact fp32 search.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mcad_core.errors import McadError
from mcad_core.export.tflite import WORKER
from mcad_core.runtime.encoder import FORMATS, TOWERS, model_filename


def cpu_model() -> str:
    """The CPU as /proc/cpuinfo names it (platform's guess elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def runtime_info() -> dict:
    """What the numbers were measured with: runtime version, CPU, cores."""
    from importlib.metadata import version

    return {"runtime": "ai-edge-litert (LiteRT interpreter, XNNPACK)", "runtime_version": version("ai-edge-litert"),
            "numpy_version": np.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "machine": platform.machine()}


def run_worker(mode: str, path: Path, *args: object) -> dict:
    # numpy's BLAS stays on one thread: the top-k gemv is memory-bound, and a 2-thread OpenBLAS
    # measured 290 ms instead of 7 ms at 100k on a shared 2-core box (spinning threads contend
    # with the interpreter's). The thread count under test is the interpreter's alone.
    env = os.environ | {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, str(WORKER), mode, str(path), *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise McadError(f"bench worker {mode} {path.name}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sample_input(enc_path: Path, tokenizer_path: Path, query: str) -> np.ndarray:
    """A realistic single input: the tokenized query for a text tower, a mid-grey-noise image otherwise."""
    from mcad_core.runtime.encoder import TFLiteEncoder
    from mcad_core.student.tokenizer import StudentTokenizer

    enc = TFLiteEncoder(enc_path)
    if enc.input_dtype == np.int32:
        return StudentTokenizer.load(tokenizer_path).encode([query])
    return np.random.default_rng(0).random((1, *enc.input_shape), dtype=np.float32)


def run_bench(model_dir: str | Path, threads: list[int], runs: int, warmup: int, gallery_sizes: list[int],
              topk: int, queries: list[str], seed: int = 0, recall_queries: int = 1000,
              prepared_dir: str | Path | None = None) -> dict:
    """Encoder rows (tower, format, threads), search rows (text format, gallery size, threads) and the
    search's recall@k at the largest gallery size up to 100k: random queries (``search_recall``) and,
    given the prepared data, the test captions over photo embeddings (``real_query_recall``)."""
    from mcad_core.export.query_recall import real_query_recall

    from tqdm import tqdm

    from mcad_core.runtime.encoder import TFLiteEncoder
    from mcad_core.runtime.gallery import write_quantized_gallery
    from mcad_core.runtime.search import synthetic_gallery

    model_dir = Path(model_dir)
    tokenizer = model_dir / "tokenizer.json"
    present = [(t, f) for t in TOWERS for f in FORMATS if (model_dir / model_filename(t, f)).is_file()]
    if not present or not tokenizer.is_file():
        raise McadError(f"{model_dir}: no exported .tflite models and tokenizer.json (run the export stage)")
    if not queries:
        raise McadError("bench: need at least one text query")
    encoders, searches = [], []
    with tempfile.TemporaryDirectory() as tmp:
        queries_json = Path(tmp) / "queries.json"
        queries_json.write_text(json.dumps(queries))
        jobs = [(t, f, n) for t, f in present for n in threads]
        for tower, fmt, n in tqdm(jobs, desc="bench encoders"):
            path = model_dir / model_filename(tower, fmt)
            npy = Path(tmp) / f"{tower}.npy"
            np.save(npy, _sample_input(path, tokenizer, queries[0]))
            row = run_worker("encoder", path, npy, n, runs, warmup)
            encoders.append({"tower": tower, "format": fmt, "threads": n, "file": path.name,
                             "size_bytes": path.stat().st_size, **row})
        text_formats = [f for t, f in present if t == "text"]
        dim = TFLiteEncoder(model_dir / model_filename("text", text_formats[0])).embed_dim if text_formats else 0
        for size in tqdm(gallery_sizes if text_formats else [], desc="bench search"):
            gallery_file = Path(tmp) / f"gallery_{size}.mcg"
            write_quantized_gallery(gallery_file, "synthetic", synthetic_gallery(size, dim, seed),
                                    [f"synthetic/{i}.jpg" for i in range(size)])
            for fmt, n in [(f, n) for f in text_formats for n in threads]:
                row = run_worker("search", model_dir / model_filename("text", fmt), tokenizer, queries_json,
                              gallery_file, n, runs, warmup, topk)
                searches.append({"text_format": fmt, "gallery_size": size, "threads": n, "topk": topk,
                                 "gallery_storage": "int8, per-vector scale, memory-mapped file", **row})
            gallery_file.unlink()
    recall_size = max((s for s in gallery_sizes if s <= 100_000), default=min(gallery_sizes))
    recall = search_recall(recall_size, dim, recall_queries, topk, seed) if text_formats and recall_queries else None
    fmt = HEADLINE_SEARCH[0]
    real = (real_query_recall(model_dir, prepared_dir, fmt, recall_size, topk, seed)
            if prepared_dir is not None and recall_queries and all((t, fmt) in present for t in TOWERS) else None)
    return {"environment": runtime_info(), "runs": runs, "warmup": warmup, "encoders": encoders,
            "search": searches, "search_recall": recall, "real_query_recall": real}


def search_recall(size: int, dim: int, queries: int, topk: int, seed: int = 0, threads: int = 1) -> dict:
    """recall@k of the gallery search (int8 scan + rerank of its candidates over codes + residual) over
    ``queries`` random unit queries and a random unit gallery: against exact fp32 search of the float
    vectors (what storage and the scan lose together) and of the stored rows (what the scan loses
    alone); and, for comparison, of the same scan reranked over the int8 codes alone (no residual)."""
    from mcad_core.export.query_recall import topk_overlap
    from mcad_core.runtime.search import Int8Gallery, quantize_gallery, scan_topk

    rng = np.random.default_rng(seed + 1)
    emb = rng.standard_normal((size, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    qs = rng.standard_normal((queries, dim), dtype=np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    gallery = quantize_gallery(emb)
    int8_only = Int8Gallery(gallery.codes, gallery.scales)
    stored = np.concatenate([gallery.reconstruct(np.arange(i, min(i + 8192, size))).astype(np.float32)
                             for i in range(0, size, 8192)])
    k = min(topk, size)
    found = [scan_topk(q, gallery, topk, threads=threads)[0] for q in qs]
    found_int8 = [scan_topk(q, int8_only, topk, threads=threads)[0] for q in qs]
    recall = {"fp32": topk_overlap(qs, found, emb, k), "stored": topk_overlap(qs, found, stored, k),
              "int8": topk_overlap(qs, found_int8, emb, k)}
    return {"gallery_size": size, "dim": dim, "queries": queries, "k": k,
            "recall_vs_fp32": recall["fp32"], "recall_vs_stored": recall["stored"],
            "recall_vs_fp32_int8_rerank": recall["int8"]}


# The search latency the README leads with: the dynamic-int8 text model on one thread.
HEADLINE_SEARCH = ("dynamic_int8", 1)


def search_metrics(search_rows: list[dict], recall: dict | None = None, real: dict | None = None) -> dict[str, float]:
    """The bench's DVC metrics: search p50 (ms) and the scan's ratio to the memory floor per gallery
    size, for ``HEADLINE_SEARCH`` only, so an experiment compares one model on one thread (none when
    the bench params leave it out); and the search's recall@k against exact fp32 search, with random
    queries and with test captions (``real_recall_at_k_<gallery size>``)."""
    fmt, threads = HEADLINE_SEARCH
    rows = [r for r in search_rows if (r["text_format"], r["threads"]) == (fmt, threads)]
    out = {f"p50_ms_{r['gallery_size']}": round(r["p50_ms"], 3) for r in rows}
    out |= {f"scan_floor_ratio_{r['gallery_size']}": round(r["scan_floor_ratio"], 3) for r in rows
            if "scan_floor_ratio" in r}
    if recall:
        out[f"recall_at_{recall['k']}"] = round(recall["recall_vs_fp32"], 4)
    if real:
        out |= {f"real_recall_at_{real['k']}_{g['size']}": round(g["recall_vs_fp32"], 4)
                for g in real["galleries"].values()}
    return out


def plot_search_latency(search_rows: list[dict], png: str | Path) -> None:
    """Search latency vs gallery size, one line per text format and thread count (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mcad_core.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["text_format"], r["threads"]) for r in search_rows}):
        rows = sorted((r for r in search_rows if (r["text_format"], r["threads"]) == key),
                      key=lambda r: r["gallery_size"])
        ax.plot([r["gallery_size"] for r in rows], [r["mean_ms"] for r in rows], marker="o",
                label=f"{key[0]}, {key[1]} thread{'s' if key[1] > 1 else ''}")
    ax.axhline(8.0, color="grey", linestyle="--", linewidth=1, label="8 ms goal")
    ax.set(xscale="log", xlabel="gallery size (images)", ylabel="query latency, mean (ms)",
           title="text query: tokenize + encode + top-k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def search_rows_csv(search_rows: list[dict]) -> str:
    """Flat rows for ``dvc plots`` (x: gallery_size, y: mean_ms), one series per text format and threads."""
    cols = ("series", "text_format", "threads", "gallery_size", "mean_ms", "p50_ms", "p90_ms", "scan_p50_ms",
            "floor_p50_ms", "peak_rss_mb")
    lines = [",".join(cols)]
    for r in search_rows:
        row = {"series": f"{r['text_format']}-{r['threads']}t", **r}
        lines.append(",".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    return "\n".join(lines) + "\n"
