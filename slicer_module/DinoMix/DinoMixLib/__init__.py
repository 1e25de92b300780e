"""Helpers of the DinoMix 3D Slicer module that need no Slicer: a standard-library MONAI Label client
(:mod:`.client`), label-map/segment conversion and a numpy-only NIfTI-1 reader/writer (:mod:`.labelmap`),
and training request/progress helpers (:mod:`.training`).

DINO-Mix: arXiv 2602.07819.
"""

from .client import DinoMixClient, DinoMixClientError
from .labelmap import (
    ORGAN_COLORS,
    labelmap_to_segments,
    organ_color,
    read_nifti,
    segments_to_labelmap,
    write_nifti,
    write_nifti_label,
)
from .training import TrainingMonitor, build_train_params, summarize_train_stats

__all__ = [
    "DinoMixClient",
    "DinoMixClientError",
    "ORGAN_COLORS",
    "labelmap_to_segments",
    "organ_color",
    "read_nifti",
    "segments_to_labelmap",
    "write_nifti",
    "write_nifti_label",
    "TrainingMonitor",
    "build_train_params",
    "summarize_train_stats",
]
