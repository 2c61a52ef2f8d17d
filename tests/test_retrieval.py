"""Retrieval metrics against hand-worked cases and a brute-force reference."""

import numpy as np
import pytest
import torch

from mcad_core.errors import McadError
from mcad_core.evaluation.retrieval import retrieval_metrics, topk_images, twin_accuracy, twin_accuracy_from_scores

# Hand case (integer vectors: every score is exact, so the ties are real ties).
# Images I0..I3; I3 has no caption (a t2i distractor, no i2t query); I1 has three captions.
IMAGES = np.array([[1, 0], [0, 1], [1, 1], [2, 0]], dtype=np.float32)
CAPTIONS = np.array([[1, 0], [0, 1], [-1, 2], [1, -1], [1, 1]], dtype=np.float32)
OWNER = np.array([0, 1, 1, 1, 2])
# Scores (rows captions c0..c4, columns I0..I3) and the rank of the right image, counting every
# other image scoring >= it:  c0: 1 0 1 2 -> 2 (I2 ties, I3 above)   c1: 0 1 1 0 -> 1 (I2 ties)
#   c2: -1 2 1 -2 -> 0   c3: 1 -1 0 2 -> 3   c4: 1 1 2 2 -> 1 (I3 ties)
# i2t, best own caption vs other images' captions:  I0: best c0=1, c3=1 and c4=1 tie -> 2
#   I1: best c2=2, nothing else >= 2 -> 0 (c3 alone would rank last)   I2: c4=2 -> 0
HAND = {
    "i2t_r1": 200 / 3, "i2t_r2": 200 / 3, "i2t_r3": 100.0,
    "t2i_r1": 20.0, "t2i_r2": 60.0, "t2i_r3": 80.0,
}


def reference_ranks(image, text, owner):
    """Brute force over the full score matrix: ties count against the query."""
    s = text.astype(np.float64) @ image.astype(np.float64).T
    t2i = [int(np.sum(np.delete(s[c], owner[c]) >= s[c, owner[c]])) for c in range(len(text))]
    i2t = []
    for i in range(len(image)):
        mine = owner == i
        if mine.any():
            i2t.append(int(np.sum(s[~mine, i] >= s[mine, i].max())))
    return np.array(i2t), np.array(t2i)


def reference_metrics(image, text, owner, ks):
    i2t, t2i = reference_ranks(image, text, owner)
    out = {f"i2t_r{k}": 100 * np.mean(i2t < k) for k in ks} | {f"t2i_r{k}": 100 * np.mean(t2i < k) for k in ks}
    return out | {"rsum": sum(out.values())}


def random_case(rng, n_images, dim, max_captions, integer=False):
    counts = rng.integers(0, max_captions + 1, n_images)
    counts[0] = 1  # at least one caption overall
    owner = np.repeat(np.arange(n_images), counts)
    if integer:  # small integer vectors: many exact ties
        image = rng.integers(-2, 3, (n_images, dim)).astype(np.float32)
        text = rng.integers(-2, 3, (len(owner), dim)).astype(np.float32)
    else:
        image = rng.standard_normal((n_images, dim)).astype(np.float32)
        text = image[owner] + 1.5 * rng.standard_normal((len(owner), dim)).astype(np.float32)
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
    return image, text, owner


def test_hand_case_with_ties_and_caption_counts():
    got = retrieval_metrics(IMAGES, CAPTIONS, OWNER, ks=(1, 2, 3))
    assert got == pytest.approx(HAND | {"rsum": sum(HAND.values())})
    assert list(got) == ["i2t_r1", "i2t_r2", "i2t_r3", "t2i_r1", "t2i_r2", "t2i_r3", "rsum"]


def test_any_caption_counts_for_image_to_text():
    # I1 with only c1: its best score 1 ties c0... no, ties c4 (I2's) -> rank 1, a miss at R@1.
    keep = [0, 1, 4]
    got = retrieval_metrics(IMAGES, CAPTIONS[keep], OWNER[keep], ks=(1,))
    assert got["i2t_r1"] == pytest.approx(100 / 3)  # only I2 hits; with c2 as well, I1 hits


def test_ties_count_against_the_query():
    image = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # I0 == I1
    text = np.array([[1.0, 0.0]], dtype=np.float32)
    got = retrieval_metrics(image, text, [0], ks=(1, 2))
    assert got["t2i_r1"] == 0.0 and got["t2i_r2"] == 100.0
    # A constant model earns nothing at K < gallery size, in both directions.
    flat = retrieval_metrics(np.ones((20, 4)), np.ones((60, 4)), np.repeat(np.arange(20), 3), ks=(1, 10))
    assert flat["i2t_r1"] == flat["t2i_r1"] == flat["i2t_r10"] == flat["t2i_r10"] == 0.0


def test_integer_ties_match_reference_for_every_chunk_size():
    rng = np.random.default_rng(1)
    image, text, owner = random_case(rng, 40, 3, 4, integer=True)
    want = reference_metrics(image, text, owner, (1, 5, 10))
    for chunk in (1, 3, 16, 10**6):
        assert retrieval_metrics(image, text, owner, chunk_size=chunk) == pytest.approx(want, abs=1e-9)


