"""A folder of photos -> a gallery file, and on re-runs only what changed.

Each gallery row's id is ``<absolute path>\\t<size in bytes>\\t<mtime in ns>``: the path is
what search shows, size and mtime tell a re-run whether the file changed since it was
embedded (as rsync and make decide, without reading every photo again). A re-run embeds the
new and changed photos and appends them (``append_gallery``); if photos under the folder
changed or were deleted, it first rewrites the file atomically without their rows. Unreadable
photos are skipped, reported, and tried again on the next run. Rows of photos outside the folder being indexed are kept as they are, so one
gallery can hold several folders.

A run holds the gallery's writer lock (``gallery.gallery_lock``) from reading the gallery to its
last write, so two runs on one gallery take turns and neither loses the other's rows. It stores
the embedded rows ``CHUNK_PHOTOS`` at a time, each store crash-safe (an atomic new file, then
appends that commit their count last); rows of changed and deleted photos are dropped first.
So a run killed part-way leaves a valid gallery with what it stored, and the next run embeds
only the photos still missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcad_core.album.images import list_images, model_input
from mcad_core.album.model import ExportedModel
from mcad_core.errors import McadError, one_line

CHUNK_PHOTOS = 256  # photos embedded between two stores: a kill loses at most ~0.5 s of work (2 ms a photo)


def photo_id(path: Path, stat: os.stat_result) -> str:
    return f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}"


def id_path(photo: str) -> str:
    """The photo path stored in a gallery id (ids made by other tools are returned whole)."""
    parts = photo.rsplit("\t", 2)
    return parts[0] if len(parts) == 3 else photo


@dataclass
class IndexReport:
    """What a run did; ``skipped`` lists (path, reason) of the photos that could not be embedded."""

    gallery: Path
    rows: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    embed_s: float = 0.0
    written: str = "nothing to do"


def _embed(model: ExportedModel, paths: list[Path], report: IndexReport, progress: bool, chunk: int
           ) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Embed each photo, yielding the rows ``chunk`` photos at a time (the caller stores each before the
    next is embedded); broken photos go to ``report.skipped`` instead of stopping the run."""
    from tqdm import tqdm

    rows, ids = [], []
    size = model.image_size
    for path in tqdm(paths, desc="index", unit="photo", disable=not progress):
        start = time.perf_counter()
        try:
            stat = path.stat()
            photo_id(path, stat).encode("utf-8")
            x = model_input(path, size)
        except UnicodeEncodeError:
            report.skipped.append((path, "file name is not valid UTF-8"))
            continue
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
            report.skipped.append((path, one_line(err)))
            continue
        rows.append(model.image.encode_one(x))
        report.embed_s += time.perf_counter() - start
        ids.append(photo_id(path, stat))
        if len(ids) == chunk:
            yield np.stack(rows), ids
            rows, ids = [], []
    if ids:
        yield np.stack(rows), ids


def index_folder(photos_dir: str | Path, model: ExportedModel, out: str | Path, progress: bool = True,
                 chunk: int = CHUNK_PHOTOS, on_wait: Callable[[], None] | None = None) -> IndexReport:
    """Embed the photos of ``photos_dir`` into the gallery ``out`` (created, appended or rewritten).

    Holds the gallery's writer lock throughout, so a second run on the same gallery waits its turn
    (``on_wait`` is told) instead of overwriting this one's rows. Rows are stored ``chunk`` photos at
    a time, each store crash-safe, so a killed run keeps what it stored and the next run embeds only
    the rest.
    """
    from mcad_core.runtime.gallery import append_gallery, gallery_lock, write_gallery

    photos_dir, out = Path(photos_dir), Path(out)
    if not photos_dir.is_dir():
        raise McadError(f"{photos_dir}: not a folder")
    if out.is_dir():
        raise McadError(f"{out}: is a folder; --out names the gallery file to write")
    photos = list_images(photos_dir)
    if not photos:
        raise McadError(f"{photos_dir}: no photos found (looked for {', '.join(('jpg', 'png', 'webp'))} files, recursively)")
    report = IndexReport(out)
    with gallery_lock(out, on_wait):
        existed = out.exists()
        todo, new = _drop_stale_rows(out, model, photos, photos_dir, report) if existed else ([], photos)
        stored: set[str] = set()
        for emb, ids in _embed(model, todo + new, report, progress, chunk):
            (append_gallery if existed or stored else write_gallery)(out, model.fingerprint, emb, ids)
            stored.update(id_path(i) for i in ids)
    if not existed and not stored:
        raise McadError(f"{photos_dir}: none of the {len(photos)} photos could be read "
                        f"(first: {report.skipped[0][0]}: {report.skipped[0][1]}); no gallery written")
    report.updated = sum(str(p) in stored for p in todo)
    report.added = sum(str(p) in stored for p in new)
    report.removed += len(todo) - report.updated  # a changed photo that no longer reads loses its row
    report.rows = report.unchanged + len(stored)
    if stored and report.written == "nothing to do":
        report.written = "appended" if existed else "written"
    return report


def _drop_stale_rows(out: Path, model: ExportedModel, photos: list[Path], photos_dir: Path, report: IndexReport
                     ) -> tuple[list[Path], list[Path]]:
    """Compare the gallery with the folder and rewrite it without the rows of changed and deleted photos
    (before embedding anything, so a killed run leaves no stale row). Returns (changed photos, new photos)."""
    from mcad_core.runtime.gallery import open_gallery, write_quantized_gallery

    with open_gallery(out, model.fingerprint) as g:
        old_ids = list(g.ids)
        keep, todo, gone = _compare(old_ids, photos, photos_dir)
        if todo or gone:
            kept = g.rows.take(keep)  # stored codes as they are: a rewrite never re-rounds a kept row
    if todo or gone:
        write_quantized_gallery(out, model.fingerprint, kept, [old_ids[i] for i in keep])
        report.written = "rewritten"
    listed = {id_path(old_ids[i]) for i in keep} | {str(p) for p in todo}
    report.unchanged, report.removed = len(keep), gone
    return todo, [p for p in photos if str(p) not in listed]


def _compare(old_ids: list[str], photos: list[Path], photos_dir: Path) -> tuple[list[int], list[Path], int]:
    """Gallery rows against the folder: (rows to keep, photos changed since embedded, rows of photos
    deleted from the folder)."""
    current = {str(p): p for p in photos}
    root = str(photos_dir.resolve())
    keep, todo, gone = [], [], 0
    for row, image_id in enumerate(old_ids):
        path = id_path(image_id)
        photo = current.get(path)
        if photo is not None:
            try:
                unchanged = photo_id(photo, photo.stat()) == image_id
            except OSError:
                unchanged = False
            if unchanged:
                keep.append(row)
            else:
                todo.append(photo)
        elif os.path.isabs(path) and os.path.commonpath([root, path]) == root and not os.path.exists(path):
            gone += 1
        else:
            keep.append(row)  # another folder's photo, or one this run does not list: not ours to drop
    return keep, todo, gone
