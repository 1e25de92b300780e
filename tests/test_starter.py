"""The starter model's plumbing: which model is served, the predictor's fallback, the Retrain's warm start, the
`dinomix train-starter` command (real tiny trainings on SYNTHETIC phantoms, real model files)."""

from __future__ import annotations

import json

import dataclasses
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import TINY_SPACING

from dinomix_core import cli
from dinomix_core.config import get_preset
from dinomix_core.inference import ModelNotFoundError, Predictor
from dinomix_core.registry import ModelRegistry
from dinomix_core.service import TrainingJob, TrainRequest
from dinomix_core.trainer import run_training


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    values = dict(patch_size=(32, 32, 16), target_spacing=TINY_SPACING, max_iterations=2, channels=(4, 8, 16, 32),
                  val_interval=0)
    values.update(overrides)
    return get_preset("cpu", **values)


@pytest.fixture(scope="module")
def model_files(phantoms, tmp_path_factory):
    """Two tiny trained model files: 'a' (seed 0) and 'b' (seed 1)."""
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        d = tmp_path_factory.mktemp(name)
        run_training(tiny(seed=seed), phantoms["labeled"], phantoms["unlabeled"], str(d), device="cpu")
        out[name] = d / "model.pt"
    return out


def test_registry_serves_published_then_starter_then_nothing(model_files, tmp_path):
    reg = ModelRegistry(str(tmp_path / "m"), starter_path=str(model_files["a"]))
    served = reg.served()
    assert reg.served_path() == model_files["a"]
    assert served["source"] == "starter" and served["version"] == "starter"
    assert served["label_ids"] == list(range(1, 14)) and served["iteration"] == 2
    reg.publish(str(model_files["b"]), ["case0", "case1"])
    served = reg.served()
    assert reg.served_path() == reg.model_path and served["source"] == "retrained" and served["version"] == 1
    assert served["label_ids"] == list(range(1, 14))
    assert ModelRegistry(str(tmp_path / "empty"), starter_path=str(tmp_path / "missing.pt")).served() is None
    assert ModelRegistry(str(tmp_path / "empty")).served() is None


def test_predictor_falls_back_to_the_starter_and_switches_when_one_is_published(model_files, phantoms, tmp_path):
    image = phantoms["unlabeled"][0]
    published = tmp_path / "dinomix.pt"
    p = Predictor(str(published), device="cpu", fallback_path=str(model_files["a"]))
    first = p.predict_proba(image)
    assert p.source == "starter"
    published.write_bytes(model_files["b"].read_bytes())
    second = p.predict_proba(image)
    assert p.source == "retrained" and not torch.equal(first, second)
    os.remove(published)
    assert torch.equal(p.predict_proba(image), first) and p.source == "starter"
    with pytest.raises(ModelNotFoundError, match="no trained DINO-Mix model"):
        Predictor(str(published), device="cpu").predict_proba(image)


def test_retrain_warm_starts_from_the_starter(model_files, phantoms, tmp_path, monkeypatch):
    import dinomix_core.service as service

    monkeypatch.setattr(service, "get_preset", lambda name, **o: tiny(**{k: v for k, v in o.items() if k != "max_iterations"}))
    labeled = [(Path(i).name, i, l) for i, l in phantoms["labeled"]]
    unlabeled = [(Path(i).name, i) for i in phantoms["unlabeled"]]
    opts = TrainRequest.from_request({"max_iterations": 2, "val_fraction": 0})
    job = TrainingJob(str(tmp_path / "m"), opts, starter_path=str(model_files["a"]))
    stats = job.run(labeled, unlabeled)
    assert stats["status"] == "DONE" and stats["warm_start_from"] == "starter model"
    again = TrainingJob(str(tmp_path / "m"), opts, starter_path=str(model_files["a"])).run(labeled, unlabeled)
    assert again["warm_start_from"] == "published model" and again["published_version"] == 2
    cold = TrainingJob(str(tmp_path / "cold"), dataclasses.replace(opts, warm_start=False), starter_path=str(model_files["a"]))
    assert cold.run(labeled, unlabeled)["warm_start_from"] is None


