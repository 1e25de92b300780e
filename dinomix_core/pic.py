"""PIC: progressive imbalance-aware CutMix (DINO-Mix, arXiv 2602.07819).

DINO-Mix mixes labeled and unlabeled patches in both directions with CutMix boxes placed around organ
voxels. Which organ a box is centred on follows a curriculum: early in training the rare ("tail")
organs are sampled preferentially, with probability inversely proportional to their voxel frequency,
and the distribution moves progressively to uniform over the foreground organs.

The pieces, from low to high level:

* :class:`ClassFrequencyTracker` -- EMA of the voxel fraction of each class.
* :func:`schedule_progress` and :func:`curriculum_distribution` -- the class-sampling curriculum.
* :func:`sample_box` -- a box around a voxel of a sampled class, aligned to a feature grid if asked.
* :func:`box_mask`, :func:`cutmix` -- pasting one box from a source into a copy of a destination.
* :func:`mix_pair` / :func:`mix_batch` -- the bidirectional labeled <-> unlabeled mixing of images,
  targets and per-voxel loss weights.
* :class:`PICMixer` -- all of the above behind one call for the training loop: :meth:`PICMixer.mix` returns
  the mixed images, targets, loss weights, ground-truth masks and (cached) teacher features as a
  :class:`PICBatch`.

Conventions: spatial dims are the trailing three (x, y, z) in MONAI order; labels are integer maps
without channel dim. The exact curriculum formula, the frequency floor and the box placement rules are
our choices (the paper's text and code were not available); they are documented on each function.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .teacher import mix_features

__all__ = [
    "ClassFrequencyTracker",
    "schedule_progress",
    "curriculum_distribution",
    "Box",
    "box_size_from_fraction",
    "sample_box",
    "box_mask",
    "cutmix",
    "MixedPair",
    "mix_pair",
    "mix_batch",
    "PICMixer",
    "PICBatch",
    "SCHEDULES",
    "FREQUENCY_FLOOR",
]

#: Names accepted by :func:`schedule_progress`.
SCHEDULES: Tuple[str, ...] = ("linear", "cosine", "step")
#: Frequencies below this are raised to it before inversion, so a class never seen yet gets a large but
#: finite tail weight (it is favoured whenever it appears in a patch).
FREQUENCY_FLOOR: float = 1e-6

Int3 = Tuple[int, int, int]


# --------------------------------------------------------------------------------------------------
# class frequencies
# --------------------------------------------------------------------------------------------------
class ClassFrequencyTracker:
    """Exponential moving average of the voxel fraction of every class.

    ``f <- m * f + (1 - m) * fractions`` where ``fractions`` are the per-class voxel fractions of the
    labels passed to :meth:`update`. The first update initialises ``f`` directly. Before any update the
    frequencies are uniform. Frequencies are kept as float64 on the CPU and always sum to 1.

    Args:
        num_classes: number of classes including background (label ids ``0..num_classes-1``).
        momentum: EMA momentum ``m`` in [0, 1).

    Raises:
        ValueError: on ``num_classes < 2`` or a momentum outside [0, 1).
    """

    def __init__(self, num_classes: int, momentum: float = 0.99) -> None:
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}.")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self._freq = torch.full((self.num_classes,), 1.0 / self.num_classes, dtype=torch.float64)
        self.num_updates = 0

    @property
    def frequencies(self) -> torch.Tensor:
        """Current class frequencies, float64 tensor ``[num_classes]`` summing to 1 (a copy)."""
        return self._freq.clone()

    @torch.no_grad()
    def update(self, labels: torch.Tensor, weight_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fold the class fractions of ``labels`` into the EMA.

        Args:
            labels: integer label map of any shape with values in ``[0, num_classes)``.
            weight_mask: optional mask broadcastable to ``labels`` (bool, or float weights). Only voxels
                where it is true (non-zero) count; float values weight the counts (a 0/1 confidence mask
                therefore counts confident voxels only).

        Returns:
            The updated frequencies (a copy). Labels with no counted voxel leave the state unchanged.

        Raises:
            ValueError: on a floating-point label map or values outside ``[0, num_classes)``.
        """
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError("labels must be an integer tensor.")
        labels = labels.long()
        if labels.numel() == 0:
            return self.frequencies
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"label values must be in [0, {self.num_classes}), got range [{lo}, {hi}].")
        n = self.num_classes
        if weight_mask is None:
            counts = torch.bincount(labels.reshape(-1), minlength=n)
        else:
            w = torch.as_tensor(weight_mask, device=labels.device)
            w = torch.broadcast_to(w, labels.shape).reshape(-1)
            if w.dtype == torch.bool:
                # excluded voxels go to bins n..2n-1 (integer counting, no boolean indexing)
                counts = torch.bincount(labels.reshape(-1) + n * (~w).long(), minlength=2 * n)[:n]
            else:
                counts = torch.bincount(labels.reshape(-1), weights=w.to(torch.float64), minlength=n)
        counts = counts.to("cpu", torch.float64)
        total = counts.sum()
        if total <= 0:
            return self.frequencies
        fractions = counts / total
        if self.num_updates == 0:
            self._freq = fractions
        else:
            self._freq = self.momentum * self._freq + (1.0 - self.momentum) * fractions
            self._freq = self._freq / self._freq.sum()  # guard against round-off drift
        self.num_updates += 1
        return self.frequencies

    def state_dict(self) -> Dict[str, Any]:
        """Serialisable state (stored in checkpoints)."""
        return {
            "num_classes": self.num_classes,
            "momentum": self.momentum,
            "frequencies": self._freq.clone(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`.

        Raises:
            ValueError: if the stored number of classes differs.
        """
        freq = torch.as_tensor(state["frequencies"], dtype=torch.float64).detach().cpu().reshape(-1)
        n = int(state.get("num_classes", freq.numel()))
        if n != self.num_classes or freq.numel() != self.num_classes:
            raise ValueError(f"state has {n} classes, tracker has {self.num_classes}.")
        self._freq = freq.clone()
        self.momentum = float(state.get("momentum", self.momentum))
        self.num_updates = int(state.get("num_updates", 1))

    def __repr__(self) -> str:
        return (
            f"ClassFrequencyTracker(num_classes={self.num_classes}, momentum={self.momentum}, "
            f"updates={self.num_updates})"
        )


# --------------------------------------------------------------------------------------------------
# curriculum
# --------------------------------------------------------------------------------------------------
def schedule_progress(progress: float, schedule: str = "linear", schedule_fraction: float = 0.8) -> float:
    """Curriculum position ``s`` in [0, 1] for a training progress in [0, 1].

    With ``t' = clip(progress / schedule_fraction, 0, 1)``:

    * ``"linear"``: ``s = t'``;
    * ``"cosine"``: ``s = 0.5 - 0.5 cos(pi t')``;
    * ``"step"``: ``s = 0`` while ``progress < schedule_fraction``, then 1.

    All three reach 1 at ``progress == schedule_fraction`` and stay there.

    Raises:
        ValueError: on an unknown schedule or ``schedule_fraction`` outside (0, 1].
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if not 0.0 < schedule_fraction <= 1.0:
        raise ValueError(f"schedule_fraction must be in (0, 1], got {schedule_fraction}.")
    progress = float(progress)
    if schedule == "step":
        return 1.0 if progress >= schedule_fraction else 0.0
    t = min(max(progress / schedule_fraction, 0.0), 1.0)
    if schedule == "linear":
        return t
    return 0.5 - 0.5 * math.cos(math.pi * t)


def curriculum_distribution(
    frequencies: torch.Tensor,
    progress: float,
    start_power: float = 1.0,
    schedule: str = "linear",
    schedule_fraction: float = 0.8,
    eps: float = FREQUENCY_FLOOR,
) -> torch.Tensor:
    """PIC class-sampling distribution over the foreground classes ``1..C-1``.

    ``p = (1 - s) * q_tail + s * uniform`` with ``s = schedule_progress(progress, ...)`` and
    ``q_tail_c ∝ max(f_c, eps) ** (-start_power)``: rare classes first, uniform at the end of the
    schedule. ``start_power = 0`` gives uniform sampling throughout. Frequencies of unseen classes are
    raised to ``eps`` so they get a large finite weight (favoured whenever present; :func:`sample_box`
    only considers classes present in a patch). Background frequency (index 0) is ignored.

    Args:
        frequencies: tensor ``[C]`` of class frequencies including background (any positive scale).
        progress: training progress in [0, 1].
        start_power: exponent of the inverse-frequency weighting at the start (>= 0).
        schedule, schedule_fraction: see :func:`schedule_progress`.
        eps: frequency floor (> 0).

    Returns:
        float64 tensor ``[C-1]`` summing to 1; entry ``c-1`` is the probability of class ``c``.

    Raises:
        ValueError: on fewer than 2 classes, negative frequencies, ``start_power < 0`` or ``eps <= 0``.
    """
    f = torch.as_tensor(frequencies, dtype=torch.float64).detach().cpu().reshape(-1)
    if f.numel() < 2:
        raise ValueError("frequencies must have at least 2 entries (background + one class).")
    if bool((f < 0).any()) or not bool(torch.isfinite(f).all()):
        raise ValueError("frequencies must be finite and non-negative.")
    if start_power < 0:
        raise ValueError(f"start_power must be >= 0, got {start_power}.")
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    s = schedule_progress(progress, schedule, schedule_fraction)
    fg = f[1:].clamp_min(eps)
    q = fg.pow(-float(start_power))
    q = q / q.sum()
    uniform = torch.full_like(q, 1.0 / q.numel())
    return (1.0 - s) * q + s * uniform


# --------------------------------------------------------------------------------------------------
# boxes
# --------------------------------------------------------------------------------------------------
class Box(NamedTuple):
    """A CutMix box: ``start`` and ``size`` in voxels (x, y, z) and the class it was centred on (0: none)."""

    start: Int3
    size: Int3
    label: int


def _int3(v: Sequence[int], name: str) -> Int3:
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 entries (x, y, z), got {tuple(v)}.")
    return t  # type: ignore[return-value]


def box_size_from_fraction(
    patch_size: Sequence[int], fraction: Sequence[float], align: Sequence[int] = (1, 1, 1)
) -> Int3:
    """Box size ``round(fraction * patch)`` per axis, rounded down to a multiple of ``align`` (at least ``align``).

    Raises:
        ValueError: on fractions outside (0, 1] or an aligned size larger than the patch.
    """
    patch, al = _int3(patch_size, "patch_size"), _int3(align, "align")
    fr = tuple(float(x) for x in fraction)
    if len(fr) != 3 or any(not 0.0 < x <= 1.0 for x in fr):
        raise ValueError(f"fraction must be three values in (0, 1], got {tuple(fraction)}.")
    if any(a < 1 for a in al):
        raise ValueError(f"align must be positive, got {al}.")
    out = []
    for p, x, a in zip(patch, fr, al):
        b = max(a, (int(round(p * x)) // a) * a)
        if b > p:
            raise ValueError(f"box of {b} voxels (aligned to {a}) does not fit a patch of {p}.")
        out.append(b)
    return tuple(out)  # type: ignore[return-value]


def _aligned_start(v: int, size: int, extent: int, a: int) -> int:
    """Aligned start nearest below the centred start ``v - size // 2`` such that the box covers ``v``."""
    hi = min(v, extent - size)  # start <= v and box inside [0, extent)
    lo = max(v - size + 1, 0)  # start + size > v
    hi_al = (hi // a) * a
    lo_al = -((-lo) // a) * a
    start = ((v - size // 2) // a) * a
    return min(max(start, lo_al), hi_al)


def sample_box(
    label: torch.Tensor,
    class_probs: torch.Tensor,
    box_size: Sequence[int],
    generator: Optional[torch.Generator] = None,
    align: Sequence[int] = (1, 1, 1),
) -> Box:
    """Sample a CutMix box centred on a voxel of a curriculum-sampled class.

    1. The class probabilities are restricted to the foreground classes present in ``label`` and
       renormalised (uniform over the present classes if they all have probability 0); a class is drawn.
    2. A voxel of that class is drawn uniformly.
    3. The box of ``box_size`` is centred on it, its start snapped down to a multiple of ``align`` and
       clamped so that it lies inside the volume and still contains the voxel.

    With ``align`` the starts and sizes are multiples of ``align`` so boxes line up with a teacher feature
    grid (one token = ``align`` voxels). Only the aligned region ``[0, floor(shape / align) * align)`` is
    used, so every box can be placed; sizes are rounded down to multiples of ``align`` (at least ``align``).
    If no foreground class is present, a uniformly random aligned box is returned with class 0.

    Args:
        label: integer map ``[X, Y, Z]`` (ground truth, or a pseudo-label with unconfident voxels set to 0).
        class_probs: tensor ``[C-1]``, probability of classes ``1..C-1`` (:func:`curriculum_distribution`).
        box_size: requested box size (x, y, z).
        generator: torch random generator (CPU or the device of ``label``); ``None`` uses the global RNG.
        align: alignment (x, y, z) of starts and sizes.

    Returns:
        :class:`Box` ``(start, size, label)``, unpackable as ``start, size, cls = sample_box(...)``.

    Raises:
        ValueError: on a non-3D or float label, label values above ``len(class_probs)``, negative
            probabilities, or a box that does not fit the (aligned) volume.
    """
    if label.ndim != 3:
        raise ValueError(f"label must be [X, Y, Z], got shape {tuple(label.shape)}.")
    if label.is_floating_point():
        raise ValueError("label must be an integer tensor.")
    bs, al = _int3(box_size, "box_size"), _int3(align, "align")
    if any(a < 1 for a in al) or any(b < 1 for b in bs):
        raise ValueError(f"box_size and align must be positive, got {bs} and {al}.")
    size = tuple(max(a, (b // a) * a) for b, a in zip(bs, al))
    extent = tuple((n // a) * a for n, a in zip(label.shape, al))
    if any(s > e for s, e in zip(size, extent)):
        raise ValueError(f"box {size} (aligned to {al}) does not fit the label of shape {tuple(label.shape)}.")
    probs = torch.as_tensor(class_probs, dtype=torch.float64).detach().cpu().reshape(-1)
    if bool((probs < 0).any()):
        raise ValueError("class_probs must be non-negative.")
    dev = generator.device if generator is not None else torch.device("cpu")
    lab = label[: extent[0], : extent[1], : extent[2]].to(dev)

    if lab.numel() and int(lab.min()) < 0:
        raise ValueError("label values must be non-negative.")
    present = torch.nonzero(torch.bincount(lab.reshape(-1).long())).reshape(-1).cpu()
    present = present[present > 0]
    if present.numel() and int(present.max()) > probs.numel():
        raise ValueError(f"label contains class {int(present.max())} but class_probs covers 1..{probs.numel()}.")

    if present.numel() == 0:
        start = tuple(
            int(torch.randint(0, (e - s) // a + 1, (1,), generator=generator, device=dev).item()) * a
            for e, s, a in zip(extent, size, al)
        )
        return Box(start, size, 0)  # type: ignore[arg-type]

    p = probs[present - 1]
    if float(p.sum()) <= 0:
        p = torch.ones_like(p)
    p = (p / p.sum()).to(dev)
    cls = int(present[int(torch.multinomial(p, 1, generator=generator).item())])
    coords = (lab == cls).nonzero()
    v = coords[int(torch.randint(0, coords.shape[0], (1,), generator=generator, device=dev).item())].tolist()
    start = tuple(_aligned_start(int(vi), s, e, a) for vi, s, e, a in zip(v, size, extent, al))
    return Box(start, size, cls)  # type: ignore[arg-type]


def box_mask(
    shape_xyz: Sequence[int], start: Sequence[int], size: Sequence[int], device: Optional[torch.device] = None
) -> torch.Tensor:
    """Bool tensor of ``shape_xyz`` that is true inside the box ``[start, start + size)``.

    Raises:
        ValueError: if the box does not lie inside the shape.
    """
    shp, st, sz = _int3(shape_xyz, "shape_xyz"), _int3(start, "start"), _int3(size, "size")
    _check_box(shp, st, sz)
    m = torch.zeros(shp, dtype=torch.bool, device=device)
    m[st[0] : st[0] + sz[0], st[1] : st[1] + sz[1], st[2] : st[2] + sz[2]] = True
    return m


def _check_box(shape: Int3, start: Int3, size: Int3) -> None:
    if any(s < 0 for s in start) or any(s < 1 for s in size) or any(a + b > n for a, b, n in zip(start, size, shape)):
        raise ValueError(f"box start={start} size={size} does not lie inside the volume {shape}.")


def cutmix(dst: torch.Tensor, src: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Copy of ``dst`` with the box ``[start, start + size)`` of ``src`` pasted at the same place.

    Works over the trailing three (spatial) dims, so images ``[..., C, X, Y, Z]``, labels ``[X, Y, Z]`` and
    weights are mixed alike; neither input is modified. Differentiable with respect to both inputs.

    Raises:
        ValueError: if shapes differ, have fewer than 3 dims, or the box lies outside the volume.
    """
    if dst.shape != src.shape:
        raise ValueError(f"dst and src must have the same shape, got {tuple(dst.shape)} and {tuple(src.shape)}.")
    if dst.ndim < 3:
        raise ValueError("cutmix needs at least 3 (spatial) dims.")
    st, sz = _int3(start, "start"), _int3(size, "size")
    _check_box(tuple(dst.shape[-3:]), st, sz)  # type: ignore[arg-type]
    region = (..., slice(st[0], st[0] + sz[0]), slice(st[1], st[1] + sz[1]), slice(st[2], st[2] + sz[2]))
    out = dst.clone()
    out[region] = src[region].to(dst.dtype)
    return out


# --------------------------------------------------------------------------------------------------
# bidirectional mixing
# --------------------------------------------------------------------------------------------------
class MixedPair(NamedTuple):
    """Result of :func:`mix_pair` / :func:`mix_batch`.

    ``*_u``: the unlabeled patch with the labeled box (around a ground-truth organ) pasted in.
    ``*_l``: the labeled patch with the unlabeled box (around a pseudo-labeled organ) pasted in.
    ``target`` holds ground truth where it comes from the labeled patch and pseudo-labels elsewhere;
    ``weight`` the per-voxel loss weight (1 / ``w_l`` on ground truth, the confidence mask on pseudo-labels).
    """

    image_u: torch.Tensor
    target_u: torch.Tensor
    weight_u: torch.Tensor
    image_l: torch.Tensor
    target_l: torch.Tensor
    weight_l: torch.Tensor


def mix_pair(
    x_l: torch.Tensor, y_l: torch.Tensor, w_l: Optional[torch.Tensor],
    x_u: torch.Tensor, y_u: torch.Tensor, w_u: torch.Tensor, box_l: Sequence[Any], box_u: Sequence[Any],
) -> MixedPair:
    """Bidirectional PIC CutMix of one labeled and one unlabeled patch (same spatial size).

    * ``box_l`` (sampled around a minority organ of the ground truth ``y_l``) is cut from the labeled
      patch and pasted, at the same position, into the unlabeled patch -> ``image_u/target_u/weight_u``;
    * ``box_u`` (sampled around a class of the pseudo-label ``y_u``) is cut from the unlabeled patch and
      pasted into the labeled patch -> ``image_l/target_l/weight_l``.

    Images, targets and weights are mixed with the same boxes. Any leading dims are allowed as long as
    the pairs match (e.g. images ``[C, X, Y, Z]`` and labels/weights ``[X, Y, Z]``; a leading batch dim
    mixes every sample with the same box). Inputs are not modified.

    Args:
        x_l, y_l, w_l: labeled image, ground truth (integer) and loss weight (``None``: ones).
        x_u, y_u, w_u: unlabeled image, pseudo-label (integer) and confidence weight/mask.
        box_l, box_u: :class:`Box` or ``(start, size[, label])`` tuples.

    Returns:
        :class:`MixedPair`; weights are float tensors in the dtype of ``w_u`` (float32 if it is bool).
    """
    if x_l.shape != x_u.shape or y_l.shape != y_u.shape:
        raise ValueError(
            f"labeled and unlabeled patches must match: images {tuple(x_l.shape)} vs {tuple(x_u.shape)}, "
            f"labels {tuple(y_l.shape)} vs {tuple(y_u.shape)}."
        )
    wdtype = w_u.dtype if w_u.is_floating_point() else torch.float32
    w_u = w_u.to(wdtype)
    w_l = torch.ones(y_l.shape, dtype=wdtype, device=y_l.device) if w_l is None else w_l.to(wdtype)
    if w_l.shape != y_l.shape or w_u.shape != y_u.shape:
        raise ValueError("weights must have the shape of their labels.")
    sl, zl = box_l[0], box_l[1]
    su, zu = box_u[0], box_u[1]
    return MixedPair(
        image_u=cutmix(x_u, x_l, sl, zl),
        target_u=cutmix(y_u, y_l, sl, zl),
        weight_u=cutmix(w_u, w_l, sl, zl),
        image_l=cutmix(x_l, x_u, su, zu),
        target_l=cutmix(y_l, y_u, su, zu),
        weight_l=cutmix(w_l, w_u, su, zu),
    )


def mix_batch(
    x_l: torch.Tensor, y_l: torch.Tensor, w_l: Optional[torch.Tensor], x_u: torch.Tensor, y_u: torch.Tensor,
    w_u: torch.Tensor, boxes_l: Sequence[Sequence[Any]], boxes_u: Sequence[Sequence[Any]],
) -> MixedPair:
    """:func:`mix_pair` per sample of batches ``x [B, C, X, Y, Z]``, ``y, w [B, X, Y, Z]`` (one box per sample).

    Sample ``i`` of the labeled batch is paired with sample ``i`` of the unlabeled batch; both batches must
    have the same size (repeat or crop the smaller one beforehand).
    """
    b = x_l.shape[0]
    if x_u.shape[0] != b or len(boxes_l) != b or len(boxes_u) != b:
        raise ValueError(
            f"batch sizes must match: labeled {b}, unlabeled {x_u.shape[0]}, boxes {len(boxes_l)}/{len(boxes_u)}."
        )
    if x_l.ndim != 5 or y_l.ndim != 4:
        raise ValueError("mix_batch expects images [B, C, X, Y, Z] and labels [B, X, Y, Z].")
    parts = [
        mix_pair(x_l[i], y_l[i], None if w_l is None else w_l[i], x_u[i], y_u[i], w_u[i], boxes_l[i], boxes_u[i])
        for i in range(b)
    ]
    return MixedPair(*(torch.stack([p[k] for p in parts]) for k in range(len(MixedPair._fields))))


class PICBatch(NamedTuple):
    """A PIC-mixed training batch (:meth:`PICMixer.mix`): ``B_l`` labeled rows, then ``B_u`` unlabeled rows.

    ``gt_*`` is True where the target is ground truth (the labeled patch outside the pasted unlabeled box; the
    pasted labeled box inside an unlabeled patch); ``feats_*`` the teacher features mixed with the same boxes
    (None without a feature cache).
    """

    image_l: torch.Tensor
    target_l: torch.Tensor
    weight_l: torch.Tensor
    gt_l: torch.Tensor
    feats_l: Optional[torch.Tensor]
    image_u: torch.Tensor
    target_u: torch.Tensor
    weight_u: torch.Tensor
    gt_u: torch.Tensor
    feats_u: Optional[torch.Tensor]
    boxes_l: List[Box]
    boxes_u: List[Box]


class PICMixer:
    """Progressive imbalance-aware CutMix for a training loop (DINO-Mix, arXiv 2602.07819).

    Holds a :class:`ClassFrequencyTracker` and a random generator. Each call

    1. (optionally) updates the class frequencies, in one EMA step, with the labeled ground truth
       (voxels with ``w_l > 0``) and the confident pseudo-label voxels (``w_u > 0``), as DHC's
       distribution-aware weighting counts them;
    2. computes the curriculum distribution for ``progress``;
    3. samples per sample one box on the ground truth and one on the confident pseudo-label
       (unconfident voxels count as background for sampling);
    4. mixes both directions with :func:`mix_batch`.

    Labeled and unlabeled batches of different sizes are paired cyclically (sample ``i`` with labeled
    ``i % B_l`` and unlabeled ``i % B_u``); the mixed labeled batch keeps ``B_l`` samples, the unlabeled ``B_u``.

    Args:
        num_classes: classes including background.
        box_size: CutMix box (x, y, z), e.g. :func:`box_size_from_fraction` of the patch.
        align: box alignment (x, y, z) to the teacher feature grid.
        start_power, schedule, schedule_fraction: curriculum (:func:`curriculum_distribution`).
        freq_momentum: EMA momentum of the frequency tracker.
        seed: seed of the mixer's own CPU generator (sampling is reproducible and independent of torch's
            global RNG).
        generator: a CPU generator to draw from instead (e.g. the trainer's patch sampler, so one state
            restores both); ``seed`` is then ignored and :meth:`state_dict` still saves its state.
        shared_box: one box per pairing, sampled on the ground truth and used in both directions (BCP's single
            mask); the unlabeled patch's pseudo-labels then never choose where a box goes.
    """

    def __init__(
        self,
        num_classes: int,
        box_size: Sequence[int],
        align: Sequence[int] = (1, 1, 1),
        start_power: float = 1.0,
        schedule: str = "linear",
        schedule_fraction: float = 0.8,
        freq_momentum: float = 0.99,
        seed: int = 0,
        generator: Optional[torch.Generator] = None,
        shared_box: bool = False,
    ) -> None:
        self.box_size = _int3(box_size, "box_size")
        self.align = _int3(align, "align")
        if any(b < 1 for b in self.box_size) or any(a < 1 for a in self.align):
            raise ValueError("box_size and align must be positive.")
        if start_power < 0:
            raise ValueError("start_power must be >= 0.")
        schedule_progress(0.0, schedule, schedule_fraction)  # validates
        self.start_power = float(start_power)
        self.schedule = schedule
        self.schedule_fraction = float(schedule_fraction)
        self.tracker = ClassFrequencyTracker(num_classes, freq_momentum)
        self.shared_box = bool(shared_box)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(int(seed))

    def class_probs(self, progress: float) -> torch.Tensor:
        """Curriculum distribution over classes ``1..C-1`` at ``progress`` from the tracked frequencies."""
        return curriculum_distribution(
            self.tracker.frequencies, progress, self.start_power, self.schedule, self.schedule_fraction
        )

    def __call__(
        self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, y_u: torch.Tensor, w_u: torch.Tensor,
        progress: float, w_l: Optional[torch.Tensor] = None, update_frequencies: bool = True,
    ) -> Tuple[MixedPair, List[Box], List[Box]]:
        """Mix batches ``x [B, C, X, Y, Z]``, ``y/w [B, X, Y, Z]``; returns ``(mixed, boxes_l, boxes_u)``.

        ``w_u`` is the confidence (mask or weight) of the pseudo-labels: it decides which pseudo-label voxels
        are counted and sampled. In the mixed weights the pseudo-label voxels keep ``w_u`` and the ground-truth
        voxels ``w_l`` (ones if ``None``). ``boxes_l[i]``/``boxes_u[i]`` belong to the ``i``-th
        pairing (see the class docstring); there are ``max(B_l, B_u)`` of each.
        """
        if update_frequencies:
            if w_l is None:
                keep_l = torch.ones(y_l.numel(), dtype=torch.bool, device=y_l.device)
            else:
                keep_l = w_l.reshape(-1) > 0
            self.tracker.update(
                torch.cat([y_l.reshape(-1), y_u.reshape(-1).to(y_l.device)]),
                torch.cat([keep_l, (w_u.reshape(-1) > 0).to(y_l.device)]),
            )
        probs = self.class_probs(progress)
        bl, bu = y_l.shape[0], y_u.shape[0]
        if bl < 1 or bu < 1:
            raise ValueError("PICMixer needs at least one labeled and one unlabeled sample.")
        il = [i % bl for i in range(max(bl, bu))]
        iu = [i % bu for i in range(max(bl, bu))]
        y_u_conf = torch.where(w_u > 0, y_u, torch.zeros_like(y_u))
        boxes_l, boxes_u = [], []
        for li, ui in zip(il, iu):  # per pairing: the labeled box, then the unlabeled box
            boxes_l.append(sample_box(y_l[li], probs, self.box_size, self.generator, self.align))
            boxes_u.append(boxes_l[-1] if self.shared_box else
                           sample_box(y_u_conf[ui], probs, self.box_size, self.generator, self.align))
        mixed = mix_batch(
            x_l[il], y_l[il], None if w_l is None else w_l[il], x_u[iu], y_u[iu], w_u[iu], boxes_l, boxes_u
        )
        mixed = MixedPair(mixed.image_u[:bu], mixed.target_u[:bu], mixed.weight_u[:bu],
                          mixed.image_l[:bl], mixed.target_l[:bl], mixed.weight_l[:bl])
        return mixed, boxes_l, boxes_u

    def mix(
        self, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, y_u: torch.Tensor, w_u: torch.Tensor,
        progress: float, feats_l: Optional[torch.Tensor] = None, feats_u: Optional[torch.Tensor] = None,
        feature_stride: int = 1,
    ) -> PICBatch:
        """One PIC step of the training loop: boxes, mixed images/targets/weights, ground-truth masks, features.

        Args:
            x_l, y_l: labeled images ``[B_l, C, X, Y, Z]`` and ground truth ``[B_l, X, Y, Z]``.
            x_u, y_u, w_u: unlabeled images, pseudo-labels and their confidence (weight or 0/1 mask).
            progress: training progress in [0, 1] (the curriculum's position).
            feats_l, feats_u: cached teacher features ``[B, C_f, Xf, Yf, Z]`` of the patches, mixed with the same
                boxes on the feature grid (:func:`~dinomix_core.teacher.mix_features`); None: no features.
            feature_stride: the teacher's in-plane feature stride (boxes are aligned to it).
        """
        mixed, boxes_l, boxes_u = self(x_l, y_l, x_u, y_u, w_u, progress)
        bl, bu = y_l.shape[0], y_u.shape[0]
        shape, dev = tuple(y_l.shape[1:]), y_l.device
        gt_l = torch.stack([~box_mask(shape, boxes_u[i].start, boxes_u[i].size, dev) for i in range(bl)])
        gt_u = torch.stack([box_mask(shape, boxes_l[i].start, boxes_l[i].size, dev) for i in range(bu)])
        f_l = f_u = None
        if feats_l is not None and feats_u is not None:
            f_l = torch.stack([mix_features(feats_l[i % bl], feats_u[i % bu], boxes_u[i].start, boxes_u[i].size,
                                            feature_stride) for i in range(bl)])
            f_u = torch.stack([mix_features(feats_u[i % bu], feats_l[i % bl], boxes_l[i].start, boxes_l[i].size,
                                            feature_stride) for i in range(bu)])
        return PICBatch(mixed.image_l, mixed.target_l, mixed.weight_l, gt_l, f_l,
                        mixed.image_u, mixed.target_u, mixed.weight_u, gt_u, f_u, boxes_l, boxes_u)

    def state_dict(self) -> Dict[str, Any]:
        return {"tracker": self.tracker.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
