"""Training-patch augmentation: what changes between scanners, protocols and patients.

A model trained on a handful of labeled CTs meets other patients (body size, position, organ shape), other
scanners (noise, reconstruction kernel, spacing) and other contrast phases (organ HU). :class:`PatchAugmenter`
draws those changes for every training patch, built from MONAI transforms:

* spatial (``spatial``): rotation and per-axis scaling (``RandAffined``; bilinear image, nearest label) -- body
  size, patient position and in-plane spacing. No flips: kidneys and adrenal glands are lateralised.
* intensity (``intensity``): Gaussian blur (kernel), Gaussian noise, global scale and shift (calibration, window),
  gamma, and on labeled patches a random mean HU per organ (contrast phase, [ours]); a *weak* variant (small
  shift and scale only) is the view the EMA teacher predicts from while the student sees the strong one; the
  strong view of an unlabeled patch may also get a random monotone intensity curve (``aug_curve_prob``).

Images are the preprocessed [0, 1] HU window (``config.hu_range``); every intensity range below is in those units
(0.1 is 35 HU for the default 350 HU window). The result is clipped back to [0, 1] like the preprocessing's window.

All values are :class:`~dinomix_core.config.DinoMixConfig` fields (``aug_*``); docs/method.md says which are ours.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Optional, Tuple

import numpy as np
import torch
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Randomizable,
)

from .config import DinoMixConfig

__all__ = ["RandOrganIntensityd", "PatchAugmenter"]


class RandOrganIntensityd(Randomizable, MapTransform):
    """Move each labeled organ's mean intensity to an independent random value (contrast-phase randomisation).

    A contrast-enhanced CT and a non-contrast one differ most in the organs (kidneys about 200 HU against 30 HU,
    aorta 350 HU against 40 HU). With probability ``prob`` every organ present in the label gets its own target
    mean drawn uniformly from ``intensity_range`` and is shifted by (target - its current mean), texture kept;
    background is never changed. Label-conditioned intensity randomisation after SynthSeg (Billot et al., Medical
    Image Analysis 2023), here as shifts of real intensities [ours].

    Args:
        keys: the image key.
        label_key: the label map (same grid, ids 0..C-1).
        intensity_range: (low, high) of the organs' target means, in image units.
        prob: probability of applying the transform to a sample.
    """

    def __init__(self, keys, label_key: str, intensity_range: Tuple[float, float], prob: float = 0.5) -> None:
        MapTransform.__init__(self, keys)
        low, high = (float(v) for v in intensity_range)
        if low > high or not 0.0 <= prob <= 1.0:
            raise ValueError(f"intensity_range must be (low, high) with low <= high and prob in [0, 1], got "
                             f"{intensity_range} and {prob}.")
        self.label_key = label_key
        self.low, self.high = low, high
        self.prob = float(prob)
        self._do = False
        self._targets = np.zeros(0)

    def randomize(self, num_classes: int) -> None:
        self._do = self.R.random_sample() < self.prob
        self._targets = self.R.uniform(self.low, self.high, size=num_classes)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        label = torch.as_tensor(d[self.label_key]).long().reshape(-1)
        counts = torch.bincount(label)
        self.randomize(len(counts))
        if not self._do:
            return d
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            flat = image.reshape(image.shape[0], -1)
            sums = torch.zeros(len(counts), dtype=flat.dtype).index_add_(0, label, flat[0])
            means = sums / counts.clamp(min=1)
            shift = torch.as_tensor(self._targets, dtype=flat.dtype) - means
            shift[0] = 0.0
            shift[counts == 0] = 0.0
            d[key] = (flat + shift[label][None]).reshape(image.shape)
        return d


def _clip01(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.as_tensor(x), 0.0, 1.0)


class PatchAugmenter:
    """Random spatial and intensity augmentation of single training patches (channel-first, CPU).

    Args:
        config: supplies the ``aug_*`` fields.
        seed: seed of the transforms' random state (the trainer passes one per rank).

    ``spatial(image, label)`` returns both warped with the same draw (``label`` may be None);
    ``intensity(image, label, strong)`` returns the image only.
    """

    def __init__(self, config: DinoMixConfig, seed: int = 0) -> None:
        self.config = config
        deg = tuple(math.radians(float(d)) for d in config.aug_rotate_deg)
        scale = float(config.aug_scale)
        self._spatial = {
            with_label: RandAffined(
                keys=["image", "label"] if with_label else ["image"],
                prob=config.aug_spatial_prob,
                rotate_range=deg,
                scale_range=(scale, scale, scale),
                mode=("bilinear", "nearest") if with_label else "bilinear",
                padding_mode="zeros",
                cache_grid=False,
            )
            for with_label in (True, False)
        }
        s = float(config.aug_intensity)
        strong = [
            RandGaussianSmoothd("image", sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 0.6), prob=0.2),
            RandGaussianNoised("image", prob=0.3, mean=0.0, std=float(config.aug_noise_std)),
            RandScaleIntensityd("image", factors=s, prob=0.5),
            RandShiftIntensityd("image", offsets=s, prob=0.5),
            RandAdjustContrastd("image", gamma=(0.75, 1.35), prob=0.3),
        ]
        lo, hi = config.hu_range
        organ_range = tuple((v - lo) / (hi - lo) for v in config.aug_organ_hu)
        self._organ = RandOrganIntensityd("image", "label", intensity_range=organ_range, prob=config.aug_organ_prob)
        self._strong = Compose(strong)
        self._weak = Compose([RandScaleIntensityd("image", factors=s / 2, prob=0.5),
                              RandShiftIntensityd("image", offsets=s / 2, prob=0.5)])
        # only built when used, so that a run without it draws exactly what it drew before the field existed
        self._curve = (RandHistogramShiftd("image", num_control_points=tuple(config.aug_curve_points),
                                           prob=config.aug_curve_prob) if config.aug_curve_prob > 0 else None)
        for i, t in enumerate([*self._spatial.values(), self._organ, self._strong, self._weak, self._curve]):
            if t is not None:
                t.set_random_state(seed=(int(seed) * 7919 + i) % (2**32))

    def _randomizables(self) -> list:
        """Every random state, nested ones included (MONAI's dictionary transforms wrap array transforms that
        draw from their own ``R``)."""
        found: list = []

        def walk(obj) -> None:
            if isinstance(obj, Randomizable) and all(obj is not f for f in found):
                found.append(obj)
                for value in vars(obj).values():
                    walk(value)

        for t in [*self._spatial.values(), self._organ, *self._strong.transforms, *self._weak.transforms, self._curve]:
            if t is not None:
                walk(t)
        return found

    def state_dict(self) -> dict:
        """The random state of every transform (saved in the resume checkpoint)."""
        return {"states": [t.R.get_state() for t in self._randomizables()]}

    def load_state_dict(self, state: dict) -> None:
        states = state.get("states") or []
        if len(states) != len(self._randomizables()):
            raise ValueError(f"augmentation state has {len(states)} entries, expected {len(self._randomizables())}.")
        for t, st in zip(self._randomizables(), states):
            t.R.set_state(st)

    def spatial(
        self, image: torch.Tensor, label: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Rotate and scale ``image`` [1, X, Y, Z] (and ``label`` [X, Y, Z]) with one random draw."""
        if self.config.aug_spatial_prob == 0:
            return image, label
        if label is None:
            out = self._spatial[False]({"image": image})
            return torch.as_tensor(out["image"]).float(), None
        out = self._spatial[True]({"image": image, "label": label[None].float()})
        return torch.as_tensor(out["image"]).float(), torch.as_tensor(out["label"])[0].round().to(label.dtype)

    def intensity(self, image: torch.Tensor, label: Optional[torch.Tensor] = None, strong: bool = True) -> torch.Tensor:
        """The strong (student) or weak (EMA teacher) intensity view of ``image``; organ offsets need ``label``,
        and the intensity curve is for the strong view of an unlabeled patch (``label`` None) only."""
        d = {"image": image}
        if strong and label is not None and self.config.aug_organ_prob > 0:
            d = self._organ({"image": image, "label": label})
        d = (self._strong if strong else self._weak)({"image": d["image"]})
        if strong and label is None and self._curve is not None:
            d = self._curve({"image": _clip01(d["image"])})
        return _clip01(d["image"]).float().contiguous()
