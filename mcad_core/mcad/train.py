"""Student distillation from cached / fused teacher targets (docs/DESIGN.md §4.3-4.5).

No teacher runs here: the dual teacher's features, the fused features and the shifted
cross-encoder logits all come from the ``cache`` and ``fuse`` stages, so a distillation
epoch costs about what a contrastive-only epoch costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcad_core.mcad.variants import VARIANTS

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mcad_core.data.images import MemoryImages, StreamedImages
    from mcad_core.params import DistillParams

    ImageSource = MemoryImages | StreamedImages


@dataclass
class DistillData:
    """Everything a distillation run reads, as tensors (train split) plus val for monitoring.

    Texts are the train captions in manifest order, then the unpaired pool (``mcad.cache``).
    """

    images: ImageSource           # train photos (uint8 [B, 3, H, W] per batch of indices)
    token_ids: torch.Tensor       # int32 [N_txt, ctx]
    v: torch.Tensor               # teacher photo targets [N_img, D] (raw or fused)
    t: torch.Tensor               # teacher text targets [N_txt, D] (raw or fused)
    slot_image: torch.Tensor      # long [S] photo of each slot, sorted
    slot_text: torch.Tensor       # long [S] text of each slot
    slot_labelled: torch.Tensor   # bool [S] the slot is the user's own caption
    nbr: torch.Tensor             # long [N_img, K] hard neighbour photos
    pair_key: torch.Tensor        # long [P] sorted keys image·N_txt + text of the cached pairs
    s_pair: torch.Tensor | None   # [P] shifted cross-encoder logits α(m − m̄)/τ_M (fused-score variants)
    val_images: ImageSource
    val_token_ids: torch.Tensor
    val_cap_image: torch.Tensor
    val_twin_of: list[int] | None = None  # val image -> its twin's index (-1: none), for val twin accuracy
    val_twin_kind: list[str | None] | None = None  # what each val twin exchanges (colour / size / relation)
    val_matches: np.ndarray | None = None  # [N_val_txt, N_val_img]: every val image a caption truly describes

    @property
    def n_texts(self) -> int:
        return self.token_ids.shape[0]


def DistillNet(student: Any, teacher_dim: int) -> Any:  # noqa: N802 - a module factory
    """Student + training-only feature heads W_v, W_t (dropped at export), one forward for DDP.

    The forward returns f, g, W_v f, W_t g and the logit scale, so every trained parameter is
    reached from the outputs (DDP requires that).
    """
    import torch

    class _Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = student
            dim = student.config.embed_dim
            self.head_v = torch.nn.Linear(dim, teacher_dim)
            self.head_t = torch.nn.Linear(dim, teacher_dim)

        def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
            f, g = self.student.encode_image(images), self.student.encode_text(ids)
            return f, g, self.head_v(f), self.head_t(g), self.student.logit_scale.exp()

    return _Net()


def distill_student(variant: str, params: DistillParams, data: DistillData, vocab_size: int,
                    ckpt_dir: Path, seed: int, device: str = "cpu",
                    log: Callable[[dict[str, float], bool], None] | None = None,
                    progress: bool = True, max_steps: int | None = None, rank: int = 0, world_size: int = 1,
                    online_targets: Callable[[Any, Any], tuple[Any, Any]] | None = None,
                    precision: str = "fp32") -> Any:
    """Train the student for ``params.epochs``; resumes from ``ckpt_dir`` if it holds a checkpoint.

    ``log(metrics, epoch_end)`` receives per-step losses and, at each epoch end, val retrieval.
    ``max_steps`` stops early (used by tests to simulate a kill). Under ``torchrun`` each rank
    takes its share of every epoch's batches and gradients are averaged by DDP.
    ``online_targets(image_idx, caption_idx) -> (v, t)`` replaces the cached targets by a teacher
    forward every step (open_clip's ``--distill-model`` way); only the cost benchmark uses it.
    ``precision`` (bf16 / fp16) autocasts the forward on cuda; fp16 scales the loss.
    """
    import torch
    from tqdm import tqdm

    from mcad_core.checkpoint import LAST, load_checkpoint, save_checkpoint
    from mcad_core.evaluation.metrics import TWIN_KEYS, embedding_metrics
    from mcad_core.mcad.batches import PairBatchSampler, pair_lookup
    from mcad_core.mcad.losses import mcad_loss, teacher_logits
    from mcad_core.precision import autocast, grad_scaler
    from mcad_core.student.model import build_student, encode_all

    spec = VARIANTS[variant]
    torch.manual_seed(seed)
    # channels_last: the depthwise CNN that dominates a step runs ~1.2x faster in it on CPU (measured).
    model = build_student(params.student, vocab_size).to(device)
    model.image_tower.to(memory_format=torch.channels_last)
    modules = DistillNet(model, data.v.shape[1]).to(device)
    opt = torch.optim.AdamW(modules.parameters(), lr=params.lr, weight_decay=0.05)
    # Every variant, contrastive included, trains on the same batches (like-for-like baselines).
    counts = torch.bincount(data.slot_image, minlength=len(data.images)).tolist()
    sampler = PairBatchSampler(counts, min(params.batch_size, len(data.images)), hard_neighbours=data.nbr.numpy(),
                               hard_batch_frac=params.hard_batch_frac, seed=seed, rank=rank, world_size=world_size,
                               slot_labelled=data.slot_labelled.numpy())
    epoch_batches = [sampler.batches(e) for e in range(params.epochs)]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=params.lr, total_steps=sum(map(len, epoch_batches)),
                                                pct_start=0.1)
    net = ddp_wrap(modules) if world_size > 1 else modules
    resumed = load_checkpoint(ckpt_dir / LAST, modules, opt, sched)  # the folder is keyed (checkpoint_dir)
    start_epoch = 0 if resumed is None else resumed["epoch"]
    w_dist = params.w_dist if spec.distill else 0.0
    w_feat = params.w_feat if spec.distill else 0.0
    w_hard = params.w_hard if spec.distill else 0.0
    scaler = grad_scaler(device, precision)
    pair_values = data.s_pair if spec.fused_scores else torch.zeros(len(data.pair_key))
    step = sum(map(len, epoch_batches[:start_epoch]))
    for epoch in range(start_epoch, params.epochs):
        batches = epoch_batches[epoch]
        pixel_batches = data.images.batches(b.images for b in batches)
        for batch, images in tqdm(zip(batches, pixel_batches, strict=True), total=len(batches),
                                  desc=f"distill {variant} epoch {epoch + 1}/{params.epochs}",
                                  disable=not progress, mininterval=1.0):
            img = torch.from_numpy(batch.images)
            txt = data.slot_text[torch.from_numpy(batch.slots)]
            pixels = (images.to(device).float() / 255).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                f, g, f_proj, g_proj, scale = net(pixels, data.token_ids[txt].to(device))
            f, g, f_proj, g_proj, scale = (x.float() for x in (f, g, f_proj, g_proj, scale))
            v_tgt, t_tgt = (data.v[img], data.t[txt]) if online_targets is None else online_targets(img, txt)
            v_tgt, t_tgt = v_tgt.to(device), t_tgt.to(device)
            t_logits = candidates = None
            if w_dist > 0 or w_hard > 0:
                cached = pair_lookup(img, txt, data.pair_key, pair_values, data.n_texts).to(device)
                candidates = ~cached.isnan() if w_hard > 0 else None
                t_logits = teacher_logits(v_tgt, t_tgt, params.tau_t, pair_m=cached if spec.fused_scores else None,
                                          alpha=1.0)
            loss, parts = mcad_loss(
                f, g, scale, labelled=torch.from_numpy(batch.labelled).to(device), teacher=t_logits,
                candidates=candidates, tau_s=params.tau_s, f_proj=f_proj, v_target=v_tgt, g_proj=g_proj,
                t_target=t_tgt, w_itc=params.w_itc, w_dist=w_dist, w_feat=w_feat, w_hard=w_hard,
            )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(modules.parameters(), 5.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, 4.6052)
            step += 1
            if log is not None:
                log({f"train/{k}": v for k, v in parts.items()}, False)
            if max_steps is not None and step >= max_steps:
                return model.to(memory_format=torch.contiguous_format)
        if rank == 0:
            fv, gv = encode_all(model, data.val_images, data.val_token_ids, device, precision=precision)
            val = embedding_metrics(fv, gv, data.val_cap_image.tolist(), data.val_twin_of or [-1] * len(fv),
                                    data.val_twin_kind, data.val_matches)
            save_checkpoint(ckpt_dir / LAST, epoch + 1, modules, opt, sched)
            if log is not None:
                log({f"val/{k}": val[k] for k in ("t2i_r1", "i2t_r1", "rsum", *TWIN_KEYS) if k in val}, True)
    return model.to(memory_format=torch.contiguous_format)


def ddp_wrap(modules: Any) -> Any:
    """Wrap for DistributedDataParallel (the process group is already initialised by the caller).

    DDP waits for a gradient of every parameter each step, but a step's loss may skip outputs: the
    feature heads with ``w_feat`` 0, ``g`` and the scale in a batch with no labelled pair. So every
    other output enters ``f`` (always in the loss) with weight 0 and skipped parameters get zero
    gradients; the student's weights come out bit for bit as with ``find_unused_parameters=True``
    (measured), without its graph search every step and its warning (it finds no unused parameter,
    the heads' outputs being returned). A static graph fails on those heads.
    """
    from torch.nn.parallel import DistributedDataParallel

    def all_outputs_in_loss(_module: Any, _inputs: Any, out: tuple[Any, ...]) -> tuple[Any, ...]:
        f, *rest = out
        return (f + 0.0 * sum(x.float().mean() for x in rest), *rest)

    modules.register_forward_hook(all_outputs_in_loss)
    return DistributedDataParallel(modules, find_unused_parameters=False)


def build_distill_data(variant: str, train_records: list[dict], texts: list[str], val_records: list[dict],
                       prepared_dir: Path, image_size: int, tokenizer: Any, cache: dict, fused: dict | None,
                       progress: bool = True, image_mode: str = "memory", workers: int = 0) -> DistillData:
    """Assemble a variant's training tensors: the dual teacher's targets, or the fused ones.

    ``texts``: the unpaired pool, after the captions in text order. ``image_mode``: ``memory``
    preloads both splits, ``stream`` reads them through a DataLoader with ``workers`` processes
    (train images with open_clip's training crop).
    """
    import torch

    from mcad_core.data.claims import caption_matches
    from mcad_core.data.images import image_source
    from mcad_core.data.manifest import flatten_captions, twin_index, twin_kinds

    spec = VARIANTS[variant]
    captions, _ = flatten_captions(train_records)
    val_captions, val_cap_image = flatten_captions(val_records)
    feats = fused if spec.fused_features else cache
    return DistillData(
        images=image_source(prepared_dir, train_records, image_size, image_mode, workers, train=True, progress=progress),
        token_ids=torch.from_numpy(tokenizer.encode(captions + list(texts))),
        v=feats["v"].float(), t=feats["t"].float(),
        slot_image=cache["slot_image"].long(), slot_text=cache["slot_text"].long(),
        slot_labelled=cache["slot_labelled"].bool(), nbr=cache["nbr"].long(), pair_key=cache["pair_key"].long(),
        s_pair=fused["s_pair"].float() if spec.fused_scores else None,
        val_images=image_source(prepared_dir, val_records, image_size, image_mode, workers, progress=progress),
        val_token_ids=torch.from_numpy(tokenizer.encode(val_captions)),
        val_cap_image=torch.tensor(val_cap_image),
        val_twin_of=twin_index(val_records),
        val_twin_kind=twin_kinds(val_records),
        val_matches=caption_matches(val_records),
    )


def load_distill_inputs(params: Any, variant: str, prepared_dir: Path, teachers_dir: Path, cache_dir: Path,
                        fused_dir: Path, progress: bool = True) -> tuple[DistillData, Any]:
    """Everything a variant trains from, read from the pipeline's folders (fingerprints checked),
    and the student tokenizer built from the user's texts (captions and pool)."""
    from mcad_core.data.manifest import TEXTS_FILE, flatten_captions, read_manifest, read_texts
    from mcad_core.mcad.targets import load_cache, load_fused
    from mcad_core.student.config import load_config
    from mcad_core.student.model import student_tokenizer

    spec = VARIANTS[variant]
    train, val = read_manifest(prepared_dir / "train.jsonl"), read_manifest(prepared_dir / "val.jsonl")
    texts = read_texts(prepared_dir / TEXTS_FILE)
    config = load_config(params.distill.student)
    tokenizer = student_tokenizer(config, flatten_captions(train)[0] + texts)  # a pretrained text tower brings its own
    cache = load_cache(cache_dir, "train", prepared_dir, teachers_dir, params.cache)
    needs_fused = spec.fused_scores or spec.fused_features
    fused = load_fused(fused_dir, cache_dir, params.fuse.model_dump(by_alias=True)) if needs_fused else None
    data = build_distill_data(variant, train, texts, val, prepared_dir, config.image.image_size, tokenizer, cache,
                              fused, progress, image_mode=params.distill.images, workers=params.workers)
    return data, tokenizer
