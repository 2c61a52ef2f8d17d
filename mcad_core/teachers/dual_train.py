"""Contrastive training of the dual-stream teacher (open_clip's own ``ClipLoss``), on the teachers' corpus.

Checkpoints every epoch and resumes after a kill to the same final weights as an uninterrupted
run, because a DVC stage may be stopped and re-run at any time.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.checkpoint import LAST, load_checkpoint, save_checkpoint
from mcad_core.errors import McadError
from mcad_core.teachers.dual import OpenClipTeacher, open_clip_with_configs

if TYPE_CHECKING:
    import torch

# Warm-up share of all steps, and the step floor: a short run still ramps up gently.
_WARMUP_FRAC, _MIN_WARMUP = 0.05, 10
_WEIGHT_DECAY, _GRAD_CLIP = 0.1, 1.0
_LOGIT_SCALE_MAX = math.log(100.0)  # CLIP's clamp on the learned temperature


def _caption_tokens(teacher: OpenClipTeacher, records: list[dict]) -> tuple[torch.Tensor, list[list[int]]]:
    """Tokens of the split's unique captions, and each image's caption ids into them."""
    index: dict[str, int] = {}
    caption_ids = [[index.setdefault(c, len(index)) for c in rec["captions"]] for rec in records]
    return teacher.tokenize(list(index)), caption_ids


def _pixel_batches(teacher: OpenClipTeacher, records: list[dict], prepared_dir: Path, index_batches: list,
                   workers: int) -> Any:
    """uint8 pixels of each batch of record indices, decoded and preprocessed (the teacher's own
    open_clip transform) by a DataLoader: a split is never held in memory."""
    from mcad_core.data.loader import image_loader

    return image_loader(prepared_dir, records, 1, workers, teacher.pixels_of, sampler=index_batches)


def _run_key(teacher: OpenClipTeacher, records: list[dict], epochs: int, batch_size: int, lr: float,
             seed: int) -> str:
    """What a saved training state must match to be resumed: settings, data and starting weights."""
    h = hashlib.sha256(json.dumps([teacher.model_name, epochs, batch_size, lr, seed]).encode())
    for rec in records:
        h.update(json.dumps([rec["image_id"], rec["captions"]]).encode())
    h.update(teacher.fingerprint().encode())
    return h.hexdigest()


def _param_groups(model: Any) -> list[dict]:
    """CLIP's split: weight decay on matrices only, none on gains, biases, embeddings and the scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith("bias")
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": _WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def _schedule(total_steps: int) -> Any:
    """Linear warm-up then cosine decay to zero, as a LambdaLR multiplier."""
    warmup = min(max(_MIN_WARMUP, int(_WARMUP_FRAC * total_steps)), max(1, total_steps // 2))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return factor


def train_dual_teacher(teacher: OpenClipTeacher, train_records: list[dict], prepared_dir: str | Path,
                       epochs: int, batch_size: int, lr: float, out_dir: str | Path, seed: int,
                       device: str = "cpu", progress: bool = True,
                       val_records: list[dict] | None = None, workers: int = 0,
                       precision: str = "fp32") -> dict[str, Any]:
    """Contrastive CLIP training (open_clip ``ClipLoss``) of ``teacher`` in place; returns a summary.

    An epoch shows every training image once, each with one of its captions drawn at random
    (a batch never holds one image twice, so ClipLoss sees no false negatives from it).
    AdamW, warm-up + cosine. The full state is saved to ``out_dir/last.pt`` (:mod:`mcad_core.checkpoint`)
    after each epoch; a re-run with the same settings and data resumes from it and ends
    with the same weights as an uninterrupted run. ``epochs=0`` keeps the weights as loaded.
    Images stream through a DataLoader (``workers`` decoders); ``precision`` autocasts on cuda.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from mcad_core.precision import autocast, grad_scaler
    from mcad_core.teachers.report import evaluate_dual

    if epochs < 0:
        raise McadError(f"teachers.dual.epochs: must be >= 0, got {epochs}")
    if batch_size < 2:
        raise McadError(f"teachers.dual.batch_size: contrastive training needs >= 2, got {batch_size}")
    if not train_records:
        raise McadError("teachers.dual: the train split is empty")
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    teacher.model.to(device)
    teacher.device = device
    summary: dict[str, Any] = {"epochs": epochs, "steps": 0, "train_time_s": 0.0, "loss": []}
    if epochs > 0:
        open_clip = open_clip_with_configs()
        key = _run_key(teacher, train_records, epochs, batch_size, lr, seed)
        tokens, caption_ids = _caption_tokens(teacher, train_records)
        scaler = grad_scaler(device, precision)
        n = len(train_records)
        steps_per_epoch = max(1, n // batch_size)  # the ragged tail is dropped: equal-size batches
        total = epochs * steps_per_epoch
        model = teacher.model
        opt = torch.optim.AdamW(_param_groups(model), lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total))
        loss_fn = open_clip.ClipLoss()
        state_path = out_dir / LAST
        start_epoch = 0
        torch.manual_seed(seed)
        resumed = load_checkpoint(state_path, model, opt, sched, key=key)
        if resumed is not None:
            start_epoch, summary = resumed["epoch"], resumed["summary"]
            if progress:
                tqdm.write(f"dual teacher: resuming after epoch {start_epoch} from {state_path}")
        elif state_path.is_file() and progress:
            tqdm.write(f"dual teacher: {state_path} is from other settings or data; starting afresh")
        t0 = time.perf_counter() - summary["train_time_s"]
        model.train()
        for epoch in range(start_epoch, epochs):
            rng = np.random.default_rng([seed, epoch])  # the epoch's order and captions, resume-proof
            order = rng.permutation(n)
            pick = np.array([ids[rng.integers(len(ids))] for ids in caption_ids])
            bar = tqdm(total=steps_per_epoch, desc=f"dual teacher epoch {epoch + 1}/{epochs}",
                       disable=not progress, mininterval=1.0)
            total_loss = 0.0
            rows_per_step = [order[step * batch_size : (step + 1) * batch_size] for step in range(steps_per_epoch)]
            pixel_batches = _pixel_batches(teacher, train_records, prepared_dir, rows_per_step, workers)
            for rows, pixels in zip(rows_per_step, pixel_batches, strict=True):
                with autocast(device, precision):
                    img = teacher.encode_pixels(pixels)
                    txt = teacher.encode_tokens(tokens[torch.from_numpy(pick[rows])])
                    loss = loss_fn(img.float(), txt.float(), model.logit_scale.exp())
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), _GRAD_CLIP)
                scaler.step(opt)
                scaler.update()
                sched.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, _LOGIT_SCALE_MAX)
                value = loss.item()
                total_loss += value
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                bar.update(1)
            bar.close()
            summary["loss"].append(total_loss / steps_per_epoch)
            summary["steps"] += steps_per_epoch
            summary["train_time_s"] = time.perf_counter() - t0
            save_checkpoint(state_path, epoch + 1, model, opt, sched, key=key, summary=summary)
        model.eval()
    if val_records:
        summary["val"] = evaluate_dual(teacher, val_records, prepared_dir, workers=workers)
    return summary
