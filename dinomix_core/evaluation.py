"""Per case and per organ Dice, HD95 and average surface distance, with the baselines' conventions.

The semi-supervised CT benchmarks that DINO-Mix (arXiv 2602.07819) reports on (Synapse and AMOS, the
protocol of DHC and A&D, see ``docs/benchmarks.md``) score each test case and each organ separately,
then average over cases and finally over organs. This module computes those numbers with MONAI's
metrics (:func:`monai.metrics.compute_dice`, :func:`monai.metrics.compute_hausdorff_distance` with
``percentile=95`` and :func:`monai.metrics.compute_average_surface_distance` with ``symmetric=True``)
and adds the conventions for empty masks:

* prediction and reference both empty for a class: the class is **excluded** for that case (Dice, HD95
  and ASD are NaN and are left out of every mean). The baselines' scripts instead store Dice = 1 on a
  0-100 scale (so roughly 0) and ASD = 0 there; excluding is the only choice that neither rewards nor
  punishes a correct "absent" answer (for example a removed gallbladder).
* exactly one of them empty: Dice = 0 and HD95 = ASD = ``penalty`` (128 by default, as the baselines).

Distances are in voxel units unless a spacing is given (then millimetres, as MONAI's ``spacing``).
Dice is stored as a fraction in [0, 1]; tables show it multiplied by 100 as the papers do.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from .labels import (
    LABEL_EXTENSIONS,
    NIFTI_EXTENSIONS,
    NUM_CLASSES,
    ORGANS,
    SMALL_ORGAN_NAMES,
    abbreviation,
    parse_label_set,
    volume_stem,
)

__all__ = [
    "DEFAULT_PENALTY",
    "SUPPORTED_EXTENSIONS",
    "abbreviation",
    "evaluate_case",
    "evaluate_folders",
    "summarize",
    "format_table",
    "evaluate_main",
    "to_jsonable",
]

#: distance given to a class that is present in exactly one of prediction and reference (baselines: 128).
DEFAULT_PENALTY: float = 128.0
#: label file extensions understood by :func:`evaluate_folders` (``labels.LABEL_EXTENSIONS``: NIfTI and NRRD).
SUPPORTED_EXTENSIONS: Tuple[str, ...] = LABEL_EXTENSIONS
_METRICS: Tuple[str, ...] = ("dice", "hd95", "asd")

SpacingArg = Union[None, bool, float, Sequence[float]]


def _label_names(num_classes: int, label_names: Optional[Sequence[str]]) -> Tuple[str, ...]:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + at least one organ), got {num_classes}.")
    if label_names is None:
        if num_classes == NUM_CLASSES:
            return ORGANS
        return tuple(f"class {i}" for i in range(1, num_classes))
    names = tuple(str(n) for n in label_names)
    if len(names) != num_classes - 1:
        raise ValueError(f"label_names has {len(names)} names but num_classes={num_classes} needs {num_classes - 1}.")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names must be unique, got {names}.")
    return names


def _as_labels(array: Any, what: str) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[0] == 1:  # tolerate a channel-first label
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"{what} must be a 3D label volume, got shape {a.shape}.")
    if np.issubdtype(a.dtype, np.integer):
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    return np.rint(a).astype(np.int32)


def _spacing_tuple(spacing: SpacingArg) -> Optional[Tuple[float, float, float]]:
    if spacing is None or spacing is False:
        return None
    if spacing is True:
        raise ValueError("spacing=True needs the voxel size: pass a (sx, sy, sz) tuple in mm (evaluate_folders reads "
                         "it from the reference header when mm=True).")
    if isinstance(spacing, (int, float)):
        s = (float(spacing),) * 3
    else:
        s = tuple(float(v) for v in spacing)
    if len(s) != 3 or any(not math.isfinite(v) or v <= 0 for v in s):
        raise ValueError(f"spacing must be three positive voxel sizes (sx, sy, sz), got {spacing}.")
    return s  # type: ignore[return-value]


def _boxes(labels: np.ndarray, num_classes: int) -> List[Optional[Tuple[slice, ...]]]:
    """Bounding box of each label 1..num_classes-1 (``None`` when absent), from one scan of the volume."""
    from scipy import ndimage

    work = labels
    if (work.dtype.kind == "i" and work.dtype.itemsize > 4) or (work.dtype.kind == "u" and work.dtype.itemsize > 2):
        work = work.astype(np.int32)
    found = ndimage.find_objects(work, max_label=num_classes - 1)
    return list(found) + [None] * (num_classes - 1 - len(found))


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    num_classes: int = NUM_CLASSES,
    spacing: SpacingArg = None,
    penalty: float = DEFAULT_PENALTY,
    label_names: Optional[Sequence[str]] = None,
) -> Dict[str, Dict[str, float]]:
    """Dice, HD95 and ASD of every organ of one case.

    Args:
        pred: predicted label volume (integer ids, 3D, or [1, X, Y, Z]).
        ref: reference label volume on the same grid.
        num_classes: classes including background; labels 1..num_classes-1 are scored.
        spacing: ``None`` for voxel units (the baselines' convention), or the voxel size (sx, sy, sz) in mm
            along the array axes (a single number for isotropic voxels) for millimetres.
        penalty: HD95 and ASD when exactly one of prediction and reference contains the class.
        label_names: organ names for labels 1..num_classes-1 (default: the 13 Synapse organs when
            ``num_classes`` is 14, else ``"class i"``).

    Returns:
        ``{organ name: {"label": id, "dice": d, "hd95": h, "asd": a}}`` in label order. Dice in [0, 1];
        all three are NaN when the class is absent from both prediction and reference (excluded).

    Raises:
        ValueError: shapes differ, inputs are not 3D, or arguments are invalid.
    """
    names = _label_names(num_classes, label_names)
    p = _as_labels(pred, "pred")
    r = _as_labels(ref, "ref")
    if p.shape != r.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {r.shape}; both must be on the "
                         "same voxel grid.")
    if not math.isfinite(float(penalty)) or penalty < 0:
        raise ValueError(f"penalty must be a finite non-negative distance, got {penalty}.")
    sp = _spacing_tuple(spacing)
    # one pass over each volume for every label's bounding box; metrics are computed on the union box plus a
    # one-voxel margin, which leaves Dice, surfaces and distances unchanged and is much faster on CT volumes
    p_boxes = _boxes(p, num_classes)
    r_boxes = _boxes(r, num_classes)
    out: Dict[str, Dict[str, float]] = {}
    for label, name in enumerate(names, start=1):
        pb, rb = p_boxes[label - 1], r_boxes[label - 1]
        if pb is None and rb is None:
            out[name] = {"label": label, "dice": float("nan"), "hd95": float("nan"), "asd": float("nan")}
            continue
        if pb is None or rb is None:
            out[name] = {"label": label, "dice": 0.0, "hd95": float(penalty), "asd": float(penalty)}
            continue
        box = tuple(
            slice(max(min(a.start, b.start) - 1, 0), min(max(a.stop, b.stop) + 1, n))
            for a, b, n in zip(pb, rb, p.shape)
        )
        pm = p[box] == label
        rm = r[box] == label
        pt = torch.from_numpy(pm)[None, None].float()  # [B=1, C=1, X, Y, Z]
        rt = torch.from_numpy(rm)[None, None].float()
        with warnings.catch_warnings():
            # MONAI 1.5 warns about its own internal use of a deprecated get_mask_edges argument on every call
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            dice = compute_dice(pt, rt, include_background=True)
            hd95 = compute_hausdorff_distance(pt, rt, include_background=True, percentile=95, spacing=sp)
            asd = compute_average_surface_distance(pt, rt, include_background=True, symmetric=True, spacing=sp)
        out[name] = {
            "label": label,
            "dice": float(dice.reshape(-1)[0]),
            "hd95": float(hd95.reshape(-1)[0]),
            "asd": float(asd.reshape(-1)[0]),
        }
    return out


# ----------------------------------------------------------------------------------------------- files


def _list_labels(folder: Path) -> Dict[str, Path]:
    files: Dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name.startswith("."):
            continue
        stem = volume_stem(f.name, SUPPORTED_EXTENSIONS)
        if stem is None:
            continue
        if stem in files:
            raise ValueError(f"two label files in {folder} share the case name {stem!r}: {files[stem].name} and "
                             f"{f.name}.")
        files[stem] = f
    return files


def read_label(path: Union[str, Path]) -> Tuple[np.ndarray, Tuple[float, float, float], np.ndarray]:
    """Read a label file; returns (integer array in file order, voxel size along the array axes, affine 4x4)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_EXTENSIONS):
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        affine = np.asarray(img.affine, dtype=np.float64)
    elif name.endswith(".nrrd"):
        from monai.transforms import LoadImage

        try:
            img = LoadImage(image_only=True)(str(path))
        except Exception as exc:  # pragma: no cover - depends on installed readers
            raise ValueError(f"cannot read NRRD file {path}: {exc}") from exc
        data = np.asarray(img)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
    else:
        raise ValueError(f"unsupported label file {path.name}; use one of {', '.join(SUPPORTED_EXTENSIONS)}.")
    labels = _as_labels(data, str(path))
    return labels, zooms, affine  # type: ignore[return-value]


