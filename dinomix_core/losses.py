"""Losses of DINO-Mix (arXiv 2602.07819): supervised Dice + CE, voxel-weighted Dice + CE for mixed
pseudo-labeled patches, and the DINOv3 feature knowledge distillation (FKD) loss.

Dice + CE settings (our choice, shared by :func:`supervised_loss` and :func:`masked_dice_ce` so the two
agree exactly on fully labeled voxels) are in :data:`DICE_CE_KWARGS`:

* ``include_background=False`` -- background dominates CT patches; it is left to the CE term and the
  Dice term averages over the organs only (as nnU-Net does);
* ``batch=True`` -- "batch Dice": intersections and sums are pooled over the batch before the ratio,
  which is more stable for small organs absent from some patches (nnU-Net's 3d default);
* ``smooth_nr = smooth_dr = 1e-5`` (MONAI's defaults), ``squared_pred=False``, ``reduction="mean"``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss

__all__ = [
    "DICE_CE_KWARGS", "supervised_loss", "masked_dice_ce", "region_dice_ce", "region_dice_ce_terms", "fkd_loss",
    "distdw_weights", "floor_mean_one", "DifficultyTracker",
]

#: MONAI ``DiceCELoss`` settings used everywhere in DINO-Mix (see the module docstring).
DICE_CE_KWARGS: Dict[str, Any] = dict(
    include_background=False,
    to_onehot_y=True,
    softmax=True,
    squared_pred=False,
    batch=True,
    smooth_nr=1e-5,
    smooth_dr=1e-5,
    reduction="mean",
)


def supervised_loss(lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> DiceCELoss:
    """MONAI ``DiceCELoss`` with :data:`DICE_CE_KWARGS`.

    Call it as ``loss(logits [B, C, X, Y, Z], target [B, 1, X, Y, Z])`` (MONAI wants the channel dim on
    the target); it equals ``masked_dice_ce(logits, target[:, 0])``.
    """
    return DiceCELoss(**DICE_CE_KWARGS, lambda_dice=lambda_dice, lambda_ce=lambda_ce)


def _as_bxyz(t: torch.Tensor, ref_shape: torch.Size, name: str) -> torch.Tensor:
    """``[B, X, Y, Z]`` view of ``t`` given as ``[B, X, Y, Z]`` or ``[B, 1, X, Y, Z]``."""
    if t.ndim == len(ref_shape) + 1 and t.shape[1] == 1:
        t = t[:, 0]
    if t.shape != ref_shape:
        raise ValueError(
            f"{name} must have shape {tuple(ref_shape)} (or with a channel dim of 1), got {tuple(t.shape)}."
        )
    return t


def masked_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    include_background: bool = DICE_CE_KWARGS["include_background"],
    batch: bool = DICE_CE_KWARGS["batch"],
    smooth_nr: float = DICE_CE_KWARGS["smooth_nr"],
    smooth_dr: float = DICE_CE_KWARGS["smooth_dr"],
) -> torch.Tensor:
    """Voxel-weighted Dice + cross-entropy for targets mixing ground truth and pseudo-labels.

    * CE: ``sum(w * ce) / sum(w)`` (0 when all weights are 0);
    * Dice: MONAI's soft Dice on ``softmax(logits) * w`` and ``one_hot(target) * w``, so voxels with
      weight 0 take no part and a 0/1 weight equals the loss on the selected voxels only.

    With ``weight`` ``None`` (or all ones) this equals :func:`supervised_loss` (MONAI ``DiceCELoss`` with
    :data:`DICE_CE_KWARGS`) up to float round-off. Computed in float32 whatever the logits' dtype.

    Args:
        logits: ``[B, C, X, Y, Z]`` raw scores.
        target: LongTensor ``[B, X, Y, Z]`` (or ``[B, 1, X, Y, Z]``) with values in ``[0, C)``.
        weight: float ``[B, X, Y, Z]`` (or ``[B, 1, ...]``) per-voxel weight, e.g. 1 on ground truth and the
            confidence mask on pseudo-labels; ``None`` for ones.
        lambda_dice, lambda_ce: term weights.
        include_background, batch, smooth_nr, smooth_dr: as MONAI's ``DiceLoss`` (defaults: DINO-Mix's).

    Returns:
        Scalar loss tensor.
    """
    if logits.ndim < 3:
        raise ValueError(f"logits must be [B, C, spatial...], got shape {tuple(logits.shape)}.")
    num_classes = logits.shape[1]
    spatial = logits.shape[:1] + logits.shape[2:]
    target = _as_bxyz(target, spatial, "target").long()
    logits = logits.float()
    if weight is None:
        w = torch.ones(spatial, dtype=logits.dtype, device=logits.device)
    else:
        w = _as_bxyz(weight, spatial, "weight").to(device=logits.device, dtype=logits.dtype)

    ce = F.cross_entropy(logits, target, reduction="none")
    ce = (ce * w).sum() / w.sum().clamp_min(1e-8)

    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).to(logits.dtype)
    w1 = w.unsqueeze(1)
    dice = DiceLoss(
        include_background=include_background,
        to_onehot_y=False,
        softmax=False,
        squared_pred=False,
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        reduction="mean",
    )(probs * w1, onehot * w1)
    return lambda_dice * dice + lambda_ce * ce


def region_dice_ce(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, region: torch.Tensor
) -> torch.Tensor:
    """:func:`masked_dice_ce` over one region of a batch: the voxels where ``region`` is true, at ``weight``.

    A CutMix patch holds ground truth in some voxels and pseudo-labels in others. Scaling the pseudo-label voxel
    weights by the consistency ramp ``λ(t)`` inside one :func:`masked_dice_ce` does (almost) nothing: CE is
    normalised by the weight sum and Dice is a ratio, so a common factor cancels. The ramp must multiply a
    *loss*, so DINO-Mix scores the ground-truth region and the pseudo-label region apart and adds
    ``gt + λ(t) * pseudo``. Several regions of one batch: :func:`region_dice_ce_terms` (one softmax for all).

    Args:
        logits: ``[B, C, X, Y, Z]``.
        target: ``[B, X, Y, Z]`` integer labels.
        weight: ``[B, X, Y, Z]`` per-voxel weight (1 on ground truth, the confidence mask on pseudo-labels).
        region: ``[B, X, Y, Z]`` bool, the voxels to score.

    Returns:
        Scalar loss; a region without weight gives a zero that keeps the graph.
    """
    return region_dice_ce_terms(logits, target, weight, [region])[0]


def region_dice_ce_terms(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor],
    regions: Sequence[torch.Tensor],
    class_weights: Optional[torch.Tensor] = None,
    include_background: bool = DICE_CE_KWARGS["include_background"],
    batch: bool = DICE_CE_KWARGS["batch"],
    smooth_nr: float = DICE_CE_KWARGS["smooth_nr"],
    smooth_dr: float = DICE_CE_KWARGS["smooth_dr"],
) -> torch.Tensor:
    """:func:`masked_dice_ce` (``lambda_dice = lambda_ce = 1``) of several regions of one batch, in one pass.

    Entry ``r`` equals ``masked_dice_ce(logits, target, weight * regions[r])`` up to float round-off, but the
    log-softmax, the probabilities and the target-class gathers are computed once for all regions and no one-hot
    tensor is built: with ``w`` the region's voxel weights, ``p`` the softmax and ``t`` the target,

    * CE ``= sum(w * -log p_t) / sum(w)``;
    * Dice of class ``c`` ``= 1 - (2 I_c + smooth_nr) / (G_c + P_c + smooth_dr)`` with
      ``I_c = sum_{t=c} w^2 p_c``, ``G_c = sum_{t=c} w``, ``P_c = sum w p_c`` (MONAI's ``DiceLoss`` on
      ``p * w`` and ``one_hot(t) * w``; sums pooled over the batch when ``batch``), averaged over the classes.

    The DINO-Mix step scores three regions of its mixed batch (ground truth of the labeled patches, the pasted
    ground-truth boxes, the pseudo-labels) in this one pass instead of three :func:`masked_dice_ce` calls.

    Args:
        logits: ``[B, C, X, Y, Z]`` raw scores (any float dtype; computed in float32).
        target: ``[B, X, Y, Z]`` (or ``[B, 1, ...]``) integer labels in ``[0, C)``.
        weight: ``[B, X, Y, Z]`` (or ``[B, 1, ...]``) voxel weights, or ``None`` for ones.
        regions: bool (or 0/1) masks ``[B, X, Y, Z]``, one per loss.
        class_weights: ``[C]`` per-class weights (DHC's distribution-aware weighting, :func:`distdw_weights`):
            CE becomes ``sum(w * cw_t * -log p_t) / sum(w * cw_t)`` (torch's weighted CE) and the Dice mean over
            classes a ``cw``-weighted mean. ``None``: every class 1.
        include_background, batch, smooth_nr, smooth_dr: as :func:`masked_dice_ce`.

    Returns:
        Float32 tensor ``[len(regions)]``; a region without weight gives 0 (in the graph).
    """
    if logits.ndim < 3:
        raise ValueError(f"logits must be [B, C, spatial...], got shape {tuple(logits.shape)}.")
    if len(regions) < 1:
        raise ValueError("regions must hold at least one mask.")
    num_classes = logits.shape[1]
    spatial = logits.shape[:1] + logits.shape[2:]
    target = _as_bxyz(target, spatial, "target").long()
    logp = torch.log_softmax(logits.float(), dim=1)
    w0 = None if weight is None else _as_bxyz(weight, spatial, "weight").to(device=logp.device, dtype=logp.dtype)
    w = torch.stack([
        (_as_bxyz(r, spatial, "region").to(device=logp.device, dtype=logp.dtype) * (1.0 if w0 is None else w0))
        for r in regions
    ])  # [R, B, X, Y, Z]
    b, n_r = spatial[0], w.shape[0]
    t = target.reshape(b, 1, -1)
    logp = logp.reshape(b, num_classes, -1)
    w = w.reshape(n_r, b, -1)
    probs = logp.exp()
    logp_t = logp.gather(1, t)[:, 0]  # [B, V]
    p_t = probs.gather(1, t)[:, 0]
    t = t[:, 0]

    if class_weights is None:
        ce = -(w * logp_t).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp_min(1e-8)
    else:
        cw = class_weights.to(device=logp.device, dtype=logp.dtype)
        w_ce = w * cw[t].unsqueeze(0)
        ce = -(w_ce * logp_t).sum(dim=(1, 2)) / w_ce.sum(dim=(1, 2)).clamp_min(1e-8)

    # per (region, sample, class) sums; the one-hot sums are scatters of the target's voxels
    pred_o = torch.einsum("bcv,rbv->rbc", probs, w)
    index = t.unsqueeze(0).expand(n_r, -1, -1)
    ground_o = w.new_zeros(n_r, b, num_classes).scatter_add_(2, index, w)
    inter = w.new_zeros(n_r, b, num_classes).scatter_add(2, index, w * w * p_t)
    if batch:
        pred_o, ground_o, inter = pred_o.sum(1), ground_o.sum(1), inter.sum(1)
    first = 0 if include_background else 1
    dice = 1.0 - (2.0 * inter[..., first:] + smooth_nr) / (ground_o[..., first:] + pred_o[..., first:] + smooth_dr)
    if class_weights is None:
        return dice.reshape(n_r, -1).mean(1) + ce
    cwd = cw[first:].expand_as(dice)
    return (dice * cwd).reshape(n_r, -1).sum(1) / cwd.reshape(n_r, -1).sum(1).clamp_min(1e-8) + ce


def floor_mean_one(scores: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """Class weights from non-negative scores: ``scores / max`` raised to at least ``floor``, scaled to mean 1.

    The shared last step of :func:`distdw_weights` and of DistDW x DiffDW (ours): the floor keeps every class
    (background above all) in the cross-entropy, the mean of 1 keeps the loss its size. All-zero scores give ones.
    """
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must be in [0, 1], got {floor}.")
    top = float(scores.max())
    w = scores / top if top > 0 else torch.ones_like(scores)
    w = floor + (1.0 - floor) * w
    return w / w.mean()


def distdw_weights(frequencies: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """DHC's distribution-aware class weights (DistDW, Wang & Li, MICCAI 2023) from class voxel frequencies.

    DHC: ``w_c = log(f_max / f_c) / max_c log(f_max / f_c)`` (the most frequent class gets 0, the rarest 1).
    Ours on top: the weights are raised to at least ``floor`` (DHC's 0 for the most frequent class, background,
    would drop background from the cross-entropy entirely) and scaled to mean 1, so the loss keeps its size
    (:func:`floor_mean_one`).

    Args:
        frequencies: ``[C]`` voxel fractions (e.g. ``ClassFrequencyTracker.frequencies``); zeros are allowed.
        floor: smallest weight before the scaling, in [0, 1].

    Returns:
        ``[C]`` float weights with mean 1.
    """
    if frequencies.ndim != 1 or frequencies.numel() < 2:
        raise ValueError(f"frequencies must be a [C] vector with C >= 2, got shape {tuple(frequencies.shape)}.")
    f = frequencies.float().clamp_min(1e-8)
    return floor_mean_one(torch.log(f.max() / f), floor)


class DifficultyTracker:
    """DHC's difficulty-aware class weights (DiffDW, Wang & Li, MICCAI 2023), tracked over training.

    Each :meth:`update` takes the student's hard prediction and the ground truth of the labeled voxels and
    measures every class's Dice ``d_t``. With ``delta = d_t - d_{t-1}`` and ``r = log(d_t / d_{t-1})`` (both of
    one sign), a class *learns* by ``max(delta, 0) * r`` and *unlearns* by ``min(delta, 0) * r``; both and
    ``1 - d_t`` are averaged with an EMA over ``accumulate_iters`` updates (momentum ``1 - 1 / accumulate_iters``).
    The difficulty is ``(unlearn / learn) ** (1 / alpha)`` and the score ``difficulty * EMA(1 - d)``: a class
    scores high while it is poorly segmented and not improving (DHC, Eq. 5-7; ``alpha = 5``).

    Ours (DHC's patches hold nearly every class; ours often do not): a class absent from both the prediction
    and the ground truth of a step is not updated (DHC would count it as Dice 1), and Dice is clamped to at
    least ``min_dice`` inside the log ratio so a class predicted where it is absent does not give an infinite
    step. Before any update every score is 1 (no reweighting).

    Args:
        num_classes: classes, background included (>= 2).
        accumulate_iters: EMA horizon in updates (DHC: 50), >= 1.
        alpha: the difficulty's root (DHC: 5), > 0.
        min_dice: smallest Dice in the log ratio, in (0, 1).
    """

    def __init__(self, num_classes: int, accumulate_iters: int = 50, alpha: float = 5.0, min_dice: float = 0.01):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if accumulate_iters < 1:
            raise ValueError(f"accumulate_iters must be >= 1, got {accumulate_iters}.")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}.")
        if not 0.0 < min_dice < 1.0:
            raise ValueError(f"min_dice must be in (0, 1), got {min_dice}.")
        self.num_classes, self.accumulate_iters, self.alpha, self.min_dice = num_classes, accumulate_iters, alpha, min_dice
        z = torch.zeros(num_classes, dtype=torch.float64)
        self.last_dice, self.learn, self.unlearn, self.dice_weight = z.clone(), z.clone(), z.clone(), torch.ones_like(z)
        self.seen = torch.zeros(num_classes, dtype=torch.bool)  # a class's first measurement sets last_dice only

    @property
    def scores(self) -> torch.Tensor:
        """``[C]`` float32 difficulty scores, not normalised; a class not yet stepped scores 1 (its learn and
        unlearn are 0, its EMA(1 - d) starts at 1)."""
        ratio = (self.unlearn + 1e-8) / (self.learn + 1e-8)
        return (ratio ** (1.0 / self.alpha) * self.dice_weight).float()

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Measure one step and return :attr:`scores`.

        Args:
            prediction: integer labels (the argmax of the student's logits), any shape.
            target: integer ground truth, the shape of ``prediction``.
            mask: bool, the shape of ``prediction``: the voxels that count (the ground-truth ones); ``None``: all.
        """
        if prediction.shape != target.shape or (mask is not None and mask.shape != target.shape):
            raise ValueError(f"prediction {tuple(prediction.shape)}, target {tuple(target.shape)} and mask "
                             f"{None if mask is None else tuple(mask.shape)} must have one shape.")
        n = self.num_classes
        pred, ref = prediction.reshape(-1).long(), target.reshape(-1).long()
        if mask is not None:
            keep = mask.reshape(-1).bool()
            pred, ref = pred[keep], ref[keep]
        p = torch.bincount(pred, minlength=n)[:n].double().cpu()
        g = torch.bincount(ref, minlength=n)[:n].double().cpu()
        i = torch.bincount(ref[pred == ref], minlength=n)[:n].double().cpu()
        present = (p + g) > 0
        dice = torch.where(present, 2.0 * i / (p + g).clamp_min(1.0), torch.zeros_like(p)).clamp_min(self.min_dice)
        m = 1.0 - 1.0 / self.accumulate_iters
        step = present & self.seen
        delta, r = dice - self.last_dice, torch.log(dice / self.last_dice.clamp_min(self.min_dice))
        learn, unlearn = delta.clamp_min(0.0) * r, delta.clamp_max(0.0) * r
        self.learn = torch.where(step, m * self.learn + (1 - m) * learn, self.learn)
        self.unlearn = torch.where(step, m * self.unlearn + (1 - m) * unlearn, self.unlearn)
        self.dice_weight = torch.where(step, m * self.dice_weight + (1 - m) * (1.0 - dice), self.dice_weight)
        self.last_dice = torch.where(present, dice, self.last_dice)
        self.seen |= present
        return self.scores

    def state_dict(self) -> Dict[str, Any]:
        """Serialisable state (stored in resume checkpoints)."""
        return {"num_classes": self.num_classes, "last_dice": self.last_dice.clone(), "learn": self.learn.clone(),
                "unlearn": self.unlearn.clone(), "dice_weight": self.dice_weight.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`; ``ValueError`` on another number of classes."""
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(f"state has {state['num_classes']} classes, tracker has {self.num_classes}.")
        for k in ("last_dice", "learn", "unlearn", "dice_weight"):
            setattr(self, k, torch.as_tensor(state[k], dtype=torch.float64).clone())
        self.seen = torch.as_tensor(state["seen"], dtype=torch.bool).clone()


def fkd_loss(
    student_feats: torch.Tensor, teacher_feats: torch.Tensor, mask: Optional[torch.Tensor] = None, eps: float = 1e-8
) -> torch.Tensor:
    """Feature knowledge distillation: ``1 - cos(student, teacher)`` on the teacher's grid.

    The (projected) student features are resized trilinearly (``align_corners=False``) to the spatial size
    of the frozen DINOv3 teacher features when they differ; the cosine similarity is taken along the
    channel dim and ``1 - cos`` averaged over all positions, or over ``mask`` (weighted mean) if given.
    The teacher features are detached (they are a target). Values lie in [0, 2].

    Args:
        student_feats: ``[B, C, a, b, c]`` projected student features.
        teacher_feats: ``[B, C, X', Y', Z']`` teacher features.
        mask: optional ``[B, X', Y', Z']`` (or ``[B, 1, ...]``) bool/float weights on the teacher grid.
        eps: cosine-similarity epsilon.

    Returns:
        Scalar loss (0 if the mask is all zero).

    Raises:
        ValueError: on mismatched batch or channel sizes or non-5D inputs.
    """
    if student_feats.ndim != 5 or teacher_feats.ndim != 5:
        raise ValueError(
            f"student and teacher features must be [B, C, X, Y, Z], got {tuple(student_feats.shape)} and "
            f"{tuple(teacher_feats.shape)}."
        )
    if student_feats.shape[:2] != teacher_feats.shape[:2]:
        raise ValueError(
            f"student and teacher features need equal batch and channel sizes, got {tuple(student_feats.shape[:2])} "
            f"and {tuple(teacher_feats.shape[:2])} (add a projection head to the student)."
        )
    s = student_feats.float()
    t = teacher_feats.detach().float().to(s.device)
    if s.shape[2:] != t.shape[2:]:
        s = F.interpolate(s, size=t.shape[2:], mode="trilinear", align_corners=False)
    dist = 1.0 - F.cosine_similarity(s, t, dim=1, eps=eps)  # [B, X', Y', Z']
    if mask is None:
        return dist.mean()
    m = _as_bxyz(mask, dist.shape, "mask").to(device=dist.device, dtype=dist.dtype)
    return (dist * m).sum() / m.sum().clamp_min(1e-8)
