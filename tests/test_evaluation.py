"""Per-organ Dice / HD95 / ASD with the baselines' empty-mask conventions (dinomix_core.evaluation).

Hand-computed reference: two 4x4x4 cubes, the prediction shifted by one voxel along x.
Overlap 3*4*4 = 48 voxels -> Dice = 2*48 / (64 + 64) = 0.75. Each cube has 64 - 8 = 56 surface voxels
(6-connected erosion leaves the 2x2x2 core). From the prediction's surface to the reference's, 20 voxels are
1 voxel away (the 16 of the far x face and the 4 inner voxels of the near x face) and 36 coincide with
reference surface voxels, and symmetrically. So ASD (symmetric) = (20 + 20) / 112 = 5/14 and HD95 = 1.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from dinomix_core.config import ORGANS
from dinomix_core.evaluation import evaluate_case, evaluate_folders, evaluate_main, format_table, summarize

torch.set_num_threads(1)

SPLEEN, ESOPHAGUS, LIVER = ORGANS[0], ORGANS[4], ORGANS[5]


def cubes(shape=(10, 10, 10), label=1):
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[2:6, 2:6, 2:6] = label
    pred[3:7, 2:6, 2:6] = label
    return pred, ref


def test_two_cubes_voxel_units():
    pred, ref = cubes()
    out = evaluate_case(pred, ref)
    assert list(out) == list(ORGANS)
    assert out[SPLEEN]["label"] == 1
    assert out[SPLEEN]["dice"] == pytest.approx(0.75, abs=1e-7)
    assert out[SPLEEN]["hd95"] == pytest.approx(1.0, abs=1e-6)
    assert out[SPLEEN]["asd"] == pytest.approx(5 / 14, rel=1e-6)
    # every other organ is absent from both volumes: excluded (NaN), not 0 or 1
    for name in ORGANS[1:]:
        assert all(math.isnan(out[name][m]) for m in ("dice", "hd95", "asd"))


def test_isotropic_spacing_scales_distances_exactly():
    pred, ref = cubes()
    out = evaluate_case(pred, ref, spacing=1.5)[SPLEEN]
    assert out["dice"] == pytest.approx(0.75, abs=1e-7)
    assert out["hd95"] == pytest.approx(1.5, rel=1e-6)
    assert out["asd"] == pytest.approx(1.5 * 5 / 14, rel=1e-6)
    assert evaluate_case(pred, ref, spacing=(1.5, 1.5, 1.5))[SPLEEN]["asd"] == pytest.approx(out["asd"], rel=1e-7)


def test_anisotropic_spacing_axis_aligned():
    # x voxels 2 mm: the 16 far-face voxels are now 2 mm away; the 4 inner near-face voxels keep their 1 mm
    # in-plane neighbour on the reference ring. Directed sums 16*2 + 4*1 = 36 each way -> ASD 72/112 = 9/14.
    pred, ref = cubes()
    out = evaluate_case(pred, ref, spacing=(2.0, 1.0, 1.0))[SPLEEN]
    assert out["hd95"] == pytest.approx(2.0, rel=1e-6)
    assert out["asd"] == pytest.approx(9 / 14, rel=1e-6)
    assert out["dice"] == pytest.approx(0.75, abs=1e-7)


def test_exactly_one_empty_gets_zero_dice_and_penalty():
    pred, ref = cubes()
    empty = np.zeros_like(ref)
    missed = evaluate_case(empty, ref)[SPLEEN]
    assert missed == {"label": 1, "dice": 0.0, "hd95": 128.0, "asd": 128.0}
    spurious = evaluate_case(pred, empty)[SPLEEN]
    assert (spurious["dice"], spurious["hd95"], spurious["asd"]) == (0.0, 128.0, 128.0)
    custom = evaluate_case(empty, ref, penalty=50.0)[SPLEEN]
    assert (custom["hd95"], custom["asd"]) == (50.0, 50.0)


def test_invalid_inputs():
    pred, ref = cubes()
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(pred[:9], ref)
    with pytest.raises(ValueError, match="3D"):
        evaluate_case(pred[0], ref[0])
    with pytest.raises(ValueError, match="label_names"):
        evaluate_case(pred, ref, num_classes=3, label_names=["a"])
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(pred, ref, spacing=(1.0, 0.0, 1.0))


def test_channel_first_and_float_labels_accepted():
    pred, ref = cubes()
    out = evaluate_case(pred[None].astype(np.float32), ref.astype(np.int64))[SPLEEN]
    assert out["dice"] == pytest.approx(0.75, abs=1e-7)


def test_bounding_box_crop_matches_full_volume_monai():
    """The per-label crop (speed) must give exactly MONAI's numbers on the full volume, borders included."""
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    rng = np.random.default_rng(3)
    shape = (40, 36, 20)
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    ref = np.zeros(shape, np.int16)
    for c in range(1, 6):
        cx, cy, cz, r = rng.integers(0, 40), rng.integers(0, 36), rng.integers(0, 20), rng.integers(3, 9)
        ref[((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 2) ** 2) < r * r] = c
    pred = np.roll(ref, 2, axis=1)
    pred[rng.random(shape) < 0.01] = 3
    sp = (0.8, 0.9, 2.5)
    out = evaluate_case(pred, ref, num_classes=6, spacing=sp, label_names=list("abcde"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c, name in enumerate("abcde", start=1):
            pm = torch.from_numpy(pred == c)[None, None].float()
            rm = torch.from_numpy(ref == c)[None, None].float()
            if pm.sum() == 0 or rm.sum() == 0:
                continue
            assert out[name]["dice"] == pytest.approx(float(compute_dice(pm, rm)), abs=1e-7)
            hd = compute_hausdorff_distance(pm, rm, include_background=True, percentile=95, spacing=sp)
            asd = compute_average_surface_distance(pm, rm, include_background=True, symmetric=True, spacing=sp)
            assert out[name]["hd95"] == pytest.approx(float(hd), abs=1e-6)
            assert out[name]["asd"] == pytest.approx(float(asd), abs=1e-6)


def test_summarize_averages_cases_then_organs_and_skips_excluded():
    pred, ref = cubes()
    case_a = evaluate_case(pred, ref)  # spleen 0.75, others excluded
    p2, r2 = pred.copy(), ref.copy()
    p2[p2 == 1] = 0
    r2[r2 == 1] = 0  # spleen absent from both -> excluded in case b
    p2[0:2, 0:2, 0:2] = 5  # esophagus predicted exactly
    r2[0:2, 0:2, 0:2] = 5
    r2[8:10, 8:10, 8:10] = 6  # liver missed: Dice 0, ASD 128
    case_b = evaluate_case(p2, r2)
    s = summarize({"a": case_a, "b": case_b})
    po = s["per_organ"]
    assert po[SPLEEN]["dice"] == {"mean": pytest.approx(0.75), "std": 0.0, "n": 1}
    assert po[ESOPHAGUS]["dice"]["mean"] == pytest.approx(1.0)
    assert po[LIVER]["dice"]["mean"] == 0.0 and po[LIVER]["asd"]["mean"] == 128.0
    assert math.isnan(po[ORGANS[1]]["dice"]["mean"]) and po[ORGANS[1]]["dice"]["n"] == 0
    # mean over the 3 scored organs: (0.75 + 1 + 0) / 3
    assert s["mean_dice"] == pytest.approx(1.75 / 3)
    assert s["mean_asd"] == pytest.approx((5 / 14 + 0.0 + 128.0) / 3, rel=1e-6)
    # small organs (config.SMALL_ORGANS): only the esophagus is scored here
    assert s["small_organ_dice"] == pytest.approx(1.0)
    assert s["num_cases"] == 2
    table = format_table(s)
    assert "Sp" in table and "LAG" in table and "75.00 ± 0.00" in table and "58.33" in table


def _save(path, array, zooms=(1.0, 1.0, 1.0)):
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))


