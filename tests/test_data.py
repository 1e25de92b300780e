"""Patch sampling (dinomix_core.data.random_patch_start): class-balanced organ centres."""

import pytest
import torch

from dinomix_core.data import Volume, random_patch_start

SHAPE, PATCH = (40, 40, 20), (8, 8, 4)


def _volume():
    label = torch.zeros(SHAPE, dtype=torch.uint8)
    label[2:30, 2:30, 2:18] = 6  # a large organ: 12544 voxels
    label[34:36, 34:36, 10:12] = 13  # a tiny one: 8 voxels
    return Volume("v", torch.zeros((1, *SHAPE)), label)


def _hits_tiny(balanced: bool, n: int = 400) -> float:
    v, g = _volume(), torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(n):
        start = random_patch_start(SHAPE, PATCH, g, label=v.label, foreground_prob=1.0,
                                   class_voxels=v.class_voxels() if balanced else None)
        patch = v.label[start[0]:start[0] + PATCH[0], start[1]:start[1] + PATCH[1], start[2]:start[2] + PATCH[2]]
        hits += bool((patch == 13).any())
    return hits / n


@pytest.mark.parametrize("balanced, low, high", [(True, 0.4, 0.6), (False, 0.0, 0.02)])
def test_class_balanced_centres_reach_the_tiny_organ(balanced, low, high):
    assert low <= _hits_tiny(balanced) <= high


def test_class_voxels_are_cached_and_exclude_background():
    v = _volume()
    cv = v.class_voxels()
    assert sorted(cv) == [6, 13] and len(cv[13]) == 8 and len(cv[6]) == 28 * 28 * 16
    assert v.class_voxels() is cv
    assert Volume("u", torch.zeros((1, *SHAPE))).class_voxels() == {}


def test_patch_coverage_exact_and_as_random_patch_start_draws():
    from dinomix_core.data import patch_coverage

    # one axis of 5 voxels, patch 3: starts 0, 1, 2 each 1/3; voxel i is covered by the starts in [i - 2, i]
    cov = patch_coverage((5, 3, 2), (3, 3, 2))
    assert cov[:, 0, 0].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    assert bool((cov[2] == 1.0).all()) and float(cov.sum()) == pytest.approx(3 * 3 * 2)
    # snapped to multiples of 2: starts 0, 0, 2 (v = 0, 1, 2) -> 2/3 at 0, 1/3 at 2
    assert patch_coverage((5, 1, 1), (3, 1, 1), (2, 1, 1))[:, 0, 0].tolist() == pytest.approx(
        [2 / 3, 2 / 3, 1.0, 1 / 3, 1 / 3])
    # against the sampler: the share of 2000 drawn patches holding each voxel
    g, shape, patch, align = torch.Generator().manual_seed(0), (12, 10, 6), (5, 4, 3), (2, 2, 1)
    hits = torch.zeros(shape, dtype=torch.float64)
    for _ in range(2000):
        x, y, z = random_patch_start(shape, patch, g, align=align)
        hits[x:x + 5, y:y + 4, z:z + 3] += 1
    assert torch.allclose(hits / 2000, patch_coverage(shape, patch, align), atol=0.05)
    with pytest.raises(ValueError, match="smaller than the patch"):
        patch_coverage((4, 4, 4), (5, 4, 4))
