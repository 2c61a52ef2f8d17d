"""Search correctness against brute force, and the benchmark end to end on a tiny export."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_fixtures import make_prepared
from student_fixtures import CAPTIONS, exported

from mcad_core.errors import McadError
from mcad_core.export.bench import plot_search_latency, run_bench, search_metrics, search_rows_csv
from mcad_core.runtime.search import Int8Gallery, quantize_gallery, search_topk, synthetic_gallery


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("n", [7, 4096, 10_001])
def test_search_topk_equals_brute_force(n):
    rng = np.random.default_rng(n)
    gallery, query = _unit(rng, n, 64), _unit(rng, 1, 64)[0]
    k = min(10, n)
    idx, scores = search_topk(query, gallery, 10)
    ref = np.argsort(-(gallery.astype(np.float64) @ query))[:k]
    assert idx.tolist() == ref.tolist()
    assert np.all(np.diff(scores) <= 0)
    q8 = quantize_gallery(gallery)
    idx8, _ = search_topk(query, q8, 10)
    assert idx8.tolist() == np.argsort(-(q8.dequantize().astype(np.float64) @ query))[:k].tolist()


def test_int8_gallery_is_close_to_fp32():
    rng = np.random.default_rng(0)
    gallery = _unit(rng, 2000, 128)
    q8 = quantize_gallery(gallery)
    assert q8.codes.dtype == np.int8 and q8.nbytes < gallery.nbytes / 3
    cos = (q8.dequantize() * gallery).sum(1) / np.linalg.norm(q8.dequantize(), axis=1)
    assert cos.min() > 0.999
    queries = gallery[:50] + 0.3 * _unit(rng, 50, 128)
    hits = [search_topk(q, q8, 1)[0][0] == search_topk(q, gallery, 1)[0][0] for q in queries]
    assert np.mean(hits) >= 0.95


def test_synthetic_gallery_and_errors():
    g = synthetic_gallery(2500, 16, seed=3)
    assert isinstance(g, Int8Gallery) and len(g) == 2500
    assert np.allclose(np.linalg.norm(g.dequantize(), axis=1), 1.0, atol=0.02)
    with pytest.raises(McadError, match="query dim"):
        search_topk(np.ones(8, np.float32), g, 10)
    with pytest.raises(McadError, match="k must be"):
        search_topk(np.ones(16, np.float32), g, 0)


@pytest.mark.slow
def test_bench_end_to_end(tmp_path):
    _, _, folder, _ = exported()
    report = run_bench(folder, threads=[1], runs=3, warmup=1, gallery_sizes=[100, 2000], topk=10,
                       queries=CAPTIONS, recall_queries=40, prepared_dir=make_prepared(tmp_path))
    env = report["environment"]
    assert env["runtime_version"] and env["cpu"]
    assert {(r["tower"], r["format"]) for r in report["encoders"]} == {
        (t, f) for t in ("image", "text") for f in ("fp32", "dynamic_int8", "full_int8")}
    for row in report["encoders"]:
        assert 0 < row["p50_ms"] <= row["p90_ms"] and row["init_ms"] > 0 and row["peak_rss_mb"] > 0
    assert len(report["search"]) == 3 * 2
    for row in report["search"]:
        assert row["torch_loaded"] is False  # the search process is phone-like
        assert set(row["breakdown_mean_ms"]) == {"tokenize", "encode", "topk", "ids"}
        assert 0 < row["peak_rss_mb"] < 500
        assert 0 < row["scan_p50_ms"] <= row["p50_ms"] and row["floor_p50_ms"] > 0
        assert row["scan_floor_ratio"] == row["scan_p50_ms"] / row["floor_p50_ms"] and row["scan_kernel"]
    recall = report["search_recall"]
    assert recall["gallery_size"] == 2000 and recall["queries"] == 40 and recall["k"] == 10
    assert recall["recall_vs_stored"] >= 0.99 and recall["recall_vs_fp32"] >= 0.99
    real = report["real_query_recall"]  # 16 test photos, 48 captions; 2000 rows from 72 photos, augmented
    assert real["queries"] == 48 and real["format"] == "dynamic_int8"
    assert {g: real["galleries"][g]["size"] for g in ("test", "big")} == {"test": 16, "big": 2000}
    assert all(0.5 <= g["recall_vs_fp32"] <= 1.0 for g in real["galleries"].values())
    csv = search_rows_csv(report["search"])
    assert csv.splitlines()[0].startswith("series,") and len(csv.splitlines()) == 7
    plot_search_latency(report["search"], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_without_models_is_one_line_error(tmp_path):
    with pytest.raises(McadError, match="no exported"):
        run_bench(tmp_path, [1], 1, 0, [10], 10, ["a"])


def test_search_metrics_keep_the_headline_model_only():
    rows = [{"text_format": f, "threads": n, "gallery_size": g, "p50_ms": 0.1 * g / 1000 + n + (f == "fp32"),
             "scan_floor_ratio": 1.25 * n} for f in ("fp32", "dynamic_int8") for n in (1, 2) for g in (1000, 100_000)]
    recall = {"k": 10, "recall_vs_fp32": 0.98765}
    assert search_metrics(rows, recall) == {  # dynamic_int8, 1 thread
        "p50_ms_1000": 1.1, "p50_ms_100000": 11.0, "scan_floor_ratio_1000": 1.25, "scan_floor_ratio_100000": 1.25,
        "recall_at_10": 0.9877}
    real = {"k": 10, "galleries": {"test": {"size": 1000, "recall_vs_fp32": 1.0},
                                   "big": {"size": 100_000, "recall_vs_fp32": 0.99848}}}
    assert search_metrics(rows, recall, real) == search_metrics(rows, recall) | {
        "real_recall_at_10_1000": 1.0, "real_recall_at_10_100000": 0.9985}
    assert search_metrics([r for r in rows if r["text_format"] == "fp32"]) == {}


def test_scan_recall_counts_what_int8_cannot_tell_apart():
    from mcad_core.export.query_recall import scan_recall

    rng = np.random.default_rng(0)
    emb = _unit(rng, 500, 32)
    assert scan_recall(emb[:20], emb, 1) == 1.0  # each row finds itself
    close = _unit(rng, 1, 32) + 1e-6 * rng.standard_normal((500, 32)).astype(np.float32)  # beyond int8's resolution
    assert scan_recall(_unit(rng, 20, 32), close, 10) < 0.5


def test_the_big_gallery_is_the_photos_then_their_augmented_copies():
    from mcad_core.export.query_recall import CHUNK, augmented, gallery_rows

    rng = np.random.default_rng(0)
    n_photos = CHUNK + 10
    photos = rng.integers(0, 256, (n_photos, 3, 8, 8), dtype=np.uint8)
    read: list[int] = []

    def load(idx):
        read.append(len(idx))
        return photos[np.asarray(idx, dtype=int)]

    rows = np.concatenate(list(gallery_rows(load, n_photos, 8, n_photos + 50, seed=1)))
    assert rows.shape == (n_photos + 50, 3, 8, 8) and np.array_equal(rows[:n_photos], photos)
    assert max(read) <= CHUNK  # photos are read a chunk at a time, not all at once
    assert np.array_equal(rows, np.concatenate(list(gallery_rows(load, n_photos, 8, n_photos + 50, seed=1))))
    assert not any(np.array_equal(rows[n_photos], p) for p in photos)  # a crop or mirror, not a copy
    assert augmented(load, n_photos, 8, 5, seed=2).shape == (5, 3, 8, 8)


def test_scan_worker_reports_the_floor_ratio(tmp_path):
    from mcad_core.export.bench import run_worker
    from mcad_core.runtime.gallery import write_quantized_gallery

    write_quantized_gallery(tmp_path / "g.mcg", "fp", synthetic_gallery(3000, 64, seed=1), [str(i) for i in range(3000)])
    row = run_worker("scan", tmp_path / "g.mcg", 1, 3, 1, 10)
    assert (row["gallery_size"], row["dim"], row["threads"]) == (3000, 64, 1)
    assert row["scan_floor_ratio"] == row["scan_p50_ms"] / row["floor_p50_ms"] and 0 < row["peak_rss_mb"] < 500
