"""The DINO-Mix MONAI Label app (apps/dinomix) over HTTP, on both real servers of tests/conftest.py.

Every test runs twice: against the app in-process behind FastAPI's TestClient (``app_client``) and against a real
``monailabel start_server`` subprocess on 127.0.0.1 (``live_server``). Nothing is mocked: real NIfTI files, real
(tiny) trainings that publish real models, real sliding-window inference.

The expensive steps are module-scoped fixtures computed once per server and only when a test needs them:
``trained`` (one short synchronous training), ``submitted`` (a label PUT for an unlabeled image) and
``retrained`` (a second short training with ``"tracking": "mlflow"`` that must use the submitted label and publish
a new version). Tests that start and kill a background training come last in the file, so that the stats the
earlier tests read are those of the finished runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from conftest import FAST_TRAIN, scored_sample
from requests_toolbelt.multipart.decoder import MultipartDecoder

from dinomix_core.config import ORGANS

MODEL = "dinomix"
STRATEGY = "dinomix_minority_uncertainty"
REAL_CT = "real_ct_001"
LABELED_PHANTOM = "synthetic_phantom_001"  # has a final label in the sample studies
TRAIN_TIMEOUT_S = 600  # a 4-iteration run takes ~1.5 min on 2 busy CPU cores; under pytest-timeout (1200 s)
#: A background run long enough to still be going when the second request arrives (it is always stopped).
LONG_TRAIN = dict(FAST_TRAIN, max_iterations=100000)


class Api:
    """One way into the app: ``request(method, path, ...)`` returns a requests/httpx response (same interface)."""

    def __init__(self, name: str, client: Any, studies: Path, model_dir: Path, base_url: str = "") -> None:
        self.name = name
        self.client = client
        self.studies = Path(studies)
        self.model_dir = Path(model_dir)
        self.base_url = base_url

    def request(self, method: str, path: str, **kw):
        if self.base_url:  # real HTTP to the subprocess server
            kw.setdefault("timeout", TRAIN_TIMEOUT_S)
            return self.client.request(method, self.base_url + path, **kw)
        return self.client.request(method, path, **kw)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw):
        return self.request("POST", path, **kw)

    def info(self) -> Dict[str, Any]:
        r = self.get("/info/")
        assert r.status_code == 200, r.text
        return r.json()

    def objects(self) -> Dict[str, Any]:
        r = self.get("/datastore/", params={"output": "all"})
        assert r.status_code == 200, r.text
        return r.json()["objects"]

    def unlabeled(self) -> set:
        return {i for i, o in self.objects().items() if "final" not in o["labels"]}

    def training_running(self) -> bool:
        return self.get("/train/", params={"check_if_running": "true"}).status_code == 200

    def wait_idle(self, timeout_s: float = TRAIN_TIMEOUT_S) -> None:
        t0 = time.monotonic()
        while self.training_running():
            assert time.monotonic() - t0 < timeout_s, f"{self.name}: a training run does not end"
            time.sleep(0.5)

    @property
    def model_path(self) -> Path:
        return self.model_dir / f"{MODEL}.pt"

    def history(self) -> list:
        p = self.model_dir / "history.json"
        return json.loads(p.read_text()) if p.exists() else []


@pytest.fixture(scope="module", params=["inproc", "live"])
def api(request) -> Api:
    if request.param == "inproc":
        c = request.getfixturevalue("app_client")
        return Api("inproc", c, c.studies, c.model_dir)
    srv = request.getfixturevalue("live_server")
    session = requests.Session()
    request.addfinalizer(session.close)
    return Api("live", session, srv.studies, srv.model_dir, base_url=srv.url)


# ------------------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def without_model(api: Api) -> Iterator[None]:
    """No published model for the duration (the file is moved aside and put back): the state of a new server."""
    aside = api.model_path.with_name(".aside_" + api.model_path.name)
    moved = api.model_path.exists()
    if moved:
        os.replace(api.model_path, aside)
    try:
        yield
    finally:
        if moved:
            os.replace(aside, api.model_path)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_version(info: Dict[str, Any]) -> Optional[int]:
    return (info["models"].get(MODEL) or {}).get("model_version")  # not listed while nothing can be served


def infer(api: Api, image_id: str, out_dir: Path):
    """POST /infer/dinomix?image=ID (MONAI Label's default multipart answer); returns (params, label file)."""
    r = api.post(f"/infer/{MODEL}", params={"image": image_id})
    assert r.status_code == 200, r.text
    parts = MultipartDecoder(r.content, r.headers["content-type"]).parts
    by_name = {}
    for p in parts:
        disp = p.headers[b"Content-Disposition"].decode()
        name = disp.split('name="', 1)[1].split('"', 1)[0]
        by_name[name] = p
    assert set(by_name) == {"params", "image"}, sorted(by_name)
    params = json.loads(by_name["params"].content)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{image_id}_pred.nii.gz"
    out.write_bytes(by_name["image"].content)
    return params, out


def assert_label_on_image_grid(label_file: Path, image_file: Path) -> np.ndarray:
    lab, img = nib.load(str(label_file)), nib.load(str(image_file))
    assert lab.shape == img.shape
    np.testing.assert_allclose(lab.affine, img.affine, atol=1e-4)
    assert lab.get_data_dtype() == np.uint8
    data = np.asanyarray(lab.dataobj)
    ids = set(np.unique(data).tolist())
    assert ids <= set(range(len(ORGANS) + 1)), ids
    return data


def sync_train(api: Api, params: Dict[str, Any]):
    api.wait_idle()
    t0 = time.monotonic()
    r = api.post(f"/train/{MODEL}", params={"run_sync": "true"}, json=params)
    return r, time.monotonic() - t0


def stop_training(api: Api) -> None:
    """Stop the running training and anything queued behind it; return once nothing runs or waits."""
    t0 = time.monotonic()
    while True:
        if api.training_running():
            api.request("DELETE", "/train/")
        else:
            tasks = api.get("/train/", params={"all": "true"})
            pending = tasks.status_code == 200 and any(t.get("status") == "SUBMITTED" for t in tasks.json())
            if not pending:
                return
        assert time.monotonic() - t0 < 180, f"{api.name}: training did not stop"
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def trained(api: Api) -> Dict[str, Any]:
    """One short synchronous training (FAST_TRAIN) on the sample studies; what was seen before and after."""
    before = api.info()
    history_before = api.history()
    r, seconds = sync_train(api, FAST_TRAIN)
    assert r.status_code == 200, f"{api.name}: training failed: {r.status_code} {r.text[:2000]}"
    after = api.info()
    ckpt = torch.load(api.model_path, map_location="cpu", weights_only=False)
    return {
        "stats": r.json(), "before": before, "after": after, "history_before": history_before,
        "history_after": api.history(), "seconds": seconds, "ckpt_meta": {k: ckpt.get(k) for k in ("iteration", "saved_at", "config")},
    }


@pytest.fixture(scope="module")
def submitted(api: Api) -> Iterator[Dict[str, Any]]:
    """PUT /datastore/label: a copy of a phantom's final label for an unlabeled phantom on the same grid.

    The label is removed again when the module ends (the servers are shared by the whole test session).
    """
    src_img = nib.load(str(api.studies / f"{LABELED_PHANTOM}.nii.gz"))
    src_label = api.studies / "labels" / "final" / f"{LABELED_PHANTOM}.nii.gz"
    target = None
    for image_id in sorted(api.unlabeled()):
        path = api.studies / f"{image_id}.nii.gz"
        if image_id.startswith("synthetic_phantom") and path.exists():
            img = nib.load(str(path))
            if img.shape == src_img.shape and np.allclose(img.affine, src_img.affine):
                target = image_id
                break
    assert target, "no unlabeled phantom on the grid of the labeled one"
    stats_before = api.get("/datastore/").json()
    r = api.request(
        "PUT", "/datastore/label", params={"image": target, "tag": "final"},
        files={"label": (f"{target}.nii.gz", src_label.read_bytes(), "application/octet-stream")},
        data={"params": json.dumps({"label_info": [{"name": "liver", "idx": 6}]})},
    )
    yield {"id": target, "response": r, "source": src_label, "stats_before": stats_before}
    if r.status_code == 200:
        api.request("DELETE", "/datastore/label", params={"id": target, "tag": "final"})


@pytest.fixture(scope="module")
def retrained(api: Api, trained, submitted, tmp_path_factory) -> Dict[str, Any]:
    """A second short training, with MLflow tracking asked for (as the Slicer plugin sends it), then /infer."""
    assert submitted["response"].status_code == 200, submitted["response"].text
    before = api.info()
    history_before = api.history()
    old = torch.load(api.model_path, map_location="cpu", weights_only=False)
    old_meta = {k: old.get(k) for k in ("iteration", "saved_at")}
    stat_before = os.stat(api.model_path)
    sha_before = sha256(api.model_path)
    iterations = 3 if old_meta["iteration"] != 3 else 2  # differs from the published model's: visible in /infer
    time.sleep(1.1)  # saved_at has a resolution of one second
    r, seconds = sync_train(api, dict(FAST_TRAIN, max_iterations=iterations, tracking="mlflow"))
    assert r.status_code == 200, f"{api.name}: training with tracking=mlflow failed: {r.status_code} {r.text[:2000]}"
    new = torch.load(api.model_path, map_location="cpu", weights_only=False)
    # the next inference: an unlabeled phantom (3 x 3 x 4 mm, resampled by Spacingd to the model's spacing)
    image_id = sorted(api.unlabeled() - {submitted["id"]})[0]
    params, label = infer(api, image_id, tmp_path_factory.mktemp(f"retrained_{api.name}"))
    return {
        "stats": r.json(), "seconds": seconds, "iterations": iterations, "before": before, "after": api.info(),
        "history_before": history_before, "history_after": api.history(), "old_meta": old_meta,
        "new_meta": {k: new.get(k) for k in ("iteration", "saved_at", "trained_on")}, "stat_before": stat_before,
        "stat_after": os.stat(api.model_path), "sha_before": sha_before, "sha_after": sha256(api.model_path),
        "infer_params": params, "infer_label": label, "infer_image": image_id,
    }


# ------------------------------------------------------------------------------------------------------ /info


def test_info_lists_model_trainer_and_strategies(api):
    info = api.info()
    assert "config" not in info  # the 3D Slicer MONAI Label plugin refuses a server whose /info has one
    expected_labels = {n: i + 1 for i, n in enumerate(ORGANS)}
    assert info["labels"] == expected_labels
    # MONAI Label lists only valid infer tasks: dinomix appears once a model can be served (no starter here)
    assert (MODEL in info["models"]) == api.model_path.exists()
    if MODEL not in info["models"]:
        return
    m = info["models"][MODEL]
    assert m["model_present"] is True and m["model_source"] == "retrained"
    assert m["labels"] == expected_labels and m["dimension"] == 3 and m["type"] == "segmentation"
    t = info["trainers"][MODEL]
    assert t["config"]["max_iterations"] == 200 and t["config"]["preset"] == "cpu"
    assert {"val_fraction", "teacher", "device", "use_fkd", "use_pic", "use_consistency"} <= set(t["config"])
    assert t["presets"] == ["cpu", "paper"] and "presets" not in t["config"]  # choices beside the options
    assert {STRATEGY, "random", "first"} <= set(info["strategies"])
    assert MODEL in info["train_stats"]
    assert info["datastore"]["total"] == 8


# ------------------------------------------------------------------------------------------------------ /infer


def test_infer_before_any_model_is_409_with_a_clear_message(api):
    api.wait_idle()
    with without_model(api):
        assert MODEL not in api.info()["models"]  # not ready: the stock plugin offers no segmentation model
        assert MODEL in api.info()["trainers"]
        r = api.post(f"/infer/{MODEL}", params={"image": REAL_CT})
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "no trained DINO-Mix model" in detail and "train" in detail.lower()


@pytest.mark.parametrize("image", ["no_such_image", "/etc/passwd"])
def test_infer_unknown_image_is_404(api, image):
    r = api.post(f"/infer/{MODEL}", params={"image": image})
    assert r.status_code == 404, r.text
    assert "unknown image" in r.json()["detail"]


def test_sync_training_publishes_a_model(api, trained):
    s = trained["stats"]
    assert s["status"] == "DONE", s
    assert s["epoch"] == s["total_epochs"] == FAST_TRAIN["max_iterations"]
    assert s["labeled"] >= 3 and s["validation"] == 0  # val_fraction 0: no validation split
    v_before = model_version(trained["before"]) or 0
    assert s["published_version"] == v_before + 1
    m = trained["after"]["models"][MODEL]
    assert m["model_present"] is True and m["model_version"] == s["published_version"]
    assert len(trained["history_after"]) == len(trained["history_before"]) + 1
    last = trained["history_after"][-1]
    assert last["version"] == s["published_version"] and last["current"] is True
    assert last["iteration"] == FAST_TRAIN["max_iterations"] == trained["ckpt_meta"]["iteration"]
    assert REAL_CT in last["labeled_ids"]
    assert (api.model_dir / "history" / f"{last['version']:04d}.pt").is_file()


def test_train_stats_in_info(api, trained):
    st = trained["after"]["train_stats"][MODEL]
    assert {"epoch", "total_epochs", "best_metric", "status"} <= set(st)
    assert st["status"] == "DONE"
    assert st["epoch"] == st["total_epochs"] == FAST_TRAIN["max_iterations"]
    assert 0.0 <= st["best_metric"] <= 1.0
    assert st["published_version"] == trained["stats"]["published_version"]


def test_training_writes_tensorboard_events_and_curves(api, trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_dir = api.model_dir / "train"
    events = sorted((train_dir / "logs").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    assert events, f"no TensorBoard event file in {train_dir / 'logs'}"
    acc = EventAccumulator(str(events[-1]))
    acc.Reload()
    assert "train/total" in acc.Tags()["scalars"]
    steps = [e.step for e in acc.Scalars("train/total")]
    assert steps == list(range(1, FAST_TRAIN["max_iterations"] + 1))
    png = train_dir / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_mtime >= trained["after"]["train_stats"][MODEL]["start_ts"]


def test_infer_returns_a_label_on_the_real_ct_grid(api, trained, tmp_path):
    image_file = api.studies / f"{REAL_CT}.nii.gz"
    # the model's preprocessing resamples (Spacingd): the sample CT's spacing is not the target spacing
    target = np.asarray(trained["ckpt_meta"]["config"]["target_spacing"], dtype=float)
    assert not np.allclose(nib.load(str(image_file)).header.get_zooms()[:3], target)
    params, label_file = infer(api, REAL_CT, tmp_path)
    data = assert_label_on_image_grid(label_file, image_file)
    assert data.shape == (180, 148, 69)
    assert params["label_names"] == {n: i + 1 for i, n in enumerate(ORGANS)}
    assert params["model"]["iteration"] == trained["ckpt_meta"]["iteration"]
    assert params["latencies"]["total"] > 0


# ------------------------------------------------------------------------------------------------------ labels


def test_submitted_label_is_listed_as_labeled(api, submitted):
    r = submitted["response"]
    assert r.status_code == 200, r.text
    image_id = submitted["id"]
    assert r.json()["image"] == image_id and r.json()["label"] == image_id
    obj = api.objects()[image_id]
    assert "final" in obj["labels"] and obj["labels"]["final"]["ext"] == ".nii.gz"
    stored = api.studies / "labels" / "final" / f"{image_id}.nii.gz"
    assert stored.read_bytes() == submitted["source"].read_bytes()
    stats = api.get("/datastore/").json()
    assert stats["completed"] == submitted["stats_before"]["completed"] + 1
    on_disk = json.loads((api.studies / "datastore_v2.json").read_text())
    assert "final" in on_disk["objects"][image_id]["labels"]
    train_list = api.get("/datastore/", params={"output": "train"}).json()
    assert any(os.path.basename(d["image"]).startswith(image_id + ".") for d in train_list)
    assert image_id not in api.unlabeled()


def test_retrain_with_mlflow_tracking_publishes_a_new_version(api, retrained, submitted):
    s = retrained["stats"]
    assert s["status"] == "DONE", s
    assert s["epoch"] == s["total_epochs"] == retrained["iterations"]
    v_before = model_version(retrained["before"])
    assert v_before is not None and s["published_version"] == v_before + 1
    assert model_version(retrained["after"]) == v_before + 1
    assert len(retrained["history_after"]) == len(retrained["history_before"]) + 1
    assert retrained["history_after"][-1]["version"] == v_before + 1
    # the submitted label was used: the new model was trained on that image
    assert submitted["id"] in retrained["history_after"][-1]["labeled_ids"]
    assert submitted["id"] in retrained["new_meta"]["trained_on"]["labeled"]
    assert s["labeled"] == retrained["before"]["train_stats"][MODEL]["labeled"] + 1
    # a different model file is in place
    assert retrained["stat_after"].st_mtime_ns != retrained["stat_before"].st_mtime_ns
    assert retrained["sha_after"] != retrained["sha_before"]


def test_next_infer_uses_the_new_model(api, retrained):
    p = retrained["infer_params"]["model"]
    assert p["iteration"] == retrained["iterations"] == retrained["new_meta"]["iteration"]
    assert p["iteration"] != retrained["old_meta"]["iteration"]
    assert p["saved_at"] == retrained["new_meta"]["saved_at"] != retrained["old_meta"]["saved_at"]
    # phantom: 3 x 3 x 4 mm resampled to the model's spacing and back onto its own grid
    image_file = api.studies / f"{retrained['infer_image']}.nii.gz"
    assert np.allclose(nib.load(str(image_file)).header.get_zooms()[:3], (3.0, 3.0, 4.0))
    assert_label_on_image_grid(retrained["infer_label"], image_file)


# ------------------------------------------------------------------------------------------------------ strategies


def test_strategies_return_unlabeled_ids(api, trained):
    unlabeled = api.unlabeled()
    for name in ("random", "first"):
        r = api.post(f"/activelearning/{name}", json={})
        assert r.status_code == 200, r.text
        assert r.json()["id"] in unlabeled
    if api.name == "live":  # the model-based strategy costs one inference per unlabeled image: run it once
        pytest.skip("dinomix_minority_uncertainty is exercised on the in-process server and in test_app_client")
    def ask():
        r = api.post(f"/activelearning/{STRATEGY}", json={})
        assert r.status_code == 200, r.text
        return r.json()

    res = scored_sample(ask)  # scores come from the background scorer
    assert res["selected_by"] == STRATEGY and res["id"] in unlabeled
    assert 0.0 <= res["score"] <= 1.0
    assert Path(res["path"]).name == f"{res['id']}.nii.gz"


# ------------------------------------------------------------------------------------------------------ 429
# last in the file: these start and kill background trainings


def test_second_training_request_while_one_runs_gets_429(api, trained):
    api.wait_idle()
    version = model_version(api.info())
    r1 = api.post(f"/train/{MODEL}", json=LONG_TRAIN)
    try:
        assert r1.status_code == 200, r1.text
        assert r1.json()["status"] in ("SUBMITTED", "RUNNING")
        t0 = time.monotonic()
        while not api.training_running():
            assert time.monotonic() - t0 < 60, "the background training never started"
            time.sleep(0.2)
        r2 = api.post(f"/train/{MODEL}", json=FAST_TRAIN)
        assert r2.status_code == 429, r2.text
        assert "Already Running" in r2.json()["detail"]
    finally:
        stop_training(api)
    assert model_version(api.info()) == version  # a stopped run publishes nothing


def test_immediate_second_training_request_gets_429(api, trained):
    api.wait_idle()
    version = model_version(api.info())
    r1 = api.post(f"/train/{MODEL}", json=LONG_TRAIN)
    r2 = api.post(f"/train/{MODEL}", json=FAST_TRAIN)  # a double click on Train
    try:
        assert r1.status_code == 200, r1.text
        assert r2.status_code == 429, f"second request accepted: {r2.text}"
    finally:
        stop_training(api)
        assert model_version(api.info()) == version
