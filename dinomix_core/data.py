"""Loading, preprocessing and patch sampling for DINO-Mix.

Preprocessing (MONAI transforms, the same for training and inference): load, channel first, orientation RAS,
resample to ``config.target_spacing`` (bilinear for images, nearest for labels), clip HU to
``config.hu_range`` and scale to [0, 1] (the baselines' Synapse recipe, see docs/method.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

from .config import DinoMixConfig
from .errors import InvalidVolumeError
from .labels import VOLUME_EXTENSIONS

__all__ = [
    "InvalidVolumeError",
    "Volume",
    "preprocessing",
    "load_volume",
    "pad_to_patch",
    "random_patch_start",
    "patch_coverage",
    "crop",
]

logger = logging.getLogger(__name__)


@dataclass
class Volume:
    """One preprocessed case held in memory.

    Attributes:
        case_id: a stable name (file name without extension).
        image: float32 tensor [1, X, Y, Z] in [0, 1].
        label: uint8 tensor [X, Y, Z] or None (unlabeled).
    """

    case_id: str
    image: torch.Tensor
    label: Optional[torch.Tensor] = None

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.image.shape[1:])  # type: ignore[return-value]

    def class_voxels(self) -> Dict[int, torch.Tensor]:
        """Voxel coordinates ``[N, 3]`` of every label id present (background excluded), computed once."""
        cached = self.__dict__.get("_class_voxels")
        if cached is None:
            cached = {}
            if self.label is not None:
                for c in torch.unique(self.label).tolist():
                    if c > 0:
                        cached[int(c)] = torch.nonzero(self.label == c)
            self.__dict__["_class_voxels"] = cached
        return cached


def case_id_from_path(path: str) -> str:
    name = str(path).replace("\\", "/").rsplit("/", 1)[-1]
    for ext in VOLUME_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def preprocessing(config: DinoMixConfig, with_label: bool) -> Compose:
    """The MONAI preprocessing pipeline for ``image`` (and ``label``) keys."""
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    return Compose(
        [
            LoadImaged(keys=keys, image_only=False),
            EnsureChannelFirstd(keys=keys),
            Orientationd(keys=keys, axcodes="RAS"),
            Spacingd(keys=keys, pixdim=config.target_spacing, mode=modes),
            ScaleIntensityRanged(
                keys="image", a_min=config.hu_range[0], a_max=config.hu_range[1], b_min=0.0, b_max=1.0, clip=True
            ),
            EnsureTyped(keys=keys, dtype=torch.float32),
        ]
    )


def check_spatial(data: torch.Tensor, what: str, path: str) -> None:
    if data.ndim != 4 or data.shape[0] != 1:
        raise InvalidVolumeError(
            f"{what} {path!r} must be a single-channel 3D volume; got array shape {tuple(data.shape[1:])} "
            f"with {data.shape[0]} channel(s)."
        )
    if min(data.shape[1:]) < 2:
        raise InvalidVolumeError(f"{what} {path!r} is not a 3D volume (shape {tuple(data.shape[1:])}).")


def load_volume(config: DinoMixConfig, image_path: str, label_path: Optional[str] = None) -> Volume:
    """Load and preprocess one case.

    Raises:
        InvalidVolumeError: unreadable file, not 3D, or a label that does not match its image / has bad ids.
    """
    data = {"image": str(image_path)}
    if label_path is not None:
        data["label"] = str(label_path)
    try:
        out = preprocessing(config, label_path is not None)(data)
    except Exception as e:  # MONAI wraps reader errors in RuntimeError
        raise InvalidVolumeError(f"cannot read {image_path!r}{' / ' + str(label_path) if label_path else ''}: {_root(e)}") from e
    image = out["image"]
    check_spatial(image, "image", str(image_path))
    label = None
    if label_path is not None:
        lab = out["label"]
        check_spatial(lab, "label", str(label_path))
        if tuple(lab.shape) != tuple(image.shape):
            raise InvalidVolumeError(f"label {label_path!r} does not lie on the grid of its image {image_path!r}.")
        arr = lab[0].as_tensor() if hasattr(lab, "as_tensor") else lab[0]
        if not torch.equal(arr, arr.round()):
            raise InvalidVolumeError(f"label {label_path!r} has non-integer values.")
        if arr.min() < 0 or arr.max() > config.out_channels - 1:
            raise InvalidVolumeError(
                f"label {label_path!r} has ids outside 0..{config.out_channels - 1} "
                f"(min {int(arr.min())}, max {int(arr.max())})."
            )
        label = arr.to(torch.uint8)
    img = image.as_tensor() if hasattr(image, "as_tensor") else image
    return Volume(case_id=case_id_from_path(image_path), image=img.float().contiguous(), label=label)


def _root(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[-1] if msg else ''}"


def pad_to_patch(volume: Volume, patch_size: Sequence[int], multiple: int = 1) -> Volume:
    """Pad at the end of each axis so the volume is at least ``patch_size`` and in-plane a multiple of ``multiple``.

    Padding only at the end keeps voxel (0, 0, 0) in place, so crops stay aligned with a teacher feature grid.
    Images pad with 0 (the bottom of the HU window), labels with background.
    """
    shape = volume.shape
    target = []
    for i, (s, p) in enumerate(zip(shape, patch_size)):
        t = max(s, p)
        if i < 2 and multiple > 1:
            t = -(-t // multiple) * multiple
        target.append(t)
    if list(shape) == target:
        return volume
    pads = []
    for s, t in reversed(list(zip(shape, target))):
        pads += [0, t - s]
    image = torch.nn.functional.pad(volume.image, pads, value=0.0)
    label = None
    if volume.label is not None:
        label = torch.nn.functional.pad(volume.label[None], pads, value=0)[0]
    return Volume(volume.case_id, image, label)


def random_patch_start(
    shape: Sequence[int],
    patch_size: Sequence[int],
    generator: torch.Generator,
    align: Sequence[int] = (1, 1, 1),
    label: Optional[torch.Tensor] = None,
    foreground_prob: float = 0.0,
    class_voxels: Optional[Dict[int, torch.Tensor]] = None,
) -> Tuple[int, int, int]:
    """A random patch start inside ``shape``, snapped down to multiples of ``align``.

    With probability ``foreground_prob`` the patch is centred on an organ voxel, so small organs are seen early:
    with ``class_voxels`` (:meth:`Volume.class_voxels`) an organ is drawn uniformly among those present and then
    one of its voxels (class-balanced, as MONAI's ``RandCropByLabelClasses`` with equal ratios); with ``label``
    only, a random foreground voxel (as MONAI's ``RandCropByPosNegLabel``).
    """
    centre = None
    if foreground_prob > 0 and (label is not None or class_voxels) and (
        torch.rand((), generator=generator).item() < foreground_prob
    ):
        if class_voxels:
            classes = sorted(class_voxels)
            fg = class_voxels[classes[int(torch.randint(len(classes), (), generator=generator))]]
        else:
            fg = torch.nonzero(label > 0)
        if len(fg):
            centre = fg[int(torch.randint(len(fg), (), generator=generator))].tolist()
    start = []
    for i, (s, p, a) in enumerate(zip(shape, patch_size, align)):
        hi = s - p
        if hi < 0:
            raise ValueError(f"volume shape {tuple(shape)} is smaller than the patch {tuple(patch_size)}; pad first.")
        if centre is not None:
            v = min(max(centre[i] - p // 2, 0), hi)
        else:
            v = int(torch.randint(hi + 1, (), generator=generator))
        v = (v // a) * a
        start.append(v)
    return tuple(start)  # type: ignore[return-value]


def patch_coverage(shape: Sequence[int], patch_size: Sequence[int], align: Sequence[int] = (1, 1, 1)) -> torch.Tensor:
    """The probability that each voxel of a volume of ``shape`` lies in a patch drawn by :func:`random_patch_start`
    without an organ centre (uniform start in ``[0, s - p]`` per axis, snapped down to a multiple of ``align``).

    The expected class shares of such patches are ``sum(coverage * onehot) / prod(patch_size)``: central voxels are
    in nearly every patch, those at the edges in few, so they are not a volume's class shares.

    Returns:
        float64 tensor of ``shape`` (the outer product of the three axes' coverages).

    Raises:
        ValueError: when a patch side exceeds the volume's.
    """
    axes = []
    for s, p, a in zip(shape, patch_size, align):
        hi = int(s) - int(p)
        if hi < 0:
            raise ValueError(f"volume shape {tuple(shape)} is smaller than the patch {tuple(patch_size)}; pad first.")
        starts = torch.zeros(int(s), dtype=torch.float64)
        snapped = (torch.arange(hi + 1) // int(a)) * int(a)
        starts.index_add_(0, snapped, torch.full((hi + 1,), 1.0 / (hi + 1), dtype=torch.float64))
        # a voxel i is covered by the starts in [i - p + 1, i]: a running sum of the start probabilities
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), starts.cumsum(0)])
        i = torch.arange(int(s))
        axes.append(cum[i + 1] - cum[(i - int(p) + 1).clamp_min(0)])
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


def crop(t: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Crop the trailing three axes of ``t``."""
    (x, y, z), (a, b, c) = start, size
    return t[..., x : x + a, y : y + b, z : z + c]


def load_cases(
    config: DinoMixConfig, cases: Sequence[Tuple[str, Optional[str]]], skip_invalid: bool = True
) -> Tuple[List[Volume], List[str]]:
    """Load many cases; invalid ones are skipped with a logged reason (returned as messages)."""
    volumes, skipped = [], []
    for image_path, label_path in cases:
        try:
            volumes.append(load_volume(config, image_path, label_path))
        except InvalidVolumeError as e:
            if not skip_invalid:
                raise
            msg = f"skipping {image_path}: {e}"
            logger.warning(msg)
            skipped.append(msg)
    return volumes, skipped
