"""Sliding-window inference from a DINO-Mix model file, with the label returned on the input image's grid.

The model file carries its :class:`~dinomix_core.config.DinoMixConfig`; the network is rebuilt with the same
:func:`~dinomix_core.networks.build_student` used for training, the image goes through the same
preprocessing, and MONAI's ``Invertd`` undoes resampling and reorientation so the result has the input's
shape, spacing and orientation.
"""

from __future__ import annotations

import copy
import gzip
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd, KeepLargestConnectedComponent

from .config import DinoMixConfig
from .data import InvalidVolumeError, _root, check_spatial, preprocessing
from .artifacts import ModelFile, atomic_write
from .errors import ModelFileError, ModelNotFoundError
from .interactive import apply_clicks
from .networks import build_student

__all__ = ["ModelNotFoundError", "ModelFileError", "nifti_bytes", "Predictor", "load_model_file", "predict_file", "image_voxel_count", "DEFAULT_MAX_VOXELS"]

logger = logging.getLogger(__name__)

#: Images above this many voxels are refused rather than risking the server's memory (about 4 GB of float64).
DEFAULT_MAX_VOXELS = 512 * 512 * 2000


def load_model_file(path: str) -> ModelFile:
    """Read a DINO-Mix model file for inference.

    Raises:
        ModelNotFoundError: nothing at ``path``.
        ModelFileError: not a DINO-Mix model file (a ``ValueError``).
    """
    if not Path(path).is_file():
        raise ModelNotFoundError(f"no trained DINO-Mix model at {str(path)!r}: train one first (dinomix train / Retrain).")
    return ModelFile.load(path)


def image_voxel_count(path: str) -> Optional[int]:
    """Voxel count read from the header only (NIfTI / NRRD); None when the header can't tell."""
    try:
        img = nib.load(str(path))
        return int(np.prod(img.shape))
    except Exception:
        pass
    if str(path).endswith(".nrrd"):
        try:
            with open(path, "rb") as f:
                head = f.read(4096).decode("latin-1", "replace")
            for line in head.splitlines():
                if line.lower().startswith("sizes:"):
                    return int(np.prod([int(x) for x in line.split(":", 1)[1].split()]))
        except Exception:
            return None
    return None


