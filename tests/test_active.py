"""Unit tests of dinomix_core.active: the minority-uncertainty score and ranking, with exact values."""

from __future__ import annotations

import math

import pytest
import torch

from dinomix_core.active import minority_uncertainty, rank_by_minority_uncertainty


def _probs(*columns):
    return torch.tensor(columns, dtype=torch.float32).T  # [C, V]


@pytest.mark.parametrize("probs, organs, expected", [
    (_probs([1.0, 0.0, 0.0]), (2,), 0.0),  # no small-organ mass at all
    (_probs([0.0, 0.0, 1.0]), (2,), 0.0),  # certain small organ: no entropy
    (_probs([0.5, 0.0, 0.5]), (2,), math.log(2) / math.log(3)),
    (_probs([1 / 3, 1 / 3, 1 / 3]), (2,), 1.0),
    # two voxels: mass 0.5 with entropy log2/log3, mass 0 elsewhere -> the weighted mean is the first's entropy
    (_probs([0.5, 0.0, 0.5], [1.0, 0.0, 0.0]), (2,), math.log(2) / math.log(3)),
    (_probs([0.5, 0.25, 0.25]), (1, 2), 1.5 * math.log(2) / math.log(3)),
])
def test_minority_uncertainty(probs, organs, expected):
    assert minority_uncertainty(probs, organs) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("probs, organs, message", [
    (torch.ones(3), (1,), r"\[C, \.\.\.\]"),
    (_probs([0.5, 0.5]), (2,), "must be foreground classes"),
    (_probs([0.5, 0.5]), (0,), "must be foreground classes"),
])
def test_minority_uncertainty_bad_input(probs, organs, message):
    with pytest.raises(ValueError, match=message):
        minority_uncertainty(probs, organs)


@pytest.mark.parametrize("scores, best", [({"a": 0.1, "b": 0.3}, "b"), ({"b": 0.3, "a": 0.3}, "a"), ({"z": 0.0}, "z")])
def test_rank(scores, best):
    assert rank_by_minority_uncertainty(scores) == best


def test_rank_nothing():
    with pytest.raises(ValueError, match="no candidate"):
        rank_by_minority_uncertainty({})