def test_large_random_case_matches_vectorised_reference():
    rng = np.random.default_rng(0)
    image, text, owner = random_case(rng, 3000, 24, 9)  # ~13,500 captions, some images with none
    got = retrieval_metrics(image, text, owner, chunk_size=1000)
    # Brute force on the full matrix, scores rounded to float32 as the module documents.
    s = np.concatenate([(text[i : i + 2000].astype(np.float64) @ image.T.astype(np.float64)).astype(np.float32)
                        for i in range(0, len(text), 2000)])
    own = s[np.arange(len(text)), owner]
    t2i = (s >= own[:, None]).sum(1) - 1  # the right image itself is counted once
    best = np.full(len(image), -np.inf, dtype=np.float32)
    np.maximum.at(best, owner, own)
    mine = owner[:, None] == np.arange(len(image))[None, :]
    i2t = ((s >= best[None, :]) & ~mine).sum(0)[np.unique(owner)]
    want = {f"i2t_r{k}": 100 * np.mean(i2t < k) for k in (1, 5, 10)}
    want |= {f"t2i_r{k}": 100 * np.mean(t2i < k) for k in (1, 5, 10)}
    want["rsum"] = sum(want.values())
    assert got == pytest.approx(want, abs=1e-9)
    assert 5 < got["t2i_r1"] < 95  # a non-trivial case


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(2)
    image, text, owner = random_case(rng, 30, 8, 3)
    a = retrieval_metrics(image, text, owner)
    b = retrieval_metrics(torch.from_numpy(image), torch.from_numpy(text).requires_grad_(), torch.from_numpy(owner))
    assert a == b


@pytest.mark.parametrize(
    "image, text, owner",
    [
        (np.ones((3, 2)), np.ones((2, 3)), [0, 1]),  # dims differ
        (np.ones((3, 2)), np.ones((2, 2)), [0, 3]),  # owner out of range
        (np.ones((3, 2)), np.ones((2, 2)), [0]),  # one id per caption
        (np.ones((3, 2)), np.ones((2, 2)), [0.0, 1.0]),  # ids must be integers
        (np.ones((0, 2)), np.ones((2, 2)), [0, 1]),  # empty gallery
    ],
)
def test_bad_inputs_are_one_line_errors(image, text, owner):
    with pytest.raises(McadError):
        retrieval_metrics(image, text, owner)


def test_topk_images_matches_stable_sort_with_ties():
    rng = np.random.default_rng(3)
    image, text, _ = random_case(rng, 37, 3, 2, integer=True)
    want = np.argsort(-(text.astype(np.float64) @ image.T), axis=1, kind="stable")[:, :5]
    for chunk in (1, 4, 10**6):
        got = topk_images(text, image, 5, chunk_size=chunk)
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), want)
    with pytest.raises(McadError):
        topk_images(text, image, 38)


def test_twin_accuracy_hand_case():
    image = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    twin_of = [1, 0, -1]  # I0 and I1 are twins, I2 has none
    text = np.array([[2, 1], [1, 1], [1, 0], [0, 3], [5, 5]], dtype=np.float32)
    owner = [0, 0, 1, 1, 2]
    # own vs twin: c0 2>1 right, c1 1=1 half, c2 0<1 wrong, c3 3>0 right; c4 has no twin.
    assert twin_accuracy(image, text, owner, twin_of) == pytest.approx(62.5)
    assert twin_accuracy(image, text, owner, twin_of, chunk_size=1) == pytest.approx(62.5)
    assert twin_accuracy_from_scores([2.0, 1.0, 0.0, 3.0], torch.tensor([1.0, 1.0, 1.0, 0.0])) == 62.5
    with pytest.raises(McadError):
        twin_accuracy(image, text, owner, [-1, -1, -1])  # no twins at all
    with pytest.raises(McadError):
        twin_accuracy(image, text, owner, [0, -1, -1])  # an image is not its own twin
    with pytest.raises(McadError):
        twin_accuracy_from_scores([1.0, 2.0], [1.0])


@pytest.mark.parametrize("ks", [(), [0], [1, -5], (5, 0, 10)])
def test_ks_must_be_positive(ks):
    image, text, owner = random_case(np.random.default_rng(4), 6, 4, 2)
    with pytest.raises(McadError, match=r"^ks must be positive integers, got \["):
        retrieval_metrics(image, text, owner, ks=ks)


@pytest.mark.parametrize("chunk", [0, -3])
def test_chunk_size_must_be_positive_everywhere(chunk):
    image, text, owner = random_case(np.random.default_rng(5), 6, 4, 2)
    twin_of = [1, 0, -1, -1, -1, -1]
    calls = [lambda: retrieval_metrics(image, text, owner, chunk_size=chunk),
             lambda: twin_accuracy(image, text, owner, twin_of, chunk_size=chunk),
             lambda: topk_images(text, image, 2, chunk_size=chunk)]
    for call in calls:
        with pytest.raises(McadError, match=f"^chunk_size must be >= 1, got {chunk}$"):
            call()
