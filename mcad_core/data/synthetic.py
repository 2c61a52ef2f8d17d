"""The embedded compositional scene dataset (docs/DESIGN.md §2), generated offline and deterministically.

Scenes come in minimal pairs: a scene and its twin share every caption word but differ
in binding (colours or sizes swapped between two objects, or their relation mirrored).
A dual encoder that embeds image and caption separately struggles to tell twins apart;
a cross-encoder that looks at both together can. That gap is what MCAD distills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mcad_core.data.vocabulary import COLOURS, RELATIONS, SHAPES, SIZES, TWIN_KINDS

SPLITS = ("train", "val", "test")
# Random streams: the student's splits, then the teachers' own corpus (never the student's data).
STREAMS = (*SPLITS, "teacher", "teacher_val")
# Object radius as a share of the image side, per size word.
_RADIUS = {"small": 0.11, "large": 0.19}
# Share of scenes with 1, 2 and 3 objects (two- and three-object scenes come with a twin).
_N_OBJECTS_P = {1: 0.15, 2: 0.5, 3: 0.35}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    centre: tuple[float, float]  # (x, y) in pixels

    def radius(self, image_size: int) -> float:
        return _RADIUS[self.size] * image_size

    def box(self, image_size: int) -> list[int]:
        r = self.radius(image_size)
        x, y = self.centre
        return [int(math.floor(x - r)), int(math.floor(y - r)), int(math.ceil(x + r)), int(math.ceil(y + r))]

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene's content. Objects 0 and 1 carry ``relation`` (object 0 <relation> object 1)."""

    objects: tuple[SceneObject, ...]
    relation: str | None
    background_seed: int
    captions: tuple[str, ...] = field(default=())
    claims: tuple[dict, ...] = field(default=(), repr=False)  # what each caption asserts (partial captions only)


# Caption templates. {a}/{b}/{c}: object phrases; {r}: relation of a to b; {rc}: its converse.
_ONE = (
    "a {a}",
    "there is a {a}",
    "a picture of a {a}",
    "a single {a} on a grey background",
    "an image showing one {a}",
    "one {a}",
)
_TWO = (
    "a {a} {r} a {b}",
    "a {b} {rc} a {a}",
    "there is a {a} {r} a {b}",
    "a {b} is {rc} a {a}",
    "in this picture a {a} is {r} a {b}",
    "a {b} sits {rc} a {a}",
    "two shapes: a {a} {r} a {b}",
)
_THREE = (
    "a {a} {r} a {b} and a {c}",
    "a {c} and a {b} {rc} a {a}",
    "three shapes: a {a} {r} a {b}, and a {c}",
    "a {b} is {rc} a {a}, with a {c}",
    "there is a {c}, and a {a} {r} a {b}",
    "a {a} sits {r} a {b}; elsewhere a {c}",
)


def _relation_words(relation: str, rng: np.random.Generator) -> tuple[str, str]:
    """Surface forms of the relation and its converse ("left of" may read "to the left of")."""

    def surface(rel: str) -> str:
        if rel in ("left of", "right of") and rng.random() < 0.5:
            return f"to the {rel}"
        return rel

    return surface(relation), surface(RELATIONS[relation])


def _states_count(template: str) -> bool:
    """Whether a template says how many shapes the scene holds ("one", "two shapes", "a single")."""
    return any(word in template for word in ("one {a}", "a single", "two shapes", "three shapes"))


def _claim(objs: tuple[SceneObject, ...], relation: str | None, exact: bool) -> dict:
    """What a caption asserts, as ``data/claims.py`` checks it against any scene."""
    return {"objects": [[o.size, o.colour, o.shape] for o in objs], "relation": relation, "exact": exact}


def _partial_view(scene: Scene, rng: np.random.Generator) -> tuple[tuple[SceneObject, ...], str | None]:
    """A part of a scene a caption may describe: its related pair (of three objects), or one object."""
    objs = scene.objects
    if len(objs) == 3 and rng.random() < 0.5:
        return objs[:2], scene.relation
    return (objs[int(rng.integers(len(objs)))],), None


