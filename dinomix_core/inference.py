"""Sliding-window inference from a DINO-Mix model file, with the label returned on the input image's grid.

The model file carries its :class:`~dinomix_core.config.DinoMixConfig`; the network is rebuilt with the same
:func:`~dinomix_core.networks.build_student` used for training, the image goes through the same
preprocessing, and MONAI's ``Invertd`` undoes resampling and reorientation so the result has the input's
shape, spacing and orientation.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
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

    @torch.no_grad()
    def predict(self, image_path: str) -> Tuple[np.ndarray, np.ndarray]:
        """Segment ``image_path``; returns (uint8 label [X, Y, Z] on the image's own grid, its 4x4 affine).

        Raises:
            ModelNotFoundError: no model published yet.
            InvalidVolumeError: unreadable, not 3D, or larger than ``max_voxels``.
        """
        pre, data, image, logits = self._run(image_path)
        pred = logits.argmax(1).to(torch.float32).cpu()  # [1, X, Y, Z]
        if self.config is not None and self.config.keep_largest_component:
            pred = KeepLargestConnectedComponent(
                applied_labels=list(range(1, self.config.out_channels)), is_onehot=False, independent=True
            )(pred)
            pred = torch.as_tensor(pred)
        data["pred"] = MetaTensor(pred, meta=image.meta, applied_operations=image.applied_operations)
        inverted = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
        label = np.asarray(inverted[0].cpu().numpy()).round().astype(np.uint8)
        affine = np.asarray(image.meta.get("original_affine", image.affine), dtype=np.float64)
        return label, affine


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
