"""Infer task ``dinomix``: the 13 Synapse organs, on the input image's own grid (thin wrapper over dinomix_core)."""

import logging
import os
import tempfile
import time
from typing import Any, Dict, Tuple, Union

import nibabel as nib
import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from dinomix_core.data import InvalidVolumeError
from dinomix_core.inference import ModelNotFoundError, Predictor
from dinomix_core.registry import ModelRegistry

logger = logging.getLogger(__name__)


class DinoMixInfer(InferTask):
    """DINO-Mix (arXiv 2602.07819) multi-organ CT segmentation.

    A newly published model is picked up by the next request (the predictor reloads on a new file time).
    """

    def __init__(self, registry: ModelRegistry, labels: Dict[str, int], max_voxels: int):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=3,
            description="DINO-Mix: 13 abdominal organs (Synapse order), semi-supervised with DINOv3 distillation",
        )
        self.registry = registry
        self.predictor = Predictor(str(registry.model_path), max_voxels=max_voxels)

    def is_valid(self) -> bool:
        # listed even before the first training, so clients can see it and start a Retrain
        return True

    def info(self) -> Dict[str, Any]:
        i = super().info()
        cur = self.registry.current()
        i["model_present"] = cur is not None
        i["model_status"] = (
            f"model version {cur.get('version')} published {cur.get('published_at', '?')}" if cur else
            "no trained model yet: submit labels and click Retrain (or run `dinomix train`)"
        )
        if cur:
            i["model_version"] = cur.get("version")
            i["model_published_at"] = cur.get("published_at")
            i["model_trained_on"] = len(cur.get("labeled_ids") or [])
        return i

    def __call__(self, request) -> Tuple[Union[str, None], Dict]:
        image = request.get("image")
        if not isinstance(image, str) or not image or not os.path.isfile(image):
            raise HTTPException(status_code=404, detail=f"unknown image: {request.get('image')!r} is not in the datastore")
        t0 = time.time()
        try:
            label, affine = self.predictor.predict(image)
        except ModelNotFoundError as e:
            raise HTTPException(status_code=409, detail=str(e))
        except InvalidVolumeError as e:
            raise HTTPException(status_code=422, detail=str(e))
        t1 = time.time()
        fd, out = tempfile.mkstemp(suffix=".nii.gz", prefix="dinomix_")
        os.close(fd)
        img = nib.Nifti1Image(label, affine)
        img.set_data_dtype(np.uint8)
        nib.save(img, out)
        meta = self.predictor.meta or {}
        return out, {
            "label_names": self.labels,
            "latencies": {"infer": round(t1 - t0, 3), "write": round(time.time() - t1, 3), "total": round(time.time() - t0, 3)},
            "model": {"iteration": meta.get("iteration"), "saved_at": meta.get("saved_at")},
        }
