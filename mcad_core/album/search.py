"""A typed query -> the best photos of a gallery, timed as a phone user would feel it.

The models and the gallery are loaded once (``AlbumSearch``); each query is then three
steps, timed apart: tokenize (and refuse a query of only unknown words), encode with the
text tower, scan the int8 gallery for the top k.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcad_core.album.index import id_path
from mcad_core.album.model import ExportedModel, fingerprint_format
from mcad_core.errors import McadError


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str


@dataclass(frozen=True)
class QueryResult:
    """Hits best first; times in ms; ``unknown``: the query's words the vocabulary does not hold."""

    query: str
    hits: list[Hit]
    tokenize_ms: float
    encode_ms: float
    scan_ms: float
    unknown: list[str]

    @property
    def total_ms(self) -> float:
        return self.tokenize_ms + self.encode_ms + self.scan_ms


class AlbumSearch:
    """A gallery and the exported model that made it, loaded (and warmed up) once for many queries.

    ``fmt`` defaults to the format recorded in the gallery's fingerprint; the models folder
    must hold exactly the files that indexed it (same fingerprint), else a one-line error.
    """

    def __init__(self, gallery: str | Path, models_dir: str | Path, fmt: str | None = None, threads: int = 1) -> None:
        from mcad_core.runtime.gallery import open_gallery

        start = time.perf_counter()
        self.gallery = open_gallery(gallery)
        made_with = fingerprint_format(self.gallery.fingerprint)
        if fmt is None and made_with is None:
            raise McadError(f"{gallery}: not made by `mcad index` (model {self.gallery.fingerprint!r}); pass --format")
        self.model = ExportedModel(models_dir, fmt or made_with, threads=threads)
        self.threads = threads
        if self.model.fingerprint != self.gallery.fingerprint:
            raise McadError(f"{gallery}: indexed by model {self.gallery.fingerprint}, but {models_dir} holds "
                            f"{self.model.fingerprint}; pass the --models/--format that indexed it, or re-index")
        if not len(self.gallery):
            raise McadError(f"{gallery}: the gallery is empty")
        if self.model.text.embed_dim != self.gallery.dim:
            raise McadError(f"{self.model.paths['text']}: gives {self.model.text.embed_dim}-dim embeddings, "
                            f"the gallery holds {self.gallery.dim}-dim ones")
        # One throw-away pass, as an app does at start: the tokenizer's and the interpreter's first
        # calls cost ~3 ms and ~1 ms more than every later one, which is not what a query costs.
        ids = self.model.tokenizer.encode("warm up")
        self.gallery.search(self.model.text.encode_one(ids[0]), 1, threads=threads)
        self.load_ms = (time.perf_counter() - start) * 1e3

    def tokenize(self, query: str) -> tuple[np.ndarray, list[str]]:
        """int32 ids [1, L] and the unknown words; a query with no known word is a one-line error."""
        ids, known, unknown = self.model.tokenizer.encode_query(query)
        if not known:
            if not unknown:
                raise McadError("the query is empty")
            raise McadError(f"no word of the query is in the model's vocabulary (unknown: {', '.join(unknown)})")
        return ids, unknown

    def query(self, query: str, k: int = 10) -> QueryResult:
        t0 = time.perf_counter()
        ids, unknown = self.tokenize(query)
        t1 = time.perf_counter()
        q = self.model.text.encode_one(ids[0])
        t2 = time.perf_counter()
        rows, scores = self.gallery.search(q, k, threads=self.threads)
        t3 = time.perf_counter()
        hits = [Hit(rank + 1, float(s), id_path(self.gallery.id_of(int(r)))) for rank, (r, s) in enumerate(zip(rows, scores))]
        return QueryResult(query, hits, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, unknown)
