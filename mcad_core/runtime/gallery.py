"""The gallery file a phone app memory-maps, searches and appends to.

One file holds the image embeddings of an album as int8 codes with one float32 scale per row
(``row ≈ codes * scale``, see ``search.quantize_gallery``), a second int8 code per row, the
quantized residual, with its own scale (``row ≈ codes * scale + residual * residual_scale``), the
image ids, and the fingerprint of the model that embedded them. Layout (little-endian)::

    [0, 4096)               header: magic b"MCADGAL1", version (2), dim, capacity, count, ids_end,
                            fingerprint (UTF-8, length-prefixed)
    [4096, +capacity*dim)   codes, int8 [capacity, dim], row-major; rows [0, count) are valid
    next, 64-aligned        scales, float32 [capacity]
    next, 64-aligned        residual scales, float32 [capacity]
    next, 64-aligned        id ends, uint64 [capacity]: where each row's id ends in the id bytes
    next, 4096-aligned      residual codes, int8 [capacity, dim], row-major
    next, 64-aligned        id bytes: the ids' UTF-8, back to back, up to ids_end; the file may
                            continue past ids_end (an append in progress)

The scan reads the mapped codes and scales; the residual section is read only for the scan's few
candidates, with ``pread`` (``GalleryFile.search``), so it doubles the file, not the search
process's memory. Every section is reserved for ``capacity`` rows (a sparse hole on disk until
written), so an append writes its rows, scales, residuals and ids past the committed ones,
flushes them, and only then rewrites ``count`` and ``ids_end`` in the header: a reader sees
either the old or the new gallery, never a half row. An append past the capacity rewrites the file with room to spare
(temp file + ``os.replace``), so appends cost amortised O(rows appended). Opening maps the file
read-only: nothing is copied, and the scan reads the codes straight from the page cache.

Readers take no lock: every write is atomic for them. Writers do a read-modify-write (read the
count, write past it), so two at once would overwrite each other's rows: each holds
``gallery_lock`` for its whole read-modify-write, and the second one waits its turn.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mcad_core.errors import McadError
from mcad_core.runtime.search import Int8Gallery, quantize_gallery, scan_topk

MAGIC = b"MCADGAL1"
VERSION = 2  # 2 added the residual codes and scales; a version-1 file is refused (rebuild it)
HEADER_BYTES = 4096
MAX_FINGERPRINT_BYTES = 1024
_FIXED = struct.Struct("<8sIIQQQI")  # magic, version, dim, capacity, count, ids_end, fingerprint length
_COMMIT = struct.Struct("<QQ")  # count, ids_end: the one write that commits an append
_COMMIT_OFFSET = 8 + 4 + 4 + 8
_MIN_CAPACITY = 1024


def _align(n: int, to: int = 64) -> int:
    return -(-n // to) * to


class _Layout(NamedTuple):
    """Byte offsets of the sections after the codes (which start at ``HEADER_BYTES``)."""

    scales: int
    residual_scales: int
    ends: int
    residual: int
    ids: int


def _layout(dim: int, capacity: int) -> _Layout:
    scales_at = _align(HEADER_BYTES + capacity * dim)
    residual_scales_at = _align(scales_at + 4 * capacity)
    ends_at = _align(residual_scales_at + 4 * capacity)
    residual_at = _align(ends_at + 8 * capacity, 4096)
    return _Layout(scales_at, residual_scales_at, ends_at, residual_at, _align(residual_at + capacity * dim))


def _capacity_for(rows: int) -> int:
    """Room for ``rows`` and a quarter more (at least 1024 rows), so appends rarely rewrite."""
    return _align(max(_MIN_CAPACITY, rows + rows // 4), 1024)


def _check_fingerprint(fingerprint: str) -> bytes:
    raw = fingerprint.encode("utf-8") if isinstance(fingerprint, str) else b""
    if not raw or len(raw) > MAX_FINGERPRINT_BYTES:
        raise McadError(f"gallery: the model fingerprint must be a non-empty string of at most "
                        f"{MAX_FINGERPRINT_BYTES} bytes (got {fingerprint!r:.80})")
    return raw


def _rows(path: Path, embeddings: np.ndarray, ids: list[str]) -> tuple[Int8Gallery, np.ndarray, bytes]:
    """Quantized rows, the ids' end offsets (from 0) and their UTF-8 bytes, checked against each other."""
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise McadError(f"{path}: embeddings must be [N, D] with D >= 1 (got shape {emb.shape})")
    if not np.all(np.isfinite(emb)):
        raise McadError(f"{path}: embeddings contain NaN or infinite values")
    ids = list(ids)
    if len(ids) != len(emb):
        raise McadError(f"{path}: {len(emb)} embeddings but {len(ids)} ids")
    return quantize_gallery(emb), *_encode_ids(path, ids)


