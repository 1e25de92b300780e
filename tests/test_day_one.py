"""Day one: a fresh server serves the shipped starter model at once; without any model the stock plugin sees no
segmentation model and raises no error, and the official client gets a clear message.

Against real ``monailabel start_server`` subprocesses over the sample studies. The stock 3D Slicer plugin itself
cannot run here: ``plugin_*`` below re-state, from MONAILabel 0.8.5's ``plugins/slicer/MONAILabel/MONAILabel.py``,
the two decisions it takes from ``/info`` -- which selector lists a model (``updateSelector`` by ``type``), and
which model Next Sample runs automatically (``initSample``: the first model whose labels contain a server label).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import nibabel as nib
import numpy as np
import pytest
from conftest import APP_DIR, sample_server
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from dinomix_core.config import ORGANS

MODEL = "dinomix"
STARTER = APP_DIR / "model" / "pretrained_dinomix.pt"
REAL_CT = "real_ct_001"


def plugin_selector(info: Dict[str, Any], kind: str) -> list:
    """The models the stock plugin puts in one selector (segmentation; deepgrow + deepedit; scribbles)."""
    types = {"segmentation": ("segmentation",), "deepgrow": ("deepgrow", "deepedit"), "scribbles": ("scribbles",)}
    return [n for n, m in info.get("models", {}).items() if m.get("type", "segmentation") in types[kind]]


def plugin_autorun_model(info: Dict[str, Any]) -> Optional[str]:
    """The model the stock plugin runs right after Next Sample (None: it runs nothing)."""
    for label in info.get("labels", []):
        for name, model in info.get("models", {}).items():
            if label in model.get("labels", []):
                return name
    return None


@pytest.fixture(scope="module")
def starter_server(tmp_path_factory, sample_studies_src):
    """A fresh server as `make serve` starts it: sample studies, empty model folder, the shipped starter."""
    assert STARTER.is_file(), f"the starter model {STARTER} is not in the repository (make starter)"
    yield from sample_server(tmp_path_factory, sample_studies_src, "day_one", {"starter": str(STARTER)})


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory, sample_studies_src):
    """A server with no published model and no starter model."""
    yield from sample_server(tmp_path_factory, sample_studies_src, "bare", {"starter": "none"})


def test_starter_is_small_and_self_describing():
    import torch

    assert STARTER.stat().st_size <= 20 * 2**20
    ckpt = torch.load(STARTER, map_location="cpu", weights_only=False)
    assert ckpt["config"]["label_names"] == list(ORGANS)
    assert ckpt["config"]["augment"] is True  # the recipe travels with the model
    assert set(ckpt["trained_on"]["labeled"]) == {"real_ct_001", "synthetic_phantom_001", "synthetic_phantom_002"}
    assert ckpt["label_ids"] == list(range(1, 14))  # the real CT lacks a gallbladder, the phantoms have one


def test_fresh_server_serves_the_starter(starter_server, tmp_path):
    client = MONAILabelClient(starter_server.url, tmpdir=str(tmp_path))
    info = client.info()
    entry = info["models"][MODEL]
    assert entry["model_present"] is True and entry["model_source"] == "starter"
    assert entry["model_version"] == "starter" and "starter model" in entry["model_status"]
    assert plugin_selector(info, "segmentation") == [MODEL]
    assert plugin_autorun_model(info) == MODEL  # Next Sample runs it at once

    label_file, params = client.infer(MODEL, REAL_CT, {})
    assert params["model"]["source"] == "starter"
    pred = np.asanyarray(nib.load(label_file).dataobj)
    ref = np.asanyarray(nib.load(str(starter_server.studies / "labels" / "final" / f"{REAL_CT}.nii.gz")).dataobj)
    assert pred.shape == ref.shape
    liver = 2 * np.sum((pred == 6) & (ref == 6)) / (np.sum(pred == 6) + np.sum(ref == 6))
    assert liver > 0.8, f"the starter's liver Dice on its own training CT is {liver:.3f}: not a trained model"


def test_no_model_is_not_listed_and_the_plugin_runs_nothing(bare_server, tmp_path):
    client = MONAILabelClient(bare_server.url, tmpdir=str(tmp_path))
    info = client.info()
    assert MODEL not in info["models"]  # MONAI Label lists only valid infer tasks
    assert MODEL in info["trainers"]  # ... and Retrain stays available
    assert plugin_selector(info, "segmentation") == []  # the plugin hides its segmentation panel
    sample = client.next_sample("dinomix_minority_uncertainty", {})
    assert sample["selected_by"] == "pending (no model yet): least recently served"
    assert plugin_autorun_model(info) is None  # Next Sample: no automatic inference, so no error dialog

    with pytest.raises(MONAILabelClientException) as e:  # a client that asks anyway gets the reason
        client.infer(MODEL, sample["id"], {})
    assert "Status: 409" in e.value.msg and "not ready" in e.value.msg and "Retrain" in e.value.msg
