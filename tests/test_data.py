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
