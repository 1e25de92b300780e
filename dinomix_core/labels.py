"""Label sets and the checks of submitted label volumes against them.

One place for what a label id means and where label data comes from:

* the label sets: :data:`SYNAPSE` (the 13 BTCV organs DINO-Mix, arXiv 2602.07819, is trained on) and :data:`AMOS`
  (AMOS 2022's 15 organs, 12 of them shared with Synapse), each a frozen :class:`LabelSet` with its organ names in
  id order, column abbreviations and small organs; :func:`get_label_set` looks one up by name and
  :meth:`LabelSet.from_names` builds one from organ names. The module constants (:data:`ORGANS`,
  :data:`ORGAN_ABBREVIATIONS`, :data:`NUM_CLASSES`, :data:`SMALL_ORGANS`, :data:`AMOS_ORGANS`) are views of them;
* the volume file extensions (:data:`VOLUME_EXTENSIONS`, one list) and :func:`volume_stem`;
* the fixed benchmark splits (:func:`load_split`; the JSON files are package data of ``dinomix_core/splits``);
* the checks of a label submitted from 3D Slicer before it becomes training data (:func:`check_label`): a wrong
  one is refused with a message saying what is wrong: unreadable file, not 3D, a grid (shape, spacing,
  orientation) that differs from the image's, non-integer values, ids outside the label set, or no organ voxel.

This module imports neither :mod:`dinomix_core.config` nor :mod:`dinomix_core.data`, so both may import it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import InvalidVolumeError

__all__ = [
    "LabelSet",
    "SYNAPSE",
    "AMOS",
    "LABEL_SETS",
    "get_label_set",
    "abbreviation",
    "ORGANS",
    "ORGAN_ABBREVIATIONS",
    "NUM_CLASSES",
    "SMALL_ORGANS",
    "SMALL_ORGAN_NAMES",
    "AMOS_ORGANS",
    "VOLUME_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "LABEL_EXTENSIONS",
    "volume_stem",
    "DATASETS",
    "fraction_key",
    "load_split",
    "read_volume",
    "check_image",
    "check_label",
    "label_info_mapping",
    "parse_label_set",
    "relabel_file",
]

# ------------------------------------------------------------------------------------------- label sets


def _name_tuple(values: Any, what: str) -> Tuple[str, ...]:
    """``values`` as a tuple of unique, non-empty, stripped strings (a plain string is refused)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{what} must be a sequence of names, got {values!r}.")
    out = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{what} must be non-empty strings, got {v!r}.")
        out.append(v.strip())
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(dup)}.")
    return tuple(out)


