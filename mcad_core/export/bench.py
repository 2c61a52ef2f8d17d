"""On-device style benchmark of the exported towers and of text -> image search.

Every measurement runs in a fresh ``bench_worker.py`` process: the parent has torch
loaded (hundreds of MB), so its RSS says nothing about what a phone would hold, and a
fresh process also gives ``benchmark_model``'s cold init and first-inference times.
The search gallery is synthetic (random unit vectors of the text model's embedding
dim, stored int8 with per-vector scales): latency and memory depend on its size and
dim, not on its content.
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
from mcad_core.export.tflite import FORMATS, TOWERS, WORKER, model_filename


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


def _worker(mode: str, path: Path, *args: object) -> dict:
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
    from mcad_core.export.tflite import TFLiteEncoder
    from mcad_core.models.student_tokenizer import StudentTokenizer

    enc = TFLiteEncoder(enc_path)
    if enc.input_dtype == np.int32:
        return StudentTokenizer.load(tokenizer_path).encode([query])
    return np.random.default_rng(0).random((1, *enc.input_shape), dtype=np.float32)


def run_bench(model_dir: str | Path, threads: list[int], runs: int, warmup: int, gallery_sizes: list[int],
              topk: int, queries: list[str], seed: int = 0) -> dict:
    """Encoder rows (tower, format, threads) and search rows (text format, gallery size, threads)."""
    from tqdm import tqdm

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
            row = _worker("encoder", path, npy, n, runs, warmup)
            encoders.append({"tower": tower, "format": fmt, "threads": n, "file": path.name,
                             "size_bytes": path.stat().st_size, **row})
        text_formats = [f for t, f in present if t == "text"]
        jobs = [(f, g, n) for f in text_formats for g in gallery_sizes for n in threads]
        for fmt, size, n in tqdm(jobs, desc="bench search"):
            row = _worker("search", model_dir / model_filename("text", fmt), tokenizer, queries_json, size, n,
                          runs, warmup, topk, seed)
            searches.append({"text_format": fmt, "gallery_size": size, "threads": n, "topk": topk,
                             "gallery_storage": "int8, per-vector scale", **row})
    return {"environment": runtime_info(), "runs": runs, "warmup": warmup, "encoders": encoders,
            "search": searches}


# The search latency the README leads with: the dynamic-int8 text model on one thread.
HEADLINE_SEARCH = ("dynamic_int8", 1)


def search_metrics(search_rows: list[dict]) -> dict[str, float]:
    """The bench's DVC metric: search p50 (ms) per gallery size, for ``HEADLINE_SEARCH`` only, so an
    experiment compares one model on one thread; empty when the bench params leave it out."""
    fmt, threads = HEADLINE_SEARCH
    return {f"p50_ms_{r['gallery_size']}": round(r["p50_ms"], 3) for r in search_rows
            if (r["text_format"], r["threads"]) == (fmt, threads)}


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
    cols = ("series", "text_format", "threads", "gallery_size", "mean_ms", "p50_ms", "p90_ms", "peak_rss_mb")
    lines = [",".join(cols)]
    for r in search_rows:
        row = {"series": f"{r['text_format']}-{r['threads']}t", **r}
        lines.append(",".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    return "\n".join(lines) + "\n"