def _captions(scene: Scene, n: int, rng: np.random.Generator,
              partial: float = 0.0) -> tuple[tuple[str, ...], tuple[dict, ...]]:
    """``n`` captions and, when ``partial`` > 0, what each asserts (its claim).

    With ``partial`` > 0, each caption of a scene with two or more objects describes only a part of
    it with probability ``partial`` (as real captions do), so it truly matches other scenes too;
    the claims let evaluation count every true match. ``partial`` 0 draws no extra random numbers:
    the default data stays as it was.
    """
    templates = {1: _ONE, 2: _TWO, 3: _THREE}[len(scene.objects)]
    order = rng.permutation(len(templates))
    out, claims = [], []
    for i in range(n):
        objs, relation, template = scene.objects, scene.relation, templates[order[i % len(templates)]]
        if partial > 0 and len(objs) >= 2 and rng.random() < partial:
            objs, relation = _partial_view(scene, rng)
            open_templates = [t for t in {1: _ONE, 2: _TWO}[len(objs)] if not _states_count(t)]
            template = open_templates[int(rng.integers(len(open_templates)))]
        r, rc = _relation_words(relation, rng) if relation else ("", "")
        fields = {k: o.phrase() for k, o in zip("abc", objs)}
        out.append(template.format(r=r, rc=rc, **fields))
        if partial > 0:
            claims.append(_claim(objs, relation, _states_count(template)))
    return tuple(out), tuple(claims)


def _place(rng: np.random.Generator, size: int, radii: list[float], relation: str | None) -> list[tuple[float, float]] | None:
    """Centres for objects with the given radii, no overlap, object 0 <relation> object 1."""
    margin = 1.0
    for _ in range(200):
        centres: list[tuple[float, float]] = []
        for i, r in enumerate(radii):
            lo, hi = r + margin, size - r - margin
            x, y = rng.uniform(lo, hi), rng.uniform(lo, hi)
            centres.append((x, y))
        if relation is not None and not _relation_holds(centres[0], centres[1], relation, size):
            continue
        if all(
            math.dist(centres[i], centres[j]) > radii[i] + radii[j] + 2
            for i in range(len(radii))
            for j in range(i + 1, len(radii))
        ):
            return centres
    return None


