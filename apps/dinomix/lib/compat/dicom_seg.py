"""MONAI Label 0.8.5 bug fixed: DICOM-SEG output names segments after the wrong organs, and a failed conversion
is a bare 500. A guard around MONAI Label's conversion; no method logic.

For ``POST /infer/dinomix?output=dicom_seg`` (DICOMweb datastores), and for a ``final`` label saved to a DICOMweb
datastore (``monailabel/datastore/dicom.py``), MONAI Label calls
``monailabel.datastore.utils.convert.nifti_to_dicom_seg(series_dir, label_file, label_info)``, which pairs
``label_info[k]`` with the k-th label id *present* in the result. A client that sends the natural list, one entry
per organ in id order, therefore gets every segment after the first absent organ under its predecessor's name
(an oesophagus called "gallbladder"), and a viewer cannot tell. It also ignores dcmqi's exit status, so a failed
conversion comes back as a bare 500.

:func:`install` replaces the function the infer endpoint calls with one that

* accepts ``label_info`` with one entry per organ (13, in id order) **or** one per present organ (MONAI Label's
  own convention) **or** an empty list (our organ names), and hands MONAI Label the per-present-organ list;
* fills a missing ``name`` with the organ's name;
* refuses any other length with 400 saying what it expects, and a conversion that wrote no file with a 500 that
  says so (dcmqi's ``itkimage2segimage`` missing or failing).
"""

import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import nibabel as nib
import numpy as np
from fastapi import HTTPException
from monailabel.datastore import dicom as _dicom_datastore
from monailabel.endpoints import infer as _infer_endpoint

logger = logging.getLogger(__name__)

_original = _infer_endpoint.__dict__.setdefault("_dinomix_original_nifti_to_dicom_seg", _infer_endpoint.nifti_to_dicom_seg)


def segment_label_info(
    label_info: Optional[Sequence[Dict[str, Any]]], present_ids: Sequence[int], organ_names: Sequence[str]
) -> List[Dict[str, Any]]:
    """``label_info`` as MONAI Label's converter needs it: one entry per present label id, in increasing id order.

    Args:
        label_info: the request's list: empty/None, one entry per organ (``len(organ_names)``, entry ``i`` for id
            ``i + 1``) or one entry per present id (MONAI Label's convention).
        present_ids: the non-zero ids in the result, increasing.
        organ_names: names of ids ``1..len(organ_names)``.

    Returns:
        a new list of new dicts; a missing ``name`` is the organ's name.

    Raises:
        ValueError: ``label_info`` of another length, or a present id outside ``1..len(organ_names)``.
    """
    ids = [int(i) for i in present_ids]
    n = len(organ_names)
    bad = [i for i in ids if not 1 <= i <= n]
    if bad:
        raise ValueError(f"label ids {bad} are not organ ids 1..{n}.")
    info = list(label_info or [])
    if not info:
        chosen: List[Dict[str, Any]] = [{} for _ in ids]
    elif len(info) == n:
        chosen = [dict(info[i - 1]) for i in ids]
    elif len(info) == len(ids):
        chosen = [dict(e) for e in info]
    else:
        raise ValueError(
            f"label_info has {len(info)} entries: send one per organ ({n}, in id order), one per organ present in "
            f"the result ({len(ids)}: ids {ids}), or [] for the organ names."
        )
    for entry, i in zip(chosen, ids):
        if not isinstance(entry, dict):
            raise ValueError(f"label_info entries must be objects, got {entry!r}.")
        entry.setdefault("name", organ_names[i - 1])
    return chosen


def make_converter(organ_names: Sequence[str]):
    """A drop-in for ``nifti_to_dicom_seg`` that applies :func:`segment_label_info` and checks the output file."""

    def nifti_to_dicom_seg(series_dir, label, label_info, file_ext="*", use_itk=True) -> str:
        data = np.asanyarray(nib.load(label).dataobj)
        present = [int(i) for i in np.unique(data) if i != 0]
        if not present:
            raise HTTPException(status_code=422, detail="DICOM-SEG: the result has no organ voxel to export.")
        try:
            info = segment_label_info(label_info, present, organ_names)
        except ValueError as e:
            raise HTTPException(status_code=400, detail=f"DICOM-SEG: {e}") from None
        try:
            out = _original(series_dir, label, info, file_ext=file_ext, use_itk=use_itk)
        except OSError as e:  # itkimage2segimage not found / not runnable
            raise HTTPException(
                status_code=500, detail=f"DICOM-SEG conversion could not run dcmqi's itkimage2segimage: {e}"
            ) from None
        if not out or not os.path.isfile(out) or os.path.getsize(out) == 0:
            raise HTTPException(
                status_code=500,
                detail="DICOM-SEG conversion wrote no file: is dcmqi's itkimage2segimage installed and on PATH? "
                "(see the server log)",
            )
        return out

    nifti_to_dicom_seg.dinomix = True  # type: ignore[attr-defined]
    return nifti_to_dicom_seg


def install(organ_names: Sequence[str]) -> None:
    """Make MONAI Label's infer endpoint and its DICOMweb datastore's ``save_label`` use :func:`make_converter`
    (idempotent). The datastore gets its names from ``lib.datastore.DinoMixDICOMWebDatastore``, one per organ
    present; the converter adds the check that a file was written."""
    converter = make_converter(organ_names)
    _infer_endpoint.nifti_to_dicom_seg = converter
    _dicom_datastore.nifti_to_dicom_seg = converter
