"""Batch composition: determinism, coverage, hard pairs at the requested share, DDP, pair logits."""

import numpy as np
import pytest
import torch

from mcad_core.errors import McadError
from mcad_core.mcad.batches import PairBatchSampler, pair_lookup

N, B = 103, 16


def setup(seed=0, k=4, padding=True):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 6, N)
    neighbours = np.array([rng.choice(np.delete(np.arange(N), i), k, replace=False) for i in range(N)])
    if padding:
        neighbours[::7, 2:] = -1
    return counts, neighbours


def sampler(frac=0.5, seed=0, **kw):
    counts, neighbours = setup()
    return PairBatchSampler(counts, B, hard_neighbours=neighbours, hard_batch_frac=frac, seed=seed, **kw)


def same(a, b):
    return all(
        np.array_equal(x.images, y.images) and np.array_equal(x.slots, y.slots) and np.array_equal(x.hard, y.hard)
        for x, y in zip(a, b, strict=True)
    )


def test_deterministic_for_a_seed_and_epoch():
    assert same(sampler().batches(0), sampler().batches(0))
    assert same(sampler().batches(3), sampler().batches(3))
    assert not same(sampler().batches(0)[:3], sampler().batches(1)[:3])
    assert not same(sampler().batches(0)[:3], sampler(seed=1).batches(0)[:3])


@pytest.mark.parametrize("frac", [0.0, 0.25, 0.5, 1.0])
def test_epoch_covers_every_image_and_batches_have_no_duplicates(frac):
    counts, _ = setup()
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    drawn = set()
    for epoch in range(3):
        batches = sampler(frac).batches(epoch)
        seen = set()
        for b in batches:
            assert len(b.images) == B and len(set(b.images.tolist())) == B
            # each slot belongs to its photo
            assert ((b.slots >= offsets[b.images]) & (b.slots < offsets[b.images] + counts[b.images])).all()
            seen |= set(b.images.tolist())
            drawn |= set(b.slots.tolist())
        assert seen == set(range(N))
    # every caption is drawn, not only the first (hard partners too)
    assert len(drawn) > 0.5 * counts.sum() and (drawn - set(offsets.tolist()))


def test_hard_pairs_fill_the_requested_share():
    counts, neighbours = setup()
    batches = sampler(0.5).batches(0)  # round(16 * 0.5) // 2 = 4 anchors, each with a neighbour
    for b in batches[:-1]:  # the last one may run out of unused anchors
        assert b.hard.sum() == 8 and b.hard[:8].all()
        for a in range(0, 8, 2):
            anchor, partner = b.images[a], b.images[a + 1]
            row = [j for j in neighbours[anchor] if j >= 0 and j not in b.images[:a + 1]]
            assert partner == row[0]  # the first available neighbour: the dual teacher's nearest
    quarter = sampler(0.25).batches(0)
    assert all(b.hard.sum() == 4 for b in quarter[:-1])


def test_frac_zero_is_a_random_permutation_in_slices():
    counts, _ = setup()
    batches = PairBatchSampler(counts, B, seed=5).batches(0)
    assert len(batches) == -(-N // B)
    order = np.concatenate([b.images for b in batches])[:N]
    assert sorted(order.tolist()) == list(range(N)) and order.tolist() != list(range(N))
    assert not any(b.hard.any() for b in batches)
    # the last batch is topped up with images already seen, to a full batch
    assert len(batches[-1].images) == B and len(set(batches[-1].images.tolist())) == B


def test_first_neighbour_is_the_partner_when_free():
    counts = np.ones(8, dtype=int)
    nearest = np.array([1, 0, 3, 2, 5, 4, 7, 6])
    neighbours = np.stack([nearest, (np.arange(8) + 2) % 8], axis=1)
    for b in PairBatchSampler(counts, 4, hard_neighbours=neighbours, hard_batch_frac=1.0, seed=2).batches(0):
        assert b.hard.all() and b.images[1] == nearest[b.images[0]] and b.images[3] == nearest[b.images[2]]


def test_ddp_ranks_split_the_batch_list_evenly():
    full = sampler().batches(0)
    per_rank = [sampler(rank=r, world_size=3).batches(0) for r in range(3)]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == -(-len(full) // 3)
    interleaved = [per_rank[i % 3][i // 3] for i in range(3 * len(per_rank[0]))]
    assert same(interleaved[: len(full)], full)
    assert same(interleaved[len(full) :], full[: len(interleaved) - len(full)])  # padding wraps around


def test_usable_as_a_dataloader_batch_sampler():
    s = sampler()
    s.set_epoch(2)
    images = list(iter(s))
    assert len(images) == len(s) and images[0] == s.batches(2)[0].images.tolist()
    loader = torch.utils.data.DataLoader(torch.arange(N), batch_sampler=s)
    assert next(iter(loader)).tolist() == images[0]


@pytest.mark.parametrize("frac", [0.0, 1.0])
def test_teacher_picked_slots_take_part_unlabelled(frac):
    counts, neighbours = setup()
    picked = np.arange(counts.sum()) % 3 == 0  # some slots are teachers' picks, not the user's captions
    s = PairBatchSampler(counts, B, hard_neighbours=neighbours, hard_batch_frac=frac, seed=0, slot_labelled=~picked)
    plain = PairBatchSampler(counts, B, hard_neighbours=neighbours, hard_batch_frac=frac, seed=0)
    for b, p in zip(s.batches(0), plain.batches(0), strict=True):
        assert np.array_equal(b.labelled, ~picked[b.slots]) and p.labelled.all()
        # labels change which pairs L_itc uses, never the batches themselves
        assert np.array_equal(b.images, p.images) and np.array_equal(b.slots, p.slots)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hard_batch_frac": 0.5},  # no neighbours
        {"hard_batch_frac": 1.5, "hard_neighbours": np.zeros((N, 2), int)},
        {"hard_batch_frac": 0.5, "hard_neighbours": np.zeros((N - 1, 2), int)},
        {"hard_batch_frac": 0.5, "hard_neighbours": np.full((N, 2), N)},
        {"rank": 2, "world_size": 2},
    ],
)
def test_bad_configuration_is_a_one_line_error(kwargs):
    with pytest.raises(McadError):
        PairBatchSampler(np.ones(N, int), B, **kwargs)


def test_batch_larger_than_the_data_a_photo_without_slot_or_no_labelled_slot_is_an_error():
    with pytest.raises(McadError):
        PairBatchSampler(np.ones(N, int), N + 1)
    with pytest.raises(McadError):
        PairBatchSampler([1, 0, 2], 2)
    with pytest.raises(McadError):
        PairBatchSampler([1, 1, 2], 2, slot_labelled=[False, False, False, False])


def test_pair_lookup_hand_case():
    nan = float("nan")
    n_texts = 5
    keys = np.array([0 * 5 + 1, 0 * 5 + 4, 2 * 5 + 0, 3 * 5 + 3])  # sorted image·5 + text
    values = np.array([10.0, 11.0, 12.0, 13.0])
    got = pair_lookup([0, 2, 3], [1, 0, 4, 3], keys, values, n_texts)
    want = torch.tensor([[10, nan, 11, nan], [nan, 12, nan, nan], [nan, nan, nan, 13]])
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.allclose(got.nan_to_num(), want.nan_to_num())
    # a key past the last one, and an empty cache
    assert torch.isnan(pair_lookup([4], [4], keys, values, n_texts)).all()
    assert torch.isnan(pair_lookup([0], [0], np.array([], dtype=np.int64), np.array([]), n_texts)).all()
