"""Top-k search over a gallery of precomputed unit embeddings, as the phone runs it (numpy only).

Storage: int8 codes with a per-vector symmetric scale (``code = round(127 * v / max|v|)``).
Measured with numpy on one core of the dev machine (AMD EPYC), 100k x 256: fp32 sgemv 4.9 ms
(memory-bound, 102 MB), int8 dequantised to fp32 in 4096-row chunks + sgemv 3.6-4.0 ms
(25.6 MB + 4 MB buffer), int8 @ int8 in numpy 10 ms (no BLAS kernel), fp16 115 ms (no
BLAS kernel). So: int8 per-vector scale, chunked dequantisation; the per-vector scale is
one multiply per row and keeps every vector at full 8-bit resolution.

Int8 rounding alone moves random unit vectors' top-10 (recall@10 vs fp32 0.985 at 100k), so each
row also stores its int8 residual with a second scale: the scan reads the first codes only, and
the rerank of its k + 16 candidates reads codes + residual (~16 bits), which ranks as fp32 does.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcad_core.errors import McadError

CHUNK_ROWS = 4096  # a 4096 x 256 fp32 block (4 MB) stays in cache between dequantise and sgemv


@dataclass(frozen=True)
class Int8Gallery:
    """Gallery rows as int8 codes [N, D] and float32 per-row scales [N]: row ≈ codes * scale, what the
    scan reads. Optionally a second int8 code per row, the quantized residual of the first, with its
    own scales: row ≈ codes * scale + residual * residual_scale to ~16 bits, what the rerank of the
    scan's few candidates reads (``reconstruct``)."""

    codes: np.ndarray
    scales: np.ndarray
    residual: np.ndarray | None = None
    residual_scales: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def nbytes(self) -> int:
        """Bytes the scan reads (codes and scales; the residual is read for the candidates only)."""
        return self.codes.nbytes + self.scales.nbytes

    def dequantize(self) -> np.ndarray:
        """The rows as the int8 scan sees them (first codes only), float32 [N, D]."""
        return self.codes.astype(np.float32) * self.scales[:, None]

    def take(self, rows: np.ndarray) -> Int8Gallery:
        """The given rows, every array copied (stored codes as they are: no re-rounding)."""
        return Int8Gallery(*(None if a is None else np.asarray(a)[np.asarray(rows, np.int64)] for a in self._arrays()))

    @staticmethod
    def concat(parts: list[Int8Gallery]) -> Int8Gallery:
        """Rows of ``parts`` one after another (a residual only where every part has one)."""
        arrays = list(zip(*(p._arrays() for p in parts)))
        if any(a is None for a in arrays[2]):
            arrays[2] = arrays[3] = None
        return Int8Gallery(*(None if a is None else np.concatenate(a) for a in arrays))

    def _arrays(self) -> tuple:
        return self.codes, self.scales, self.residual, self.residual_scales

    def reconstruct(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The stored rows at full stored precision (codes + residual where present), float64 [len(rows), D]."""
        pick = (lambda a: a) if rows is None else (lambda a: a[rows])
        out = pick(self.codes).astype(np.float64) * pick(self.scales).astype(np.float64)[:, None]
        if self.residual is not None:
            out += pick(self.residual).astype(np.float64) * pick(self.residual_scales).astype(np.float64)[:, None]
        return out


def quantize_gallery(emb: np.ndarray) -> Int8Gallery:
    """Float embeddings [N, D] -> int8 codes with a symmetric per-vector scale, and the int8 residual
    ``round((v - codes * scale) / residual_scale)`` with its own symmetric per-vector scale."""
    emb = np.asarray(emb, np.float32)
    if emb.ndim != 2:
        raise McadError(f"quantize_gallery: expected [N, D] embeddings, got shape {emb.shape}")
    steps = np.maximum(np.abs(emb).max(axis=1), 1e-12) / 127.0
    codes = np.clip(np.rint(emb / steps[:, None]), -127, 127).astype(np.int8)
    # The scale keeps each row's norm (not max|v| / 127): cosine ranking then suffers only the
    # direction error of rounding, not a norm error too (recall@10 vs fp32 +0.0015 at 100k x 128).
    code_norms = np.linalg.norm(codes.astype(np.float32), axis=1)
    scales = np.where(code_norms > 0, np.linalg.norm(emb, axis=1) / np.maximum(code_norms, 1e-30), 0.0)
    scales = scales.astype(np.float32)
    # The residual's rounding error is max|r| / 254 per component (~1/32000 of max|v|): the rerank of
    # the scan's candidates over codes + residual ranks as fp32 does (recall@10 0.985 -> 1.000 at 100k).
    res = emb.astype(np.float64) - codes * scales.astype(np.float64)[:, None]
    res_scales = (np.abs(res).max(axis=1) / 127.0).astype(np.float32)
    steps2 = np.where(res_scales > 0, res_scales, 1.0).astype(np.float64)
    residual = np.clip(np.rint(res / steps2[:, None]), -127, 127).astype(np.int8)
    return Int8Gallery(codes, scales, residual, res_scales)


def synthetic_gallery(n: int, dim: int, seed: int = 0, chunk_rows: int = 1024) -> Int8Gallery:
    """Random unit vectors, quantized in small chunks so neither the fp32 copy nor big temporaries
    exist (100k x 256 fp32 alone would be 102 MB of the search process's peak memory)."""
    rng = np.random.default_rng(seed)
    out = Int8Gallery(np.empty((n, dim), np.int8), np.empty(n, np.float32), np.empty((n, dim), np.int8),
                      np.empty(n, np.float32))
    for i in range(0, n, chunk_rows):
        block = rng.standard_normal((min(chunk_rows, n - i), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        q = quantize_gallery(block)
        for name in ("codes", "scales", "residual", "residual_scales"):
            getattr(out, name)[i:i + len(block)] = getattr(q, name)
    return out


def gallery_scores(query: np.ndarray, gallery: Int8Gallery | np.ndarray) -> np.ndarray:
    """Dot products [N] of one query [D] with every gallery row, dequantising in cached chunks."""
    q = np.ascontiguousarray(query, np.float32).reshape(-1)
    rows = gallery.codes if isinstance(gallery, Int8Gallery) else np.asarray(gallery)
    if rows.ndim != 2 or rows.shape[1] != q.shape[0] or not len(rows):
        raise McadError(f"search: query dim {q.shape[0]} does not match non-empty gallery shape {rows.shape}")
    out = np.empty(len(rows), np.float32)
    buf = np.empty((min(CHUNK_ROWS, len(rows)), rows.shape[1]), np.float32)
    for i in range(0, len(rows), CHUNK_ROWS):
        block = rows[i:i + CHUNK_ROWS]
        if block.dtype != np.float32:
            np.copyto(buf[:len(block)], block, casting="unsafe")
            block = buf[:len(block)]
        np.matmul(block, q, out=out[i:i + len(block)])
    if isinstance(gallery, Int8Gallery):
        out *= gallery.scales
    return out


def search_topk(query: np.ndarray, gallery: Int8Gallery | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best gallery rows, best first (argpartition, then sort k)."""
    scores = gallery_scores(query, gallery)
    if k < 1:
        raise McadError(f"search: k must be >= 1 (got {k})")
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]
    return top, scores[top]


# The int8 scan keeps k + 16 candidates; their exact scores (codes + residual) pick the final k. At
# 100k x {128, 512} the true fp32 top-10 was inside the k + 16 for 300 of 300 random queries.
RERANK_EXTRA = 16


def quantize_query(query: np.ndarray) -> tuple[np.ndarray, float]:
    """One query [D] -> int8 codes and their scale (symmetric, max|q| -> 127)."""
    step = max(float(np.abs(query).max()), 1e-30) / 127.0
    return np.clip(np.rint(query / step), -127, 127).astype(np.int8), step


def _check_query(query: np.ndarray, gallery: Int8Gallery, k: int) -> np.ndarray:
    q = np.ascontiguousarray(query, np.float32).reshape(-1)
    if gallery.codes.ndim != 2 or gallery.codes.shape[1] != q.shape[0]:
        raise McadError(f"search: query dim {q.shape[0]} does not match gallery shape {gallery.codes.shape}")
    if k < 1:
        raise McadError(f"search: k must be >= 1 (got {k})")
    if not np.all(np.isfinite(q)):
        raise McadError("search: the query has NaN or infinite values")
    return q


def exact_scores(query: np.ndarray, gallery: Int8Gallery, rows: np.ndarray | None = None) -> np.ndarray:
    """Exact float64 scores of the stored rows (codes + residual, ``Int8Gallery.reconstruct``): the
    reference every scan is held to."""
    q = np.asarray(query, np.float64)
    pick = (lambda a: a) if rows is None else (lambda a: a[rows])  # each array read once (the residual: pread)
    out = (pick(gallery.codes).astype(np.float64) @ q) * pick(gallery.scales)
    if gallery.residual is not None:
        out += (pick(gallery.residual).astype(np.float64) @ q) * pick(gallery.residual_scales)
    return out


KERNEL_SOURCE = Path(__file__).with_name("scan.c")
_ENTRY_BYTES = 16  # struct entry {float; int64} in scan.c
_kernel_lock = threading.Lock()
_kernel: ctypes.CDLL | None | bool = False  # False: not tried yet; None: unavailable
_pools: dict[int, ThreadPoolExecutor] = {}
MIN_ROWS_PER_THREAD = 65536  # a part smaller than this is not worth a thread


def _cache_dir() -> Path:
    return Path(os.environ.get("MCAD_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "mcad")


def _cpu_key() -> bytes:
    """What ``-march=native`` depends on: the CPU's flags (the build is cached per CPU kind)."""
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                    "").encode()
    except OSError:
        return os.uname().machine.encode()


def _build_kernel() -> ctypes.CDLL | None:
    """Compile ``scan.c`` once per source and CPU kind (about 0.3 s), cached under ~/.cache/mcad;
    None where no C compiler is found (the numpy route then serves, slower)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    source = KERNEL_SOURCE.read_bytes()
    flags = ["-O3", "-march=native", "-shared", "-fPIC", "-std=c11"]
    key = hashlib.sha256(source + _cpu_key() + " ".join(flags).encode()).hexdigest()[:16]
    lib = _cache_dir() / f"scan-{key}.so"
    if not lib.is_file():
        if cc is None:
            return None
        lib.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".scan-", suffix=".so", dir=lib.parent)
        os.close(fd)
        try:
            proc = subprocess.run([cc, *flags, "-o", tmp, str(KERNEL_SOURCE)], capture_output=True, text=True)
            if proc.returncode != 0:
                return None
            os.replace(tmp, lib)
        finally:
            Path(tmp).unlink(missing_ok=True)
    dll = ctypes.CDLL(str(lib))
    ptr = ctypes.c_void_p
    dll.mcad_scan_topk.argtypes = [ptr, ptr, ctypes.c_int64, ctypes.c_int64, ptr, ctypes.c_int64, ctypes.c_int64,
                                   ptr, ptr, ptr]
    dll.mcad_scan_topk.restype = ctypes.c_int64
    dll.mcad_scan_isa.restype = ctypes.c_char_p
    return dll


def scan_kernel() -> ctypes.CDLL | None:
    """The compiled scan kernel, built on first use; None where it cannot be built."""
    global _kernel
    with _kernel_lock:
        if _kernel is False:
            _kernel = None if os.environ.get("MCAD_SCAN_KERNEL") == "numpy" else _build_kernel()
        return _kernel


def scan_kernel_name() -> str:
    """Which route ``scan_topk`` takes here, as the benchmark reports it."""
    dll = scan_kernel()
    return f"c/{dll.mcad_scan_isa().decode()}" if dll is not None else "numpy"


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _scan_rows(dll: ctypes.CDLL, codes: np.ndarray, scales: np.ndarray, q8: np.ndarray, kk: int,
               start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The kernel over rows [start, stop): its best ``kk``, best first (ctypes drops the GIL meanwhile)."""
    kk = min(kk, stop - start)
    idx, score = np.empty(kk, np.int64), np.empty(kk, np.float32)
    heap = np.empty(kk * _ENTRY_BYTES, np.uint8)
    d = codes.shape[1]
    got = dll.mcad_scan_topk(_addr(codes) + start * d, _addr(scales) + 4 * start, stop - start, d, _addr(q8), kk,
                             start, _addr(heap), _addr(idx), _addr(score))
    if got < 0:
        raise McadError(f"search: dim {d} is beyond the scan kernel's 1024")
    return idx[:got], score[:got]


def _pool(threads: int) -> ThreadPoolExecutor:
    with _kernel_lock:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="mcad-scan")
        return _pools[threads]


def scan_candidates(query: np.ndarray, gallery: Int8Gallery, kk: int, threads: int) -> np.ndarray:
    """Indices of the ``kk`` best rows by the int8 scan (query quantized to int8), ties to the lower
    index, the same for any thread count; the numpy route (chunked dequantize + sgemv) without a kernel."""
    dll = scan_kernel()
    codes, scales = gallery.codes, gallery.scales
    if dll is not None and codes.flags.c_contiguous and codes.shape[1] <= 1024:
        scales = np.ascontiguousarray(scales, np.float32)
        q8 = quantize_query(query)[0]
        n = len(codes)
        threads = max(1, min(threads, n // MIN_ROWS_PER_THREAD))
        if threads == 1:
            return _scan_rows(dll, codes, scales, q8, kk, 0, n)[0]
        bounds = np.linspace(0, n, threads + 1).astype(np.int64)
        parts = list(_pool(threads).map(lambda b: _scan_rows(dll, codes, scales, q8, kk, b[0], b[1]),
                                        zip(bounds[:-1].tolist(), bounds[1:].tolist())))
        idx = np.concatenate([p[0] for p in parts])
        score = np.concatenate([p[1] for p in parts])
        return idx[np.lexsort((idx, -score))[:kk]]
    scores = gallery_scores(query, gallery)
    if kk >= len(scores):
        return np.arange(len(scores))
    cut = np.partition(scores, len(scores) - kk)[len(scores) - kk]
    above = np.flatnonzero(scores > cut)
    return np.concatenate([above, np.flatnonzero(scores == cut)[:kk - len(above)]])  # ties: lower index


def scan_topk(query: np.ndarray, gallery: Int8Gallery, k: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` rows of an int8 gallery for one query: indices (int64) and scores (float32), best first,
    ties to the lower index. The scan (first codes only) keeps ``k + RERANK_EXTRA`` candidates; their
    exact scores over codes + residual (``exact_scores``) decide the order, so the result equals a
    brute-force search of the stored rows unless a true top-k row scored below ``k + 16`` others in
    the scan."""
    q = _check_query(query, gallery, k)
    n = len(gallery.codes)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    k = min(k, n)
    cand = scan_candidates(q, gallery, min(n, k + RERANK_EXTRA), max(1, int(threads))).astype(np.int64)
    exact = exact_scores(q, gallery, cand)
    order = np.lexsort((cand, -exact))[:k]
    return cand[order], exact[order].astype(np.float32)
