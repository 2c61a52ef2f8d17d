"""The on-device side of the benchmark, run as a fresh process: ``python bench_worker.py MODE ...``.

A phone process holds the LiteRT interpreter, the tokenizer and the gallery, not
torch; its peak RSS is only meaningful in a process that never imported torch.
``import mcad_core`` does (its torchvision shim), so when run as a script this file
registers a bare ``mcad_core`` package first and imports only the light modules
(numpy, tokenizers, ai_edge_litert). It prints one JSON object on stdout; a
McadError becomes its message on stderr and exit status 2.

Modes:
  smoke MODEL NPY                    load, allocate, invoke once on the saved sample
  encoder MODEL NPY THREADS RUNS WARMUP
  search TEXT_MODEL TOKENIZER QUERIES_JSON GALLERY_FILE THREADS RUNS WARMUP TOPK
  scan GALLERY_FILE THREADS RUNS WARMUP TOPK
"""

from __future__ import annotations

import json
import resource
import sys
import time
import types
from pathlib import Path

if __name__ == "__main__" and "mcad_core" not in sys.modules:
    _pkg = types.ModuleType("mcad_core")
    _pkg.__path__ = [str(Path(__file__).resolve().parents[1])]
    sys.modules["mcad_core"] = _pkg
    sys.path.pop(0)  # this folder: its modules must load as mcad_core.export.*, never as top-level names

import numpy as np  # noqa: E402

from mcad_core.errors import McadError  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set of this process (VmHWM; ru_maxrss where /proc is absent)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timing_stats(seconds: list[float]) -> dict[str, float]:
    """mean / p50 / p90 / min in ms, as benchmark_model reports steady state."""
    ms = np.asarray(seconds) * 1e3
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min())}


def _load(model: str, threads: int) -> tuple[object, float]:
    from mcad_core.runtime.encoder import TFLiteEncoder

    start = time.perf_counter()
    enc = TFLiteEncoder(model, num_threads=threads)
    return enc, (time.perf_counter() - start) * 1e3


def smoke(model: str, npy: str) -> dict:
    enc, _ = _load(model, 1)
    emb = enc.encode_one(np.load(npy)[0])
    if not np.all(np.isfinite(emb)):
        raise McadError(f"{model}: non-finite output")
    return {"ok": True}


