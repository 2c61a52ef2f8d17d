"""The student's photo album: which training images it sees without captions."""

import numpy as np
import pytest

from mcad_core.data.album import album_mask


def twins(n_pairs: int, n_single: int) -> list[int]:
    out = []
    for p in range(n_pairs):
        out += [2 * p + 1, 2 * p]
    return out + [-1] * n_single


@pytest.mark.parametrize("frac", [0.0, 0.3, 0.5, 0.8])
def test_album_size_and_determinism(frac):
    t = twins(40, 20)
    mask = album_mask(t, frac, seed=3)
    assert mask.sum() == round(frac * len(t))
    assert np.array_equal(mask, album_mask(t, frac, seed=3))


def test_no_twin_pair_loses_both_captions_until_half_the_images_are_album():
    t = twins(40, 20)
    mask = album_mask(t, 0.5, seed=0)
    pairs = mask[0:80:2].astype(int) + mask[1:80:2].astype(int)
    assert (pairs == 1).all()  # exactly one scene of each pair is album: labels never contrast twins
    assert mask[80:].sum() == 50 - 40
    assert not np.array_equal(mask, album_mask(t, 0.5, seed=1))
