"""Batch composition: determinism, coverage, hard pairs at the requested share, DDP, pair logits."""

import numpy as np
import pytest
import torch

from mcad_core.errors import McadError
from mcad_core.mcad.batches import PairBatchSampler, cached_pair_mask, dense_pair_logits

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
        np.array_equal(x.images, y.images) and np.array_equal(x.captions, y.captions) and np.array_equal(x.hard, y.hard)
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
    for epoch in range(3):
        batches = sampler(frac).batches(epoch)
        seen = set()
        for b in batches:
            assert len(b.images) == B and len(set(b.images.tolist())) == B
            # each caption belongs to its image; cached marks that image's first caption
            assert ((b.captions >= offsets[b.images]) & (b.captions < offsets[b.images] + counts[b.images])).all()
            assert np.array_equal(b.cached, b.captions == offsets[b.images])
            seen |= set(b.images.tolist())
        assert seen == set(range(N))


def test_hard_pairs_fill_the_requested_share():
    counts, neighbours = setup()
    batches = sampler(0.5).batches(0)  # round(16 * 0.5) // 2 = 4 anchors, each with a neighbour
    for b in batches[:-1]:  # the last one may run out of unused anchors
        assert b.hard.sum() == 8 and b.hard[:8].all()
        assert b.cached[b.hard].all()  # the pairs' cached logits apply in both directions
        for a in range(0, 8, 2):
            anchor, partner = b.images[a], b.images[a + 1]
            row = [j for j in neighbours[anchor] if j >= 0 and j not in b.images[:a + 1]]
            assert partner == row[0]  # the first available neighbour: the twin, where the cache puts it first
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
    # captions are random, not always the cached one
    assert 0 < np.mean(np.concatenate([b.cached for b in batches])) < 1


def test_twin_comes_first_when_present():
    counts = np.ones(8, dtype=int)
    twins = np.array([1, 0, 3, 2, 5, 4, 7, 6])
    neighbours = np.stack([twins, (np.arange(8) + 2) % 8], axis=1)
    for b in PairBatchSampler(counts, 4, hard_neighbours=neighbours, hard_batch_frac=1.0, seed=2).batches(0):
        assert b.hard.all() and b.images[1] == twins[b.images[0]] and b.images[3] == twins[b.images[2]]


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
def test_album_pairs_take_part_unlabelled(frac):
    counts, neighbours = setup()
    is_album = np.arange(N) % 2 == 0  # every other image is an album photo
    s = PairBatchSampler(counts, B, hard_neighbours=neighbours, hard_batch_frac=frac, seed=0, album=is_album)
    plain = PairBatchSampler(counts, B, hard_neighbours=neighbours, hard_batch_frac=frac, seed=0)
    for b, p in zip(s.batches(0), plain.batches(0), strict=True):
        assert np.array_equal(b.labelled, ~is_album[b.images]) and p.labelled.all()
        # the album changes which pairs are labelled, never the batches themselves
        assert np.array_equal(b.images, p.images) and np.array_equal(b.captions, p.captions)


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


def test_batch_larger_than_the_data_an_image_without_caption_or_an_all_album_set_is_an_error():
    with pytest.raises(McadError):
        PairBatchSampler(np.ones(N, int), N + 1)
    with pytest.raises(McadError):
        PairBatchSampler([1, 0, 2], 2)
    with pytest.raises(McadError):
        PairBatchSampler([1, 1, 2], 2, album=[True, True, True])


def test_dense_pair_logits_hand_case():
    nan = float("nan")
    neighbours = [[1, -1], [2, 0], [-1, -1], [0, -1]]
    m_fwd = [[10, 99], [12, 11], [99, 99], [13, 99]]  # m(i, c*_neighbour); 99 = padding, never read
    m_bwd = [[20, 99], [22, 21], [99, 99], [23, 99]]  # m(neighbour, c*_i)
    m_own = [0.1, 1.1, 2.1, 3.1]
    got = dense_pair_logits([0, 1, 2, 3], [True, True, True, False], neighbours, m_fwd, m_bwd, m_own)
    want = torch.tensor(
        [
            [0.1, 10, nan, nan],  # (0, c*_1): 1 in N_0 -> 10 (N_1's 21 holds the same pair: row first)
            [11, 1.1, 12, nan],  # (1, c*_0): 0 in N_1 -> 11; (1, c*_2): 2 in N_1 -> 12
            [nan, 22, 2.1, nan],  # (2, c*_1): only via N_1 (2 is 1's neighbour) -> m_bwd[1][0]
            [13, nan, nan, nan],  # column 3 is not a cached caption: NaN throughout
        ]
    )
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.allclose(got.nan_to_num(), want.nan_to_num())
    sub = dense_pair_logits(np.array([2, 1]), np.array([True, True]), neighbours, m_fwd, m_bwd, m_own)
    assert torch.allclose(sub, torch.tensor([[2.1, 22.0], [12.0, 1.1]]))
    with pytest.raises(McadError):
        dense_pair_logits([0], [True], neighbours, m_fwd, m_bwd, m_own[:3])


def test_cached_pair_mask_is_where_pair_logits_exist():
    counts, neighbours = setup()
    b = sampler(1.0).batches(0)[0]
    n, k = neighbours.shape
    logits = dense_pair_logits(b.images, b.cached, neighbours, np.zeros((n, k)), np.zeros((n, k)), np.zeros(n))
    mask = cached_pair_mask(b.images, b.cached, neighbours)
    assert torch.equal(mask, ~torch.isnan(logits)) and mask.diagonal()[torch.from_numpy(b.cached)].all()