def test_train_starter_command_writes_a_model_file(phantoms, tmp_path, monkeypatch):
    import dinomix_core.starter as starter

    monkeypatch.setattr(starter, "starter_config", lambda seed, iterations: tiny(seed=seed, max_iterations=iterations))
    studies = phantoms["dir"]  # case0, case1 labeled (labels/...), case2 unlabeled
    final = studies / "labels" / "final"
    final.mkdir(parents=True, exist_ok=True)
    for name in ("case0.nii.gz", "case1.nii.gz"):
        (final / name).write_bytes((studies / "labels" / name).read_bytes())
    out = tmp_path / "pretrained_dinomix.pt"
    rc = cli.main(["train-starter", "--studies", str(studies), "--output", str(out), "--iterations", "2",
                   "--phantoms", "1", "--phantom-share", "0.4", "--work-dir", str(tmp_path / "run"),
                   "--device", "cpu"])
    assert rc == 0 and out.is_file()
    # the generated phantom is drawn 40 % of the time, the two studies 30 % each
    shares = json.loads((tmp_path / "run" / "summary.json").read_text())["labeled_shares"]
    assert shares == {"case0": 0.3, "case1": 0.3, "starter_phantom_001": 0.4}
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 2
    assert sorted(ckpt["trained_on"]["labeled"]) == ["case0", "case1", "starter_phantom_001"]
    assert ckpt["trained_on"]["unlabeled"] == ["case2"]


@pytest.mark.parametrize("share", [-0.5, 0.0, 1.0])
def test_train_starter_phantom_share_outside_0_1_is_a_value_error(phantoms, tmp_path, share):
    import dinomix_core.starter as starter

    with pytest.raises(ValueError, match="phantom_share"):
        starter.train_starter(str(phantoms["dir"]), str(tmp_path / "o.pt"), phantoms=1, phantom_share=share,
                              work_dir=str(tmp_path / "run"))
    assert not (tmp_path / "o.pt").exists()


def test_train_starter_without_labels_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "studies").mkdir()
    rc = cli.main(["train-starter", "--studies", str(tmp_path / "studies"), "--output", str(tmp_path / "o.pt")])
    assert rc == 2 and "no labeled study" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_starter_phantoms_are_fixed_files_with_a_tall_field_of_view_and_every_phase(tmp_path):
    import dinomix_core.starter as starter
    from dinomix_core.phantoms import WIDE_VARIATION

    pairs = starter.starter_phantoms(str(tmp_path / "a"), 4)
    again = starter.starter_phantoms(str(tmp_path / "b"), 1)
    assert [p.name for p, _ in pairs] == [f"starter_phantom_00{i}.nii.gz" for i in range(1, 5)]
    np.testing.assert_array_equal(np.asarray(nib.load(str(pairs[0][0])).dataobj),
                                  np.asarray(nib.load(str(again[0][0])).dataobj))  # the same volume every time
    img = nib.load(str(pairs[0][0]))
    assert img.shape == (96, 96, 80) and np.allclose(img.header.get_zooms(), (3.0, 3.0, 4.0))  # 320 mm tall
    label = np.asarray(nib.load(str(pairs[0][1])).dataobj)
    assert label.shape == img.shape and label.max() <= 13 and (label > 0).any()
    phases = {WIDE_VARIATION.draw_extras(starter.STARTER_PHANTOM_SEED + i)[0] for i in range(4)}
    assert phases == {"arterial", "native"}  # not only the sample phantoms' portal phase
    with pytest.raises(ValueError, match=">= 0"):
        starter.starter_phantoms(str(tmp_path / "c"), -1)


def test_starter_recipe_is_supervised_without_class_weights():
    """The shipped starter was trained supervised-only without class weights; the cpu preset's recipe has them."""
    from dinomix_core.starter import starter_config

    cfg = starter_config(seed=3, iterations=10)
    assert (cfg.use_pic, cfg.use_consistency, cfg.class_weighting) == (False, False, "none")
    assert (cfg.seed, cfg.max_iterations, cfg.val_interval, cfg.preset) == (3, 10, 0, "cpu")