@dataclass(frozen=True)
class LabelSet:
    """The meaning of the label ids of one segmentation task: id ``i`` (1-based) is ``organs[i - 1]``, 0 background.

    Args:
        name: short name of the set (``"synapse"``, ``"amos"``, or a user's name).
        organs: organ names in label-id order (at least one; unique; ``"background"`` is implicit).
        abbreviations: one short column name per organ (unique), as the papers' tables use.
        small_organs: names of the organs that count as small (the papers' small-organ Dice), a subset of ``organs``.

    Raises:
        ValueError: an empty or non-string name, repeated organs or abbreviations, an abbreviation count that
            differs from the organ count, a small organ outside the set, or an organ named "background".
    """

    name: str
    organs: Tuple[str, ...]
    abbreviations: Tuple[str, ...]
    small_organs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a label set needs a non-empty name, got {self.name!r}.")
        organs = _name_tuple(self.organs, "organs")
        if not organs:
            raise ValueError("a label set needs at least one organ.")
        if any(o.lower() == "background" for o in organs):
            raise ValueError("'background' is label 0 in every label set; leave it out of the organs.")
        abbreviations = _name_tuple(self.abbreviations, "abbreviations")
        if len(abbreviations) != len(organs):
            raise ValueError(f"{len(abbreviations)} abbreviations given for {len(organs)} organs.")
        small = _name_tuple(self.small_organs, "small_organs")
        unknown = [s for s in small if s not in organs]
        if unknown:
            raise ValueError(f"small organs {unknown} are not organs of the label set {self.name!r}.")
        object.__setattr__(self, "name", self.name.strip())
        object.__setattr__(self, "organs", organs)
        object.__setattr__(self, "abbreviations", abbreviations)
        object.__setattr__(self, "small_organs", tuple(o for o in organs if o in small))  # id order

    @property
    def num_classes(self) -> int:
        """Classes including background (the network's output channels)."""
        return len(self.organs) + 1

    @property
    def ids(self) -> Tuple[int, ...]:
        """The organ label ids, ``1..num_classes-1``."""
        return tuple(range(1, self.num_classes))

    @property
    def ids_by_name(self) -> Dict[str, int]:
        """``{organ: label id}`` in id order (MONAI Label's ``labels``)."""
        return dict(zip(self.organs, self.ids))

    @property
    def small_organ_ids(self) -> Tuple[int, ...]:
        """Label ids of :attr:`small_organs`, ascending."""
        return tuple(self.id_of(o) for o in self.small_organs)

    def id_of(self, organ: str) -> int:
        """The label id of ``organ``; ``ValueError`` when the set has no such organ."""
        try:
            return self.organs.index(organ) + 1
        except ValueError:
            raise ValueError(f"label set {self.name!r} has no organ {organ!r}.") from None

    def abbreviation(self, organ: str) -> str:
        """The short column name of ``organ``; ``ValueError`` when the set has no such organ."""
        return self.abbreviations[self.id_of(organ) - 1]

    @classmethod
    def from_names(
        cls,
        organs: Sequence[str],
        name: str = "custom",
        abbreviations: Optional[Sequence[str]] = None,
        small_organs: Optional[Sequence[str]] = None,
    ) -> "LabelSet":
        """The label set of the organ names ``organs`` (in id order).

        Names equal to a known set's (and no other argument) give that set itself (:data:`SYNAPSE`,
        :data:`AMOS`). Otherwise a new set: abbreviations default to the known ones (:func:`abbreviation`, the
        name itself for an organ no known set has), small organs to the known small organs among ``organs``.
        """
        names = _name_tuple(organs, "organs")
        if abbreviations is None and small_organs is None:
            for known in LABEL_SETS.values():
                if known.organs == names:
                    return known
        if abbreviations is None:
            abbreviations = tuple(abbreviation(o) for o in names)
        if small_organs is None:
            small_organs = tuple(o for o in names if o in SMALL_ORGAN_NAMES)
        return cls(name, names, tuple(abbreviations), tuple(small_organs))


#: The 13 Synapse (BTCV) organs in the benchmark's order (label id = index + 1). Small organs: gallbladder
#: volume varies too much, so esophagus, portal/splenic veins and both adrenal glands (the smallest in the
#: real sample CT).
SYNAPSE = LabelSet(
    "synapse",
    organs=(
        "spleen",
        "right kidney",
        "left kidney",
        "gallbladder",
        "esophagus",
        "liver",
        "stomach",
        "aorta",
        "inferior vena cava",
        "portal and splenic veins",
        "pancreas",
        "right adrenal gland",
        "left adrenal gland",
    ),
    abbreviations=("Sp", "RK", "LK", "Ga", "Es", "Li", "St", "Ao", "IVC", "PSV", "PA", "RAG", "LAG"),
    small_organs=("esophagus", "portal and splenic veins", "right adrenal gland", "left adrenal gland"),
)

_AMOS_ONLY: Tuple[Tuple[str, str], ...] = (("duodenum", "Du"), ("bladder", "Bl"), ("prostate/uterus", "P/U"))
_AMOS_SHARED = tuple(o for o in SYNAPSE.organs if o != "portal and splenic veins")
#: AMOS 2022 label ids 1..15 (the dataset's own numbering, used unchanged as by DHC): the Synapse organs but the
#: portal/splenic veins, in Synapse's order, then duodenum, bladder and prostate/uterus. Small organs: Synapse's
#: that AMOS has.
AMOS = LabelSet(
    "amos",
    organs=_AMOS_SHARED + tuple(n for n, _ in _AMOS_ONLY),
    abbreviations=tuple(SYNAPSE.abbreviation(o) for o in _AMOS_SHARED) + tuple(a for _, a in _AMOS_ONLY),
    small_organs=tuple(o for o in SYNAPSE.small_organs if o in _AMOS_SHARED),
)

#: the known label sets by name
LABEL_SETS: Dict[str, LabelSet] = {s.name: s for s in (SYNAPSE, AMOS)}

ORGANS: Tuple[str, ...] = SYNAPSE.organs
ORGAN_ABBREVIATIONS: Tuple[str, ...] = SYNAPSE.abbreviations
#: background + 13 organs
NUM_CLASSES: int = SYNAPSE.num_classes
#: label ids of the four small Synapse organs: (5, 10, 12, 13)
SMALL_ORGANS: Tuple[int, ...] = SYNAPSE.small_organ_ids
#: names of the small organs, matched by name so that any label set's results can be summarised
SMALL_ORGAN_NAMES: Tuple[str, ...] = SYNAPSE.small_organs
AMOS_ORGANS: Tuple[str, ...] = AMOS.organs