class Predictor:
    """Loads a model file and predicts label volumes; reloads when the file's modification time changes.

    Args:
        model_path: the published model (``model.pt``).
        fallback_path: served while ``model_path`` does not exist (the app's starter model); ``source`` says
            which one the last prediction used ("retrained" or "starter").
        device: torch device (default CUDA when available).
        max_voxels: refuse images larger than this (clear error instead of running out of memory).
        sw_batch_size: windows per forward pass.
        label_names: when given, a model file trained for other labels is not used (the next candidate is, or
            ``ModelNotFoundError`` says why none can be).
    """

    def __init__(
        self,
        model_path: str,
        device: Optional[str] = None,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        sw_batch_size: int = 2,
        fallback_path: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
    ) -> None:
        if max_voxels < 1 or sw_batch_size < 1:
            raise ValueError("max_voxels and sw_batch_size must be positive.")
        self.model_path = str(model_path)
        self.fallback_path = str(fallback_path) if fallback_path else None
        self.source: Optional[str] = None
        self._path: Optional[str] = None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_voxels = max_voxels
        self.sw_batch_size = sw_batch_size
        self.label_names = tuple(label_names) if label_names is not None else None
        self._lock = threading.Lock()
        self._refused: Dict[Tuple[str, int], str] = {}  # model file versions trained for other labels: why
        self._mtime: Optional[float] = None
        self._net: Optional[torch.nn.Module] = None
        self.config: Optional[DinoMixConfig] = None
        self.meta: Dict[str, Any] = {}
        #: the last automatic results (key: image file version + model file version), for click refinement
        self._results: "OrderedDict[Tuple[Any, ...], _Segmentation]" = OrderedDict()

    def _load(self) -> Tuple[torch.nn.Module, DinoMixConfig]:
        with self._lock:
            refused = []
            for candidate in (self.model_path, self.fallback_path):
                try:
                    path, mtime = candidate, os.stat(candidate).st_mtime_ns
                except (FileNotFoundError, TypeError):
                    continue
                if self._net is not None and (path, mtime) == (self._path, self._mtime):
                    return self._net, self.config  # type: ignore[return-value]
                if (path, mtime) in self._refused:  # read once per file version, not once per request
                    refused.append(self._refused[(path, mtime)])
                    continue
                mf = load_model_file(path)
                config = DinoMixConfig.from_dict(mf.config)
                if self.label_names is not None and tuple(config.label_names) != self.label_names:
                    self._refused[(path, mtime)] = f"{path} was trained for other labels ({', '.join(config.label_names)})"
                    refused.append(self._refused[(path, mtime)])
                    continue
                if config.refiner and not any(k.startswith("refiner.") for k in mf.model):
                    config = config.replace(refiner=False)  # a model file written before the click refiner
                net = build_student(config, teacher_channels=None)
                net.load_state_dict({k: v for k, v in mf.model.items() if not k.startswith("projection.")})
                self._net = net.to(self.device).eval()
                self.config = config
                self.meta = dict(mf.summary(), trained_on=mf.trained_on, per_organ_dice=mf.per_organ_dice)
                self._path, self._mtime = path, mtime
                self.source = "retrained" if path == self.model_path else "starter"
                logger.info("loaded DINO-Mix model %s (%s, iteration %s)", path, self.source, mf.iteration)
                return self._net, self.config
            why = f" ({'; '.join(refused)}; this server's labels: {', '.join(self.label_names or ())})" if refused else ""
            raise ModelNotFoundError(
                f"no trained DINO-Mix model at {self.model_path!r}{why}: train one first (dinomix train / Retrain)."
            )

    @torch.no_grad()
    def _run(self, image_path: str):
        n = image_voxel_count(image_path)
        if n is not None and n > self.max_voxels:
            raise InvalidVolumeError(
                f"image {image_path!r} has {n} voxels, above the limit of {self.max_voxels}; crop or downsample it."
            )
        net, config = self._load()
        pre = preprocessing(config, with_label=False)
        try:
            data = pre({"image": str(image_path)})
        except Exception as e:
            raise InvalidVolumeError(f"cannot read image {image_path!r}: {_root(e)}") from e
        image = data["image"]
        check_spatial(image, "image", str(image_path))
        amp = self.device.type == "cuda" and config.amp
        with torch.autocast(self.device.type, enabled=amp):
            logits = sliding_window_inference(
                image[None].to(self.device), config.inference_roi, self.sw_batch_size, net, overlap=config.sw_overlap,
                mode="gaussian",
            )
        return pre, data, image, logits.float()

    @torch.no_grad()
    def predict_proba(self, image_path: str) -> torch.Tensor:
        """Softmax probabilities [C, X, Y, Z] on the preprocessed (RAS, resampled) grid."""
        _, _, _, logits = self._run(image_path)
        return torch.softmax(logits[0], 0).cpu()

    def _segment(self, image_path: str) -> "_Segmentation":
        """The automatic segmentation on the model grid, from the cache when this image and model were seen."""
        self._load()
        try:
            key: Tuple[Any, ...] = (str(image_path), os.stat(image_path).st_mtime_ns, self._path, self._mtime)
        except OSError:
            key = (str(image_path), None, self._path, self._mtime)
        with self._lock:
            hit = self._results.get(key)
            if hit is not None:
                self._results.move_to_end(key)
                return hit
        pre, data, image, logits = self._run(image_path)
        logits = torch.as_tensor(logits)  # plain tensors from here (the image's MetaTensor keeps the metadata)
        probs = torch.softmax(logits[0], 0)
        pred = logits.argmax(1).to(torch.float32).cpu()  # [1, X, Y, Z]
        if self.config is not None and self.config.keep_largest_component:
            pred = torch.as_tensor(KeepLargestConnectedComponent(
                applied_labels=list(range(1, self.config.out_channels)), is_onehot=False, independent=True
            )(pred))
        seg = _Segmentation(pre, data, image, probs, pred[0].long())
        with self._lock:
            self._results[key] = seg
            while len(self._results) > self.cached_results:
                self._results.popitem(last=False)
        return seg

    #: automatic results kept for click refinement (each holds the class probabilities of one image)
    cached_results = 2

    @staticmethod
    def _invert(seg: "_Segmentation", volume: torch.Tensor, nearest: bool) -> Tuple[np.ndarray, np.ndarray]:
        """A model-grid volume [X, Y, Z] back on the image's own grid (nearest or linear): (array, 4x4 affine)."""
        image = seg.image
        data = dict(seg.data)
        data["pred"] = MetaTensor(volume[None].to(torch.float32).cpu(), meta=dict(image.meta),
                                  applied_operations=copy.deepcopy(image.applied_operations))
        inverted = Invertd(keys="pred", transform=seg.pre, orig_keys="image", nearest_interp=nearest)(data)["pred"]
        affine = np.asarray(image.meta.get("original_affine", image.affine), dtype=np.float64)
        return np.asarray(inverted[0].cpu().numpy()), affine

    @classmethod
    def _export(cls, seg: "_Segmentation", label: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
        """A model-grid label [X, Y, Z] back on the image's own grid: (uint8 label, 4x4 affine)."""
        out, affine = cls._invert(seg, label, nearest=True)
        return out.round().astype(np.uint8), affine

    @torch.no_grad()
    def organ_probability(self, image_path: str, organ: int) -> Tuple[np.ndarray, np.ndarray]:
        """The model's probability of label id ``organ`` on the image's own grid (float32, linear resampling) and
        the affine; from the same cached automatic result as :meth:`predict`."""
        seg = self._segment(image_path)
        if not 0 <= int(organ) < seg.probs.shape[0]:
            raise ValueError(f"label id {organ} is not one of this model's classes (0..{seg.probs.shape[0] - 1}).")
        prob, affine = self._invert(seg, seg.probs[int(organ)], nearest=False)
        return np.clip(prob, 0.0, 1.0).astype(np.float32), affine

    @torch.no_grad()
    def predict(self, image_path: str) -> Tuple[np.ndarray, np.ndarray]:
        """Segment ``image_path``; returns (uint8 label [X, Y, Z] on the image's own grid, its 4x4 affine).

        Raises:
            ModelNotFoundError: no model published yet.
            InvalidVolumeError: unreadable, not 3D, or larger than ``max_voxels``.
        """
        seg = self._segment(image_path)
        return self._export(seg, seg.label)

    def served_config(self) -> DinoMixConfig:
        """The configuration of the model served now (loads it; ``ModelNotFoundError`` without one)."""
        return self._load()[1]

    @torch.no_grad()
    def refine(self, image_path: str, clicks: Dict[int, Sequence[Sequence[int]]],
               background: Sequence[Sequence[int]] = (), edited: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The automatic segmentation of ``image_path`` corrected by clicks (``interactive.apply_clicks``).

        Args:
            image_path: the image.
            clicks: label id -> points on that organ, as voxel indices (i, j, k) of the image file.
            background: points on background, voxel indices.
            edited: the label id being edited (refined last; may have background points only).

        Returns:
            (uint8 label on the image's grid, its affine); without any point, exactly :meth:`predict`'s result.

        Raises:
            ModelNotFoundError: no model, or a model without a click refiner (trained before it existed).
            ValueError: a point outside the image, or an unknown label id.
        """
        net, config = self._load()
        if getattr(net, "refiner", None) is None:
            raise ModelNotFoundError(
                f"the served model ({self._path}) has no click refiner (it was trained before interactive editing "
                "existed): retrain it once to edit with clicks."
            )
        for organ in list(clicks) + ([edited] if edited is not None else []):
            if not 1 <= int(organ) < config.out_channels:
                raise ValueError(f"label id {organ} is not one of this model's organs (1..{config.out_channels - 1}).")
        seg = self._segment(image_path)
        to_grid = _voxel_map(seg.image)
        shape = tuple(seg.label.shape)
        grid_clicks = {int(o): [_to_grid(p, to_grid, shape, seg.original_shape) for p in pts] for o, pts in clicks.items()}
        grid_bg = [_to_grid(p, to_grid, shape, seg.original_shape) for p in background]
        total = tuple(int(np.prod([s[a] for s in config.strides])) for a in range(3))
        label = apply_clicks(net.refiner, seg.image.as_tensor().to(self.device), seg.probs, seg.label.to(self.device),
                             grid_clicks, grid_bg, int(edited) if edited is not None else None, config.refiner_sigma,
                             total)
        return self._export(seg, label.cpu())


@dataclass
class _Segmentation:
    """One automatic result on the model grid, kept for click refinement."""

    pre: Any  # the preprocessing transform (to invert)
    data: Dict[str, Any]  # its output dictionary
    image: MetaTensor  # [1, X, Y, Z] preprocessed image
    probs: torch.Tensor  # [C, X, Y, Z] softmax probabilities
    label: torch.Tensor  # [X, Y, Z] long: the automatic label

    @property
    def original_shape(self) -> Tuple[int, ...]:
        shape = self.image.meta.get("spatial_shape")
        return tuple(int(s) for s in np.asarray(shape).reshape(-1)[:3]) if shape is not None else ()


def _voxel_map(image: MetaTensor) -> np.ndarray:
    """4x4 map from voxel indices of the image file to voxel indices of the preprocessed (model) grid."""
    original = np.asarray(image.meta.get("original_affine", image.affine), dtype=np.float64)
    return np.linalg.inv(np.asarray(image.affine, dtype=np.float64)) @ original


def _to_grid(point: Sequence[int], to_grid: np.ndarray, shape: Sequence[int], original_shape: Sequence[int]
             ) -> Tuple[int, int, int]:
    if len(point) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point):
        raise ValueError(f"a point must be three voxel indices [i, j, k], got {point!r}.")
    if original_shape and not all(-0.5 <= float(v) < s - 0.5 for v, s in zip(point, original_shape)):
        raise ValueError(f"point {list(point)} is outside the image (size {list(original_shape)}).")
    q = to_grid @ np.array([float(point[0]), float(point[1]), float(point[2]), 1.0])
    return tuple(int(np.clip(round(float(c)), 0, s - 1)) for c, s in zip(q[:3], shape))


def predict_file(model_path: str, image_path: str, output_path: str, device: Optional[str] = None) -> str:
    """Segment one image and write the label as NIfTI (uint8) on the image's grid; returns the output path."""
    label, affine = Predictor(model_path, device=device).predict(image_path)
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, nifti_bytes(label, affine, gzip_=out.name.endswith(".gz")))
    return str(out)


def nifti_bytes(label: np.ndarray, affine: np.ndarray, gzip_: bool = True) -> bytes:
    """A uint8 label volume as the bytes of a (gzipped) NIfTI-1 file."""
    img = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), affine)
    img.set_data_dtype(np.uint8)
    data = img.to_bytes()
    return gzip.compress(data, compresslevel=1) if gzip_ else data
