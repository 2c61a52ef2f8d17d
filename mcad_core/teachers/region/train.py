"""Training of the region teacher: attribute classifier first, then the cross-encoder with ITM.

ITM negatives per positive (image, caption): a caption edit (attributes swapped between
two phrases, the relation word flipped, or one attribute replaced: exact negatives here),
the twin image (else a random one), and a random caption. Loss: BCE over all pairs, a
4-way softmax per positive, and a grounding loss pointing each phrase at its object
(from the manifest's metadata). Each epoch's randomness derives from (seed, epoch), and a
checkpoint (:mod:`mcad_core.checkpoint`: weights, optimizer, step) is written after each epoch,
so a killed run resumes from its last epoch and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mcad_core.checkpoint import LAST, load_checkpoint, save_checkpoint
from mcad_core.data.manifest import twin_index
from mcad_core.errors import McadError
from mcad_core.io import atomic_path
from mcad_core.teachers.region.objects import (
    SLOT_COLOUR,
    SLOT_SHAPE,
    SLOT_SIZE,
    SLOT_VALID,
    SceneArrays,
    attribute_targets,
    object_slots,
    scene_arrays,
)
from mcad_core.teachers.region.teacher import RegionCrossEncoder, default_config, load_model_config
from mcad_core.teachers.region.tokenizer import WordTokenizer

_FLIP = {"left": "right", "right": "left", "above": "below", "below": "above"}


def _load_arrays(records: list[dict], prepared_dir: Path, teacher: RegionCrossEncoder, progress: bool) -> SceneArrays:
    from PIL import Image
    from tqdm import tqdm

    images = []
    for rec in tqdm(records, desc="load images", disable=not progress, mininterval=1.0):
        path = prepared_dir / rec["image"]
        if not path.is_file():
            raise McadError(f"{path}: image not found")
        with Image.open(path) as img:
            images.append(img.convert("RGB"))
    return scene_arrays(images, teacher.pre)


class _Captions:
    """All captions as token ids, with per-caption phrase/relation positions for edits and grounding."""

    def __init__(self, records: list[dict], tok: WordTokenizer) -> None:
        caps = [c for r in records for c in r["captions"]]
        self.image = np.repeat(np.arange(len(records)), [len(r["captions"]) for r in records])
        self.first = np.concatenate([[0], np.cumsum([len(r["captions"]) for r in records])])
        self.ids = np.array(tok.encode(caps), dtype=np.int64)
        self.tok = tok
        self.shape_set, self.colour_set = set(tok.shape_ids), set(tok.colour_ids)
        self.size_set, self.rel_set = set(tok.size_ids), set(tok.relation_ids)
        self.flip = {tok.index[a]: tok.index[b] for a, b in _FLIP.items()}
        # Palette index of each colour word id (-1 elsewhere), for grounding targets.
        self.colour_of = np.full(len(tok.words), -1, np.int64)
        for k, cid in enumerate(tok.colour_ids):
            self.colour_of[cid] = k

    def edit(self, ids: np.ndarray, rng: np.random.Generator, binding_share: float) -> np.ndarray:
        """A caption made false by one edit; binding edits (swaps, relation flip) with ``binding_share``."""
        ids = ids.copy()
        shapes = [t for t in range(len(ids)) if ids[t] in self.shape_set and t >= 2]
        rels = [t for t in range(len(ids)) if ids[t] in self.rel_set]
        offsets = {"shape": 0, "colour": 1, "size": 2}
        binding = [k for k, o in offsets.items() if len({ids[t - o] for t in shapes}) > 1]
        if rels:
            binding.append("relation")
        if binding and rng.random() < binding_share:
            kind = binding[rng.integers(len(binding))]
            if kind == "relation":
                t = rels[rng.integers(len(rels))]
                ids[t] = self.flip[ids[t]]
                return ids
            offset = offsets[kind]
            while True:  # ends: two phrases differ in this attribute
                a, b = rng.choice(len(shapes), 2, replace=False)
                ta, tb = shapes[a] - offset, shapes[b] - offset
                if ids[ta] != ids[tb]:
                    ids[ta], ids[tb] = ids[tb], ids[ta]
                    return ids
        if not shapes:
            return ids
        t = shapes[rng.integers(len(shapes))]
        kind = rng.integers(3)
        used = set(ids.tolist())
        if kind == 0:
            ids[t] = rng.choice([s for s in self.tok.shape_ids if s not in used])
        elif kind == 1:
            ids[t - 1] = rng.choice([c for c in self.tok.colour_ids if c not in used])
        elif ids[t - 2] in self.size_set:
            ids[t - 2] = self.tok.size_ids[1 - self.tok.size_ids.index(ids[t - 2])]
        return ids


def _records_hash(records: list[dict]) -> str:
    """What a checkpoint was trained on (ids, captions, objects), so other data never resumes from it."""
    keys = ("image_id", "captions", "twin", "objects")
    return hashlib.sha256(json.dumps([[r.get(k) for k in keys] for r in records]).encode()).hexdigest()


def _lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _train_classifier(teacher: RegionCrossEncoder, arrays: SceneArrays, records: list[dict], seed: int,
                      progress: bool) -> float:
    """Shape/size classifier on the segmented objects matched to the metadata; returns train accuracy."""
    from tqdm import tqdm

    cfg = teacher.cfg["classifier"]
    shape_t, size_t = attribute_targets(records, arrays)
    keep = (shape_t >= 0).ravel()
    crops = torch.from_numpy(arrays.crops).flatten(0, 1)[keep]
    hand = torch.from_numpy(arrays.hand).flatten(0, 1)[keep]
    ys, yz = torch.from_numpy(shape_t).ravel()[keep], torch.from_numpy(size_t).ravel()[keep]
    if len(ys) == 0:
        raise McadError("region teacher: no training object matches the manifests' `objects` metadata")
    dev = teacher.device
    model = teacher.classifier.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    bs, n = cfg["batch_size"], len(ys)
    correct = 0
    for epoch in range(cfg["epochs"]):
        perm = np.random.default_rng([seed, 1_000_000 + epoch]).permutation(n)
        correct = 0
        for i in tqdm(range(0, n, bs), desc=f"classifier {epoch + 1}/{cfg['epochs']}", disable=not progress,
                      mininterval=1.0):
            idx = torch.from_numpy(perm[i:i + bs])
            ls, lz = model(crops[idx].to(dev), hand[idx].to(dev))
            loss = nn.functional.cross_entropy(ls, ys[idx].to(dev)) + nn.functional.cross_entropy(lz, yz[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int(((ls.argmax(1).cpu() == ys[idx]) & (lz.argmax(1).cpu() == yz[idx])).sum())
    model.eval()
    return correct / n


def _itm_batch(teacher: RegionCrossEncoder, caps: _Captions, slots: torch.Tensor, twins: np.ndarray,
               images: np.ndarray, rng: np.random.Generator, binding_share: float) -> tuple[torch.Tensor, ...]:
    """Slots and ids for [positives; caption edits; twin/random images; random captions] of ``images``."""
    n = len(twins)
    cap = caps.first[images] + rng.integers(0, caps.first[images + 1] - caps.first[images])
    pos = caps.ids[cap]
    edits = np.stack([caps.edit(row, rng, binding_share) for row in pos])
    other = (images + rng.integers(1, n, len(images))) % n
    neg_img = np.where(twins[images] >= 0, twins[images], other)
    rand_cap = caps.first[other] + rng.integers(0, caps.first[other + 1] - caps.first[other])
    unchanged = (edits == pos).all(1)  # a caption without attribute phrases cannot be edited
    edits[unchanged] = caps.ids[rand_cap][unchanged]
    img_idx = torch.from_numpy(np.concatenate([images, images, neg_img, images]))
    ids = torch.from_numpy(np.concatenate([pos, edits, pos, caps.ids[rand_cap]]))
    return slots[img_idx].to(teacher.device), ids.to(teacher.device), torch.from_numpy(pos)


def _losses(out: dict, pos_ids: torch.Tensor, pos_slots: torch.Tensor, caps: _Captions, b: int,
            tcfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    m = out["m"]
    dev = m.device
    labels = torch.zeros_like(m)
    labels[:b] = 1.0
    bce = nn.functional.binary_cross_entropy_with_logits(m, labels, pos_weight=torch.tensor(tcfg["pos_weight"], device=dev))
    group = m.view(4, b).t()  # [b, 4], the positive first
    soft = nn.functional.cross_entropy(group, torch.zeros(b, dtype=torch.long, device=dev))
    # Grounding: each positive phrase points at the object of its colour (colours are unique in a scene).
    logits, p_pos, p_valid = out["phrase_logits"][:b], out["phrase_pos"][:b], out["phrase_valid"][:b]
    colour_word = pos_ids.to(dev).gather(1, (p_pos - 1).clamp(0, pos_ids.shape[1] - 1))
    target_colour = torch.from_numpy(caps.colour_of).to(dev)[colour_word]  # [b, P]
    valid = pos_slots[..., SLOT_VALID] > 0.5
    slot_colour = pos_slots[..., SLOT_COLOUR].argmax(-1)
    match = (slot_colour[:, None, :] == target_colour[..., None]) & valid[:, None, :]
    has = p_valid & match.any(-1)
    ground = torch.zeros((), device=dev)
    if has.any():
        masked = logits.masked_fill(~valid[:, None, :], -1e4)
        ground = nn.functional.cross_entropy(masked[has], match[has].float().argmax(-1))
    loss = bce + tcfg["w_softmax"] * soft + tcfg["w_ground"] * ground
    acc = (group.argmax(1) == 0).float().mean()
    return loss, acc


@torch.no_grad()
def evaluate(teacher: RegionCrossEncoder, records: list[dict], slots: torch.Tensor, batch: int = 1024) -> dict:
    """Twin accuracy (overall and per twin kind) and ITM accuracy against one edit per caption."""
    caps = _Captions(records, teacher.tokenizer)
    twins = np.array(twin_index(records))
    enc = teacher.encoder.eval()

    def logits(img: np.ndarray, ids: np.ndarray) -> np.ndarray:
        out = [enc(slots[torch.from_numpy(img[i:i + batch])].to(teacher.device),
                   torch.from_numpy(ids[i:i + batch]).to(teacher.device))["m"].cpu() for i in range(0, len(img), batch)]
        return torch.cat(out).numpy() if out else np.zeros(0)

    has = twins[caps.image] >= 0
    own = logits(caps.image[has], caps.ids[has])
    other = logits(twins[caps.image[has]], caps.ids[has])
    kinds = np.array([_twin_kind(records[i], records[twins[i]]) for i in caps.image[has]])
    win = own > other
    result = {"twin_acc": float(win.mean() * 100) if len(win) else float("nan")}
    for kind in ("colour", "size", "relation"):
        sel = kinds == kind
        result[f"twin_acc_{kind}"] = float(win[sel].mean() * 100) if sel.any() else float("nan")
    rng = np.random.default_rng(0)
    edits = np.stack([caps.edit(row, rng, 0.75) for row in caps.ids])
    pos, neg = logits(caps.image, caps.ids), logits(caps.image, edits)
    result["edit_acc"] = float((pos > neg).mean() * 100)
    result["itm_acc"] = float(((pos > 0).mean() + (neg < 0).mean()) / 2 * 100)
    return result


def _twin_kind(a: dict, b: dict) -> str:
    oa, ob = a["objects"][0], b["objects"][0]
    return "colour" if oa["colour"] != ob["colour"] else "size" if oa["size"] != ob["size"] else "relation"


def train_region_teacher(train_records: list[dict], prepared_dir: str | Path, val_records: list[dict], config: dict,
                         out_dir: str | Path, device: str = "cpu", seed: int = 0, progress: bool = True,
                         checkpoint_dir: str | Path | None = None, max_steps: int | None = None, threads: int = 2) -> dict:
    """Train the region teacher, save it to ``out_dir``; return metrics.

    ``config``: ``epochs``, ``batch_size``, ``lr`` and ``model_config`` (name or JSON path, default ``region-tiny``).
    Checkpoints go to ``checkpoint_dir`` (default ``<out_dir>.ckpt``); a re-run resumes from the last one.
    ``max_steps`` stops after that many cross-encoder steps without saving (a simulated kill, for tests).
    ``threads``: torch CPU threads; use 1 when other processes share the cores (OpenMP threads then stall).
    """
    from tqdm import tqdm

    torch.set_num_threads(threads)
    start = time.time()
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".ckpt")
    ckpt_path = ckpt_dir / LAST
    model_cfg = default_config(load_model_config(config.get("model_config") or "region-tiny"))
    epochs, bs, lr = int(config["epochs"]), int(config["batch_size"]), float(config["lr"])
    tcfg = model_cfg["training"]
    tok = WordTokenizer.build([c for r in train_records for c in r["captions"]], model_cfg["max_len"])
    torch.manual_seed(seed)
    teacher = RegionCrossEncoder(model_cfg, tok, device)
    arrays = _load_arrays(train_records, prepared_dir, teacher, progress)
    opt = torch.optim.AdamW(teacher.encoder.parameters(), lr=lr, weight_decay=tcfg["weight_decay"])
    settings = [model_cfg, epochs, bs, lr, seed, _records_hash(train_records)]
    resumed = load_checkpoint(ckpt_path, teacher, opt, key=settings)  # None: none, or of other data or settings
    if resumed is None:
        cls_acc = _train_classifier(teacher, arrays, train_records, seed, progress)
        epoch0, step = 0, 0
        save_checkpoint(ckpt_path, 0, teacher, opt, key=settings, step=0, classifier_acc=cls_acc)
    else:
        epoch0, step, cls_acc = resumed["epoch"], resumed["step"], resumed["classifier_acc"]
    slots = object_slots(teacher.classifier, arrays).cpu()
    caps, twins = _Captions(train_records, tok), np.array(twin_index(train_records))
    n = len(train_records)
    steps_per_epoch = math.ceil(n / bs)
    total = epochs * steps_per_epoch
    teacher.encoder.train()
    for epoch in range(epoch0, epochs):
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(n)
        bar = tqdm(range(steps_per_epoch), desc=f"region teacher {epoch + 1}/{epochs}", disable=not progress,
                   mininterval=1.0)
        for i in bar:
            if max_steps is not None and step >= max_steps:
                return {"stopped_at_step": step}
            images = perm[i * bs:(i + 1) * bs]
            b = len(images)
            s, ids, pos_ids = _itm_batch(teacher, caps, slots, twins, images, rng, tcfg["binding_edit_share"])
            for group in opt.param_groups:
                group["lr"] = _lr(step, total, lr, tcfg["warmup_steps"])
            out = teacher.encoder(s, ids)
            loss, acc = _losses(out, pos_ids, s[:b], caps, b, tcfg)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(teacher.encoder.parameters(), tcfg["grad_clip"])
            opt.step()
            step += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc.item():.3f}", refresh=False)
        save_checkpoint(ckpt_path, epoch + 1, teacher, opt, key=settings, step=step, classifier_acc=cls_acc)
    train_s = time.time() - start
    metrics = {"classifier_train_acc": cls_acc * 100, "steps": step, "resumed_from_epoch": epoch0, "train_s": train_s}
    if val_records:
        val_arrays = _load_arrays(val_records, prepared_dir, teacher, progress)
        val_slots = object_slots(teacher.classifier, val_arrays).cpu()
        shape_t, size_t = attribute_targets(val_records, val_arrays)
        known = shape_t >= 0
        metrics["val_attribute_acc"] = float(((val_slots[..., SLOT_SHAPE].argmax(-1).numpy() == shape_t)
                                              & (val_slots[..., SLOT_SIZE].argmax(-1).numpy() == size_t))[known].mean() * 100)
        metrics.update({f"val_{k}": v for k, v in evaluate(teacher, val_records, val_slots).items()})
    with atomic_path(out_dir) as tmp:
        teacher.save(tmp)
    metrics["fingerprint"] = teacher.fingerprint()
    return metrics
