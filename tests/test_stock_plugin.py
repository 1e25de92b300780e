"""The stock MONAILabel 3D Slicer plugin's session, replayed against the real server.

3D Slicer cannot run here. The ``plugin_*`` functions below re-state, from MONAI Label 0.8.5's
``plugins/slicer/MONAILabel/MONAILabel.py``, the arithmetic and the requests of the plugin's handlers; the
segmentation "scene" is a stand-in (a dict of named segment masks in the order Slicer's segment list has them):

* ``fetchInfo``: models by ``type``; ``getParamsFromConfig``: a task's ``config`` with lists replaced by their
  first item;
* ``onNextSampleButton`` -> ``initSample``: empty segments for ``info["labels"]``, then the first model whose
  labels hold a server label runs (``onClickSegmentation``) with ``result_extension=".nrrd"``,
  ``result_dtype="uint8"`` (``MONAILabelLogic.infer``), read with SimpleITK, segment names from ``label_names``
  sorted by id;
* ``onSaveLabel``: the segments are exported in list order as values 1, 2, ... and sent with
  ``label_info=[{"name": segment name, "idx": position + 1}]`` (background and scribble segments left out);
* ``onTraining`` / ``monitorTraining`` (progress ``max(1, 100 * current / total)`` with
  ``current = 0 if total_time else epoch``; the accuracy bar ``best_metric * 100``) / ``onStopTraining``
  (``status.get("result", status.get("details", [])[-1])``).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

import nibabel as nib
import numpy as np
import pytest
import requests
import SimpleITK as sitk
from conftest import APP_DIR, sample_server
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from dinomix_core.config import ORGANS

STARTER = APP_DIR / "model" / "pretrained_dinomix.pt"
NON_LABEL_SEGMENTS = ("background", "foreground_scribbles", "background_scribbles")


# ------------------------------------------------------------------------- the plugin's handlers, re-stated
def plugin_models(info: Dict[str, Any], model_type: str) -> List[str]:
    return [k for k, v in info.get("models", {}).items() if v.get("type", "segmentation") == model_type]


def plugin_params(info: Dict[str, Any], section: str, name: str) -> Dict[str, Any]:
    section = {"infer": "models", "train": "trainers", "activelearning": "strategies"}[section]
    config = info.get(section, {}).get(name, {}).get("config", {})
    return {k: v[0] if isinstance(v, list) else v for k, v in config.items()}


def plugin_autorun_model(info: Dict[str, Any]) -> str:
    for label in info.get("labels", []):
        for name, model in info.get("models", {}).items():
            if label in model.get("labels", []):
                return name
    raise AssertionError("the plugin would run no model after Next Sample")


def plugin_result_segments(result_file: str, params: Dict[str, Any], info: Dict[str, Any],
                           model: str) -> Dict[str, np.ndarray]:
    """The segments the plugin makes of an infer result: names by ascending id, masks from the label values."""
    labels = params.get("label_names") or info["models"][model].get("labels")
    if isinstance(labels, dict):
        labels = [k for k, _ in sorted(labels.items(), key=lambda item: item[1])]
    arr = sitk.GetArrayFromImage(sitk.ReadImage(result_file))  # [Z, Y, X], as the plugin reads it
    return {name: arr == value for value, name in enumerate(labels, start=1) if name != "background"}


def plugin_export(segments: Dict[str, np.ndarray]) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """``onSaveLabel``: the labelmap (value = position among the exported segments) and its ``label_info``."""
    first = next(iter(segments.values()))
    labelmap, info = np.zeros(first.shape, np.uint8), []
    exported = 0
    for idx, (name, mask) in enumerate(segments.items()):
        if name in NON_LABEL_SEGMENTS:
            continue
        exported += 1
        labelmap[mask] = exported
        info.append({"name": name, "idx": idx + 1})
    return labelmap, info


def plugin_progress(train_stats: Dict[str, Any]) -> Tuple[float, float]:
    """``monitorTraining``: (progress bar percent, accuracy bar value)."""
    stats = next(iter(train_stats.values()))
    current = 0 if stats.get("total_time") else stats.get("epoch", 1)
    return max(1, 100 * current / stats.get("total_epochs", 1)), stats.get("best_metric", 0) * 100


def plugin_stop_message(status: Dict[str, Any]) -> str:
    """``onStopTraining``: the line it logs (an IndexError there is an exception in the user's Slicer)."""
    return f"Status: {status.get('status')}\nResult: {status.get('result', status.get('details', [])[-1])}"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_studies_src):
    """A fresh server as `make serve` starts it (sample studies, the shipped starter model)."""
    yield from sample_server(tmp_path_factory, sample_studies_src, "stock_plugin", {"starter": str(STARTER)})


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("plugin")))


