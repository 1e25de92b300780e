"""``dinomix infer --input DIR --output DIR``: segment every image of a folder.

Inputs are NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``; 3D Slicer's ``.seg.nrrd`` segmentations are skipped),
MetaImage (``.mha``, ``.mhd``) files and DICOM series folders (a folder holding DICOM files: read with SimpleITK's
series reader, the largest series when it holds several). Each result is ``OUTPUT/<name>.nii.gz`` on the image's
own grid (uint8 label ids), and optionally ``OUTPUT/<name>.seg.dcm``, a DICOM-SEG of a DICOM series input
(MONAI Label's converter, dcmqi's ``itkimage2segimage``). Existing results are skipped unless ``overwrite``; one
unreadable input is reported and the others go on.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .artifacts import atomic_write
from .labels import VOLUME_EXTENSIONS, volume_stem

__all__ = ["InferInput", "find_inputs", "infer_folder", "is_dicom_folder"]

logger = logging.getLogger(__name__)

#: image files a folder is scanned for (:data:`~dinomix_core.labels.VOLUME_EXTENSIONS` without segmentations)
IMAGE_EXTENSIONS = tuple(e for e in VOLUME_EXTENSIONS if e != ".seg.nrrd")


def _image_stem(name: str) -> Optional[str]:
    """The output name of an image file, None for anything else (3D Slicer's ``.seg.nrrd`` included)."""
    return None if name.lower().endswith(".seg.nrrd") else volume_stem(name, IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class InferInput:
    """One image to segment: ``name`` (the output's stem), ``path`` (file or DICOM folder), ``dicom``."""

    name: str
    path: Path
    dicom: bool = False


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: Path) -> bool:
    """A folder holding at least one DICOM file (by ``.dcm`` suffix or the ``DICM`` preamble)."""
    return path.is_dir() and any(p.is_file() and _is_dicom_file(p) for p in path.iterdir())


def find_inputs(path: str) -> List[InferInput]:
    """The images of ``path``: the file itself, the DICOM series folder itself, or a folder's image files and DICOM
    series sub-folders (sorted by name).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a file of an unknown type, or a folder with nothing to segment.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"input {str(p)!r} does not exist.")
    if p.is_file():
        stem = _image_stem(p.name)
        if stem is None:
            raise ValueError(f"input {p.name!r} is not an image file ({', '.join(IMAGE_EXTENSIONS)}).")
        return [InferInput(stem, p)]
    if is_dicom_folder(p):
        return [InferInput(p.name, p, dicom=True)]
    found = []
    for child in sorted(p.iterdir()):
        stem = _image_stem(child.name) if child.is_file() else None
        if stem is not None:
            found.append(InferInput(stem, child))
        elif child.is_dir() and is_dicom_folder(child):
            found.append(InferInput(child.name, child, dicom=True))
    if not found:
        raise ValueError(f"no image file ({', '.join(IMAGE_EXTENSIONS)}) or DICOM series folder in {str(p)!r}.")
    names = [f.name for f in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"several inputs would write the same result {twice}: rename them.")
    return found


def read_dicom_series(folder: Path, out_file: Path) -> Path:
    """The largest DICOM series of ``folder`` written as NIfTI ``out_file`` (SimpleITK: LPS -> RAS on write)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ValueError(f"no readable DICOM series in {str(folder)!r}.")
    files = max((reader.GetGDCMSeriesFileNames(str(folder), s) for s in series), key=len)
    reader.SetFileNames(files)
    sitk.WriteImage(reader.Execute(), str(out_file))
    return out_file


def _dicom_seg(series_dir: Path, label_file: Path, organs: Sequence[str], out: Path) -> None:
    """A DICOM-SEG of the result (one segment per organ present, named after it) through MONAI Label."""
    import nibabel as nib
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    present = [int(i) for i in np.unique(np.asanyarray(nib.load(str(label_file)).dataobj)) if i != 0]
    if not present:
        raise ValueError("the result has no organ voxel: no DICOM-SEG written.")
    bindir = str(Path(sys.executable).parent)  # dcmqi's itkimage2segimage is installed beside the interpreter
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    made = nifti_to_dicom_seg(str(series_dir), str(label_file), [{"name": organs[i - 1]} for i in present],
                              use_itk=True)
    if not made or not os.path.isfile(made) or os.path.getsize(made) == 0:
        raise RuntimeError("DICOM-SEG conversion wrote no file (is dcmqi's itkimage2segimage installed?).")
    shutil.move(made, out)


@dataclass
class FolderSummary:
    segmented: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, object]:
        return {"segmented": self.segmented, "skipped": self.skipped, "failed": self.failed,
                "seconds": round(self.seconds, 1)}


def infer_folder(model_path: str, input_path: str, output_dir: str, device: Optional[str] = None,
                 overwrite: bool = False, dicom_seg: bool = False, progress: bool = True) -> FolderSummary:
    """Segment every input of :func:`find_inputs` into ``output_dir``; see the module docstring.

    Raises:
        ModelNotFoundError / ModelFileError: the model cannot be loaded (before any input is read).
        FileNotFoundError / ValueError: nothing to segment at ``input_path``.
    """
    from tqdm.auto import tqdm

    from .inference import Predictor, load_model_file, nifti_bytes

    inputs = find_inputs(input_path)
    load_model_file(model_path)  # a missing or foreign model file fails before any work
    predictor = Predictor(model_path, device=device)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, t0 = FolderSummary(), time.time()
    bar = tqdm(inputs, desc="segmenting", unit="image", disable=not progress, dynamic_ncols=True)
    for item in bar:
        bar.set_postfix_str(item.name, refresh=False)
        label_file = out_dir / f"{item.name}.nii.gz"
        seg_file = out_dir / f"{item.name}.seg.dcm"
        wanted = [label_file] + ([seg_file] if dicom_seg and item.dicom else [])
        if not overwrite and all(f.exists() for f in wanted):
            summary.skipped.append(item.name)
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="dinomix-infer-") as tmp:
                image = read_dicom_series(item.path, Path(tmp) / "image.nii.gz") if item.dicom else item.path
                label, affine = predictor.predict(str(image))
                atomic_write(label_file, nifti_bytes(label, affine))
                if dicom_seg and item.dicom:
                    _dicom_seg(item.path, label_file, predictor.config.label_names, seg_file)
            summary.segmented.append(item.name)
        except Exception as e:  # one bad input is reported; the others go on
            logger.warning("%s: %s", item.name, e)
            summary.failed[item.name] = f"{type(e).__name__}: {e}"
    summary.seconds = time.time() - t0
    return summary
