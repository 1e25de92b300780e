"""The DINO-Mix app driven by the official ``monailabel.client.MONAILabelClient``, as the 3D Slicer plugin does it.

Against the real ``monailabel start_server`` subprocess of tests/conftest.py (``live_server``): info, next sample,
infer (409 before any model), save a label made by thresholding the image, start a training the way the plugin
does (background, ``"tracking": "mlflow"``), poll ``train_status`` and ``/info`` train stats like the plugin's
progress display, infer with the published model, and a second start while one runs (429) then ``train_stop``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import nibabel as nib
import numpy as np
import pytest
import requests
from conftest import FAST_TRAIN, scored_sample
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from dinomix_core.config import ORGANS

MODEL = "dinomix"
STRATEGY = "dinomix_minority_uncertainty"
REAL_CT = "real_ct_001"
TIMEOUT_S = 600  # well under pytest-timeout (1200 s): a run that never ends fails fast


@pytest.fixture(scope="module")
def client(live_server, tmp_path_factory) -> MONAILabelClient:
    return MONAILabelClient(live_server.url, tmpdir=str(tmp_path_factory.mktemp("client")))


def unlabeled(client: MONAILabelClient) -> set:
    return {i for i, o in client.datastore()["objects"].items() if "final" not in o["labels"]}


def wait_idle(client: MONAILabelClient, poll=None, timeout_s: float = TIMEOUT_S) -> None:
    t0 = time.monotonic()
    while client.train_status(check_if_running=True):
        assert time.monotonic() - t0 < timeout_s, "training does not end"
        if poll:
            poll()
        time.sleep(0.5)


def wait_task(client: MONAILabelClient, task_id: str, poll=None, timeout_s: float = TIMEOUT_S) -> Dict[str, Any]:
    """Poll ``train_status`` until the task has ended (``check_if_running`` alone says "not running" for a task
    whose subprocess has not started yet: MONAI Label 0.8.5 registers it only once started)."""
    t0 = time.monotonic()
    while True:
        tasks = client.train_status()
        task = tasks if tasks.get("id") == task_id else None
        assert task is not None, f"task {task_id} is no longer the latest training task: {tasks}"
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            return task
        assert time.monotonic() - t0 < timeout_s, "training does not end"
        if poll:
            poll()
        time.sleep(0.5)


def stop_everything(client: MONAILabelClient, timeout_s: float = 120) -> None:
    """Teardown: stop whatever training runs or is about to, so that one failing test cannot leave a
    100000-iteration run behind for every later test to wait on."""
    t0 = time.monotonic()
    while client.train_status(check_if_running=True):
        assert time.monotonic() - t0 < timeout_s, "a training run cannot be stopped"
        try:
            client.train_stop()
        except MONAILabelClientException:
            pass
        time.sleep(0.5)


def model_version(info: Dict[str, Any]):
    return (info["models"].get(MODEL) or {}).get("model_version")  # not listed while nothing can be served


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sample(client) -> Dict[str, Any]:
    """The next image to label, picked by the DINO-Mix strategy (as the plugin's Next Sample button does)."""
    return client.next_sample(STRATEGY, {})


@pytest.fixture(scope="module")
def saved(client, sample, live_server, tmp_path_factory) -> Iterator[Dict[str, Any]]:
    """A label made by thresholding the image (soft tissue -> liver id), submitted as the final label."""
    image_id = sample["id"]
    img = nib.load(sample["path"])
    hu = np.asanyarray(img.dataobj).astype(np.float32)
    label = np.where((hu > 0) & (hu < 300), 6, 0).astype(np.uint8)  # 6 = liver
    assert 0 < int((label > 0).sum()) < label.size
    path = tmp_path_factory.mktemp("label") / f"{image_id}.nii.gz"
    nib.save(nib.Nifti1Image(label, img.affine), str(path))
    res = client.save_label(image_id, str(path), tag="final", params={"label_info": [{"name": "liver", "idx": 6}]})
    yield {"id": image_id, "response": res, "label": label, "path": path}
    # leave the shared server's datastore as it was
    requests.delete(live_server.url + "/datastore/label", params={"id": image_id, "tag": "final"}, timeout=60)


@pytest.fixture(scope="module")
def trained(client, saved) -> Dict[str, Any]:
    """A background training started as the plugin does, polled until done (train_status + /info train_stats)."""
    wait_idle(client)
    before = client.info()
    t0 = time.monotonic()
    task = client.train_start(MODEL, dict(FAST_TRAIN, tracking="mlflow"))
    seen = []
    status = wait_task(client, task["id"], poll=lambda: seen.append(client.info()["train_stats"][MODEL]))
    return {
        "task": task, "seconds": time.monotonic() - t0, "before": before, "after": client.info(), "status": status,
        "seen": seen,
    }


# ------------------------------------------------------------------------------------------------------ tests


def test_info_as_the_plugin_reads_it(client):
    info = client.info()
    assert "config" not in info  # the plugin refuses a server with a top-level config
    assert info["labels"] == {n: i + 1 for i, n in enumerate(ORGANS)}
    assert MODEL in info["trainers"]  # the model itself is listed once one can be served (test_day_one.py)
    assert info["trainers"][MODEL]["config"]["max_iterations"] == 200
    assert {STRATEGY, "random", "first"} <= set(info["strategies"])
    assert MODEL in info["train_stats"]


def test_next_sample_is_an_unlabeled_image(client, sample):
    assert sample["id"] in unlabeled(client)  # (runs before the `saved` fixture labels it)
    assert os.path.isfile(sample["path"]) and Path(sample["path"]).name.startswith(sample["id"])
    # scored, or (no model yet, or its scores still being computed in the background) the least recently served
    assert sample["selected_by"] == STRATEGY or sample["selected_by"].startswith("pending (")


def test_infer_before_any_model_raises_409(client, live_server):
    wait_idle(client)
    model = Path(live_server.model_dir) / f"{MODEL}.pt"
    aside = model.with_name(".aside_" + model.name)
    moved = model.exists()
    if moved:
        os.replace(model, aside)
    try:
        with pytest.raises(MONAILabelClientException) as e:
            client.infer(MODEL, REAL_CT, {})
    finally:
        if moved:
            os.replace(aside, model)
    assert "Status: 409" in e.value.msg and "no trained DINO-Mix model" in e.value.msg


def test_save_label_marks_the_image_labeled(client, saved):
    assert saved["response"]["image"] == saved["id"] and saved["response"]["label"] == saved["id"]
    obj = client.datastore()["objects"][saved["id"]]
    assert "final" in obj["labels"]
    assert saved["id"] not in unlabeled(client)
    back = nib.load(client.download_label(saved["id"], "final"))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), saved["label"])


