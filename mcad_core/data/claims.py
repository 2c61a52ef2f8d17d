"""Which scenes a caption truly describes, from what it asserts (its claim) and what each scene holds.

With captions that describe only part of a scene ("there is a small red circle"), one caption
truly matches many images, and retrieval must count a hit on any of them (as ECCV Caption and
CxC re-annotated COCO for the same reason). The generator stores each caption's claim: the
objects it names (size, colour, shape), the relation it states between the first two, and
whether it says how many shapes there are. A scene matches when it holds every named object,
the stated relation holds between them and, for a counted claim, it holds no other object.
"""

from __future__ import annotations

import numpy as np

from mcad_core.data.vocabulary import RELATIONS
from mcad_core.errors import McadError


def _relation_of(record: dict, i: int, j: int) -> str | None:
    """The relation object i bears to object j in a scene: the recorded one for the pair it was
    drawn for, else the clearly dominant axis of their box centres (None when neither axis is)."""
    rel = record.get("relation")
    if rel is not None and {i, j} == {rel["subject"], rel["object"]}:
        return rel["relation"] if i == rel["subject"] else RELATIONS[rel["relation"]]
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = record["objects"][i]["box"], record["objects"][j]["box"]
    dx, dy = (bx0 + bx1 - ax0 - ax1) / 2, (by0 + by1 - ay0 - ay1) / 2
    if abs(dy) < 0.6 * abs(dx):
        return "left of" if dx > 0 else "right of"
    if abs(dx) < 0.6 * abs(dy):
        return "above" if dy > 0 else "below"
    return None


def claim_holds(claim: dict, record: dict) -> bool:
    """Whether the scene of ``record`` (its ``objects`` and ``relation``) makes ``claim`` true."""
    where = {(o["size"], o["colour"], o["shape"]): k for k, o in enumerate(record["objects"])}
    found = [where.get(tuple(obj)) for obj in claim["objects"]]
    if any(k is None for k in found):
        return False
    if claim["exact"] and len(record["objects"]) != len(found):
        return False
    return claim["relation"] is None or _relation_of(record, found[0], found[1]) == claim["relation"]


def caption_matches(records: list[dict]) -> np.ndarray | None:
    """Boolean [N_captions, N_images]: caption c (in ``flatten_captions`` order) truly describes
    image i. None when the records carry no claims (each caption then matches its own image only).
    Dense: meant for evaluation splits (1k-5k images), not for a training set."""
    if not any("claims" in r for r in records):
        return None
    holding: dict[tuple, set[int]] = {}  # object -> the images holding it: candidates before the full check
    for i, r in enumerate(records):
        for o in r["objects"]:
            holding.setdefault((o["size"], o["colour"], o["shape"]), set()).add(i)
    rows = []
    for i, r in enumerate(records):
        if len(r.get("claims", ())) != len(r["captions"]):
            raise McadError(f"{r['image_id']}: expected one claim per caption ({len(r['captions'])}), "
                            f"got {len(r.get('claims', ()))}")
        for claim in r["claims"]:
            row = np.zeros(len(records), dtype=bool)
            candidates = set.intersection(*(holding.get(tuple(obj), set()) for obj in claim["objects"]))
            row[[k for k in candidates if claim_holds(claim, records[k])]] = True
            if not row[i]:
                raise McadError(f"{r['image_id']}: a caption's claim does not hold for its own image")
            rows.append(row)
    return np.stack(rows)