_ABBREVIATIONS: Dict[str, str] = {o: s.abbreviation(o) for s in LABEL_SETS.values() for o in s.organs}


def get_label_set(name: str) -> LabelSet:
    """The known label set called ``name`` (``"synapse"`` or ``"amos"``, any case)."""
    key = str(name).strip().lower()
    if key not in LABEL_SETS:
        raise ValueError(f"unknown label set {name!r}; choose one of {', '.join(LABEL_SETS)}.")
    return LABEL_SETS[key]


def parse_label_set(value: Any) -> LabelSet:
    """The label set an option names: ``synapse`` / ``amos``, comma-separated organ names in id order
    (``liver,spleen,tumour``), or a JSON file holding a list of names or ``{name: id}`` with ids ``1..N``.

    Raises:
        ValueError: naming what is wrong (an unreadable file, ids that are not 1..N, repeated or empty names...).
    """
    if isinstance(value, LabelSet):
        return value
    text = str(value or "").strip()
    if not text:
        raise ValueError("labels must name a label set (synapse, amos), organ names 'a,b,c' or a JSON file.")
    if text.lower() in LABEL_SETS:
        return LABEL_SETS[text.lower()]
    if text.lower().endswith(".json"):
        try:
            with open(text) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"labels file {text!r} cannot be read as JSON: {e}") from None
        if isinstance(data, dict):
            ids = sorted(data.values()) if all(isinstance(i, int) for i in data.values()) else None
            if ids != list(range(1, len(data) + 1)):
                raise ValueError(f"labels file {text!r}: ids must be 1..{len(data)}, each once; got "
                                 f"{sorted(data.values(), key=str)}.")
            names = [n for n, _ in sorted(data.items(), key=lambda kv: kv[1])]
        elif isinstance(data, list):
            names = data
        else:
            raise ValueError(f"labels file {text!r} must hold a list of names or {{name: id}}.")
        return LabelSet.from_names(names)
    return LabelSet.from_names([n.strip() for n in text.split(",")])


def abbreviation(organ: str) -> str:
    """The short column name of ``organ`` in the known label sets (``"Sp"``, ``"Du"``...), else ``organ`` itself."""
    return _ABBREVIATIONS.get(organ, organ)


# ------------------------------------------------------------------------------------------ extensions

#: Every volume file suffix DINO-Mix recognises, longest suffix first, so that the first one that fits is the
#: right one (``x.seg.nrrd``, 3D Slicer's segmentation file, is case ``x``; ``x.nii.gz`` is not ``x.nii`` + gz).
#: Which readers accept which:
#:
#: * NIfTI (:data:`NIFTI_EXTENSIONS`) is read with nibabel by :func:`read_volume` and ``evaluation.read_label``;
#: * NRRD (``.seg.nrrd``, ``.nrrd``) with MONAI's ``LoadImage`` (pynrrd);
#: * :data:`LABEL_EXTENSIONS` (NIfTI and NRRD) are the files of evaluation folders (``evaluation``) and of
#:   MONAI Label studies folders (``studies``);
#: * MetaImage (``.mha``, ``.mhd``) needs MONAI's ITK reader (not a dependency): only
#:   ``data.case_id_from_path`` strips it, for training lists passed by path.
VOLUME_EXTENSIONS: Tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd")
#: NIfTI suffixes, read with nibabel
NIFTI_EXTENSIONS: Tuple[str, ...] = tuple(e for e in VOLUME_EXTENSIONS if ".nii" in e)
#: NIfTI and NRRD suffixes (longest first): label files of evaluation folders and MONAI Label studies
LABEL_EXTENSIONS: Tuple[str, ...] = tuple(e for e in VOLUME_EXTENSIONS if e not in (".mha", ".mhd"))


def volume_stem(name: str, extensions: Sequence[str] = VOLUME_EXTENSIONS) -> Optional[str]:
    """The file name ``name`` without its volume suffix (case-insensitive), or ``None`` if it has none of
    ``extensions`` (tried in order, so give the longest first) or nothing before it."""
    low = str(name).lower()
    for ext in extensions:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


# ---------------------------------------------------------------------------------------------- splits

