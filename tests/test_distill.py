"""Student distillation: determinism, resume after a kill, no training heads in the student, DDP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mcad_core.data.manifest import flatten_captions, read_manifest
from mcad_core.mcad.cache import build_cache
from mcad_core.mcad.fusion import FuseSettings, run_fusion
from mcad_core.mcad.train import build_distill_data, distill_student
from mcad_core.models.student import StudentTokenizer, load_student, save_student
from mcad_core.params import DistillParams
from tests.pipeline_fixtures import make_prepared, tiny_student_config, tiny_teachers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    prepared = make_prepared(root, n_train=48, n_val=16, n_test=16)
    train, val = read_manifest(prepared / "train.jsonl"), read_manifest(prepared / "val.jsonl")
    dual, cross = tiny_teachers(train)
    caches = [build_cache(r, prepared, dual, cross, hard_k=3, batch_size=64, progress=False) for r in (train, val)]
    fused, _ = run_fusion(*caches, FuseSettings(lam=1.0, alpha=1.0, tau_m=1.0, projection="ranking", steps=20),
                          0.1, progress=False)
    config = tiny_student_config(root)
    tok = StudentTokenizer.train(flatten_captions(train)[0], context_length=24)
    data = build_distill_data("mcad", train, val, prepared, 64, tok, caches[0], fused, progress=False)
    params = DistillParams(student=str(config), epochs=2, batch_size=16, lr=2e-3)
    return root, data, tok, params


def run(setup, ckpt, **kw):
    _, data, tok, params = setup
    return distill_student("mcad", params, data, tok.vocab_size, ckpt, seed=0, progress=False, **kw)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights(setup, tmp_path):
    a, b = state(run(setup, tmp_path / "a")), state(run(setup, tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_kill_mid_epoch_matches_uninterrupted(setup, tmp_path):
    full = state(run(setup, tmp_path / "full"))
    _, data, tok, params = setup
    ckpt = tmp_path / "killed"
    first_epoch_steps = 4  # 48 images / batch 16 = 3 batches, plus hard-neighbour batches
    killed = run(setup, ckpt, max_steps=first_epoch_steps + 1)
    assert (ckpt / "last.pt").is_file() or first_epoch_steps + 1 <= 3
    resumed = state(run(setup, ckpt))
    assert not all(torch.equal(state(killed)[k], full[k]) for k in full)
    assert all(torch.equal(resumed[k], full[k]) for k in full)


def test_saved_student_has_no_training_heads(setup, tmp_path):
    _, data, tok, params = setup
    model = run(setup, tmp_path / "c")
    save_student(model, tok, tmp_path / "student")
    loaded, _ = load_student(tmp_path / "student")
    names = list(loaded.state_dict())
    assert names and not any("head" in n for n in names)
    assert set(names) == set(model.state_dict())


def _ddp_worker(rank: int, world: int, init_file: str, setup, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # two processes on two cores: more threads would only contend
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = run(setup, Path(out) / f"ckpt{rank}", rank=rank, world_size=world)
        # parameters only: BatchNorm running statistics are per rank (DDP syncs them from rank 0
        # at each forward, so after the last step they legitimately differ)
        torch.save(dict(model.named_parameters()), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_cpu_processes_stay_in_sync(setup, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), setup, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    single = dict(run(setup, tmp_path / "single").named_parameters())
    assert not all(torch.equal(a[k], single[k]) for k in a)  # each rank saw half the batches


def test_every_variant_trains_on_the_same_batches(setup, tmp_path, monkeypatch):
    from mcad_core.mcad import batches as batches_module

    _, data, tok, params = setup
    seen: dict[str, list] = {}
    original = batches_module.PairBatchSampler.batches

    def recording(self, epoch=None):
        out = original(self, epoch)
        seen.setdefault(current, []).append([(b.images.tolist(), b.captions.tolist(), b.labelled.tolist()) for b in out])
        return out

    monkeypatch.setattr(batches_module.PairBatchSampler, "batches", recording)
    album = torch.zeros(len(data.images), dtype=torch.bool)
    album[::3] = True  # some pairs unlabelled, as on the embedded data
    with_album = type(data)(**{**data.__dict__, "album": album})
    for current in ("contrastive", "dual_kd", "mcad"):
        distill_student(current, params.model_copy(update={"hard_batch_frac": 0.5}), with_album, tok.vocab_size,
                        tmp_path / current, seed=3, progress=False, max_steps=2)
    assert seen["contrastive"] == seen["dual_kd"] == seen["mcad"]
    assert any(not all(lab) for epoch in seen["mcad"] for _, _, lab in epoch)  # album pairs are in the batches


def test_streamed_images_train_with_workers(setup, tmp_path):
    """Real-data mode: images from a DataLoader (2 workers, open_clip's training crop), same steps."""
    from mcad_core.data.images import StreamedImages

    root, data, tok, params = setup
    prepared = root / "prepared"
    train = read_manifest(prepared / "train.jsonl")
    streamed = type(data)(**{**vars(data), "images": StreamedImages(prepared, train, 64, workers=2, train=True)})
    torch.manual_seed(0)
    model = distill_student("mcad", params, streamed, tok.vocab_size, tmp_path, seed=0, progress=False)
    memory = state(run(setup, tmp_path / "memory"))
    got = state(model)
    assert got.keys() == memory.keys() and all(torch.isfinite(v).all() for v in got.values() if v.is_floating_point())
    assert not all(torch.equal(got[k], memory[k]) for k in got)  # the crops changed what it saw
