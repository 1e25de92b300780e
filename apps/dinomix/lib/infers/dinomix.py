"""Infer task ``dinomix``: the app's label set (default the 13 Synapse organs), on the input image's own grid (thin
wrapper over dinomix_core)."""

import logging
import os
import tempfile
import time
from typing import Any, Dict, Optional, Tuple, Union

import nibabel as nib
import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from dinomix_core.errors import ModelNotFoundError
from dinomix_core.inference import Predictor
from dinomix_core.labels import LabelSet
from dinomix_core.registry import ModelRegistry

logger = logging.getLogger(__name__)

#: result files the infer task writes (``result_extension``; the stock Slicer plugin asks for ".nrrd") and their
#: voxel types (``result_dtype``; the plugin asks for "uint8"); the defaults come first.
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
RESULT_DTYPES = ("uint8", "uint16")

NO_MODEL = (
    "the dinomix model is not ready: no trained DINO-Mix model and no starter model. Submit a label and click "
    "Retrain (or run `dinomix train`)."
)


class DinoMixInfer(InferTask):
    """DINO-Mix (arXiv 2602.07819) multi-organ CT segmentation.

    A newly published model is picked up by the next request (the predictor reloads on a new file time). No model
    to serve is answered 409, an unusable image 422 (lib/compat/errors.py).
    """

    def __init__(self, registry: ModelRegistry, label_set: LabelSet, max_voxels: int,
                 predictor: Optional[Predictor] = None):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=label_set.ids_by_name,
            dimension=3,
            description=f"DINO-Mix: {len(label_set.organs)} labels ({label_set.name}), semi-supervised with DINOv3 "
            "distillation",
        )
        self.registry = registry
        self.predictor = predictor or shared_predictor(registry, label_set, max_voxels)

    def is_valid(self) -> bool:
        # MONAI Label lists only valid models in /info: with nothing to serve, the stock Slicer plugin then shows no
        # segmentation model and does not run one after Next Sample (the train task stays listed for a Retrain)
        return self.registry.served_path() is not None

    def not_ready(self) -> str:
        """What to do while nothing can be served, and why a model file present is not (another label set)."""
        return " ".join([NO_MODEL] + [f"({why}.)" for why in self.registry.unserved()])

    def info(self) -> Dict[str, Any]:
        i = super().info()
        served = self.registry.served()
        i["model_present"] = served is not None
        if served is None:
            i["model_status"] = self.not_ready()
            return i
        i["model_source"] = served["source"]
        i["model_version"] = served.get("version")
        i["model_label_ids"] = served.get("label_ids")
        if served["source"] == "starter":
            i["model_status"] = "starter model shipped with the app (trained on the sample studies); Retrain to adapt it"
        else:
            i["model_status"] = f"retrained model version {served.get('version')} published {served.get('published_at', '?')}"
            i["model_published_at"] = served.get("published_at")
            i["model_trained_on"] = len(served.get("labeled_ids") or [])
        return i

    def image_file(self, request: Dict[str, Any]) -> str:
        """The request's image file; 404 when it is not one."""
        image = request.get("image")
        if not isinstance(image, str) or not image or not os.path.isfile(image):
            raise HTTPException(status_code=404, detail=f"unknown image: {request.get('image')!r} is not in the datastore")
        return image

    def result_meta(self, t0: float, t1: float, **extra: Any) -> Dict[str, Any]:
        """The answer's parameters: label names, latencies (infer from ``t0`` to ``t1``, then writing) and model."""
        meta = self.predictor.meta or {}
        return {
            "label_names": self.labels,
            "latencies": {"infer": round(t1 - t0, 3), "write": round(time.time() - t1, 3), "total": round(time.time() - t0, 3)},
            "model": {
                "source": self.predictor.source, "iteration": meta.get("iteration"), "saved_at": meta.get("saved_at"),
                "label_ids": meta.get("label_ids"),
            },
            **extra,
        }

    def __call__(self, request) -> Tuple[Union[str, None], Dict]:
        image = self.image_file(request)
        ext, dtype = result_format(request)
        t0 = time.time()
        try:
            label, affine = self.predictor.predict(image)
        except ModelNotFoundError:  # say what to do about it
            raise ModelNotFoundError(self.not_ready()) from None
        t1 = time.time()
        return write_result(label, affine, ext, dtype), self.result_meta(t0, t1)


def shared_predictor(registry: ModelRegistry, label_set: LabelSet, max_voxels: int) -> Predictor:
    """The predictor of the served model (the published one, else the starter) that the app's infer tasks share."""
    return Predictor(str(registry.model_path), max_voxels=max_voxels, fallback_path=registry.starter_path,
                     label_names=label_set.organs)


def result_format(request: Dict[str, Any]) -> Tuple[str, str]:
    """The request's ``result_extension`` and ``result_dtype`` (MONAI Label's names), checked: 422 naming the
    choices for anything else."""
    ext = request.get("result_extension") or RESULT_EXTENSIONS[0]
    dtype = request.get("result_dtype") or RESULT_DTYPES[0]
    if ext not in RESULT_EXTENSIONS:
        raise HTTPException(status_code=422, detail=f"result_extension {ext!r} is not offered; choose one of "
                            f"{', '.join(RESULT_EXTENSIONS)}.")
    if dtype not in RESULT_DTYPES:
        raise HTTPException(status_code=422, detail=f"result_dtype {dtype!r} is not offered; choose one of "
                            f"{', '.join(RESULT_DTYPES)}.")
    return ext, dtype


def write_result(label: np.ndarray, affine: np.ndarray, ext: str, dtype: str) -> str:
    """Write the label map [X, Y, Z] (on the image's grid, RAS ``affine``) to a new temporary file; NRRD through
    MONAI Label's own ITK writer (what its stock infer tasks return to the Slicer plugin)."""
    fd, out = tempfile.mkstemp(suffix=ext, prefix="dinomix_")
    os.close(fd)
    data = np.asarray(label).astype(dtype)
    if ext == ".nrrd":
        from monailabel.transform.writer import write_itk

        write_itk(data, out, affine, dtype, compress=True)
    else:
        img = nib.Nifti1Image(data, affine)
        img.set_data_dtype(np.dtype(dtype))
        nib.save(img, out)
    return out
