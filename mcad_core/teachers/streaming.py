"""Teachers run over a whole split in memory bounded by one chunk of images.

A cross-encoder's per-image features are large (BLIP ITM large: 577 x 1024 floats, 2.4 MB per
image; 68 GB for Flickr30K's training split), so they are never held for a whole split. Pairs
are grouped by image; images stream through a DataLoader in chunks, each chunk's features are
computed once, every pair that involves them is scored, and the features are dropped. Memory:
one chunk of features plus the outputs (one logit per pair, fused vectors only where asked).
The features stay on the device the teacher computed them on and pairs gather them there:
copying BLIP's states to the CPU and back per pair batch moved 302 MB per 128 pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from mcad_core.teachers.api import CrossEncoderTeacher, DualTeacher


def score_pairs(cross: CrossEncoderTeacher, prepared_dir: str | Path, records: list[dict],
                pair_image: torch.Tensor, pair_text: list[str], batch_size: int, chunk_images: int,
                keep_fused: torch.Tensor | None = None, workers: int = 0, progress: bool = False,
                desc: str = "cross-encoder pairs") -> tuple[torch.Tensor | None, torch.Tensor]:
    """Match logits m [P] of pairs (records[pair_image[p]], pair_text[p]) and, for the pairs where
    ``keep_fused`` is true, their fused vectors [sum(keep_fused), fused_dim] in pair order.

    The result does not depend on ``chunk_images`` beyond float rounding of different batches.
    """
    import torch
    from tqdm import tqdm

    from mcad_core.data.loader import iter_image_chunks

    pair_image = torch.as_tensor(pair_image, dtype=torch.long)
    if len(pair_image) != len(pair_text):
        raise ValueError(f"score_pairs: {len(pair_image)} pair images for {len(pair_text)} texts")
    order = torch.argsort(pair_image, stable=True)
    sorted_img = pair_image[order]
    m = torch.empty(len(pair_image))
    fused_row = None
    fused = None
    if keep_fused is not None:
        keep_fused = torch.as_tensor(keep_fused, dtype=torch.bool)
        fused_row = torch.cumsum(keep_fused.long(), 0) - 1
        fused = torch.empty(int(keep_fused.sum()), cross.fused_dim)
    bar = tqdm(total=len(pair_image), desc=desc, disable=not progress, mininterval=1.0, unit="pair")
    with torch.no_grad():
        for start, images in iter_image_chunks(prepared_dir, records, chunk_images, workers):
            lo, hi = torch.searchsorted(sorted_img, torch.tensor([start, start + len(images)])).tolist()
            if lo == hi:
                continue
            feats = cross.encode_images(images)
            idx = order[lo:hi]
            for b in idx.split(batch_size):
                rows = (pair_image[b] - start).to(feats.device)
                h, logits = cross.score(feats[rows], [pair_text[j] for j in b.tolist()])
                m[b] = logits.float().cpu()
                if fused is not None:
                    kept = keep_fused[b]
                    fused[fused_row[b[kept]]] = h[kept.to(h.device)].float().cpu()
                bar.update(len(b))
            del feats
    bar.close()
    return fused, m


def dual_split_embeddings(dual: DualTeacher, records: list[dict], prepared_dir: Path, captions: list[str],
                          batch_size: int, workers: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit dual embeddings of a split's images (streamed) and captions.

    An open_clip teacher's resize and crop run in the DataLoader's ``workers`` (``pixels_of``),
    so the GPU is not left waiting on one process's PIL resizes; other teachers get PIL images.
    """
    import torch
    from tqdm import tqdm

    from mcad_core.data.images import in_order
    from mcad_core.data.loader import iter_image_chunks

    transform = getattr(dual, "pixels_of", None)
    encode = dual.encode_images if transform is None else dual.embed_pixels
    chunks = iter_image_chunks(prepared_dir, records, batch_size, workers, transform)
    with torch.no_grad():
        v = torch.cat([encode(images).float().cpu()
                       for _, images in tqdm(chunks, desc="dual: images", total=-(-len(records) // batch_size),
                                             disable=not progress, mininterval=1.0)])
        t = torch.cat([dual.encode_texts(captions[r.start:r.stop]).float().cpu()
                       for r in tqdm(in_order(len(captions), batch_size), desc="dual: captions",
                                     disable=not progress, mininterval=1.0)])
    return v, t
