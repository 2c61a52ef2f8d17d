"""Student distillation: determinism, resume after a kill, no training heads in the student, DDP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mcad_core.data.manifest import TEXTS_FILE, flatten_captions, read_manifest, read_texts
from mcad_core.mcad.batches import pair_lookup
from mcad_core.mcad.cache import build_cache
from mcad_core.mcad.fusion import FuseSettings, run_fusion
from mcad_core.mcad.train import build_distill_data, distill_student
from mcad_core.student.model import StudentTokenizer, load_student, save_student
from mcad_core.params import DistillParams
from tests.pipeline_fixtures import make_prepared, tiny_student_config, tiny_teachers


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    prepared = make_prepared(root, n_train=48, n_val=16, n_test=16)
    train, val = read_manifest(prepared / "train.jsonl"), read_manifest(prepared / "val.jsonl")
    texts = read_texts(prepared / TEXTS_FILE)
    dual, cross = tiny_teachers(read_manifest(prepared / "teacher.jsonl"))
    caches = [build_cache(r, prepared, dual, cross, hard_k=3, text_k=4, batch_size=64, texts=t, progress=False)
              for r, t in ((train, texts), (val, []))]
    fused, _ = run_fusion(*caches, FuseSettings(lam=1.0, alpha=1.0, tau_m=1.0, projection="ranking", steps=20),
                          0.1, progress=False)
    config = tiny_student_config(root)
    tok = StudentTokenizer.train(flatten_captions(train)[0] + texts, context_length=24)
    data = build_distill_data("mcad", train, texts, val, prepared, 64, tok, caches[0], fused, progress=False)
    params = DistillParams(student=str(config), epochs=2, batch_size=16, lr=2e-3)
    return root, data, tok, params, (train, texts, val, prepared, caches[0], fused)


def run(setup, ckpt, **kw):
    _, data, tok, params, _ = setup
    return distill_student("mcad", params, data, tok.vocab_size, ckpt, seed=0, progress=False, **kw)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights(setup, tmp_path):
    a, b = state(run(setup, tmp_path / "a")), state(run(setup, tmp_path / "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _step_log(events: list[str]):
    return lambda metrics, epoch_end: events.append("epoch" if epoch_end else "step")


def test_resume_after_kill_mid_epoch_matches_uninterrupted(setup, tmp_path):
    events: list[str] = []
    full = state(run(setup, tmp_path / "full", log=_step_log(events)))
    first_epoch_steps = events.index("epoch")
    ckpt = tmp_path / "killed"
    killed = run(setup, ckpt, max_steps=first_epoch_steps + 1)  # killed one step into epoch 2
    assert (ckpt / "last.pt").is_file()
    resumed_events: list[str] = []
    resumed = state(run(setup, ckpt, log=_step_log(resumed_events)))
    # the resumed run did only epoch 2, from the checkpoint, and ends where the straight run ends
    assert resumed_events.count("step") == events.count("step") - first_epoch_steps
    assert not all(torch.equal(state(killed)[k], full[k]) for k in full)
    assert all(torch.equal(resumed[k], full[k]) for k in full)


def test_saved_student_has_no_training_heads(setup, tmp_path):
    _, data, tok, params, _ = setup
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


def _record(monkeypatch):
    """Spy on the sampler's batches and on every mcad_loss call of a run."""
    from mcad_core.mcad import batches as batches_module
    from mcad_core.mcad import losses as losses_module

    seen: dict[str, list] = {"batches": [], "calls": []}
    original_batches, original_loss = batches_module.PairBatchSampler.batches, losses_module.mcad_loss

    def batches(self, epoch=None):
        out = original_batches(self, epoch)
        seen["batches"].append(out)
        return out

    def loss(*args, **kwargs):
        seen["calls"].append(kwargs)
        return original_loss(*args, **kwargs)

    monkeypatch.setattr(batches_module.PairBatchSampler, "batches", batches)
    monkeypatch.setattr(losses_module, "mcad_loss", loss)
    return seen