#: The benchmarks with a fixed split (``dinomix_core/splits/<name>.json``, see ``docs/benchmarks.md``); each is
#: scored with the label set of the same name. The files record train / validation / test case ids, the labeled
#: and unlabeled training ids for each labeled fraction, and where each list was copied from (``"source"``).
DATASETS: Tuple[str, ...] = tuple(LABEL_SETS)


def fraction_key(fraction: float) -> str:
    """The JSON key of a labeled fraction: ``0.2 -> "0.2"``, ``0.05 -> "0.05"``."""
    return f"{float(fraction):g}"


def load_split(dataset: str, variant: Optional[str] = None) -> Dict[str, Any]:
    """The split of ``dataset`` (``"synapse"`` or ``"amos"``).

    Args:
        dataset: benchmark name.
        variant: ``None``/``"default"`` for the protocol's split, or the name of an entry of ``"alternatives"``
            (``"dhc"`` for Synapse: DHC's own partition). The alternative's lists replace the default ones.

    Returns:
        A dict with ``train``, ``validation``, ``test`` (case id lists), ``labeled`` and ``unlabeled``
        (``{fraction key: ids}``), ``source``, ``variant``, ``available_variants`` and the dataset's other fields.

    Raises:
        ValueError: unknown dataset or variant.
    """
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}.")
    text = resources.files(f"{__package__}.splits").joinpath(f"{name}.json").read_text(encoding="utf-8")
    split = json.loads(text)
    alternatives = split.pop("alternatives", {})
    if variant not in (None, "", "default"):
        if variant not in alternatives:
            raise ValueError(
                f"{name} has no split variant {variant!r}; choose 'default'"
                + (f" or one of {sorted(alternatives)}." if alternatives else ".")
            )
        split.update(alternatives[variant])
        split["variant"] = variant
    else:
        split["variant"] = "default"
    split["available_variants"] = ["default", *sorted(alternatives)]
    return split


# ------------------------------------------------------------------------------------- label checks


def read_volume(path: str, what: str = "volume") -> Tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI or NRRD file as (array, 4x4 affine); ``InvalidVolumeError`` with the reason when unreadable."""
    p = str(path)
    try:
        if p.endswith(NIFTI_EXTENSIONS):
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


def _spatial_shape(arr: np.ndarray) -> Tuple[int, ...]:
    """The shape of ``arr`` without trailing singleton axes beyond the third (a [X, Y, Z, 1] file is 3D)."""
    shape = tuple(int(s) for s in arr.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_image(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read an image and check it is a 3D volume."""
    arr, affine = read_volume(path, "image")
    shape = _spatial_shape(arr)
    if len(shape) != 3 or min(shape) < 2:
        raise InvalidVolumeError(f"image must be a 3D volume; it has shape {tuple(arr.shape)}.")
    return arr.reshape(shape), affine


def _check_grid(img_shape: Tuple[int, ...], img_affine: np.ndarray, lab_shape: Tuple[int, ...],
                lab_affine: np.ndarray, atol_mm: float) -> None:
    """The label lies on the image's voxel grid: same shape, spacing, orientation and origin."""
    if lab_shape != img_shape:
        raise InvalidVolumeError(f"label shape {lab_shape} differs from the image shape {img_shape}.")
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


def _check_ids(data: np.ndarray, num_classes: int, allow_empty: bool) -> None:
    """Whole-number ids in ``0..num_classes-1``, and at least one organ voxel unless ``allow_empty``."""
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


def check_label(
    image_path: str,
    label_path: str,
    num_classes: int = NUM_CLASSES,
    atol_mm: float = 1e-3,
    allow_empty: bool = False,
) -> np.ndarray:
    """Validate ``label_path`` as a label of ``image_path``; returns the label as uint8.

    Args:
        image_path / label_path: the image and its label (NIfTI or NRRD).
        num_classes: classes including background of the label set (:attr:`LabelSet.num_classes`).
        atol_mm: tolerance of the spacing comparison (the orientation's is ten times this).
        allow_empty: accept a label without any organ voxel.

    Raises:
        InvalidVolumeError: with a message naming what is wrong.
    """
    img, img_affine = check_image(image_path)
    lab, lab_affine = read_volume(label_path, "label")
    shape = _spatial_shape(lab)
    if len(shape) != 3:
        raise InvalidVolumeError(f"label must be a 3D volume; it has shape {tuple(lab.shape)}.")
    lab = lab.reshape(shape)
    _check_grid(tuple(img.shape), img_affine, shape, lab_affine, atol_mm)
    data = np.asarray(lab)
    _check_ids(data, num_classes, allow_empty)
    return data.astype(np.uint8)


