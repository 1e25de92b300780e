"""A team's own label set: ``--conf labels liver,spleen,tumour`` on the real server.

The datastore checks, the labels of ``/info``, ``label_info`` renaming, training, inference and the refusal of a
model trained for other labels (the shipped Synapse starter) all follow the option. Images: two SYNTHETIC
phantoms of the sample studies, without their Synapse labels.
"""

from __future__ import annotations

import shutil
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import APP_DIR, start_server, stop_server
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

LABELS = {"liver": 1, "spleen": 2, "tumour": 3}
STARTER = APP_DIR / "model" / "pretrained_dinomix.pt"


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_studies_src):
    root = tmp_path_factory.mktemp("label_sets")
    studies = root / "studies"
    studies.mkdir()
    for name in ("synthetic_phantom_001", "synthetic_phantom_003"):
        shutil.copy(sample_studies_src / f"{name}.nii.gz", studies)
    srv = start_server(studies, root / "model", root / "server.log",
                       conf={"labels": ",".join(LABELS), "starter": str(STARTER)})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("client")))


def _label(server, image_id, tmp_path, values):
    """A label of ``image_id`` with blocks of the given values (file value -> block index)."""
    img = nib.load(str(server.studies / f"{image_id}.nii.gz"))
    lab = np.zeros(img.shape, np.uint8)
    for k, v in enumerate(values):
        lab[10 + 12 * k: 20 + 12 * k, 30:50, 10:30] = v
    path = tmp_path / f"{image_id}_{'_'.join(map(str, values))}.nii.gz"
    nib.save(nib.Nifti1Image(lab, img.affine), str(path))
    return path, lab


def test_info_and_the_synapse_starter_is_not_served(client):
    info = client.info()
    assert info["labels"] == LABELS
    assert "dinomix" not in info["models"] and "dinomix" in info["trainers"]  # the starter has 13 other organs
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("dinomix", "synthetic_phantom_001", {})
    assert "Status: 409" in e.value.msg and "trained for other labels" in e.value.msg


def test_labels_follow_the_set_then_train_and_infer(client, server, tmp_path):
    path, _ = _label(server, "synthetic_phantom_001", tmp_path, [1, 4])  # 4: not a label of this set
    with pytest.raises(MONAILabelClientException) as e:
        client.save_label("synthetic_phantom_001", str(path), tag="final")
    assert "Status: 422" in e.value.msg and "outside 0..3" in e.value.msg

    path, lab = _label(server, "synthetic_phantom_001", tmp_path, [1, 2])  # exported as (tumour, liver)
    client.save_label("synthetic_phantom_001", str(path), tag="final",
                      params={"label_info": [{"name": "tumour", "idx": 1}, {"name": "liver", "idx": 2}]})
    stored = np.asanyarray(nib.load(client.download_label("synthetic_phantom_001", "final")).dataobj)
    np.testing.assert_array_equal(stored, np.where(lab == 1, 3, np.where(lab == 2, 1, 0)))

    task = client.train_start("dinomix", {"max_iterations": 3, "val_fraction": 0.0})
    deadline = time.monotonic() + 300
    while client.train_status().get("status") in ("SUBMITTED", "RUNNING") or \
            client.train_status().get("id") != task["id"]:
        assert time.monotonic() < deadline, "training does not end"
        time.sleep(0.5)
    assert client.train_status()["status"] == "DONE", client.train_status()
    stats = client.info()["train_stats"]["dinomix"]
    assert stats["warm_start_from"] == "starter model"  # its liver and spleen carry over
    model = torch.load(server.model_dir / "dinomix.pt", map_location="cpu", weights_only=True)
    assert model["config"]["label_names"] == list(LABELS) and model["config"]["out_channels"] == 4

    info = client.info()
    assert info["models"]["dinomix"]["model_source"] == "retrained"
    result, params = client.infer("dinomix", "synthetic_phantom_003", {})
    assert params["label_names"] == LABELS
    assert set(np.unique(np.asanyarray(nib.load(result).dataobj)).tolist()) <= {0, 1, 2, 3}