def test_evaluate_folders_nifti_voxels_and_mm(tmp_path):
    pred, ref = cubes()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _save(tmp_path / "pred" / "label0001.nii", pred, (2.0, 1.0, 1.0))  # .nii matches .nii.gz by name
    _save(tmp_path / "ref" / "label0001.nii.gz", ref, (2.0, 1.0, 1.0))
    _save(tmp_path / "ref" / "label0002.nii.gz", ref)  # a reference without prediction: ignored
    (tmp_path / "ref" / "notes.txt").write_text("not a label")
    vox = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    assert list(vox["cases"]) == ["label0001"]
    assert vox["units"] == "voxel" and vox["unmatched_references"] == ["label0002"]
    assert vox["cases"]["label0001"][SPLEEN]["asd"] == pytest.approx(5 / 14, rel=1e-6)
    mm = evaluate_folders(tmp_path / "pred", tmp_path / "ref", mm=True)  # spacing from the reference header
    assert mm["units"] == "mm"
    assert mm["cases"]["label0001"][SPLEEN]["asd"] == pytest.approx(9 / 14, rel=1e-6)
    assert mm["cases"]["label0001"][SPLEEN]["hd95"] == pytest.approx(2.0, rel=1e-6)


def test_evaluate_folders_errors(tmp_path):
    pred, ref = cubes()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        evaluate_folders(tmp_path / "nope", tmp_path / "ref")
    with pytest.raises(ValueError, match="no label files"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    _save(tmp_path / "pred" / "case1.nii.gz", pred)
    _save(tmp_path / "ref" / "other.nii.gz", ref)
    with pytest.raises(ValueError, match="case1"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    _save(tmp_path / "ref" / "case1.nii.gz", ref[:, :, :8])
    with pytest.raises(ValueError, match=r"shape \(10, 10, 10\).*shape \(10, 10, 8\)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref")


def test_evaluate_main_prints_table_and_writes_strict_json(tmp_path, capsys):
    pred, ref = cubes()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    _save(tmp_path / "pred" / "c.nii.gz", pred)
    _save(tmp_path / "ref" / "c.nii.gz", ref)
    out = tmp_path / "out" / "eval.json"
    args = argparse.Namespace(pred=str(tmp_path / "pred"), ref=str(tmp_path / "ref"), json=str(out), mm=False)
    assert evaluate_main(args) == 0
    printed = capsys.readouterr().out
    assert "Sp" in printed and "75.00" in printed
    text = out.read_text()
    assert "NaN" not in text  # excluded organs are null, so any JSON reader accepts the file
    data = json.loads(text)
    assert data["summary"]["mean_dice"] == pytest.approx(0.75)
    assert data["results"]["cases"]["c"][LIVER]["dice"] is None


def test_evaluate_folders_matches_nrrd_reference(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    pred, ref = cubes()
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    # the same LPS grid written as NIfTI (RAS affine) and as NRRD (LPS header)
    nib.save(nib.Nifti1Image(pred, np.diag([-2.0, -1.0, 1.0, 1.0])), str(tmp_path / "pred" / "case.nii.gz"))
    nrrd.write(str(tmp_path / "ref" / "case.nrrd"), ref,
               {"space": "left-posterior-superior", "space directions": np.diag([2.0, 1.0, 1.0]), "space origin": [0, 0, 0]})
    res = evaluate_folders(tmp_path / "pred", tmp_path / "ref", mm=True)
    assert res["warnings"] == []
    assert res["cases"]["case"][SPLEEN]["asd"] == pytest.approx(9 / 14, rel=1e-6)
