"""Interactive editing: clicks that correct one organ of a DINO-Mix result.

The paper is silent on interaction; everything here is ours, following DeepEdit's scheme (Diaz-Pinto et al.,
"DeepEdit: Deep Editable Learning for Interactive Segmentation of 3D Medical Images", 2022): clicks are encoded
as guidance maps next to the image, and the network learns to use them from clicks simulated during training in
the regions where the current prediction is wrong.

What we chose, and why:

- **A click refiner beside the segmenter**, not guidance channels in the segmenter's input. The refiner
  (``DinoMixStudent.refiner``) sees the image, the segmenter's probability of the edited organ and of background
  (detached), and a foreground and a background guidance map, and predicts the edited organ. It is trained in
  the same run from the same labeled patches (:func:`refiner_loss`), so one Retrain updates both. Keeping it apart
  leaves the automatic segmenter, its semi-supervised terms and its FKD exactly as they are, a click-free request
  is the automatic result by construction, and a click only needs the refiner run over a window around the
  edited organ, not the segmenter over the whole volume (DeepEdit re-runs its whole network per click).
- **Organ-agnostic**: the refiner is told which organ through the probability channel, not by a class index, so
  what it learns from large organs (grow from a foreground click, cut at a background click) serves the small ones.
- **Clicks simulated as DeepEdit does, without its inner loop**: each click goes to the centre (the point
  farthest from the boundary) of the largest error region; after a click the region within
  ``2 * refiner_sigma`` of it counts as corrected and the next click goes to the next largest error
  (:func:`simulate_clicks`). The benchmark (``benchmarks/interactive.py``) places its clicks the same way on the
  refined result.
- **Edits stay where the user clicked** (:func:`local_changes`): of what the refiner changes, only the connected
  regions of added voxels that reach a foreground click and of removed voxels that reach a background click are
  kept. The refiner re-predicts the whole organ inside its window, and where it transfers worse than the segmenter
  (another scanner, say) it would otherwise also change parts of the organ the user did not touch. DeepEdit's
  clicks are not local in this sense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "Click", "guidance_maps", "next_click", "simulate_clicks", "refiner_input", "refiner_loss", "edit_window",
    "local_changes", "refine_organ", "apply_clicks",
]

Point = Tuple[int, int, int]


@dataclass(frozen=True)
class Click:
    """One click on the model grid: ``point`` (x, y, z voxel) and whether it marks the organ (foreground)."""

    point: Point
    foreground: bool


def guidance_maps(shape: Sequence[int], foreground: Sequence[Point], background: Sequence[Point], sigma: float,
                  device: Optional[torch.device] = None) -> torch.Tensor:
    """[2, X, Y, Z] guidance: channel 0 the foreground clicks, 1 the background ones, each a Gaussian of width
    ``sigma`` voxels with peak 1 (the maximum where two overlap), computed only within 3 sigma of each click."""
    out = torch.zeros((2, *shape), dtype=torch.float32, device=device)
    r = int(np.ceil(3 * sigma))
    for channel, points in ((0, foreground), (1, background)):
        for p in points:
            lo = [max(0, int(c) - r) for c in p]
            hi = [min(int(s), int(c) + r + 1) for c, s in zip(p, shape)]
            if any(a >= b for a, b in zip(lo, hi)):
                continue  # outside this window
            axes = [torch.arange(a, b, device=device, dtype=torch.float32) - float(c) for a, b, c in zip(lo, hi, p)]
            gx, gy, gz = torch.meshgrid(*axes, indexing="ij")
            g = torch.exp(-(gx ** 2 + gy ** 2 + gz ** 2) / (2 * sigma ** 2))
            region = out[channel, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            torch.maximum(region, g, out=region)
    return out


def next_click(pred: np.ndarray, truth: np.ndarray, valid: Optional[np.ndarray] = None) -> Optional[Click]:
    """The click a user makes to fix ``pred`` towards ``truth`` (boolean masks of one organ): at the centre of
    the largest error region, foreground if the organ is missing there, background if it is wrong there.
    ``valid``: where errors count (default everywhere). None when there is no error."""
    errors = []
    for fg, mask in ((True, truth & ~pred), (False, pred & ~truth)):
        if valid is not None:
            mask = mask & valid
        if mask.any():
            lab, n = ndimage.label(mask)
            sizes = np.bincount(lab.ravel())[1:]
            k = int(np.argmax(sizes)) + 1
            errors.append((int(sizes[k - 1]), fg, lab == k))
    if not errors:
        return None
    _, fg, region = max(errors, key=lambda e: e[0])
    sl = ndimage.find_objects(region.astype(np.uint8))[0]
    crop = np.pad(region[sl], 1)  # the region's border counts as boundary
    dist = ndimage.distance_transform_edt(crop)
    idx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(tuple(int(i - 1 + s.start) for i, s in zip(idx, sl)), fg)


def simulate_clicks(pred: np.ndarray, truth: np.ndarray, n: int, radius: float,
                    valid: Optional[np.ndarray] = None) -> List[Click]:
    """Up to ``n`` training clicks (see the module docstring): each at the centre of the largest remaining error,
    after which the error within ``radius`` voxels of it counts as corrected."""
    pred = pred.copy()
    clicks: List[Click] = []
    grid = None
    for _ in range(n):
        c = next_click(pred, truth, valid)
        if c is None:
            break
        clicks.append(c)
        if grid is None:
            grid = np.indices(pred.shape, dtype=np.float32)
        near = sum((g - float(p)) ** 2 for g, p in zip(grid, c.point)) <= radius ** 2
        pred[near] = truth[near]
    return clicks


def refiner_input(image: torch.Tensor, probs: torch.Tensor, organ: int, clicks: Sequence[Click],
                  sigma: float) -> torch.Tensor:
    """The refiner's [5, X, Y, Z] input: image [1, ...], P(organ), P(background) from ``probs`` [C, ...], and
    the foreground and background guidance of ``clicks``."""
    g = guidance_maps(image.shape[1:], [c.point for c in clicks if c.foreground],
                      [c.point for c in clicks if not c.foreground], sigma, device=image.device)
    return torch.cat([image, probs[organ:organ + 1], probs[0:1], g], 0)


#: the largest window the click refiner is trained on (x, y, z model voxels)
TRAIN_WINDOW = (64, 64, 32)


def refiner_loss(refiner: torch.nn.Module, images: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                 valid: torch.Tensor, max_clicks: int, sigma: float, rng: np.random.Generator,
                 multiple: Sequence[int], window: Sequence[int] = TRAIN_WINDOW) -> Optional[torch.Tensor]:
    """The click refiner's training loss on labeled patches (Dice + BCE on the edited organ).

    For each patch one organ is drawn among those in its ground truth or its prediction, 1..``max_clicks`` clicks
    are simulated against the segmenter's current prediction (``logits``, detached), and the refiner predicts the
    organ over the window :func:`edit_window` gives those clicks (at most ``window``; inference runs it over the
    same kind of window). ``valid`` marks the voxels whose ``target`` is ground truth. None when no patch has an
    organ or an error to click on.
    """
    probs = torch.softmax(logits.detach().float(), 1)
    pred = probs.argmax(1)
    losses = []
    for b in range(images.shape[0]):
        v = valid[b].bool()
        present = set(torch.unique(target[b][v]).tolist()) | set(torch.unique(pred[b][v]).tolist())
        organs = sorted(int(o) for o in present if o != 0)
        if not organs:
            continue
        organ = organs[int(rng.integers(len(organs)))]
        truth = (target[b] == organ) & v
        organ_pred = (pred[b] == organ).cpu().numpy()
        clicks = simulate_clicks(organ_pred, truth.cpu().numpy(), int(rng.integers(1, max_clicks + 1)), 2 * sigma,
                                 valid=v.cpu().numpy())
        if not clicks:
            continue
        win = edit_window(truth.shape, [c.point for c in clicks], organ_pred, (16, 16, 8), multiple, window)
        local = [Click(tuple(p - s.start for p, s in zip(c.point, win)), c.foreground) for c in clicks]
        x = refiner_input(images[b][(slice(None), *win)], probs[b][(slice(None), *win)], organ, local, sigma)
        out = refiner(x[None])[0, 0].float()
        y, m = truth[win].float(), v[win].float()
        bce = (F.binary_cross_entropy_with_logits(out, y, reduction="none") * m).sum() / m.sum().clamp(min=1)
        p = torch.sigmoid(out) * m
        losses.append(bce + 1 - (2 * (p * y).sum() + 1e-5) / (p.sum() + y.sum() + 1e-5))
    return torch.stack(losses).mean() if losses else None


def edit_window(shape: Sequence[int], points: Sequence[Point], organ_mask: np.ndarray, margin: Sequence[int],
                multiple: Sequence[int], max_size: Sequence[int]) -> Tuple[slice, ...]:
    """The box the refiner runs over: around the clicks and the part of the organ's current mask near them,
    ``margin`` voxels wider, at most ``max_size`` (centred on the clicks), sides rounded up to ``multiple``."""
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    lo, hi = pts.min(0), pts.max(0) + 1
    centre = (lo + hi) / 2
    if organ_mask.any():
        idx = np.argwhere(organ_mask)
        near = np.all(np.abs(idx - centre) <= np.asarray(max_size) / 2, axis=1)
        if near.any():
            lo, hi = np.minimum(lo, idx[near].min(0)), np.maximum(hi, idx[near].max(0) + 1)
    out = []
    for a, b, m, k, cap, s in zip(lo, hi, margin, multiple, max_size, shape):
        a, b = int(a) - int(m), int(b) + int(m)
        size = min(b - a, int(cap))
        size = min(-(-size // k) * k, int(s)) if s >= k else int(s)
        c = (a + b) // 2
        start = int(np.clip(c - size // 2, 0, max(0, s - size)))
        out.append(slice(start, start + size))
    return tuple(out)


def local_changes(new: np.ndarray, old: np.ndarray, clicks: Sequence[Click], reach: float) -> np.ndarray:
    """The mask ``old`` with those changes of ``new`` that are connected to a click of their kind.

    A connected region (26-neighbourhood) of voxels that ``new`` adds is kept if one of its voxels lies within
    ``reach`` voxels of a foreground click, a region that ``new`` removes if it comes that close to a background
    click; every other voxel keeps its value in ``old``. Clicks outside the arrays are ignored.
    """
    out = old.copy()
    for changed, foreground in ((new & ~old, True), (~new & old, False)):
        points = [c.point for c in clicks if c.foreground == foreground]
        if not points or not changed.any():
            continue
        regions, _ = ndimage.label(changed, structure=np.ones((3, 3, 3), dtype=bool))
        hit = set()
        r = int(math.floor(reach))
        for p in points:
            box = tuple(slice(max(0, q - r), min(n, q + r + 1)) for q, n in zip(p, old.shape))
            if any(b.start >= b.stop for b in box):
                continue
            ball = sum((g - q) ** 2 for g, q in zip(np.ogrid[box], p)) <= reach * reach
            hit.update(int(i) for i in np.unique(regions[box][ball]) if i)
        if hit:
            out[np.isin(regions, sorted(hit))] = foreground
    return out


@torch.no_grad()
def refine_organ(refiner: torch.nn.Module, image: torch.Tensor, probs: torch.Tensor, label: torch.Tensor, organ: int,
                 clicks: Sequence[Click], sigma: float, multiple: Sequence[int], margin: Sequence[int] = (16, 16, 8),
                 max_size: Sequence[int] = (128, 128, 64)) -> torch.Tensor:
    """``label`` [X, Y, Z] with ``organ`` re-predicted by the refiner in a window around ``clicks``.

    Voxels the refiner adds become ``organ``; voxels it removes take their most probable other class; of these
    changes only those connected to a click are kept (:func:`local_changes`, reach ``sigma``). Clicked voxels
    always get what the click says.
    """
    shape = tuple(label.shape)
    win = edit_window(shape, [c.point for c in clicks], (label == organ).cpu().numpy(), margin, multiple, max_size)
    img, pr, lab = image[(slice(None), *win)], probs[(slice(None), *win)], label[win]
    local = [Click(tuple(p - s.start for p, s in zip(c.point, win)), c.foreground) for c in clicks]
    x = refiner_input(img, pr, organ, local, sigma)[None]
    pad = [(-n) % k for n, k in zip(x.shape[2:], multiple)]
    if any(pad):
        x = F.pad(x, [q for p in reversed(pad) for q in (0, p)], mode="replicate")
    mask = refiner(x)[0, 0, :lab.shape[0], :lab.shape[1], :lab.shape[2]] > 0
    others = pr.clone()
    others[organ] = -1.0
    fallback = others.argmax(0).to(label.dtype)
    for c in local:
        if all(0 <= p < n for p, n in zip(c.point, mask.shape)):
            mask[c.point] = c.foreground
    current = (lab == organ).cpu().numpy()
    mask = torch.from_numpy(local_changes(mask.cpu().numpy(), current, local, sigma)).to(lab.device)
    new = torch.where(mask, torch.full_like(lab, organ), torch.where(lab == organ, fallback, lab))
    out = label.clone()
    out[win] = new
    return out


def apply_clicks(refiner: torch.nn.Module, image: torch.Tensor, probs: torch.Tensor, label: torch.Tensor,
                 clicks: Dict[int, Sequence[Point]], background: Sequence[Point], edited: Optional[int], sigma: float,
                 multiple: Sequence[int]) -> torch.Tensor:
    """The automatic ``label`` corrected by every click (DeepEdit's multi-label request, on the model grid).

    ``clicks``: organ id -> points placed on that organ; ``background``: points on background. Each organ with
    points is refined with its own points as foreground and every other point as background, the ``edited``
    organ last (it may have background points only). Without any point, ``label`` is returned unchanged.
    """
    organs = [o for o in sorted(clicks) if clicks[o] and o != edited]
    if edited is not None and (clicks.get(edited) or background):
        organs.append(edited)
    out = label
    for organ in organs:
        own = [Click(tuple(map(int, p)), True) for p in clicks.get(organ, ())]
        rest = [Click(tuple(map(int, p)), False) for o, pts in clicks.items() if o != organ for p in pts]
        bg = [Click(tuple(map(int, p)), False) for p in background]
        # an organ's refinement hears the other points near its own; without own points, the background ones
        rest = [c for c in rest + bg if _near(c.point, own, NEAR_VOXELS)] if own else bg
        out = refine_organ(refiner, image, probs, out, organ, own + rest, sigma, multiple)
    return out


#: how close (model voxels) another organ's point or a background point must be to an organ's own clicks to
#: count as a background click for it
NEAR_VOXELS = 40


def _near(p: Point, clicks: Sequence[Click], r: float) -> bool:
    return any(sum((a - b) ** 2 for a, b in zip(p, c.point)) <= r * r for c in clicks)
