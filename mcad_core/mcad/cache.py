"""Teacher outputs cached once per training sample (docs/DESIGN.md §4), so distillation never runs a teacher.

The split is what a user has (``data.user_split``): photos, some with captions, and texts with no
photo (the unpaired pool). Texts are the captions in manifest order, then the pool. Nothing here
reads a twin link or a hidden caption: every link that is not a user's own caption is chosen by
the teachers. Per split file (safetensors, mmap-able):
  ``v`` [N_img, D], ``t`` [N_txt, D]  dual image / text embeddings (unit norm)
  ``slot_image``, ``slot_text`` [S]  the (photo, text) pairs batches are drawn from, sorted by
        photo: every caption of a captioned photo (``slot_labelled`` True), and for an
        uncaptioned photo the text the cross-encoder ranks first among the dual teacher's
        ``text_k`` nearest texts (``slot_labelled`` False: a teacher's pick, not a label)
  ``slot_h`` [S, H], ``slot_m`` [S]  cross-encoder fused vector and match logit of each slot
  ``nbr`` [N_img, K]  hard neighbour photos: the dual teacher's K nearest (image-image cosine)
  ``pair_key`` [P], ``pair_m`` [P]  every scored pair's logit, keyed ``image·N_txt + text`` and
        sorted: the slots, the pick candidates, and for each photo i and neighbour j, i with
        every slot text of j and j with every slot text of i (so any caption drawn for a hard
        pair has its logits in both directions)
Metadata holds a fingerprint of both teachers' weights, the manifest and pool bytes and K;
loading checks it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mcad_core.errors import McadError
from mcad_core.io import atomic_path, file_sha256

if TYPE_CHECKING:
    import torch

    from mcad_core.teachers.api import CrossEncoderTeacher, DualTeacher

CACHE_FORMAT = "mcad-cache-v2"


def cache_fingerprint(dual_fp: str, cross_fp: str, manifest_path: str | Path, hard_k: int, text_k: int,
                      texts_path: str | Path | None = None) -> dict[str, str]:
    """What a cache was computed from (teacher fingerprints, manifest and pool bytes, K); any change makes it stale."""
    pool = Path(texts_path) if texts_path is not None else None
    return {
        "format": CACHE_FORMAT,
        "dual": dual_fp,
        "cross": cross_fp,
        "manifest": file_sha256(manifest_path),
        "texts": file_sha256(pool) if pool is not None and pool.is_file() else "",
        "hard_k": str(hard_k),
        "text_k": str(text_k),
    }


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, exclude_self: bool = False) -> torch.Tensor:
    """[Q, k] indices of each query's k most similar keys (cosine), chunked; ties to the lower index."""
    import torch

    k = min(k, keys.shape[0] - int(exclude_self))
    out = torch.empty(queries.shape[0], k, dtype=torch.long)
    for start in range(0, queries.shape[0], 1024):
        sims = queries[start:start + 1024].float() @ keys.float().T
        if exclude_self:
            rows = torch.arange(sims.shape[0])
            sims[rows, rows + start] = -float("inf")
        out[start:start + 1024] = sims.topk(k, dim=1).indices
    return out