def _relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str, size: int) -> bool:
    """Unambiguous relation: a clear offset on one axis, a smaller one on the other."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    need = 0.2 * size
    if relation == "left of":
        return dx > need and abs(dy) < 0.6 * dx
    if relation == "right of":
        return -dx > need and abs(dy) < 0.6 * -dx
    if relation == "above":
        return dy > need and abs(dx) < 0.6 * dy
    return -dy > need and abs(dx) < 0.6 * -dy  # below


def _random_scene(rng: np.random.Generator, n_objects: int, size: int) -> Scene:
    while True:
        shapes = rng.choice(len(SHAPES), n_objects, replace=False)
        colours = rng.choice(len(COLOURS), n_objects, replace=False)
        sizes = rng.integers(0, 2, n_objects)
        relation = list(RELATIONS)[rng.integers(len(RELATIONS))] if n_objects >= 2 else None
        radii = [_RADIUS[SIZES[s]] * size for s in sizes]
        centres = _place(rng, size, radii, relation)
        if centres is not None:
            break
    objects = tuple(
        SceneObject(SHAPES[s], list(COLOURS)[c], SIZES[z], (float(x), float(y)))
        for s, c, z, (x, y) in zip(shapes, colours, sizes, centres)
    )
    return Scene(objects, relation, int(rng.integers(2**31)))


def _twin(scene: Scene, rng: np.random.Generator, size: int) -> tuple[Scene, str] | None:
    """The minimal-pair partner (same words, bindings of objects 0 and 1 exchanged) and its kind."""
    a, b = scene.objects[0], scene.objects[1]
    kinds = [k for k in TWIN_KINDS if k != "size" or a.size != b.size]
    kind = kinds[rng.integers(len(kinds))]
    if kind == "colour":
        a2, b2 = replace(a, colour=b.colour), replace(b, colour=a.colour)
    elif kind == "size":
        a2, b2 = replace(a, size=b.size), replace(b, size=a.size)
    else:  # mirrored relation: the two objects trade places
        a2, b2 = replace(a, centre=b.centre), replace(b, centre=a.centre)
    objs = (a2, b2, *scene.objects[2:])
    radii = [o.radius(size) for o in objs]
    ok = all(
        math.dist(objs[i].centre, objs[j].centre) > radii[i] + radii[j] + 2
        for i in range(len(objs))
        for j in range(i + 1, len(objs))
    ) and all(radii[i] <= o.centre[0] < size - radii[i] and radii[i] <= o.centre[1] < size - radii[i] for i, o in enumerate(objs))
    if not ok:
        return None
    relation = RELATIONS[scene.relation] if kind == "relation" else scene.relation
    return Scene(objs, relation, scene.background_seed), kind


def _background(seed: int, size: int) -> np.ndarray:
    """A grey, low-contrast texture: smooth gradient plus fine noise, never saturated."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    base = rng.uniform(100, 160) + 30 * (np.cos(angle) * xx + np.sin(angle) * yy - 0.5)
    coarse = rng.normal(0, 8, (size // 8 + 1, size // 8 + 1)).repeat(8, 0).repeat(8, 1)[:size, :size]
    grey = base + coarse + rng.normal(0, 4, (size, size))
    return np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(phase + 2 * math.pi * k / n), cy + radius * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]

    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return ring(3, r, -math.pi / 2)
    if shape == "diamond":
        return ring(4, r, 0)
    if shape == "hexagon":
        return ring(6, r, 0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r, r * 0.38
        return [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b), (cx + b, cy + b),
                (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b)]
    raise ValueError(f"no polygon for shape {shape!r}")


def render(scene: Scene, size: int) -> np.ndarray:
    """Draw a scene as an RGB uint8 array (no anti-aliasing, so colours stay exact)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_background(scene.background_seed, size))
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        colour = COLOURS[obj.colour]
        r = obj.radius(size)
        cx, cy = obj.centre
        if obj.shape in ("circle", "ring"):
            bbox = [cx - r, cy - r, cx + r, cy + r]
            if obj.shape == "circle":
                draw.ellipse(bbox, fill=colour)
            else:
                draw.ellipse(bbox, outline=colour, width=max(2, round(r * 0.4)))
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=colour)
    return np.asarray(img)


@dataclass(frozen=True)
class GeneratedImage:
    image_id: str
    scene: Scene
    twin: str | None
    twin_kind: str | None = None  # "colour", "size" or "relation": what the pair's scenes exchange


def generate_split(split: str, n_images: int, seed: int, image_size: int, captions_per_image: int,
                   max_objects: int, partial_captions: float = 0.0) -> list[GeneratedImage]:
    """Scenes (not yet drawn) for one split (one of ``STREAMS``); deterministic in (seed, split).
    ``partial_captions``: the share of captions that describe only a part of their scene."""
    rng = np.random.default_rng([seed, STREAMS.index(split)])
    counts = [k for k in _N_OBJECTS_P if k <= max_objects]
    probs = np.array([_N_OBJECTS_P[k] for k in counts])
    probs /= probs.sum()
    out: list[GeneratedImage] = []
    while len(out) < n_images:
        idx = len(out)
        n_obj = int(rng.choice(counts, p=probs))
        scene = _random_scene(rng, n_obj, image_size)
        paired = _twin(scene, rng, image_size) if n_obj >= 2 and len(out) + 2 <= n_images else None
        captions, claims = _captions(scene, captions_per_image, rng, partial_captions)
        scene = replace(scene, captions=captions, claims=claims)
        if paired is None:
            out.append(GeneratedImage(f"{split}_{idx:06d}", scene, None))
            continue
        twin, kind = paired
        captions, claims = _captions(twin, captions_per_image, rng, partial_captions)
        twin = replace(twin, captions=captions, claims=claims)
        ida, idb = f"{split}_{idx:06d}", f"{split}_{idx + 1:06d}"
        out += [GeneratedImage(ida, scene, idb, kind), GeneratedImage(idb, twin, ida, kind)]
    return out


def manifest_record(item: GeneratedImage, image_rel: str, image_size: int) -> dict:
    """The manifest line of docs/DESIGN.md §2 for a generated image."""
    scene = item.scene
    record = {
        "image_id": item.image_id,
        "image": image_rel,
        "captions": list(scene.captions),
        "twin": item.twin,
        "objects": [
            {"box": o.box(image_size), "shape": o.shape, "colour": o.colour, "size": o.size}
            for o in scene.objects
        ],
    }
    if scene.relation is not None:
        record["relation"] = {"subject": 0, "object": 1, "relation": scene.relation}
    if item.twin_kind is not None:
        record["twin_kind"] = item.twin_kind
    if scene.claims:
        record["claims"] = [dict(c) for c in scene.claims]
    return record


def write_split(items: list[GeneratedImage], out_dir: Path, split: str, image_size: int,
                progress: bool = True) -> list[dict]:
    """Draw and save a split's images as PNG under ``out_dir/images/<split>/``; return manifest records."""
    from PIL import Image
    from tqdm import tqdm

    img_dir = out_dir / "images" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for item in tqdm(items, desc=f"render {split}", disable=not progress, mininterval=1.0):
        rel = f"images/{split}/{item.image_id}.png"
        Image.fromarray(render(item.scene, image_size)).save(out_dir / rel, optimize=False)
        records.append(manifest_record(item, rel, image_size))
    return records