def save_segments(client: MONAILabelClient, image_id: str, segments, image_path: str, path) -> Dict[str, Any]:
    """Export the segments as the plugin does (on the image's grid) and submit them."""
    labelmap, label_info = plugin_export(segments)
    ref = sitk.ReadImage(image_path)
    out = sitk.GetImageFromArray(labelmap)
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path))
    return client.save_label(image_id, str(path), params={"label_info": label_info})


# --------------------------------------------------------------------------------------------------- tests
def test_next_sample_infer_edit_and_save(client, server, tmp_path):
    info = client.info()
    assert "config" not in info  # the plugin asks for a server upgrade otherwise
    assert plugin_models(info, "segmentation") == ["dinomix"]
    model = plugin_autorun_model(info)
    strategy = next(iter(info["strategies"]))  # the strategy box's first entry
    assert strategy == "dinomix_minority_uncertainty"
    sample = client.next_sample(strategy, plugin_params(info, "activelearning", strategy))
    assert sample.get("id")
    other = client.next_sample(strategy, plugin_params(info, "activelearning", strategy))  # a second annotator
    assert other.get("id") and other["id"] != sample["id"]  # the first one's image is held for them

    params = dict(plugin_params(info, "infer", model), result_extension=".nrrd", result_dtype="uint8")
    result_file, result_params = client.infer(model, sample["id"], params)
    assert result_file.endswith(".nrrd")
    result, image = sitk.ReadImage(result_file), sitk.ReadImage(sample["path"])
    assert result.GetPixelID() == sitk.sitkUInt8
    assert result.GetSize() == image.GetSize()
    np.testing.assert_allclose(result.GetOrigin(), image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(result.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(result.GetDirection(), image.GetDirection(), atol=1e-5)
    segments = plugin_result_segments(result_file, result_params, info, model)
    assert list(segments) == list(ORGANS)

    # the annotator deletes the spleen segment (the first); every later segment's value shifts down by one. The
    # plugin's scribble layers come after the organs and are not exported.
    assert segments["liver"].any(), "the starter finds no liver in the sample CT"
    edited = {**{n: segments[n] for n in ORGANS[1:]}, "foreground_scribbles": np.zeros_like(segments["liver"])}
    save_segments(client, sample["id"], edited, sample["path"], tmp_path / "label.nii.gz")

    stored = np.asanyarray(nib.load(client.download_label(sample["id"], "final")).dataobj)
    expected = np.zeros(stored.shape, np.uint8)
    for name in ORGANS[1:]:  # the stored label has the app's ids, read back in the NIfTI's own [X, Y, Z] order
        expected[segments[name].transpose(2, 1, 0)] = ORGANS.index(name) + 1
    np.testing.assert_array_equal(stored, expected)
    obj = client.datastore()["objects"][sample["id"]]["labels"]["final"]["info"]
    assert obj["label_values"]["5"] == 6  # liver: 5th segment in the file, the app's id 6

    # a segment the app does not know: 422 naming it, the stored label unchanged
    with pytest.raises(MONAILabelClientException) as e:
        save_segments(client, sample["id"], {"tumour": segments["liver"]}, sample["path"], tmp_path / "bad.nii.gz")
    assert "Status: 422" in e.value.msg and "'tumour'" in e.value.msg
    again = np.asanyarray(nib.load(client.download_label(sample["id"], "final")).dataobj)
    np.testing.assert_array_equal(again, stored)


def test_infer_refuses_a_result_format_it_cannot_write(client):
    info = client.info()
    sample_id = next(iter(client.datastore()["objects"]))
    for params, name in (({"result_extension": ".mgz"}, "result_extension"), ({"result_dtype": "float64"},
                                                                                "result_dtype")):
        with pytest.raises(MONAILabelClientException) as e:
            client.infer(plugin_autorun_model(info), sample_id, params)
        assert "Status: 422" in e.value.msg and name in e.value.msg


def test_train_stop_at_once_and_progress(client, server):
    info = client.info()
    trainer = next(iter(info["trainers"]))
    params = plugin_params(info, "train", trainer)
    assert params["max_iterations"] == 200 and isinstance(params["preset"], str)

    # Train, then Stop at once: before the subprocess exists or right after; the plugin reads details[-1]
    client.train_start(trainer, params)
    status = client.train_stop()
    assert status and status["status"] == "STOPPED"
    assert "stopped by request" in plugin_stop_message(status)
    deadline = time.monotonic() + 60
    while client.train_status(check_if_running=True):
        assert time.monotonic() < deadline, "a stopped training is still running"
        time.sleep(0.2)

    # a short training (the user lowered max_iterations in the options table), polled as monitorTraining does
    client.train_start(trainer, dict(params, max_iterations=6, val_fraction=0.0))
    seen, deadline = [], time.monotonic() + 300
    while True:
        status = client.train_status(check_if_running=False)
        if status.get("status") != "RUNNING" and seen:
            break
        if status.get("status") == "RUNNING":
            stats = client.info()["train_stats"]
            seen.append(plugin_progress(stats) + (stats[trainer].get("status"),))
        assert time.monotonic() < deadline, "training does not end"
        time.sleep(0.2)
    assert status["status"] == "DONE", status
    # while the run is RUNNING epochs count up; once its stats say DONE (total_time set) the plugin shows 1 % again
    # until the task ends, as with MONAI Label's own trainers
    percents = [p for p, _, s in seen if s != "DONE"]
    assert percents == sorted(percents) and all(1 <= p <= 100 for p in percents), seen
    assert max(percents) > 1, seen
    assert all(p == 1 for p, _, s in seen if s == "DONE"), seen
    assert all(0 <= a <= 100 for _, a, _ in seen)
    stats = client.info()["train_stats"][trainer]
    assert stats["total_time"] > 0 and stats["epoch"] == stats["total_epochs"] == 6
    assert client.info()["models"]["dinomix"]["model_source"] == "retrained"
    requests.get(server.url + "/info/", timeout=30).raise_for_status()


def test_multi_gpu_training_through_the_server(client):
    """MONAI Label's ``multi_gpu`` / ``gpus`` options start torch DDP under torchrun: here 2 gloo processes on
    the CPU (``device cpu``: the ids count processes)."""
    info = client.info()
    version = info["train_stats"]["dinomix"].get("published_version") or 0
    params = dict(plugin_params(info, "train", "dinomix"), max_iterations=2, val_fraction=0.0, multi_gpu=True,
                  gpus="0,1", device="cpu")
    task = client.train_start("dinomix", params)
    deadline = time.monotonic() + 300
    while client.train_status(check_if_running=True) or client.train_status().get("id") != task["id"] or \
            client.train_status().get("status") in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, "multi-GPU training does not end"
        time.sleep(0.5)
    assert client.train_status()["status"] == "DONE", client.train_status()
    stats = client.info()["train_stats"]["dinomix"]
    assert stats["status"] == "DONE" and stats["world_size"] == 2 and stats["epoch"] == 2
    assert stats["options"]["multi_gpu"] is True and stats["published_version"] == version + 1


def test_bad_gpus_option_is_a_400(client, server):
    r = requests.post(server.url + "/train/dinomix", json={"multi_gpu": True, "gpus": "zero"}, timeout=30)
    assert r.status_code == 400 and "gpus must be 'all' or GPU ids" in r.text