def expand_slot_texts(images: torch.Tensor, owners: torch.Tensor, slot_offsets: torch.Tensor,
                      slot_counts: torch.Tensor, slot_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (images[p], t) for every slot text t of photo owners[p], flattened."""
    import torch

    reps = slot_counts[owners]
    first = torch.repeat_interleave(slot_offsets[owners], reps)
    within = torch.arange(int(reps.sum())) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    return torch.repeat_interleave(images, reps), slot_text[first + within]


def build_cache(records: list[dict], prepared_dir: Path, dual: DualTeacher, cross: CrossEncoderTeacher,
                hard_k: int, text_k: int, batch_size: int, texts: list[str] = (), progress: bool = True,
                chunk_images: int = 256, workers: int = 0) -> dict[str, torch.Tensor]:
    """Run both teachers once over a split (photos ``records``, unpaired ``texts``) and return the
    tensors listed in the module doc.

    Two cross-encoder passes, each streamed ``chunk_images`` photos at a time: first the captions
    and each uncaptioned photo's ``text_k`` candidate texts (keeping fused vectors, to pick its
    text), then the neighbour pairs not scored yet (logits only).
    """
    import torch

    from mcad_core.data.manifest import flatten_captions
    from mcad_core.teachers.streaming import dual_split_embeddings, score_pairs

    captions, cap_image_list = flatten_captions(records)
    all_texts = captions + list(texts)
    n_img, n_cap, n_txt = len(records), len(captions), len(captions) + len(texts)
    cap_image = torch.tensor(cap_image_list, dtype=torch.long)
    v, t = dual_split_embeddings(dual, records, prepared_dir, all_texts, batch_size, workers, progress)

    bare = (torch.bincount(cap_image, minlength=n_img) == 0).nonzero().squeeze(1)
    candidates = nearest(v[bare], t, text_k)
    k_t = candidates.shape[1]
    first_image = torch.cat([cap_image, bare.repeat_interleave(k_t)])
    first_text = torch.cat([torch.arange(n_cap), candidates.reshape(-1)])
    h1, m1 = score_pairs(cross, prepared_dir, records, first_image, [all_texts[j] for j in first_text.tolist()],
                         batch_size, chunk_images, keep_fused=torch.ones(len(first_image), dtype=torch.bool),
                         workers=workers, progress=progress, desc="cache: captions and pick candidates")
    best = m1[n_cap:].view(len(bare), k_t).argmax(1)
    picked = n_cap + torch.arange(len(bare)) * k_t + best
    slot_rows = torch.cat([torch.arange(n_cap), picked])
    order = torch.sort(first_image[slot_rows], stable=True).indices
    slot_rows = slot_rows[order]
    slot_image, slot_text = first_image[slot_rows], first_text[slot_rows]
    slot_counts = torch.bincount(slot_image, minlength=n_img)
    slot_offsets = torch.cumsum(slot_counts, 0) - slot_counts

    nbr = nearest(v, v, hard_k, exclude_self=True)
    anchor = torch.arange(n_img).repeat_interleave(nbr.shape[1])
    flat_nbr = nbr.reshape(-1)
    fwd_img, fwd_txt = expand_slot_texts(anchor, flat_nbr, slot_offsets, slot_counts, slot_text)
    bwd_img, bwd_txt = expand_slot_texts(flat_nbr, anchor, slot_offsets, slot_counts, slot_text)
    first_key = first_image * n_txt + first_text
    more_key = torch.unique(torch.cat([fwd_img * n_txt + fwd_txt, bwd_img * n_txt + bwd_txt]))
    more_key = more_key[~torch.isin(more_key, first_key)]
    _, m2 = score_pairs(cross, prepared_dir, records, more_key // n_txt,
                        [all_texts[j] for j in (more_key % n_txt).tolist()], batch_size, chunk_images,
                        workers=workers, progress=progress, desc="cache: hard neighbour pairs")
    keys = torch.cat([first_key, more_key])
    pair_key, first_pos = torch.unique(keys, return_inverse=True)
    pair_m = torch.empty(len(pair_key), dtype=torch.float32)
    pair_m[first_pos] = torch.cat([m1, m2]).float()
    return {
        "v": v.contiguous(), "t": t.contiguous(), "slot_image": slot_image.contiguous(),
        "slot_text": slot_text.contiguous(), "slot_labelled": (slot_rows < n_cap).contiguous(),
        "slot_h": h1[slot_rows].float().contiguous(), "slot_m": m1[slot_rows].float().contiguous(),
        "nbr": nbr.contiguous(), "pair_key": pair_key.contiguous(), "pair_m": pair_m,
        "n_texts": torch.tensor([n_txt]),
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
