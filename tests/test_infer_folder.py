"""``dinomix infer --input DIR --output DIR``: NIfTI, NRRD and DICOM series inputs, skip-existing, a summary, one
bad input reported while the others go on, DICOM-SEG output; real files and a real (untrained, tiny) network."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from test_cli import _untrained_model
from test_dicom_seg import write_ct_series

from dinomix_core import cli
from dinomix_core.infer_folder import find_inputs
from dinomix_core.phantoms import write_phantom_nifti


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """a.nii.gz, b.nrrd, series1/ (DICOM), bad.nii.gz (not a volume), c.seg.nrrd and notes.txt (not inputs)."""
    root = tmp_path_factory.mktemp("infer_in")
    src = root / "in"
    src.mkdir()
    a, _ = write_phantom_nifti(src / "a.nii.gz", None, 0, (40, 36, 20), (4.0, 4.0, 6.0))
    image = sitk.ReadImage(str(a))
    sitk.WriteImage(image, str(src / "b.nrrd"))
    (src / "series1").mkdir()
    write_ct_series(sitk.Cast(image, sitk.sitkInt16), src / "series1")
    (src / "bad.nii.gz").write_bytes(b"not a volume")
    sitk.WriteImage(sitk.Cast(image > 0, sitk.sitkUInt8), str(src / "c.seg.nrrd"))
    (src / "notes.txt").write_text("not an image")
    return {"in": src, "model": _untrained_model(root / "model.pt"), "shape": (40, 36, 20)}


def test_find_inputs(folder):
    found = find_inputs(str(folder["in"]))
    assert [(f.name, f.dicom) for f in found] == [("a", False), ("b", False), ("bad", False), ("series1", True)]
    assert [f.name for f in find_inputs(str(folder["in"] / "series1"))] == ["series1"]
    assert [f.name for f in find_inputs(str(folder["in"] / "b.nrrd"))] == ["b"]


def test_folder_inference_segments_skips_and_reports(folder, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["infer", "--model", str(folder["model"]), "--input", str(folder["in"]), "--output", str(out),
            "--device", "cpu", "--dicom-seg", "--no-progress"]
    assert cli.main(args) == 1  # bad.nii.gz failed; the others were segmented
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["segmented"] == ["a", "b", "series1"] and summary["skipped"] == []
    assert list(summary["failed"]) == ["bad"] and "cannot read image" in summary["failed"]["bad"]
    assert "3 segmented, 0 skipped" in captured.err and "1 failed" in captured.err
    labels = {n: nib.load(str(out / f"{n}.nii.gz")) for n in ("a", "b", "series1")}
    ref = nib.load(str(folder["in"] / "a.nii.gz"))
    for name, lab in labels.items():
        assert lab.shape == folder["shape"], name
        np.testing.assert_allclose(lab.affine, ref.affine, atol=1e-3, err_msg=name)
    np.testing.assert_array_equal(np.asarray(labels["b"].dataobj), np.asarray(labels["a"].dataobj))
    assert len(np.unique(np.asarray(labels["a"].dataobj))) > 1  # a non-trivial map, so equality means something
    seg = pydicom.dcmread(str(out / "series1.seg.dcm"))
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) >= 1
    assert not (out / "a.seg.dcm").exists()  # DICOM-SEG only for DICOM inputs

    # again: existing results are skipped, the bad input fails again
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    assert cli.main(args) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == ["a", "b", "series1"] and summary["segmented"] == []
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp
    assert cli.main(args + ["--overwrite"]) == 1
    assert json.loads(capsys.readouterr().out)["segmented"] == ["a", "b", "series1"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "no image file"),
    (lambda p: (p / "x.txt").write_text("x") and p / "x.txt", "is not an image file"),
])
def test_nothing_to_segment_is_a_clean_error(tmp_path, capsys, make, message):
    src = make(tmp_path)
    rc = cli.main(["infer", "--model", str(tmp_path / "none.pt"), "--input", str(src), "--output",
                   str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