def encoder(model: str, npy: str, threads: int, runs: int, warmup: int) -> dict:
    """benchmark_model's numbers for one tower: init, first inference, warm-up, steady state."""
    sample = np.load(npy)[0]
    enc, init_ms = _load(model, threads)
    start = time.perf_counter()
    enc.encode_one(sample)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        enc.encode_one(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        enc.encode_one(sample)
        times.append(time.perf_counter() - start)
    return {"init_ms": init_ms, "first_ms": first_ms, **timing_stats(times), "peak_rss_mb": peak_rss_mb()}


def floor_p50_ms(nbytes: int, dim: int, runs: int, warmup: int, seed: int = 0) -> float:
    """The memory floor of a scan over ``nbytes`` of gallery: an fp32 sgemv (numpy's BLAS, one thread)
    reading as many bytes, [nbytes / 4 / dim, dim] @ [dim]; p50 ms."""
    rows = max(1, nbytes // (4 * dim))
    mat = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    vec, out = mat[0].copy(), np.empty(rows, np.float32)
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        np.matmul(mat, vec, out=out)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return timing_stats(times)["p50_ms"]


def search(text_model: str, tokenizer: str, queries_json: str, gallery_file: str, threads: int, runs: int,
           warmup: int, topk: int) -> dict:
    """One query end to end as the phone runs it: tokenize + encode (TFLite) + top-k scan of the
    memory-mapped gallery file + the ids of the hits; split timings say which part dominates. The
    peak RSS is read before the floor (an fp32 sgemv over as many bytes as the gallery's codes) is
    measured in this same process, so the scan's ratio to it compares like with like."""
    from mcad_core.runtime.gallery import open_gallery
    from mcad_core.runtime.search import scan_kernel_name
    from mcad_core.student.tokenizer import StudentTokenizer

    tok = StudentTokenizer.load(tokenizer)
    enc, init_ms = _load(text_model, threads)
    start = time.perf_counter()
    gallery = open_gallery(gallery_file)
    open_ms = (time.perf_counter() - start) * 1e3
    if gallery.dim != enc.embed_dim:
        raise McadError(f"{gallery_file}: {gallery.dim}-dim gallery for a {enc.embed_dim}-dim text model")
    queries = json.loads(Path(queries_json).read_text())
    parts: dict[str, list[float]] = {"tokenize": [], "encode": [], "topk": [], "ids": [], "total": []}
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        ids = tok.encode(queries[i % len(queries)])
        t1 = time.perf_counter()
        emb = enc.encode_one(ids)
        t2 = time.perf_counter()
        rows, _ = gallery.search(emb, topk, threads=threads)
        t3 = time.perf_counter()
        [gallery.id_of(r) for r in rows.tolist()]
        t4 = time.perf_counter()
        if i >= warmup:
            for name, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                parts[name].append(dt)
    rss = peak_rss_mb()
    scan = timing_stats(parts["topk"])
    floor = floor_p50_ms(gallery.codes.nbytes, gallery.dim, runs, warmup)
    return {"init_ms": init_ms, "open_ms": open_ms, **timing_stats(parts["total"]),
            "breakdown_mean_ms": {k: float(np.mean(v) * 1e3) for k, v in parts.items() if k != "total"},
            "scan_p50_ms": scan["p50_ms"], "scan_p90_ms": scan["p90_ms"], "floor_p50_ms": floor,
            "scan_floor_ratio": scan["p50_ms"] / floor, "scan_kernel": scan_kernel_name(), "dim": gallery.dim,
            "gallery_mb": (gallery.codes.nbytes + gallery.scales.nbytes) / 2**20, "peak_rss_mb": rss,
            "torch_loaded": "torch" in sys.modules}


def scan(gallery_file: str, threads: int, runs: int, warmup: int, topk: int) -> dict:
    """The scan alone over a memory-mapped gallery file, as a phone process holding only the gallery:
    int8 scan (``scan_candidates``) and the whole search (scan + exact rerank) per random query, peak RSS,
    then the memory floor in this same process."""
    from mcad_core.runtime.gallery import open_gallery
    from mcad_core.runtime.search import RERANK_EXTRA, Int8Gallery, scan_candidates, scan_kernel_name

    gallery = open_gallery(gallery_file)
    rows = Int8Gallery(gallery.codes, gallery.scales)
    queries = np.random.default_rng(0).standard_normal((warmup + runs, gallery.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    times: dict[str, list[float]] = {"scan": [], "search": []}
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        scan_candidates(q, rows, topk + RERANK_EXTRA, threads)
        t1 = time.perf_counter()
        gallery.search(q, topk, threads=threads)
        t2 = time.perf_counter()
        if i >= warmup:
            times["scan"].append(t1 - t0)
            times["search"].append(t2 - t1)
    rss = peak_rss_mb()
    scan_, search_ = timing_stats(times["scan"]), timing_stats(times["search"])
    floor = floor_p50_ms(gallery.codes.nbytes, gallery.dim, runs, warmup)
    return {"gallery_size": len(gallery), "dim": gallery.dim, "threads": threads, "scan_kernel": scan_kernel_name(),
            "scan_p50_ms": scan_["p50_ms"], "search_p50_ms": search_["p50_ms"], "search_p90_ms": search_["p90_ms"],
            "floor_p50_ms": floor, "scan_floor_ratio": scan_["p50_ms"] / floor,
            "search_floor_ratio": search_["p50_ms"] / floor, "peak_rss_mb": rss,
            "gallery_mb": (gallery.codes.nbytes + gallery.scales.nbytes) / 2**20}


def main(argv: list[str]) -> int:
    modes = {"smoke": (smoke, (str, str)),
             "encoder": (encoder, (str, str, int, int, int)),
             "search": (search, (str, str, str, str, int, int, int, int)),
             "scan": (scan, (str, int, int, int, int))}
    if not argv or argv[0] not in modes or len(argv) - 1 != len(modes[argv[0]][1]):
        print(__doc__, file=sys.stderr)
        return 2
    func, types_ = modes[argv[0]]
    try:
        result = func(*(t(a) for t, a in zip(types_, argv[1:])))
    except McadError as err:
        print(str(err), file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
