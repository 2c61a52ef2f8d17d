"""The gallery file: search equals brute force over the stored rows and agrees with exact fp32 search,
appends keep earlier results, bad files are one line."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mcad_core.errors import McadError
from mcad_core.runtime.gallery import (_COMMIT_OFFSET, HEADER_BYTES, _layout, append_gallery, open_gallery,
                                      write_gallery, write_quantized_gallery)
from mcad_core.runtime.search import Int8Gallery, quantize_gallery, scan_topk

FP = "sha256:model-a"


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(query: np.ndarray, gallery, k: int) -> list[int]:
    """Exact scores of the stored rows (codes * scale + residual * residual scale, written out here),
    best first, ties to the lower index."""
    rows = (np.asarray(gallery.codes, np.float64) * np.asarray(gallery.scales, np.float64)[:, None]
            + np.asarray(gallery.residual, np.float64) * np.asarray(gallery.residual_scales, np.float64)[:, None])
    scores = rows @ np.asarray(query, np.float64)
    return np.lexsort((np.arange(len(scores)), -scores))[:k].tolist()


@pytest.fixture(params=["c", "numpy"])
def kernel(request, monkeypatch):
    """Both routes: the compiled scan, and numpy where no compiler is found; small thread parts."""
    from mcad_core.runtime import search

    monkeypatch.setattr(search, "MIN_ROWS_PER_THREAD", 1000)
    if request.param == "numpy":
        monkeypatch.setattr(search, "_kernel", None)
    else:
        assert search.scan_kernel() is not None, "no C compiler: the scan kernel could not be built"
    return request.param


@pytest.mark.parametrize(("n", "dim", "threads"), [(1, 8, 1), (37, 64, 1), (5000, 128, 1), (20_011, 96, 3),
                                                   (3001, 1000, 2), (100, 1100, 1)])
def test_search_equals_brute_force(tmp_path, kernel, n, dim, threads):
    rng = np.random.default_rng(n)
    emb = _unit(rng, n, dim)
    write_gallery(tmp_path / "g.mcg", FP, emb, [f"img/{i}.jpg" for i in range(n)])
    g = open_gallery(tmp_path / "g.mcg", FP)
    assert (len(g), g.dim, g.fingerprint) == (n, dim, FP)
    for query in [*_unit(rng, 20, dim), emb[n // 2]]:
        idx, scores = g.search(query, 10, threads=threads)
        assert idx.dtype == np.int64 and scores.dtype == np.float32
        assert idx.tolist() == _brute_force(query, g, 10)
        assert np.all(np.diff(scores) <= 0)
    assert g.search(emb[n // 2], 1)[0][0] == n // 2


def test_recall_against_exact_fp32(tmp_path, kernel):
    """The top-10 agrees with exact fp32 search of the float vectors: the issue asks >= 0.99; held to
    0.995 here, which the int8 rows alone (no residual in the rerank) miss on this gallery (0.9905)."""
    rng = np.random.default_rng(7)
    emb, queries = _unit(rng, 20_000, 128), _unit(rng, 200, 128)
    write_gallery(tmp_path / "g.mcg", FP, emb, [str(i) for i in range(len(emb))])
    g = open_gallery(tmp_path / "g.mcg", FP)
    assert np.abs(g.rows.reconstruct() - emb).max() < 1e-4  # ~16-bit rows; int8 alone is off by ~2e-3
    truth = np.argsort(-(queries.astype(np.float64) @ emb.T.astype(np.float64)), axis=1)[:, :10]
    hits = sum(len(set(g.search(q, 10)[0].tolist()) & set(t.tolist())) for q, t in zip(queries, truth))
    assert hits / (10 * len(queries)) >= 0.995  # 1.000 measured


def test_ties_go_to_the_lower_index(tmp_path, kernel):
    rng = np.random.default_rng(1)
    base = _unit(rng, 3, 32)
    emb = np.repeat(base, 1000, axis=0)  # 1000 identical copies of each of 3 vectors
    write_gallery(tmp_path / "g.mcg", FP, emb, [str(i) for i in range(len(emb))])
    g = open_gallery(tmp_path / "g.mcg")
    idx, scores = g.search(base[1], 10)
    assert idx.tolist() == list(range(1000, 1010)) and len(set(scores.tolist())) == 1
    for threads in (2, 3):
        assert g.search(base[2], 12, threads=threads)[0].tolist() == list(range(2000, 2012))


def test_file_is_mapped_with_ids_and_int8_codes(tmp_path):
    rng = np.random.default_rng(2)
    emb = _unit(rng, 300, 48)
    ids = ["photos/été/плёнка 1.jpg", "a\nb", "", *(f"{i}" for i in range(297))]
    write_gallery(tmp_path / "g.mcg", FP, emb, ids)
    g = open_gallery(tmp_path / "g.mcg")
    assert isinstance(g.codes.base, memoryview) or g.codes.base is not None
    assert g.codes.dtype == np.int8 and g.codes.shape == (300, 48) and g.scales.shape == (300,)
    assert g.residual.dtype == np.int8 and g.residual.shape == (300, 48) and g.residual_scales.shape == (300,)
    for view in (g.codes, g.residual):  # views of the read-only map
        assert not view.flags.owndata and not view.flags.writeable
    assert g.ids == ids and [g.id_of(i) for i in (0, 1, 2, 299)] == ids[:3] + ["296"]
    q = quantize_gallery(emb)
    for name in ("codes", "scales", "residual", "residual_scales"):
        assert np.array_equal(getattr(g, name), getattr(q, name)), name
    dequant = g.codes.astype(np.float32) * g.scales[:, None]
    assert ((dequant * emb).sum(1) / np.linalg.norm(dequant, axis=1)).min() > 0.999
    assert np.abs(g.rows.reconstruct() - emb).max() < 1e-4
    g.search(emb[0], 10)  # the rerank's residual pages are dropped again: the arrays still read right
    assert np.array_equal(g.residual, q.residual)


def test_append_keeps_earlier_results(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "g.mcg"
    first, queries = _unit(rng, 900, 64), np.abs(_unit(rng, 30, 64))
    write_gallery(path, FP, first, [f"a{i}" for i in range(900)])
    g = open_gallery(path)
    before = [g.search(q, 10) for q in queries]
    g.close()
    # within the reserved capacity (in place), then past it (rewritten with more room)
    for n_new, start in ((100, 900), (5000, 1000)):
        append_gallery(path, FP, -np.abs(_unit(rng, n_new, 64)), [f"b{start + i}" for i in range(n_new)])
    g = open_gallery(path, FP)
    assert len(g) == 6000 and g.ids[:900] == [f"a{i}" for i in range(900)] and g.ids[-1] == "b5999"
    q = quantize_gallery(first)
    assert np.array_equal(g.codes[:900], q.codes) and np.array_equal(g.residual[:900], q.residual)
    assert np.array_equal(g.residual_scales[:900], q.residual_scales)
    for q, (idx, scores) in zip(queries, before):  # new rows score < 0: same top-10, same scores
        idx2, scores2 = g.search(q, 10)
        assert idx2.tolist() == idx.tolist() and np.array_equal(scores2, scores)
    append_gallery(path, FP, np.asarray(queries[:1]), ["q0"])
    g = open_gallery(path, FP)
    assert g.search(queries[0], 1)[0].tolist() == [6000] and g.ids[6000] == "q0"


def test_foreign_truncated_and_not_gallery_files_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "g.mcg"
    write_gallery(path, FP, _unit(rng, 50, 16), [str(i) for i in range(50)])
    with pytest.raises(McadError, match=r"g\.mcg.*'sha256:model-a'.*'sha256:model-b'") as err:
        open_gallery(path, "sha256:model-b")
    assert "\n" not in str(err.value)
    with pytest.raises(McadError, match="model-a"):
        append_gallery(path, "sha256:model-b", _unit(rng, 2, 16), ["x", "y"])
    with pytest.raises(McadError, match="16-dim"):
        append_gallery(path, FP, _unit(rng, 2, 8), ["x", "y"])
    with pytest.raises(McadError, match="2 embeddings but 1 ids"):
        append_gallery(path, FP, _unit(rng, 2, 16), ["x"])
    assert len(open_gallery(path, FP)) == 50  # refused appends changed nothing
    data = path.read_bytes()
    residual_at = _layout(16, open_gallery(path).capacity).residual
    v1 = data[:8] + struct.pack("<I", 1) + data[12:]
    cases = {"trunc.mcg": (data[:-3], "truncated"), "half.mcg": (data[:HEADER_BYTES + 100], "truncated"),
             "no_residual.mcg": (data[:residual_at + 50], "truncated"), "v1.mcg": (v1, "version 1.*rebuild"),
             "tiny.mcg": (data[:10], "not a gallery"), "other.mcg": (b"PK\x03\x04" + data[4:], "not a gallery"),
             "empty.mcg": (b"", "not a gallery")}
    for name, (content, what) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(McadError, match=f"{name}.*{what}") as err:
            open_gallery(tmp_path / name)
        assert "\n" not in str(err.value)
    with pytest.raises(McadError, match="missing.mcg"):
        open_gallery(tmp_path / "missing.mcg")


def test_write_is_atomic_and_checks_input(tmp_path):
    path = tmp_path / "g.mcg"
    rng = np.random.default_rng(5)
    write_gallery(path, FP, _unit(rng, 10, 8), [str(i) for i in range(10)])
    before = path.read_bytes()
    for emb, ids, fp, what in [(np.full((2, 8), np.nan, np.float32), ["a", "b"], FP, "NaN"),
                               (np.ones(8, np.float32), ["a"], FP, "shape"),
                               (_unit(rng, 2, 8), ["a", 2], FP, "strings"),
                               (_unit(rng, 2, 8), ["a", "b"], "", "fingerprint")]:
        with pytest.raises(McadError, match=what):
            write_gallery(path, fp, emb, ids)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["g.mcg"]
    q = quantize_gallery(_unit(rng, 2, 8))
    with pytest.raises(McadError, match="without their residual"):
        write_quantized_gallery(path, FP, Int8Gallery(q.codes, q.scales), ["a", "b"])
    assert path.read_bytes() == before


def test_scan_topk_errors():
    g = quantize_gallery(_unit(np.random.default_rng(6), 20, 16))
    with pytest.raises(McadError, match="query dim"):
        scan_topk(np.ones(8, np.float32), g, 10)
    with pytest.raises(McadError, match="k must be"):
        scan_topk(np.ones(16, np.float32), g, 0)
    idx, scores = scan_topk(np.ones(16, np.float32), Int8Gallery(np.empty((0, 16), np.int8), np.empty(0, np.float32)), 5)
    assert len(idx) == len(scores) == 0


def test_header_and_ids_that_disagree_are_refused(tmp_path):
    """A count past the capacity would map rows of other sections, and id offsets that do not end where
    the header says would give wrong names to photos: both are corrupt files, one line each."""
    path = tmp_path / "g.mcg"
    write_gallery(path, FP, _unit(np.random.default_rng(8), 20, 16), [f"p{i}" for i in range(20)])
    data = bytearray(path.read_bytes())
    g = open_gallery(path)
    capacity, ends_at, ids_end = g.capacity, g._at.ends, g._ids_end
    g.close()
    cases = {}
    over = data.copy()  # count = capacity + 1, ids_end unchanged
    struct.pack_into("<Q", over, _COMMIT_OFFSET, capacity + 1)
    cases["over.mcg"] = (over, rf"corrupt gallery header \(dim 16, {capacity + 1}/{capacity} rows")
    offsets = data.copy()  # the last id ends one byte early
    struct.pack_into("<Q", offsets, ends_at + 8 * 19, ids_end - _layout(16, capacity).ids - 1)
    cases["offsets.mcg"] = (offsets, "corrupt gallery ids section")
    for name, (content, what) in cases.items():
        (tmp_path / name).write_bytes(bytes(content))
        with pytest.raises(McadError, match=f"{name}: {what}") as err:
            open_gallery(tmp_path / name)
        assert "\n" not in str(err.value)


def test_nan_scales_and_nan_queries_are_refused(tmp_path):
    path = tmp_path / "g.mcg"
    q = quantize_gallery(_unit(np.random.default_rng(9), 4, 8))
    for field in ("scales", "residual_scales"):
        bad = Int8Gallery(q.codes, q.scales.copy(), q.residual, q.residual_scales.copy())
        getattr(bad, field)[2] = np.nan
        with pytest.raises(McadError, match=r"g\.mcg: quantized rows with NaN or infinite scales"):
            write_quantized_gallery(path, FP, bad, ["a", "b", "c", "d"])
    assert not path.exists()
    write_quantized_gallery(path, FP, q, ["a", "b", "c", "d"])
    g = open_gallery(path)
    for value in (np.nan, np.inf):
        query = np.full(8, 0.3, np.float32)
        query[1] = value
        with pytest.raises(McadError, match="search: the query has NaN or infinite values"):
            g.search(query, 2)
        with pytest.raises(McadError, match="the query has NaN"):
            scan_topk(query, q, 2)


class _Crash(Exception):
    """A simulated power cut at one write."""


class _CrashingFile:
    """A file whose ``budget``-th write raises ``_Crash`` (the writes before it land, that one does not)."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, data) -> int:
        self._left -= 1
        if self._left < 0:
            raise _Crash
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def test_an_append_cut_at_any_write_leaves_the_old_gallery_or_the_new(tmp_path, monkeypatch):
    """Rows, scales, residuals and ids are written past the committed ones, the count last: cut the append
    at each of its writes and the file opens as the gallery before the append (no half row, no stale
    id), and a later append lands on top of the leftovers."""
    from mcad_core.runtime import gallery

    rng = np.random.default_rng(10)
    path = tmp_path / "g.mcg"
    first, more = _unit(rng, 30, 16), _unit(rng, 5, 16)
    write_gallery(path, FP, first, [f"a{i}" for i in range(30)])
    before = path.read_bytes()
    real_open = open
    writes = 0
    while True:
        path.write_bytes(before)
        monkeypatch.setattr(gallery, "open", lambda *a, **k: _CrashingFile(real_open(*a, **k), writes), raising=False)
        try:
            append_gallery(path, FP, more, [f"b{i}" for i in range(5)])
        except _Crash:
            crashed = True
        else:
            crashed = False
        monkeypatch.undo()
        g = open_gallery(path, FP)
        if crashed:
            assert len(g) == 30 and g.ids == [f"a{i}" for i in range(30)], f"cut at write {writes}"
            assert np.array_equal(g.codes, quantize_gallery(first).codes)
            g.close()
            append_gallery(path, FP, more[:2], ["c0", "c1"])
            g = open_gallery(path, FP)
            assert g.ids[30:] == ["c0", "c1"] and g.search(more[1], 1)[0].tolist() == [31]
            g.close()
            writes += 1
            continue
        assert g.ids == [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(5)]
        break
    assert writes >= 7  # five row sections, the ids, the commit


