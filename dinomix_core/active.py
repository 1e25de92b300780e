"""Active learning: pick the unlabeled volume whose small organs the current model is least sure about.

DINO-Mix targets minority organs; MONAI Label's stock strategies (random, first) ignore them. Our score for a
volume is the model's mean predictive entropy weighted by the probability mass it puts on the small organs
(:data:`~dinomix_core.config.SMALL_ORGANS`): high when the model sees something adrenal-like but is unsure.
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import torch

from .config import SMALL_ORGANS

__all__ = ["minority_uncertainty"]


def minority_uncertainty(probs: torch.Tensor, organs: Sequence[int] = SMALL_ORGANS, eps: float = 1e-8) -> float:
    """Score of one volume from softmax probabilities ``probs`` [C, ...].

    ``score = sum_v m(v) H(v) / (sum_v m(v) + eps)``, with ``H`` the normalised entropy (in [0, 1]) and ``m`` the
    probability mass on ``organs``. Volumes with no small-organ mass at all score 0.
    """
    if probs.ndim < 2:
        raise ValueError("probs must be [C, ...] class probabilities.")
    c = probs.shape[0]
    if any(o <= 0 or o >= c for o in organs):
        raise ValueError(f"organ ids {tuple(organs)} must be foreground classes of the {c} channels.")
    p = probs.float().clamp_min(eps)
    entropy = -(p * p.log()).sum(0) / math.log(c)
    mass = probs[list(organs)].float().sum(0)
    return float((mass * entropy).sum() / (mass.sum() + eps))


def rank_by_minority_uncertainty(scores: Dict[str, float]) -> str:
    """The id with the highest score (ties broken by id for determinism)."""
    if not scores:
        raise ValueError("no candidate volumes to rank.")
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