def _encode_ids(path: Path, ids: list[str]) -> tuple[np.ndarray, bytes]:
    """The ids' end offsets (from 0) and their UTF-8 bytes back to back."""
    encoded = []
    for image_id in ids:
        if not isinstance(image_id, str):
            raise McadError(f"{path}: image ids must be strings (got {type(image_id).__name__})")
        encoded.append(image_id.encode("utf-8"))
    return np.cumsum([len(e) for e in encoded], dtype=np.uint64), b"".join(encoded)


def _write_rows(f, at: _Layout, dim: int, row0: int, rows: Int8Gallery, id_ends: np.ndarray) -> None:
    """Rows ``row0 ...`` of every per-row section (codes, scales, residual codes and scales, id ends)."""
    for offset, width, array, dtype in ((HEADER_BYTES, dim, rows.codes, np.int8), (at.scales, 4, rows.scales, "<f4"),
                                        (at.residual_scales, 4, rows.residual_scales, "<f4"),
                                        (at.ends, 8, id_ends, "<u8"), (at.residual, dim, rows.residual, np.int8)):
        f.seek(offset + width * row0)
        f.write(np.ascontiguousarray(array, dtype).tobytes())


def _write_file(target: Path, fp: bytes, dim: int, capacity: int, rows: Int8Gallery, id_ends: np.ndarray,
                id_bytes: bytes) -> None:
    """A complete gallery file at a temporary sibling, fsynced, then renamed onto ``target``."""
    at = _layout(dim, capacity)
    ids_end = at.ids + len(id_bytes)
    header = _FIXED.pack(MAGIC, VERSION, dim, capacity, len(rows), ids_end, len(fp)) + fp
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.ljust(HEADER_BYTES, b"\0"))
            _write_rows(f, at, dim, 0, rows, id_ends)
            f.seek(at.ids)
            f.write(id_bytes)
            f.truncate(ids_end)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def gallery_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the writers' lock of the gallery at ``path``: ``flock`` on the sidecar ``<path>.lock``.

    The kernel drops an ``flock`` when its holder exits, even by SIGKILL, so a killed writer never
    leaves the gallery locked. ``on_wait`` is called once if another writer holds it (then this
    one waits). The holder removes temp files a killed writer left, and the lock file on release;
    a waiter that was granted the lock of a lock file removed meanwhile takes the new one instead
    (else two writers could each hold a lock, on two different files).
    """
    import fcntl

    path = Path(path)
    lock_path = path.with_name(path.name + ".lock")
    waited = False
    while True:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise McadError(f"{lock_path}: cannot create the gallery's lock file ({err.strerror or err})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait()
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            held = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):  # ``_write_file``'s, from a killed writer
            tmp.unlink(missing_ok=True)
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def write_gallery(path: str | Path, fingerprint: str, embeddings: np.ndarray, ids: list[str]) -> None:
    """Write a new gallery file (replacing any at ``path``) atomically: unit embeddings [N, D], one id each."""
    path = Path(path)
    fp = _check_fingerprint(fingerprint)
    q, ends, id_bytes = _rows(path, embeddings, ids)
    _write_file(path, fp, q.codes.shape[1], _capacity_for(len(q)), q, ends, id_bytes)


def write_quantized_gallery(path: str | Path, fingerprint: str, gallery: Int8Gallery, ids: list[str]) -> None:
    """``write_gallery`` for rows already quantized (``search.quantize_gallery``, with their residual): no
    float copy needed, so a million-row benchmark gallery is written from its int8 codes alone."""
    path = Path(path)
    fp = _check_fingerprint(fingerprint)
    if gallery.codes.ndim != 2 or len(ids) != len(gallery.codes):
        raise McadError(f"{path}: {len(gallery.codes)} quantized rows but {len(ids)} ids")
    if gallery.residual is None or gallery.residual.shape != gallery.codes.shape:
        raise McadError(f"{path}: quantized rows without their residual codes (use search.quantize_gallery)")
    if not (np.all(np.isfinite(gallery.scales)) and np.all(np.isfinite(gallery.residual_scales))):
        raise McadError(f"{path}: quantized rows with NaN or infinite scales (NaN or infinite embeddings)")
    ends, id_bytes = _encode_ids(path, list(ids))
    _write_file(path, fp, gallery.codes.shape[1], _capacity_for(len(ids)), gallery, ends, id_bytes)


def append_gallery(path: str | Path, fingerprint: str, embeddings: np.ndarray, ids: list[str]) -> None:
    """Append rows to an existing gallery; earlier rows, and so earlier search results, are untouched.

    Refused (one line) when the file was made by another model or holds another dim.
    Crash-safe: the new rows become visible only when the header's count is rewritten last.
    """
    path = Path(path)
    fp = _check_fingerprint(fingerprint)
    g = open_gallery(path, fingerprint)
    q, ends, id_bytes = _rows(path, embeddings, ids)
    if q.codes.shape[1] != g.dim:
        raise McadError(f"{path}: the gallery holds {g.dim}-dim embeddings, cannot append {q.codes.shape[1]}-dim ones")
    if not len(q):
        return
    n, count = len(q), len(g)
    ends += np.uint64(g._ids_end - g._at.ids)
    if count + n > g.capacity:
        rows = Int8Gallery.concat([g.rows, q])
        all_ends = np.concatenate([g._id_ends, ends])
        old_ids = bytes(g._map[g._at.ids:g._ids_end])
        g.close()
        _write_file(path, fp, g.dim, _capacity_for(count + n), rows, all_ends, old_ids + id_bytes)
        return
    at, ids_end, dim = g._at, g._ids_end, g.dim
    g.close()
    with open(path, "r+b") as f:
        _write_rows(f, at, dim, count, q, ends)
        f.seek(ids_end)
        f.write(id_bytes)
        f.truncate(ids_end + len(id_bytes))
        f.flush()
        os.fsync(f.fileno())
        f.seek(_COMMIT_OFFSET)
        f.write(_COMMIT.pack(count + n, ids_end + len(id_bytes)))
        f.flush()
        os.fsync(f.fileno())


class _ResidualRows:
    """Rows of the residual section read with ``pread``, never through the mapping: a mapped read of one
    512-byte row put ~1 MB into the process's RSS (the page cache's large folios are mapped whole),
    30 MB for the 26 candidates of one query at 100k x 512; 26 preads cost 0.02-0.06 ms."""

    def __init__(self, file, offset: int, count: int, dim: int):
        self._file, self._offset, self._count, self._dim = file, offset, count, dim

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        if len(rows) and not (0 <= rows.min() and rows.max() < self._count):
            raise IndexError(f"residual rows out of range for a gallery of {self._count}")
        fd, d, at = self._file.fileno(), self._dim, self._offset
        buf = b"".join([os.pread(fd, d, at + r * d) for r in rows.tolist()])
        if len(buf) != len(rows) * d:
            raise McadError(f"{self._file.name}: truncated gallery file (a residual row ends early)")
        return np.frombuffer(buf, np.int8).reshape(len(rows), d)


class GalleryFile:
    """A gallery file mapped read-only: ``codes``, ``scales``, ``residual`` and ``residual_scales`` are
    views of the mapping (no copy); ``search`` reads the residual of its candidates with ``pread``."""

    def __init__(self, path: str | Path, expected_fingerprint: str | None = None):
        self.path = Path(path)
        try:
            f = open(self.path, "rb", buffering=0)  # kept open: ``search`` preads the residual rows from it
        except OSError as err:
            raise McadError(f"{self.path}: cannot open gallery ({err.strerror or err})") from None
        try:
            self._open(f, expected_fingerprint)
        except BaseException:
            f.close()
            raise
        self._file = f

    def _open(self, f, expected_fingerprint: str | None) -> None:
        head = f.read(HEADER_BYTES)
        if len(head) < _FIXED.size:
            raise McadError(f"{self.path}: not a gallery file (only {len(head)} bytes, no header)")
        magic, version, dim, capacity, count, ids_end, fp_len = _FIXED.unpack_from(head)
        if magic != MAGIC:
            raise McadError(f"{self.path}: not a gallery file (bad magic {magic!r})")
        if version != VERSION:
            raise McadError(f"{self.path}: gallery format version {version}, this reader knows {VERSION}; "
                            "rebuild the gallery")
        if not (0 < fp_len <= MAX_FINGERPRINT_BYTES and dim > 0 and count <= capacity):
            raise McadError(f"{self.path}: corrupt gallery header (dim {dim}, {count}/{capacity} rows, "
                            f"fingerprint length {fp_len})")
        self.fingerprint = head[_FIXED.size:_FIXED.size + fp_len].decode("utf-8", "replace")
        self.dim, self.capacity = dim, capacity
        self._at = _layout(dim, capacity)
        self._ids_end = ids_end
        size = os.fstat(f.fileno()).st_size  # after the header: an append grows the file before it commits
        if size < ids_end or ids_end < self._at.ids:
            raise McadError(f"{self.path}: truncated gallery file ({size} bytes, the header says "
                            f"{count} rows and {ids_end} bytes)")
        if expected_fingerprint is not None and expected_fingerprint != self.fingerprint:
            raise McadError(f"{self.path}: gallery built by model {self.fingerprint!r}, "
                            f"not by the model in use {expected_fingerprint!r}; rebuild the index")
        self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._count = count
        self.codes = np.ndarray((count, dim), np.int8, self._map, HEADER_BYTES)
        self.scales = np.ndarray((count,), "<f4", self._map, self._at.scales)
        self.residual = np.ndarray((count, dim), np.int8, self._map, self._at.residual)
        self.residual_scales = np.ndarray((count,), "<f4", self._map, self._at.residual_scales)
        self._id_ends = np.ndarray((count,), "<u8", self._map, self._at.ends)
        if count and (int(self._id_ends[-1]) != ids_end - self._at.ids):
            raise McadError(f"{self.path}: corrupt gallery ids section (id offsets do not match the header)")
        self._residual_rows = _ResidualRows(f, self._at.residual, count, dim)

    def __len__(self) -> int:
        return self._count

    def __enter__(self) -> GalleryFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the mapping (views handed out earlier keep it alive until they go)."""
        self.codes = self.scales = self.residual = self.residual_scales = self._residual_rows = None
        self.__dict__.pop("ids", None)
        self._map = None
        self._file.close()

    def id_of(self, row: int) -> str:
        """One row's image id, read from the map (what a search result needs: O(1), nothing decoded else)."""
        if not 0 <= row < self._count:
            raise IndexError(f"row {row} out of range for a gallery of {self._count}")
        start = int(self._id_ends[row - 1]) if row else 0
        return bytes(self._map[self._at.ids + start:self._at.ids + int(self._id_ends[row])]).decode("utf-8", "replace")

    @cached_property
    def ids(self) -> list[str]:
        """All image ids, row order (decoded on first use: opening stays cheap)."""
        blob = bytes(self._map[self._at.ids:self._ids_end])
        ends = self._id_ends.tolist()
        return [blob[a:b].decode("utf-8", "replace") for a, b in zip([0, *ends[:-1]], ends)]

    @property
    def rows(self) -> Int8Gallery:
        """The mapped rows: codes, scales, residual codes and scales (views, nothing copied)."""
        return Int8Gallery(self.codes, self.scales, self.residual, self.residual_scales)

    def search(self, query: np.ndarray, k: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (int64) and scores (float32) of the ``k`` best rows for a unit query [D], best
        first, ties to the lower index; see ``search.scan_topk``. The scan reads the mapped codes;
        the rerank preads its candidates' residual rows (``_ResidualRows``), so the residual section
        never enters the process's RSS."""
        rows = Int8Gallery(self.codes, self.scales, self._residual_rows, self.residual_scales)
        return scan_topk(query, rows, k, threads=threads)


def open_gallery(path: str | Path, fingerprint: str | None = None) -> GalleryFile:
    """Map a gallery file; with ``fingerprint``, refuse (one line) a gallery built by another model."""
    return GalleryFile(path, fingerprint)