# ------------------------------------------------------------------------------------- label_info (segment names)

#: segment names a client may send that are not labels (the stock Slicer plugin's scribble layers): value 0.
NON_LABEL_SEGMENTS = ("background", "foreground_scribbles", "background_scribbles")


def label_info_mapping(label_info: Any, organs: Sequence[str]) -> Optional[Dict[int, int]]:
    """The map from values in a submitted label file to this app's label ids, read from the names a client sent.

    MONAI Label's Slicer plugin exports its segments in their order and numbers them 1, 2, ... in the file; it
    sends ``label_info = [{"name": segment name, "idx": value}, ...]`` (``"id"`` in its other call). After a
    segment is deleted, reordered or added, the values no longer are the app's ids, so names decide.

    Args:
        label_info: the request's list (or None / empty: the file's values are the ids already).
        organs: the app's organ names in id order (id ``i`` is ``organs[i - 1]``); compared case-insensitively.

    Returns:
        ``{value: id}`` for every entry (background and scribble segments map to 0), or None without entries.

    Raises:
        InvalidVolumeError: an entry that is not ``{"name", "idx"}``, a name that is not one of ``organs`` (the
            message names it and lists the organs), or two entries with one value or one name.
    """
    if not label_info:
        return None
    if not isinstance(label_info, (list, tuple)):
        raise InvalidVolumeError(f"label_info must be a list of {{name, idx}} objects, got {type(label_info).__name__}.")
    ids = {o.strip().lower(): i for i, o in enumerate(organs, start=1)}
    mapping: Dict[int, int] = {}
    seen: Dict[str, int] = {}
    for entry in label_info:
        value = entry.get("idx", entry.get("id")) if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidVolumeError(
                f"label_info entries must be {{\"name\": segment name, \"idx\": its value (>= 1) in the file}}, "
                f"got {entry!r}."
            )
        key = name.strip().lower()
        if key in NON_LABEL_SEGMENTS:
            target = 0
        elif key in ids:
            target = ids[key]
        else:
            raise InvalidVolumeError(
                f"label_info names segment {name!r} (value {value}), which is not a label of this app; its labels "
                f"are: {', '.join(organs)}. Rename the segment, or start the server with the label set you "
                f"annotate (--conf labels ...)."
            )
        if value in mapping:
            raise InvalidVolumeError(f"label_info gives value {value} to two segments ({name!r} and another).")
        if target and key in seen:
            raise InvalidVolumeError(f"label_info names two segments {name!r} (values {seen[key]} and {value}).")
        seen[key] = value
        mapping[value] = target
    return mapping


def relabel_file(src: str, dst: str, mapping: Dict[int, int]) -> Dict[int, int]:
    """Write ``src`` with its values replaced through ``mapping`` to ``dst`` (same format and header).

    Returns the mapping of the values present. Raises ``InvalidVolumeError`` naming values of the file that
    ``mapping`` does not cover (0 is background and always kept).
    """
    p = str(src)
    if p.endswith(NIFTI_EXTENSIONS):
        import nibabel as nib

        img = nib.load(p)
        data = np.asanyarray(img.dataobj)
    elif p.endswith(".nrrd"):
        import nrrd

        data, header = nrrd.read(p)
    else:
        raise InvalidVolumeError(f"cannot rename the values of {os.path.basename(p)!r}: send NIfTI or NRRD.")
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise InvalidVolumeError("label has non-integer (float) values; organ ids must be whole numbers.")
    present = sorted(int(v) for v in np.unique(data) if v != 0)
    missing = [v for v in present if v not in mapping]
    if missing:
        raise InvalidVolumeError(
            f"label values {missing[:10]} have no label_info entry (send one {{name, idx}} per segment in the file)."
        )
    lut = np.zeros(max(present + [0]) + 1, dtype=np.uint16)
    for v in present:
        lut[v] = mapping[v]
    out = lut[data.astype(np.int64)].astype(np.uint8 if lut.max() < 256 else np.uint16)
    if p.endswith(NIFTI_EXTENSIONS):
        new = img.__class__(out, img.affine, img.header)
        new.set_data_dtype(out.dtype)
        nib.save(new, str(dst))
    else:
        nrrd.write(str(dst), out, {k: v for k, v in header.items() if k != "type"})  # the type follows ``out``
    return {v: mapping[v] for v in present}
