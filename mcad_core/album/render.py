"""Results a person can look at: a contact sheet PNG and a self-contained HTML page.

The HTML inlines every thumbnail as a base64 data URI and uses no script, font or style
from the network, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from mcad_core.album.images import thumbnail
from mcad_core.album.search import QueryResult
from mcad_core.io import atomic_path, write_text

CELL = 128  # thumbnail side in the contact sheet, px
COLUMNS = 5


def shown_path(path: str) -> str:
    """A photo's path relative to the working folder when it is below it, else as stored."""
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return path if rel.startswith("..") else rel


def timing_line(result: QueryResult, n_images: int) -> str:
    return (f"tokenize {result.tokenize_ms:.2f} ms, encode {result.encode_ms:.2f} ms, scan {result.scan_ms:.2f} ms "
            f"({n_images:,} photos; total {result.total_ms:.2f} ms)")


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` cut from the left with an ellipsis until it fits ``width`` px (file names end in what matters)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def contact_sheet(result: QueryResult, png_path: str | Path, subtitle: str = "") -> None:
    """A grid of the hits (rank, score, file name under each), the query as title; written atomically."""
    from PIL import Image, ImageDraw

    pad, label_h, title_h = 8, 34, 46 if subtitle else 30
    cols = max(1, min(COLUMNS, len(result.hits)))
    rows = max(1, -(-len(result.hits) // cols))
    sheet = Image.new("RGB", (pad + cols * (CELL + pad), title_h + rows * (CELL + label_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), _fit(draw, f"\u201c{result.query}\u201d", _font(16), sheet.width - 2 * pad), fill="black",
              font=_font(16))
    if subtitle:
        draw.text((pad, 27), _fit(draw, subtitle, _font(11), sheet.width - 2 * pad), fill="#555", font=_font(11))
    small = _font(11)
    for i, hit in enumerate(result.hits):
        x, y = pad + (i % cols) * (CELL + pad), title_h + (i // cols) * (CELL + label_h + pad)
        draw.rectangle((x - 1, y - 1, x + CELL, y + CELL), outline="#ccc")
        try:
            thumb = thumbnail(Path(hit.path), CELL)
            sheet.paste(thumb, (x + (CELL - thumb.width) // 2, y + (CELL - thumb.height) // 2))
        except Exception:  # a photo moved or broken since indexing: keep its cell, say so
            draw.text((x + 6, y + CELL // 2 - 6), "(unreadable)", fill="#a00", font=small)
        draw.text((x, y + CELL + 3), f"#{hit.rank}  {hit.score:.3f}", fill="black", font=small)
        draw.text((x, y + CELL + 17), _fit(draw, Path(hit.path).name, small, CELL), fill="#555", font=small)
    with atomic_path(png_path) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)


def _data_uri(path: Path, side: int) -> str:
    thumb = thumbnail(path, side)
    buf = io.BytesIO()
    small = max(thumb.size) <= 256
    thumb.save(buf, format="PNG" if small else "JPEG", **({} if small else {"quality": 85}))
    return f"data:image/{'png' if small else 'jpeg'};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def html_page(result: QueryResult, html_path: str | Path, subtitle: str = "") -> None:
    """One self-contained HTML file: the query, the timings, and each hit's image, score and path."""
    cards = []
    for hit in result.hits:
        try:
            img = f'<img src="{_data_uri(Path(hit.path), 2 * CELL)}" alt="">'
        except Exception:  # as in the contact sheet: a missing photo keeps its place
            img = '<div class="missing">(unreadable)</div>'
        cards.append(f'<figure>{img}<figcaption><b>#{hit.rank}</b> {hit.score:.3f}<br>'
                     f'<span title="{html.escape(hit.path)}">{html.escape(shown_path(hit.path))}</span>'
                     f'</figcaption></figure>')
    unknown = (f"<p>Unknown words (read as [UNK]): {html.escape(', '.join(result.unknown))}</p>"
               if result.unknown else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mcad search: {html.escape(result.query)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 14px; }}
figure {{ margin: 0; width: {2 * CELL}px; }}
figure img {{ width: {2 * CELL}px; height: {2 * CELL}px; object-fit: contain; image-rendering: pixelated;
  border: 1px solid #ccc; }}
figcaption {{ font-size: 12px; overflow-wrap: anywhere; }}
.missing {{ width: {2 * CELL}px; height: {2 * CELL}px; border: 1px solid #ccc; color: #a00; }}
.sub {{ color: #555; font-size: 13px; }}
</style></head><body>
<h2>&ldquo;{html.escape(result.query)}&rdquo;</h2>
<p class="sub">{html.escape(subtitle)}</p>{unknown}
<div class="grid">
{chr(10).join(cards)}
</div></body></html>
"""
    write_text(html_path, page)