def test_gallery_lock_makes_writers_take_turns_and_dies_with_its_holder(tmp_path):
    """One holder at a time: a second writer waits (and says so) until the first lets go, also when a
    third comes just then (the released lock file is removed: a waiter granted the removed file's lock
    must not hold it beside the newcomer that made a new one). A holder killed by SIGKILL frees the
    lock at once; the lock file and a killed writer's temp files do not stay behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mcad_core.runtime.gallery import gallery_lock

    folder, log = tmp_path / "album", tmp_path / "held.log"
    folder.mkdir()
    path = folder / "g.mcg"
    take = ("import sys, time\nfrom mcad_core.runtime.gallery import gallery_lock\n"
            f"with gallery_lock({str(path)!r}, lambda: print('waiting', flush=True)):\n"
            "    print('got it', flush=True)\n"
            f"    open({str(log)!r}, 'a').write('child in\\n')\n"
            "    time.sleep(float(sys.argv[1]))\n"
            f"    open({str(log)!r}, 'a').write('child out\\n')\n")

    def child(hold_s: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", take, str(hold_s)], stdout=subprocess.PIPE, text=True)

    stale = folder / ".g.mcg.x1y2.tmp"
    stale.write_bytes(b"half a gallery")
    with gallery_lock(path):
        assert not stale.exists() and (folder / "g.mcg.lock").exists()
        proc = child(0.3)
        assert proc.stdout.readline() == "waiting\n"
        time.sleep(0.3)
        assert proc.poll() is None and not log.exists()
    with gallery_lock(path):  # at once, while the child wakes up on the lock just released
        with open(log, "a") as f:
            f.write("test in\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write("test out\n")
    assert proc.wait(timeout=30) == 0
    held = log.read_text().split()
    assert held in (["child", "in", "child", "out", "test", "in", "test", "out"],
                    ["test", "in", "test", "out", "child", "in", "child", "out"]), held
    assert [p.name for p in folder.iterdir()] == []

    proc = child(60)
    assert proc.stdout.readline() == "got it\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    waited = []
    with gallery_lock(path, lambda: waited.append(True)):
        pass
    assert waited == [] and [p.name for p in folder.iterdir()] == []
