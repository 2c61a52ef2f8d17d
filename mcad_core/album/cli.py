"""``mcad``: index a folder of photos and search it by text with the exported student (no torch).

Installed as a console script (``pyproject.toml``); ``python -m mcad_core.album`` is the same.
Every failure the user can fix is one line (``Error: ...``, exit status 1).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from mcad_core.album.index import CHUNK_PHOTOS
from mcad_core.cli import one_line_errors
from mcad_core.errors import McadError
from mcad_core.paths import TFLITE
from mcad_core.runtime.encoder import FORMATS

models_option = click.option("--models", "models_dir", default=str(TFLITE), show_default=True,
                             type=click.Path(file_okay=False, path_type=Path),
                             help="Folder of the exported files (image_*.tflite, text_*.tflite, tokenizer.json).")
threads_option = click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
                              help="Threads of the LiteRT interpreter and of the gallery scan.")


@click.group()
def main() -> None:
    """Album search with the exported student, as the phone runs it: LiteRT models, int8 gallery."""
    # A query is one short text: tokenize it on this thread, as a phone does. The tokenizers
    # library's thread pool costs a scheduler wake-up (measured: up to 4 ms on a busy CPU).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@click.argument("photos_dir", type=click.Path(path_type=Path))
@models_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="dynamic_int8", show_default=True,
              help="Which exported files embed the photos (search then uses the same format).")
# --out is not dir_okay=False: click's error for a folder is three lines, index_folder's is one
@click.option("--out", type=click.Path(path_type=Path), default="album.gallery",
              show_default=True, help="Gallery file: created, or brought up to date with the folder.")
@threads_option
@click.option("--save-every", "chunk", default=CHUNK_PHOTOS, show_default=True, type=click.IntRange(1),
              help="Photos embedded between two crash-safe saves: a killed run keeps what it saved.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@one_line_errors
def index(photos_dir: Path, models_dir: Path, fmt: str, out: Path, threads: int, chunk: int, progress: bool) -> None:
    """Embed every photo (jpg, png, webp) below PHOTOS_DIR into the gallery file; a re-run adds only
    new and changed photos (and drops deleted ones), and finishes what a killed run started. Two runs
    on one gallery take turns."""
    from mcad_core.album.index import index_folder
    from mcad_core.album.model import ExportedModel

    def waiting() -> None:
        click.echo(f"{out}: another `mcad index` is writing it; waiting for it to finish", err=True)

    report = index_folder(photos_dir, ExportedModel(models_dir, fmt, threads), out, progress=progress,
                          chunk=chunk, on_wait=waiting)
    done = report.added + report.updated
    rate = f", {report.embed_s / done * 1e3:.2f} ms a photo" if done else ""
    click.echo(f"{out}: {report.written}; {report.rows} photos ({report.added} added, {report.updated} updated, "
               f"{report.removed} removed, {report.unchanged} unchanged) in {report.embed_s:.1f} s{rate}")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} unreadable file(s):", err=True)
        for path, reason in report.skipped:
            click.echo(f"  {path}: {reason}", err=True)


def _print(result, search, as_json: bool) -> None:
    from mcad_core.album.render import shown_path, timing_line

    if as_json:
        click.echo(json.dumps({"query": result.query, "unknown": result.unknown,
                               "hits": [{"rank": h.rank, "score": round(h.score, 6), "path": h.path}
                                        for h in result.hits],
                               "ms": {"tokenize": result.tokenize_ms, "encode": result.encode_ms,
                                      "scan": result.scan_ms}}))
        return
    if result.unknown:
        click.echo(f"note: unknown words, read as [UNK]: {', '.join(result.unknown)}")
    click.echo(f"{'rank':>4}  {'score':>6}  path")
    for hit in result.hits:
        click.echo(f"{hit.rank:>4}  {hit.score:6.3f}  {shown_path(hit.path)}")
    click.echo(timing_line(result, len(search.gallery)))


def _render(result, search, png: Path | None, html: Path | None) -> None:
    from mcad_core.album.render import contact_sheet, html_page, timing_line

    subtitle = f"{search.model.fmt} student, {timing_line(result, len(search.gallery))}"
    if png:
        contact_sheet(result, png, subtitle)
    if html:
        html_page(result, html, subtitle)


@main.command()
@click.argument("query", required=False)
@click.option("--gallery", type=click.Path(dir_okay=False, path_type=Path), default="album.gallery",
              show_default=True, help="Gallery file written by `mcad index`.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many photos to show.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write a contact sheet of the hits.")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), help="Write a self-contained HTML page.")
@models_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Exported files to use  [default: the format that indexed the gallery]")
@threads_option
@click.option("--interactive", "-i", is_flag=True,
              help="Load once, then answer queries typed one per line (Ctrl-D ends); --png/--html show the last.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query instead of the table.")
@one_line_errors
def search(query: str | None, gallery: Path, top: int, png: Path | None, html: Path | None, models_dir: Path,
           fmt: str | None, threads: int, interactive: bool, as_json: bool) -> None:
    """Rank the gallery's photos for QUERY, with the query time split into tokenize / encode / scan."""
    from mcad_core.album.search import AlbumSearch

    if interactive == (query is not None):
        raise McadError("give a QUERY or --interactive (not both)" if query else "give a QUERY, or --interactive")
    engine = AlbumSearch(gallery, models_dir, fmt, threads)
    if not interactive:
        result = engine.query(query, top)
        _print(result, engine, as_json)
        if not as_json:
            click.echo(f"(models and gallery loaded in {engine.load_ms:.0f} ms)")
        _render(result, engine, png, html)
        return
    prompt = sys.stdin.isatty()
    if prompt:
        click.echo(f"{len(engine.gallery):,} photos, {engine.model.fmt} student, loaded in {engine.load_ms:.0f} ms; "
                   "one query a line, Ctrl-D ends.", err=True)
    while True:
        if prompt:
            click.echo("query> ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        try:
            result = engine.query(line.strip(), top)
        except McadError as err:  # a bad query is answered, the session goes on
            click.echo(f"Error: {err}", err=True)
            continue
        _print(result, engine, as_json)
        _render(result, engine, png, html)