@pytest.mark.parametrize("variant", ["contrastive", "dual_kd", "mcad"])
def test_what_each_variant_feeds_the_loss(setup, tmp_path, monkeypatch, variant):
    """Per variant: the targets (dual or fused), the teacher logits (with or without the shifted
    cross-encoder logits), the label mask (teachers' picks unlabelled) and the loss weights."""
    _, _, tok, params, (train, texts, val, prepared, cache, fused) = setup
    data = build_distill_data(variant, train, texts, val, prepared, 64, tok, cache, fused, progress=False)
    seen = _record(monkeypatch)
    params = params.model_copy(update={"hard_batch_frac": 1.0, "w_hard": 2.0})
    distill_student(variant, params, data, tok.vocab_size, tmp_path, seed=3, progress=False, max_steps=3)
    batches = seen["batches"][0]
    assert len(seen["calls"]) == 3
    some_unlabelled = False
    for batch, call in zip(batches, seen["calls"]):
        img = torch.from_numpy(batch.images)
        txt = data.slot_text[torch.from_numpy(batch.slots)]
        assert torch.equal(call["labelled"], torch.from_numpy(batch.labelled))
        some_unlabelled |= not batch.labelled.all()
        if variant == "contrastive":
            assert call["w_dist"] == call["w_hard"] == 0 and call["teacher"] is None
            continue
        assert call["w_dist"] == params.w_dist and call["w_hard"] == 2.0 and call["candidates"] is not None
        source = fused if variant == "mcad" else cache
        assert torch.equal(call["v_target"], source["v"][img].float())
        assert torch.equal(call["t_target"], source["t"][txt].float())
        dual_only = source["v"][img].float() @ source["t"][txt].float().T / params.tau_t
        shifted = pair_lookup(img, txt, cache["pair_key"], fused["s_pair"], int(cache["n_texts"]))
        assert torch.equal(call["candidates"], ~shifted.isnan())
        want = dual_only + shifted.nan_to_num(0.0) if variant == "mcad" else dual_only
        assert torch.allclose(call["teacher"], want, atol=1e-5)
        if variant == "mcad":
            assert (shifted.nan_to_num(0.0) != 0).any()  # the cross-encoder's judgement reaches the targets
    assert some_unlabelled  # teachers' picks for uncaptioned photos are in the batches, unlabelled


def test_every_variant_trains_on_the_same_batches(setup, tmp_path, monkeypatch):
    _, data, tok, params, _ = setup
    order = []
    seen = _record(monkeypatch)
    for variant in ("contrastive", "dual_kd", "mcad"):
        start = len(seen["batches"])
        distill_student(variant, params.model_copy(update={"hard_batch_frac": 0.5}), data, tok.vocab_size,
                        tmp_path / variant, seed=3, progress=False, max_steps=2)
        order.append([[(b.images.tolist(), b.slots.tolist(), b.labelled.tolist()) for b in e]
                      for e in seen["batches"][start:]])
    assert order[0] == order[1] == order[2]


def test_streamed_images_train_with_workers(setup, tmp_path):
    """Real-data mode: images from a DataLoader (2 workers, open_clip's training crop), same steps."""
    from mcad_core.data.images import StreamedImages

    root, data, tok, params, _ = setup
    prepared = root / "prepared"
    train = read_manifest(prepared / "train.jsonl")
    streamed = type(data)(**{**vars(data), "images": StreamedImages(prepared, train, 64, workers=2, train=True)})
    torch.manual_seed(0)
    model = distill_student("mcad", params, streamed, tok.vocab_size, tmp_path, seed=0, progress=False)
    memory = state(run(setup, tmp_path / "memory"))
    got = state(model)
    assert got.keys() == memory.keys() and all(torch.isfinite(v).all() for v in got.values() if v.is_floating_point())
    assert not all(torch.equal(got[k], memory[k]) for k in got)  # the crops changed what it saw