def test_train_start_status_and_publish(client, trained, saved):
    assert trained["task"]["status"] in ("SUBMITTED", "RUNNING")
    assert trained["task"]["request"]["max_iterations"] == FAST_TRAIN["max_iterations"]
    assert trained["status"]["id"] == trained["task"]["id"]
    assert trained["status"]["status"] == "DONE", trained["status"]
    stats = trained["after"]["train_stats"][MODEL]
    assert stats["status"] == "DONE"
    assert stats["epoch"] == stats["total_epochs"] == FAST_TRAIN["max_iterations"]
    assert 0.0 <= stats["best_metric"] <= 1.0
    v0 = model_version(trained["before"]) or 0
    assert stats["published_version"] == v0 + 1 == model_version(trained["after"])
    assert trained["after"]["models"][MODEL]["model_present"] is True
    assert trained["after"]["models"][MODEL]["model_trained_on"] == stats["labeled"] >= 4  # 3 sample + ours
    # what the plugin's progress display polls: every snapshot has its keys, epochs never go backwards
    polled = [s for s in trained["seen"] if s.get("status") == "RUNNING"]
    assert all({"epoch", "total_epochs", "best_metric"} <= set(s) for s in polled)
    epochs = [s["epoch"] for s in polled]
    assert epochs == sorted(epochs)
    # the stock plugin's progress bar (monitorTraining): current = 0 if total_time else epoch
    for s in polled:
        current = 0 if s.get("total_time") else s.get("epoch", 1)
        assert max(1, 100 * current / s.get("total_epochs", 1)) == max(1, 100 * s["epoch"] / s["total_epochs"])


def test_infer_with_the_published_model(client, trained, live_server):
    label_file, params = client.infer(MODEL, REAL_CT, {})
    image = nib.load(str(Path(live_server.studies) / f"{REAL_CT}.nii.gz"))
    lab = nib.load(label_file)
    assert lab.shape == image.shape
    np.testing.assert_allclose(lab.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(lab.dataobj)).tolist()) <= set(range(len(ORGANS) + 1))
    assert params["model"]["iteration"] == FAST_TRAIN["max_iterations"]
    assert params["label_names"]["liver"] == 6


def test_next_sample_with_a_model_uses_minority_uncertainty(client, trained):
    res = scored_sample(lambda: client.next_sample(STRATEGY, {}))  # scores come from the background scorer
    assert res["selected_by"] == STRATEGY
    assert res["id"] in unlabeled(client)
    assert 0.0 <= res["score"] <= 1.0


def test_train_start_twice_gets_429_and_train_stop(client, trained):
    wait_idle(client)
    version = model_version(client.info())
    task = client.train_start(MODEL, dict(FAST_TRAIN, max_iterations=100000))
    try:
        t0 = time.monotonic()
        while not client.train_status(check_if_running=True):
            assert time.monotonic() - t0 < 60, "the background training never started"
            time.sleep(0.2)
        with pytest.raises(MONAILabelClientException) as e:
            client.train_start(MODEL, FAST_TRAIN)
        assert "Status: 429" in e.value.msg
    finally:
        stopped = client.train_stop()
        stop_everything(client)
    assert stopped["id"] == task["id"] and stopped["status"] == "STOPPED"
    wait_idle(client, timeout_s=120)
    assert wait_task(client, task["id"], timeout_s=120)["status"] == "STOPPED"
    assert model_version(client.info()) == version


@pytest.mark.parametrize("attempt", range(3))
def test_stop_right_after_start_stops_the_training(client, trained, attempt):
    """A Stop that lands before MONAI Label has started the training subprocess (a quick Train-then-Stop; the
    race that once left a 100000-iteration run going) stops it: STOPPED, nothing runs, the model is unchanged."""
    wait_idle(client)
    version = model_version(client.info())
    task = client.train_start(MODEL, dict(FAST_TRAIN, max_iterations=100000))
    try:
        stopped = client.train_stop()
    finally:
        stop_everything(client)
    assert stopped is not None and stopped["id"] == task["id"] and stopped["status"] == "STOPPED"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:  # a stopped task must not start a moment later
        assert not client.train_status(check_if_running=True), "the stopped training started anyway"
        time.sleep(0.5)
    assert wait_task(client, task["id"], timeout_s=60)["status"] == "STOPPED"
    assert model_version(client.info()) == version
