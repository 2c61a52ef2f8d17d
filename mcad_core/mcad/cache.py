"""Teacher outputs cached once per sample (DESIGN §4), so distillation never runs a teacher.

Per split file (safetensors, mmap-able):
  ``v`` [N_img, D]        dual image embeddings (unit norm)
  ``t`` [N_cap, D]        dual caption embeddings (unit norm), captions in manifest order
  ``cap_image`` [N_cap]   index of each caption's image
  ``h`` [N_cap, H]        cross-encoder fused vector of (image, its own caption)
  ``m_own`` [N_cap]       cross-encoder logit of (image, its own caption)
  ``nbr`` [N_img, K]      hard neighbour images mined from the dual teacher (twin first)
  ``m_img_nbr`` [N_img, K]  logit of image i with the reference caption of neighbour j
  ``m_nbr_img`` [N_img, K]  logit of neighbour j with the reference caption of image i
The reference caption of an image is its first caption. Metadata holds a fingerprint of
both teachers' weights, the manifest and preprocessing; loading checks it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.errors import McadError
from mcad_core.io import atomic_path

if TYPE_CHECKING:
    import torch

    from mcad_core.models.teacher_api import CrossEncoderTeacher, DualTeacher

CACHE_FORMAT = "mcad-cache-v1"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_fingerprint(dual_fp: str, cross_fp: str, manifest_path: str | Path, hard_k: int) -> dict[str, str]:
    """What a cache was computed from (teacher fingerprints, manifest bytes, K); any change makes it stale."""
    return {
        "format": CACHE_FORMAT,
        "dual": dual_fp,
        "cross": cross_fp,
        "manifest": file_sha256(manifest_path),
        "hard_k": str(hard_k),
    }


def mine_hard_neighbours(v: torch.Tensor, t: torch.Tensor, cap_image: torch.Tensor, twin_of: list[int], k: int) -> torch.Tensor:
    """The K images the dual teacher confuses most with each image; its twin always first.

    Similarity of image i to image j = cosine of v_i to the mean of j's caption
    embeddings, i.e. how well j's descriptions match i in the dual teacher's eyes.
    """
    import torch

    n = v.shape[0]
    k = min(k, n - 1)
    t_mean = torch.zeros(n, t.shape[1], dtype=t.dtype).index_add_(0, cap_image, t)
    t_mean = torch.nn.functional.normalize(t_mean, dim=1)
    out = torch.empty(n, k, dtype=torch.long)
    for start in range(0, n, 1024):
        sims = v[start:start + 1024] @ t_mean.T
        rows = torch.arange(sims.shape[0])
        sims[rows, rows + start] = -float("inf")
        for r in range(sims.shape[0]):
            twin = twin_of[start + r]
            if twin >= 0:
                sims[r, twin] = float("inf")
        out[start:start + 1024] = sims.topk(k, dim=1).indices
    return out


def build_cache(records: list[dict], prepared_dir: Path, dual: DualTeacher, cross: CrossEncoderTeacher,
                hard_k: int, batch_size: int, progress: bool = True, chunk_images: int = 256,
                workers: int = 0) -> dict[str, torch.Tensor]:
    """Run both teachers once over a split and return the tensors listed in the module doc.

    Two streaming passes over the images: the dual teacher's embeddings (to mine the hard
    neighbours), then the cross-encoder, ``chunk_images`` images at a time, scoring every
    pair that involves them (own captions, image vs neighbour, neighbour vs image). Memory
    holds one chunk of cross-encoder features, never a split's.
    """
    import torch

    from mcad_core.data.manifest import flatten_captions
    from mcad_core.teacher_stream import dual_split_embeddings, score_pairs

    captions, cap_image_list = flatten_captions(records)
    cap_image = torch.tensor(cap_image_list, dtype=torch.long)
    ids = {r["image_id"]: i for i, r in enumerate(records)}
    twin_of = [ids.get(r.get("twin"), -1) if r.get("twin") else -1 for r in records]
    ref_caption = [rec["captions"][0] for rec in records]
    n_img = len(records)

    v, t = dual_split_embeddings(dual, records, prepared_dir, captions, batch_size, workers, progress)
    nbr = mine_hard_neighbours(v, t, cap_image, twin_of, hard_k)
    k = nbr.shape[1]
    anchor = torch.arange(n_img).repeat_interleave(k)
    flat_nbr = nbr.reshape(-1)
    # one pair list: own captions, then image vs neighbour's caption, then neighbour vs image's caption
    pair_image = torch.cat([cap_image, anchor, flat_nbr])
    pair_text = captions + [ref_caption[j] for j in flat_nbr.tolist()] + [ref_caption[i] for i in anchor.tolist()]
    keep = torch.zeros(len(pair_image), dtype=torch.bool)
    keep[:len(captions)] = True
    h, m = score_pairs(cross, prepared_dir, records, pair_image, pair_text, batch_size, chunk_images,
                       keep_fused=keep, workers=workers, progress=progress, desc="cache: cross-encoder pairs")
    n_cap, n_nbr = len(captions), n_img * k
    return {
        "v": v.contiguous(), "t": t.contiguous(), "cap_image": cap_image, "h": h.contiguous(),
        "m_own": m[:n_cap].contiguous(), "nbr": nbr.contiguous(),
        "m_img_nbr": m[n_cap:n_cap + n_nbr].reshape(n_img, k).contiguous(),
        "m_nbr_img": m[n_cap + n_nbr:].reshape(n_img, k).contiguous(),
    }


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], fingerprint: dict[str, str]) -> None:
    """Write tensors + fingerprint metadata atomically as safetensors."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fingerprint": json.dumps(fingerprint, sort_keys=True)})


def load_tensors(path: str | Path, expected: dict[str, str]) -> dict[str, torch.Tensor]:
    """Load a cache-like file, refusing one computed from other teachers or data."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise McadError(f"{path}: not found (run the stage that writes it first)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            found = json.loads(meta.get("fingerprint", "{}"))
            if found != expected:
                stale = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
                raise McadError(f"{path}: fingerprint mismatch ({', '.join(stale)} changed); "
                                "the file is stale, re-run its stage")
            return {k: f.get_tensor(k) for k in f.keys()}
    except McadError:
        raise
    except Exception as err:  # safetensors raises its own types for corrupt headers
        raise McadError(f"{path}: cannot read ({str(err).splitlines()[0]})") from None


def read_fingerprint(path: str | Path) -> dict[str, str]:
    """The fingerprint stored in a file written by :func:`save_tensors`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("fingerprint", "{}"))
