"""Mean-teacher consistency helpers for DINO-Mix (arXiv 2602.07819).

DINO-Mix trains a student on mixed labeled/unlabeled patches against pseudo-labels from an EMA
teacher, with the unlabeled loss weight following the sigmoid ramp-up of the semi-supervised
baselines (Laine & Aila; used by UA-MT, DHC and A&D). These helpers are framework-free.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

__all__ = ["update_ema", "sigmoid_rampup", "pseudo_labels", "largest_component_mask", "DistributionAlignment"]


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, momentum: float) -> None:
    """EMA update of ``ema_model`` in place: ``ema = m * ema + (1 - m) * param``; buffers are copied.

    Buffers (e.g. batch-norm running statistics) are copied from ``model`` as in the baselines' mean
    teacher. ``model`` is not modified.

    Args:
        ema_model: the teacher, updated in place.
        model: the student.
        momentum: ``m`` in [0, 1].

    Raises:
        ValueError: on a momentum outside [0, 1] or models with different parameters/buffers.
    """
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
    ema_params = dict(ema_model.named_parameters())
    params = dict(model.named_parameters())
    if ema_params.keys() != params.keys():
        raise ValueError("ema_model and model must have the same parameters.")
    for name, p in params.items():
        e = ema_params[name]
        if e.shape != p.shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(e.shape)} in ema_model, {tuple(p.shape)} in model.")
        e.mul_(momentum).add_(p.detach().to(e.dtype), alpha=1.0 - momentum)
    ema_bufs = dict(ema_model.named_buffers())
    bufs = dict(model.named_buffers())
    if ema_bufs.keys() != bufs.keys():
        raise ValueError("ema_model and model must have the same buffers.")
    for name, b in bufs.items():
        ema_bufs[name].copy_(b)


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """Sigmoid ramp-up ``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)``.

    Returns 1.0 when ``rampup_length`` is 0 (as in the baselines' ``ramps.sigmoid_rampup``).
    """
    if rampup_length < 0:
        raise ValueError(f"rampup_length must be >= 0, got {rampup_length}.")
    if rampup_length == 0:
        return 1.0
    t = min(max(float(current), 0.0), float(rampup_length)) / float(rampup_length)
    phase = 1.0 - t
    return float(math.exp(-5.0 * phase * phase))


@torch.no_grad()
def pseudo_labels(logits: torch.Tensor, threshold: float, largest_component: bool = False,
                  align: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels and confidence mask from (teacher) logits.

    Args:
        logits: ``[B, C, ...]`` raw scores (class dim 1).
        threshold: confidence threshold in [0, 1]; voxels whose maximum softmax probability is
            ``>= threshold`` are kept.
        largest_component: also mask out every voxel of an organ outside that organ's largest connected
            component (:func:`largest_component_mask`).
        align: maps the softmax probabilities to those the labels and the confidence are read from
            (e.g. a :class:`DistributionAlignment`); ``None``: the softmax itself.

    Returns:
        ``(labels, mask, probs)``: labels LongTensor ``[B, ...]`` (argmax), mask float32 ``[B, ...]`` of
        0/1, probs float32 ``[B, C, ...]`` (softmax). All detached from the graph.
    """
    if logits.ndim < 2:
        raise ValueError(f"logits must be [B, C, ...], got shape {tuple(logits.shape)}.")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
    probs = torch.softmax(logits.detach().float(), dim=1)
    if align is not None:
        probs = align(probs)
    conf, labels = probs.max(dim=1)
    mask = conf >= threshold
    if largest_component:
        mask &= largest_component_mask(labels)
    return labels.long(), mask.float(), probs


@torch.no_grad()
def largest_component_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a voxel is background or in the largest connected component of its organ, per batch item.

    BCP (Bai et al., CVPR 2023) keeps the largest connected component of the teacher's prediction as the
    pseudo-label; every abdominal organ is one connected structure, so the smaller pieces are the teacher's
    scattered false positives. Here those pieces are left out of the loss rather than called background [ours].
    Components are 26-connected (MONAI's ``KeepLargestConnectedComponent``) within ``labels``' extent.

    Args:
        labels: ``[B, ...]`` integer label maps (0 = background).

    Returns:
        bool tensor shaped like ``labels``.
    """
    from monai.transforms import KeepLargestConnectedComponent

    if labels.ndim < 2:
        raise ValueError(f"labels must be [B, ...], got shape {tuple(labels.shape)}.")
    organs = [int(c) for c in torch.unique(labels) if c > 0]
    if not organs:
        return torch.ones_like(labels, dtype=torch.bool)
    keep = KeepLargestConnectedComponent(applied_labels=organs, is_onehot=False, independent=True)
    # the transform may write into its input: give it a copy, and plain tensors back
    kept = torch.stack([torch.as_tensor(keep(y[None].clone())).as_subclass(torch.Tensor)[0] for y in labels.long()])
    return kept.to(labels.device).long() == labels.long()


class DistributionAlignment:
    """Distribution alignment of the teacher's class probabilities before they become pseudo-labels.

    ReMixMatch (Berthelot et al., ICLR 2020) multiplies each prediction on unlabeled data by
    ``p(y) / p~(y)``, the labeled class distribution over a running average of the model's predicted one, and
    renormalises; DARS (He et al., ICCV 2021) aligns segmentation pseudo-labels with the ground truth's class
    distribution for the same reason: under class imbalance the teacher's errors on a class feed its own
    pseudo-labels. Here the ratio is capped at 1 **[ours]**: only a class the teacher predicts more often than the
    labeled volumes hold it is damped (its confident voxels shrink to the most certain ones); a class it still
    misses early in training is not inflated to its expected share, which would place it where the teacher is
    least sure.

    Args:
        target: ``[C]`` class frequencies of the labeled data (non-negative; normalised here).
        momentum: EMA momentum of the predicted distribution, in [0, 1) (ReMixMatch: the last 128 batches).

    Raises:
        ValueError: on a target that is not a ``[C]`` vector with ``C >= 2`` and a positive sum, or a momentum
            outside [0, 1).
    """

    def __init__(self, target: torch.Tensor, momentum: float = 0.99) -> None:
        target = torch.as_tensor(target, dtype=torch.float64).detach().cpu()
        if target.ndim != 1 or target.numel() < 2 or bool((target < 0).any()) or float(target.sum()) <= 0:
            raise ValueError(f"target must be [C] non-negative frequencies with C >= 2 and a positive sum, "
                             f"got {target.tolist() if target.numel() < 20 else tuple(target.shape)}.")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.target = target / target.sum()
        self.momentum = float(momentum)
        self.predicted: Optional[torch.Tensor] = None  # running mean class probability; None before any update
        self.num_updates = 0

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Fold the mean class probability of ``probs`` (``[B, C, ...]``, e.g. one step's unlabeled patches)
        into the running predicted distribution (the first update sets it)."""
        if probs.ndim < 2 or probs.shape[1] != self.target.numel():
            raise ValueError(f"probs must be [B, {self.target.numel()}, ...], got shape {tuple(probs.shape)}.")
        mean = probs.detach().double().transpose(0, 1).reshape(probs.shape[1], -1).mean(1).cpu()
        m = self.momentum if self.predicted is not None else 0.0
        self.predicted = mean if self.predicted is None else m * self.predicted + (1.0 - m) * mean
        self.num_updates += 1

    def ratio(self) -> torch.Tensor:
        """``min(1, target / predicted)`` per class (float64 ``[C]``); ones before any update."""
        if self.predicted is None:
            return torch.ones_like(self.target)
        return (self.target / self.predicted.clamp_min(1e-12)).clamp(max=1.0)

    @torch.no_grad()
    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs`` (``[B, C, ...]``) times :meth:`ratio` along the class dim, renormalised to sum to 1."""
        if probs.ndim < 2 or probs.shape[1] != self.target.numel():
            raise ValueError(f"probs must be [B, {self.target.numel()}, ...], got shape {tuple(probs.shape)}.")
        r = self.ratio().to(device=probs.device, dtype=probs.dtype).reshape(1, -1, *([1] * (probs.ndim - 2)))
        out = probs * r
        return out / out.sum(dim=1, keepdim=True).clamp_min(torch.finfo(out.dtype).tiny)

    def state_dict(self) -> Dict[str, Any]:
        """Serialisable state (stored in resume checkpoints)."""
        return {"target": self.target.clone(), "momentum": self.momentum, "num_updates": self.num_updates,
                "predicted": None if self.predicted is None else self.predicted.clone()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the running distribution written by :meth:`state_dict` (the target stays this one's).

        Raises:
            ValueError: if the stored number of classes differs.
        """
        pred = state.get("predicted")
        if pred is not None:
            pred = torch.as_tensor(pred, dtype=torch.float64).reshape(-1)
            if pred.numel() != self.target.numel():
                raise ValueError(f"state has {pred.numel()} classes, the alignment {self.target.numel()}.")
        self.predicted = pred
        self.num_updates = int(state.get("num_updates", 0))