def evaluate_folders(
    pred_dir: Union[str, Path],
    ref_dir: Union[str, Path],
    mm: bool = False,
    *,
    num_classes: int = NUM_CLASSES,
    label_names: Optional[Sequence[str]] = None,
    penalty: float = DEFAULT_PENALTY,
) -> Dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against the reference of the same name in ``ref_dir``.

    Files are matched by case name, the file name without its extension (:data:`SUPPORTED_EXTENSIONS`),
    so ``pred/label0008.nii.gz`` is compared with ``ref/label0008.nii.gz`` (or ``ref/label0008.nrrd``).
    Every prediction needs a reference; references without a prediction are ignored (a reference folder
    may hold the training cases too) and listed under ``"unmatched_references"``.

    Args:
        pred_dir: folder of predicted label files.
        ref_dir: folder of reference label files.
        mm: distances in millimetres using the voxel size in each reference header (default: voxels).
        num_classes / label_names / penalty: as :func:`evaluate_case`.

    Returns:
        ``{"cases": {case: evaluate_case(...)}, "label_names": [...], "num_classes": n, "units": "voxel"|"mm",
        "penalty": p, "unmatched_references": [...], "warnings": [...]}``.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: no prediction files, a prediction without reference, or a shape mismatch.
    """
    names = _label_names(num_classes, label_names)
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for what, folder in (("prediction", pred_dir), ("reference", ref_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist (or is not a folder).")
    preds = _list_labels(pred_dir)
    refs = _list_labels(ref_dir)
    if not preds:
        raise ValueError(f"no label files ({', '.join(SUPPORTED_EXTENSIONS)}) in prediction folder {pred_dir}.")
    if not refs:
        raise ValueError(f"no label files ({', '.join(SUPPORTED_EXTENSIONS)}) in reference folder {ref_dir}.")
    missing = [c for c in preds if c not in refs]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} prediction(s) in {pred_dir} have no reference of the same name in {ref_dir}: {shown}. "
            f"Reference cases found: {', '.join(list(refs)[:5])}{' ...' if len(refs) > 5 else ''}. Predictions are "
            "matched to references by file name without extension."
        )
    cases: Dict[str, Dict[str, Dict[str, float]]] = {}
    notes: List[str] = []
    for case, pred_path in preds.items():
        ref, zooms, ref_affine = read_label(refs[case])
        pred, _, pred_affine = read_label(pred_path)
        if pred.shape != ref.shape:
            raise ValueError(
                f"case {case}: prediction {pred_path.name} has shape {pred.shape} but reference {refs[case].name} has "
                f"shape {ref.shape}; predictions must be on the reference grid."
            )
        if not np.allclose(pred_affine, ref_affine, atol=1e-3):
            notes.append(f"case {case}: prediction and reference affines differ (compared voxel by voxel anyway).")
        if int(ref.max(initial=0)) >= num_classes or int(pred.max(initial=0)) >= num_classes:
            notes.append(f"case {case}: label ids >= num_classes={num_classes} present and ignored.")
        cases[case] = evaluate_case(
            pred, ref, num_classes=num_classes, spacing=zooms if mm else None, penalty=penalty, label_names=names
        )
    for n in notes:
        warnings.warn(n, stacklevel=2)
    return {
        "cases": cases,
        "label_names": list(names),
        "num_classes": num_classes,
        "units": "mm" if mm else "voxel",
        "penalty": float(penalty),
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "unmatched_references": [c for c in refs if c not in preds],
        "warnings": notes,
    }


# ------------------------------------------------------------------------------------------- summaries


def _nan_stats(values: Sequence[float]) -> Dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    valid = a[~np.isnan(a)]
    if valid.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(valid.mean()), "std": float(valid.std()), "n": int(valid.size)}


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray(list(values), dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else float("nan")


def summarize(results: Mapping[str, Any]) -> Dict[str, Any]:
    """Average over cases, then over organs (the baselines' order).

    Args:
        results: the output of :func:`evaluate_folders`, or a mapping ``{case: evaluate_case(...)}``.

    Returns:
        ``{"per_organ": {organ: {"label", "abbreviation", "dice": {"mean","std","n"}, "hd95": ..., "asd": ...}},
        "mean_dice", "mean_hd95", "mean_asd", "small_organ_dice", "small_organs", "label_names", "num_cases",
        "units"}``. Std is the population std over the cases where the class is scored; ``n`` counts them. The
        means over organs skip organs that were excluded in every case. ``small_organ_dice`` averages the
        small organs (``labels.SMALL_ORGAN_NAMES``, matched by name) that the label set has.
    """
    folder_output = "cases" in results and "label_names" in results  # evaluate_folders' result
    cases = results["cases"] if folder_output else results
    if not cases:
        raise ValueError("no cases to summarize.")
    first = next(iter(cases.values()))
    names = list(results["label_names"]) if folder_output else list(first)
    per_organ: Dict[str, Dict[str, Any]] = {}
    for name in names:
        entry: Dict[str, Any] = {"label": int(first[name]["label"]), "abbreviation": abbreviation(name)}
        for m in _METRICS:
            entry[m] = _nan_stats([case[name][m] for case in cases.values()])
        per_organ[name] = entry
    small = [n for n in names if n in SMALL_ORGAN_NAMES]
    return {
        "per_organ": per_organ,
        "mean_dice": _nanmean(per_organ[n]["dice"]["mean"] for n in names),
        "mean_hd95": _nanmean(per_organ[n]["hd95"]["mean"] for n in names),
        "mean_asd": _nanmean(per_organ[n]["asd"]["mean"] for n in names),
        "small_organ_dice": _nanmean(per_organ[n]["dice"]["mean"] for n in small),
        "small_organs": small,
        "label_names": names,
        "num_cases": len(cases),
        "units": results.get("units", "voxel") if folder_output else "voxel",
    }


def _fmt(stats: Mapping[str, float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = stats.get("mean", float("nan")), stats.get("std", float("nan"))
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a :func:`summarize` result: one row per organ, Dice in %, distances in the units."""
    units = summary.get("units", "voxel")
    header = ("organ", "name", "Dice %", f"HD95 ({units})", f"ASD ({units})", "n")
    rows: List[Tuple[str, ...]] = []
    for name, e in summary["per_organ"].items():
        rows.append((e.get("abbreviation", abbreviation(name)), name, _fmt(e["dice"], 100.0), _fmt(e["hd95"]),
                     _fmt(e["asd"]), str(e["dice"].get("n", ""))))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    def num(v: Optional[float], scale: float = 1.0) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.2f}"

    sep = "  ".join("-" * w for w in widths)
    out = [line(header), sep, *(line(r) for r in rows), sep]
    out.append(f"mean over {len(rows)} organs ({summary.get('num_cases', '?')} cases): Dice {num(summary['mean_dice'], 100)} %, "
               f"HD95 {num(summary['mean_hd95'])} {units}, ASD {num(summary['mean_asd'])} {units}")
    small = summary.get("small_organs") or []
    if small:
        out.append(f"small organs ({', '.join(abbreviation(n) for n in small)}): Dice "
                   f"{num(summary['small_organ_dice'], 100)} %")
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    """Replace NaN/inf by ``None`` and numpy scalars by Python numbers so ``json.dump`` writes strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate_main(args: Any) -> int:
    """CLI entry (``dinomix evaluate --pred DIR --ref DIR [--json FILE] [--mm]``): prints the table, writes JSON.

    Reads ``args.pred``, ``args.ref``, ``args.json`` (optional), ``args.mm`` and, when present,
    ``args.labels`` (the label set to score: ``synapse`` (default), ``amos``, names ``a,b,c`` or a JSON file, as
    :func:`~dinomix_core.labels.parse_label_set` reads them). Returns 0 on success;
    errors (missing folder, no matching files, shape mismatch) propagate as exceptions with clear messages.
    """
    label_set = parse_label_set(getattr(args, "labels", None) or "synapse")
    results = evaluate_folders(args.pred, args.ref, mm=bool(getattr(args, "mm", False)),
                               num_classes=label_set.num_classes, label_names=label_set.organs)
    summary = summarize(results)
    print(f"{len(results['cases'])} case(s): {', '.join(results['cases'])}")
    print(format_table(summary))
    if results["unmatched_references"]:
        print(f"({len(results['unmatched_references'])} reference file(s) without a prediction were ignored.)")
    out = getattr(args, "json", None)
    if out:
        out = Path(out)
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            json.dump(to_jsonable({"summary": summary, "results": results}), f, indent=2)
        print(f"wrote {out}")
    return 0
