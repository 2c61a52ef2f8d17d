"""Gallery search side by side with its peers, in one process: top-k of one query over random unit vectors.

For each dim, on one thread (p50 ms over --runs timed queries after --warmup):
  floor            fp32 sgemv (numpy BLAS) reading as many bytes as the int8 gallery (N x D)
  mcad scan        the int8 scan alone over the memory-mapped gallery file (scan.c, fused top-k)
  mcad search      scan + rerank of k + 16 candidates over codes + residual (GalleryFile.search: what the app calls)
  numpy int8       the earlier route: int8 dequantised in chunks + sgemv + argpartition (search_topk)
  numpy fp32       fp32 gallery, sgemv + argpartition
  faiss flat       faiss IndexFlatIP (fp32)            faiss SQ8   IndexScalarQuantizer QT_8bit, inner product
  simsimd i8       simsimd.cdist int8 dot + argpartition
  usearch i8       usearch exact search over the int8 codes, cosine
  litert FC+TopK   the gallery as an int8 FULLY_CONNECTED layer (per-row scales, dynamic-range) + TOPK_V2,
                   a TFLite model built in-process, run by LiteRT/XNNPACK
recall@10 of each against exact fp32 search of the float vectors over --recall-queries random queries.
Then the mcad scan in a fresh process (bench_worker.py scan: peak RSS of a process holding only the
mapped gallery) per dim, and its speed-up per thread on a --threads-size gallery.

  python scripts/bench_search_peers.py [--size 100000] [--dims 128,256,512] [--out table.md]
Peers missing from the environment (faiss-cpu, simsimd, usearch) are skipped with a note.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # every peer on one thread; must precede numpy's import

import importlib.util  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcad_core.export.bench import cpu_model, run_worker  # noqa: E402
from mcad_core.runtime.gallery import open_gallery, write_quantized_gallery  # noqa: E402
from mcad_core.runtime.search import (  # noqa: E402
    RERANK_EXTRA, Int8Gallery, quantize_gallery, quantize_query, scan_candidates, scan_kernel_name, search_topk)

K = 10


def p50_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray, runs: int, warmup: int) -> float:
    times = []
    for i in range(warmup + runs):
        q = queries[i % len(queries)]
        start = time.perf_counter()
        fn(q)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.percentile(np.asarray(times) * 1e3, 50))


def litert_gallery_model(codes: np.ndarray, scales: np.ndarray, k: int) -> bytes:
    """A TFLite model: query [1, D] float -> FULLY_CONNECTED with int8 weights [N, D] (per-row scales, the
    gallery's own) -> TOPK_V2 -> values, indices; written with the schema's object API."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    n, d = codes.shape
    model, graph = tfl.ModelT(), tfl.SubGraphT()
    model.version, model.buffers, graph.tensors = 3, [tfl.BufferT()], []

    def tensor(name: str, shape: list[int], ttype: int, data: bytes | None = None, quant=None) -> int:
        buf = tfl.BufferT()
        if data is not None:
            buf.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buf)
        t = tfl.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, shape, ttype, len(model.buffers) - 1, quant
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    quant = tfl.QuantizationParametersT()
    quant.scale, quant.zeroPoint, quant.quantizedDimension = scales.astype(np.float32).tolist(), [0] * n, 0
    T = tfl.TensorType
    query = tensor("query", [1, d], T.FLOAT32)
    weights = tensor("gallery", [n, d], T.INT8, np.ascontiguousarray(codes).tobytes(), quant)
    scores = tensor("scores", [1, n], T.FLOAT32)
    kk = tensor("k", [1], T.INT32, np.array([k], np.int32).tobytes())
    values, indices = tensor("values", [1, k], T.FLOAT32), tensor("indices", [1, k], T.INT32)
    model.operatorCodes = []
    for code in (tfl.BuiltinOperator.FULLY_CONNECTED, tfl.BuiltinOperator.TOPK_V2):
        oc = tfl.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, code, 1
        model.operatorCodes.append(oc)
    fc, topk = tfl.OperatorT(), tfl.OperatorT()
    fc.opcodeIndex, fc.inputs, fc.outputs = 0, [query, weights, -1], [scores]
    fc.builtinOptionsType, fc.builtinOptions = tfl.BuiltinOptions.FullyConnectedOptions, tfl.FullyConnectedOptionsT()
    fc.builtinOptions.asymmetricQuantizeInputs = True
    topk.opcodeIndex, topk.inputs, topk.outputs = 1, [scores, kk], [values, indices]
    topk.builtinOptionsType, topk.builtinOptions = tfl.BuiltinOptions.TopKV2Options, tfl.TopKV2OptionsT()
    graph.operators, graph.inputs, graph.outputs = [fc, topk], [query], [values, indices]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(n * d + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def numpy_topk(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def peers(emb: np.ndarray, gallery: Int8Gallery, mapped, tmp: Path) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> search function (query -> top-k indices), for every peer this environment has."""
    have = {m: importlib.util.find_spec(m) is not None for m in ("faiss", "simsimd", "usearch")}
    mapped_rows = Int8Gallery(mapped.codes, mapped.scales)
    out = {"mcad scan": lambda q: scan_candidates(q, mapped_rows, K + RERANK_EXTRA, 1),
           "mcad search": lambda q: mapped.search(q, K)[0],
           "numpy int8 (earlier route)": lambda q: search_topk(q, gallery, K)[0],
           "numpy fp32": lambda q: numpy_topk(emb @ q, K)}
    if have["faiss"]:
        import faiss

        faiss.omp_set_num_threads(1)
        flat = faiss.IndexFlatIP(emb.shape[1])
        flat.add(emb)
        sq8 = faiss.IndexScalarQuantizer(emb.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        sq8.train(emb)
        sq8.add(emb)
        out["faiss flat (IndexFlatIP)"] = lambda q: flat.search(q[None], K)[1][0]
        out["faiss SQ8"] = lambda q: sq8.search(q[None], K)[1][0]
    if have["simsimd"]:
        import simsimd

        codes = np.ascontiguousarray(gallery.codes)
        out["simsimd i8 cdist"] = lambda q: numpy_topk(
            np.asarray(simsimd.cdist(quantize_query(q)[0][None], codes, metric="dot", threads=1))[0] * gallery.scales, K)
    if have["usearch"]:
        from usearch.index import MetricKind, search

        codes = np.ascontiguousarray(gallery.codes)
        # cosine over the codes ranks as the scaled rows do (the scale keeps each row's norm)
        out["usearch exact i8 (cos)"] = lambda q: search(codes, quantize_query(q)[0], K, MetricKind.Cos, exact=True,
                                                         threads=1).keys
    from ai_edge_litert.interpreter import Interpreter

    path = tmp / "gallery.tflite"
    path.write_bytes(litert_gallery_model(gallery.codes, gallery.scales, K))
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    q_in, idx_out = interp.get_input_details()[0]["index"], interp.get_output_details()[1]["index"]

    def litert(q: np.ndarray) -> np.ndarray:
        interp.set_tensor(q_in, q[None])
        interp.invoke()
        return interp.get_tensor(idx_out)[0]

    out["litert FC int8 + TOPK_V2"] = litert
    return out


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_random_gallery(path: Path, emb: np.ndarray | None, n: int, d: int, seed: int) -> Int8Gallery:
    from mcad_core.runtime.search import synthetic_gallery

    gallery = quantize_gallery(emb) if emb is not None else synthetic_gallery(n, d, seed)
    write_quantized_gallery(path, "random", gallery, [str(i) for i in range(n)])
    return gallery


@click.command()
@click.option("--size", default=100_000, show_default=True, help="gallery rows")
@click.option("--dims", default="128,256,512", show_default=True)
@click.option("--runs", default=200, show_default=True)
@click.option("--warmup", default=20, show_default=True)
@click.option("--recall-queries", default=1000, show_default=True)
@click.option("--threads-size", default=1_000_000, show_default=True, help="gallery rows for the thread speed-up")
@click.option("--threads-dim", default=256, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="also write the markdown tables here")
def main(size: int, dims: str, runs: int, warmup: int, recall_queries: int, threads_size: int, threads_dim: int,
         out: str | None) -> None:
    """Print markdown tables: the scan and its peers per dim, the scan's RSS, its speed-up per thread."""
    rng = np.random.default_rng(0)
    dim_list = [int(d) for d in dims.split(",")]
    lines = [f"{cpu_model()}, {os.cpu_count()} cores; gallery {size:,} random unit vectors, top-{K} of one query, "
             f"1 thread, p50 ms over {runs} queries (x floor: p50 / the floor's p50, same process); scan kernel "
             f"{scan_kernel_name()}; recall@{K} vs exact fp32 search over {recall_queries} random queries", ""]
    results: dict[int, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for d in dim_list:
            emb = unit(rng, size, d)
            gallery = write_random_gallery(tmp / f"g{d}.mcg", emb, size, d, 0)
            mapped = open_gallery(tmp / f"g{d}.mcg")
            queries = unit(rng, max(recall_queries, 1), d)
            floor_mat = rng.standard_normal((size // 4, d), dtype=np.float32)
            floor = p50_ms(lambda q: floor_mat @ q, queries, runs, warmup)
            row = {"floor (fp32 sgemv, N x D bytes)": (floor, float("nan"))}
            truth = [np.argpartition(-(block @ emb.T), K - 1, axis=1)[:, :K]
                     for block in np.array_split(queries[:recall_queries], max(1, recall_queries // 64))]
            truth = np.concatenate(truth) if recall_queries else []
            for name, fn in peers(emb, gallery, mapped, tmp).items():
                ms = p50_ms(fn, queries, runs, warmup)
                if name == "mcad scan":  # candidates, not a top-k: its recall is the search's
                    row[name] = (ms, float("nan"))
                    continue
                hits = sum(len(set(np.asarray(fn(q)).tolist()) & set(t.tolist())) for q, t in zip(queries, truth))
                row[name] = (ms, hits / (K * max(recall_queries, 1)))
                print(f"dim {d}: {name}: {ms:.3f} ms, recall {row[name][1]:.4f}", file=sys.stderr)
            results[d] = row
            del emb, mapped, floor_mat
        names = list(results[dim_list[0]])
        head = " | ".join(f"{size // 1000}k x {d}: p50 ms | x floor | recall@{K}" for d in dim_list)
        lines += [f"| search | {head} |", "|---" * (1 + 3 * len(dim_list)) + "|"]
        for name in names:
            cells = []
            for d in dim_list:
                ms, rec = results[d].get(name, (float("nan"), float("nan")))
                floor = results[d][names[0]][0]
                cells += [f"{ms:.3f}", f"{ms / floor:.2f}", "" if np.isnan(rec) else f"{rec:.4f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

        lines += ["", f"The mcad scan in a fresh process holding only the mapped gallery file ({size:,} rows; "
                  "bench_worker.py scan):", "",
                  "| dim | scan p50 ms | search p50 ms | floor p50 ms | scan x floor | search x floor | peak RSS MB |",
                  "|---|---|---|---|---|---|---|"]
        for d in dim_list:
            write_random_gallery(tmp / "w.mcg", None, size, d, 1)
            r = run_worker("scan", tmp / "w.mcg", 1, runs, warmup, K)
            lines.append(f"| {d} | {r['scan_p50_ms']:.3f} | {r['search_p50_ms']:.3f} | {r['floor_p50_ms']:.3f} | "
                         f"{r['scan_floor_ratio']:.2f} | {r['search_floor_ratio']:.2f} | {r['peak_rss_mb']:.0f} |")
        (tmp / "w.mcg").unlink(missing_ok=True)

        if threads_size:
            write_random_gallery(tmp / "t.mcg", None, threads_size, threads_dim, 2)
            lines += ["", f"Threads: the scan of {threads_size:,} x {threads_dim} (fresh process; p50 ms):", "",
                      "| threads | scan p50 ms | search p50 ms | speed-up | floor (1 thread) | peak RSS MB |",
                      "|---|---|---|---|---|---|"]
            base = None
            for n in range(1, (os.cpu_count() or 1) + 1):
                r = run_worker("scan", tmp / "t.mcg", n, max(20, runs // 4), max(5, warmup // 4), K)
                base = base or r["search_p50_ms"]
                lines.append(f"| {n} | {r['scan_p50_ms']:.2f} | {r['search_p50_ms']:.2f} | "
                             f"{base / r['search_p50_ms']:.2f}x | {r['floor_p50_ms']:.2f} | {r['peak_rss_mb']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
