"""Checks a submitted label volume against its image before it is stored.

A correction from 3D Slicer becomes training data, so a wrong one must be refused with a message saying what is
wrong: unreadable file, not 3D, a grid (shape, spacing, orientation) that differs from the image's, non-integer
values, ids outside 0..13, or no organ voxel at all.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .config import NUM_CLASSES
from .data import InvalidVolumeError

__all__ = ["read_volume", "check_label", "check_image"]


def read_volume(path: str, what: str = "volume") -> Tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI or NRRD file as (array, 4x4 affine); ``InvalidVolumeError`` with the reason when unreadable."""
    p = str(path)
    try:
        if p.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(p)
            return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)
        from monai.transforms import LoadImage

        arr = LoadImage(image_only=True)(p)
        return np.asarray(arr), np.asarray(arr.affine, dtype=np.float64)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise InvalidVolumeError(
            f"{what} is not a readable NIfTI/NRRD file ({type(e).__name__}: {msg[-1] if msg else 'empty'})."
        ) from e


def check_image(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read an image and check it is a 3D volume."""
    arr, affine = read_volume(path, "image")
    shape = tuple(int(s) for s in arr.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3 or min(shape) < 2:
        raise InvalidVolumeError(f"image must be a 3D volume; it has shape {tuple(arr.shape)}.")
    return arr.reshape(shape), affine


def check_label(
    image_path: str,
    label_path: str,
    num_classes: int = NUM_CLASSES,
    atol_mm: float = 1e-3,
    allow_empty: bool = False,
) -> np.ndarray:
    """Validate ``label_path`` as a label of ``image_path``; returns the label as uint8.

    Raises:
        InvalidVolumeError: with a message naming what is wrong.
    """
    img, img_affine = check_image(image_path)
    lab, lab_affine = read_volume(label_path, "label")
    shape = tuple(int(s) for s in lab.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InvalidVolumeError(f"label must be a 3D volume; it has shape {tuple(lab.shape)}.")
    lab = lab.reshape(shape)
    if shape != img.shape:
        raise InvalidVolumeError(f"label shape {shape} differs from the image shape {img.shape}.")
    img_sp = np.linalg.norm(img_affine[:3, :3], axis=0)
    lab_sp = np.linalg.norm(lab_affine[:3, :3], axis=0)
    if not np.allclose(img_sp, lab_sp, atol=atol_mm, rtol=1e-4):
        raise InvalidVolumeError(
            f"label spacing {tuple(np.round(lab_sp, 4))} mm differs from the image spacing {tuple(np.round(img_sp, 4))} mm."
        )
    if not np.allclose(img_affine[:3, :3], lab_affine[:3, :3], atol=atol_mm * 10, rtol=1e-4):
        raise InvalidVolumeError("label orientation (direction of its axes) differs from the image's.")
    if not np.allclose(img_affine[:3, 3], lab_affine[:3, 3], atol=max(1e-2, float(img_sp.min()) / 2)):
        raise InvalidVolumeError(
            f"label origin {tuple(np.round(lab_affine[:3, 3], 2))} differs from the image origin "
            f"{tuple(np.round(img_affine[:3, 3], 2))}."
        )
    data = np.asarray(lab)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise InvalidVolumeError("label has non-integer (float) values; organ ids must be whole numbers.")
    elif data.dtype.kind not in "iub":
        raise InvalidVolumeError(f"label has an unsupported data type {data.dtype}.")
    lo, hi = int(data.min()), int(data.max())
    if lo < 0 or hi > num_classes - 1:
        bad = sorted(int(v) for v in np.unique(data) if v < 0 or v > num_classes - 1)[:10]
        raise InvalidVolumeError(f"label has ids outside 0..{num_classes - 1}: {bad}.")
    if hi == 0 and not allow_empty:
        raise InvalidVolumeError("label contains no organ voxel (all background); nothing to learn from.")
    return data.astype(np.uint8)
