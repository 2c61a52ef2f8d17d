"""The closed world of the embedded scenes: shapes, colours, sizes and relations.

Kept apart from the generator so that models (the region teacher) can refer to the
same word lists without importing drawing code.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (140, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 205, 215),
    "pink": (245, 110, 190),
}
SIZES: tuple[str, ...] = ("small", "large")
# Each relation word and its converse: "A left of B" == "B right of A".
RELATIONS: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# What a minimal pair exchanges between its two scenes (a manifest record's "twin_kind"):
# the objects' colours, their sizes, or their places (the relation mirrored).
TWIN_KINDS: tuple[str, ...] = ("colour", "size", "relation")
