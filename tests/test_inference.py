"""Unit tests of dinomix_core.inference on a tiny randomly initialised student and small NIfTI/NRRD files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from dinomix_core.artifacts import ModelFile
from dinomix_core.config import get_preset
from dinomix_core.errors import InvalidVolumeError, ModelFileError, ModelNotFoundError
from dinomix_core.inference import Predictor, image_voxel_count, load_model_file, nifti_bytes, predict_file
from dinomix_core.networks import build_student

TINY = dict(channels=(4, 8), strides=((2, 2, 2),), fkd_stage=1, patch_size=(16, 16, 16), target_spacing=(8.0, 8.0, 8.0))


def _save_model(path, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = get_preset("cpu", **dict(TINY, **overrides))
    net = build_student(cfg)
    return ModelFile(model=net.state_dict(), config=cfg.to_dict(), label_ids=[1], iteration=seed).save(path)


def _image(path, shape=(20, 18, 12), spacing=(8.0, 8.0, 8.0)):
    arr = np.random.default_rng(0).normal(40, 50, shape).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_nifti_bytes_round_trip(tmp_path, gz):
    label = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 14
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    data = nifti_bytes(label, affine, gzip_=gz)
    path = tmp_path / ("l.nii.gz" if gz else "l.nii")
    path.write_bytes(data)
    img = nib.load(str(path))
    assert img.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(img.dataobj), label)
    assert np.allclose(img.affine, affine)
    assert (data[:2] == b"\x1f\x8b") is gz and (gzip.decompress(data) if gz else data)[344:348] == b"n+1\x00"


def test_image_voxel_count(tmp_path):
    assert image_voxel_count(str(_image(tmp_path / "a.nii.gz", (5, 6, 7)))) == 210
    (tmp_path / "b.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 5 6\nencoding: raw\n\n")
    assert image_voxel_count(str(tmp_path / "b.nrrd")) == 120
    (tmp_path / "c.nii.gz").write_bytes(b"junk")
    assert image_voxel_count(str(tmp_path / "c.nii.gz")) is None


def test_load_model_file_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="train one first"):
        load_model_file(str(tmp_path / "none.pt"))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ModelFileError):
        load_model_file(str(tmp_path / "bad.pt"))


@pytest.mark.parametrize("kwargs", [dict(max_voxels=0), dict(sw_batch_size=0)])
def test_predictor_validates(kwargs):
    with pytest.raises(ValueError, match="must be positive"):
        Predictor("m.pt", **kwargs)


def test_predict_on_the_input_grid_and_fallback(tmp_path, one_thread):
    image = _image(tmp_path / "img.nii.gz")
    model, starter = tmp_path / "dinomix.pt", _save_model(tmp_path / "pretrained.pt", seed=1)
    pred = Predictor(str(model), device="cpu", fallback_path=str(starter))
    label, affine = pred.predict(str(image))
    assert label.shape == (20, 18, 12) and label.dtype == np.uint8 and label.max() <= 13
    assert np.allclose(affine, np.diag([8.0, 8.0, 8.0, 1.0]))
    assert pred.source == "starter" and pred.meta["iteration"] == 1
    _save_model(model, seed=2)  # a published model replaces the starter at the next request
    pred.predict(str(image))
    assert pred.source == "retrained" and pred.meta["iteration"] == 2
    out = predict_file(str(model), str(image), str(tmp_path / "out" / "seg.nii.gz"), device="cpu")
    assert np.asarray(nib.load(out).dataobj).shape == (20, 18, 12)


def test_predict_refusals(tmp_path, one_thread):
    image = _image(tmp_path / "img.nii.gz")
    with pytest.raises(ModelNotFoundError):
        Predictor(str(tmp_path / "none.pt"), device="cpu").predict(str(image))
    model = _save_model(tmp_path / "m.pt")
    with pytest.raises(InvalidVolumeError, match="above the limit of 100"):
        Predictor(str(model), device="cpu", max_voxels=100).predict(str(image))
    (tmp_path / "junk.nii.gz").write_bytes(b"junk")
    with pytest.raises(InvalidVolumeError, match="cannot read image"):
        Predictor(str(model), device="cpu").predict(str(tmp_path / "junk.nii.gz"))


def test_a_model_for_other_labels_is_refused_and_read_once(tmp_path, monkeypatch):
    """With ``label_names``, a model trained for other labels is not served, says why, and its file is read once
    per version (not on every request)."""
    import dinomix_core.inference as inference
    from test_cli import _untrained_model

    model = _untrained_model(tmp_path / "synapse.pt")
    image = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), str(image))
    reads = []
    monkeypatch.setattr(inference, "load_model_file", lambda p: reads.append(p) or load_model_file(p))
    predictor = Predictor(str(model), device="cpu", label_names=("liver", "tumour"))
    for _ in range(2):
        with pytest.raises(ModelNotFoundError, match="trained for other labels .*this server's labels: liver, tumour"):
            predictor.predict(str(image))
    assert reads == [str(model)]
