"""Reliability: bad input, faults and concurrency never crash the server or lose a label.

Every case runs against a real ``monailabel start_server`` (tests/conftest.py ``start_server``) over its own fresh
copy of the studies, and asserts (1) a clear error: an HTTP 4xx whose message says what is wrong, or a logged,
explained note/skip in training, (2) the server still answers ``/info`` afterwards and (3) nothing already stored
changed (sha256 of every file of the studies folder: images, labels, ``datastore_v2.json``; and of the published
model).

Servers: ``faults`` (the sample studies, a small ``max_voxels``, an untrained model published through the real
ModelRegistry so inference works without a slow training) serves the bad-input, path, size and training-fault
cases and finally is SIGKILLed during a storm of label uploads and restarted; ``empty`` (an empty studies folder
filled through the API) serves the training-precondition cases. Tests within a section run in file order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import requests
import torch

from conftest import FAST_TRAIN, start_server, stop_server

MAX_VOXELS = 2_000_000  # the real sample CT (180 x 148 x 69 = 1.84 M voxels) fits, 2.3 M does not
MAX_UPLOAD_MB = 8  # the sample files are about 1 MB
SERVER_ENV = {"MONAI_LABEL_TRACKING_ENABLED": "false"}
#: supervised-only iterations are the cheapest on 2 CPU cores
CHEAP = {"val_fraction": 0.0, "use_pic": False, "use_consistency": False, "use_fkd": False}
UNLABELED = "synthetic_phantom_003"  # an image of the sample studies without a final label
LABELED = "synthetic_phantom_001"


# ----------------------------------------------------------------------------- helpers
def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict:
    """sha256 of every file below ``folder`` (the FileLock's empty ``.lock`` aside)."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".lock"}


def nifti_bytes(arr: np.ndarray, affine: np.ndarray, gz: bool = True) -> bytes:
    raw = nib.Nifti1Image(arr, affine).to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def forged_huge_nifti(shape=(4000, 4000, 4000)) -> bytes:
    """A NIfTI whose header claims ``shape`` (64 G voxels) but that carries 1 KB of data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    return gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024)


def bad_files(good: bytes) -> dict:
    rng = np.random.default_rng(0)
    return {
        "truncated_gzip": good[: len(good) // 3],
        "random_bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty": b"",
    }


def grid(studies: Path, image_id: str):
    img = nib.load(str(studies / f"{image_id}.nii.gz"))
    return img.shape, img.affine


def box_label(shape, k: int = 0, organ: int = 6) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    x, y = 10 + (k % 30), 10 + (k // 30) % 30
    lab[x : x + 30, y : y + 30, 8:30] = organ
    lab[x + 32 : x + 36, y : y + 4, 10:14] = 12
    return lab


def detail(r: requests.Response) -> str:
    try:
        d = r.json()
    except ValueError:
        return r.text
    return str(d.get("detail", d)) if isinstance(d, dict) else str(d)


def put_label(srv, image, data: bytes, filename="label.nii.gz", tag=None, params=None, path="/datastore/label"):
    q = {"image": image}
    if tag is not None:
        q["tag"] = tag
    form = {"params": params} if params is not None else {}
    return requests.put(srv.url + path, params=q, files={"label": (filename, data)}, data=form, timeout=300)


def add_image(srv, image_id, data: bytes, filename="image.nii.gz", path="/datastore/image"):
    q = {"image": image_id} if image_id is not None else {}
    return requests.put(srv.url + path, params=q, files={"file": (filename, data)}, timeout=300)


def infer(srv, image="", data=None, filename="upload.nii.gz", params=None, output="json", model="dinomix"):
    files = {"file": (filename, data)} if data is not None else None
    form = {"params": params} if params is not None else None
    return requests.post(f"{srv.url}/infer/{model}", params={"image": image, "output": output}, files=files,
                         data=form, timeout=600)


def train(srv, options: dict, run_sync=True, model="dinomix", timeout=900):
    return requests.post(f"{srv.url}/train/{model}", params={"run_sync": str(run_sync).lower()}, json=options,
                         timeout=timeout)


def info(srv) -> dict:
    r = requests.get(srv.url + "/info/", timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def train_stats(srv) -> dict:
    return info(srv)["train_stats"]["dinomix"]


def assert_refused(srv, r, status, *words, before=None):
    """A 4xx with a message naming the problem; the server still answers; nothing stored changed."""
    msg = detail(r)
    print(f"REFUSED {r.request.method} {r.request.path_url[:90]} -> {r.status_code}: {msg[:200]}")
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {msg}"
    for w in words:
        assert w.lower() in msg.lower(), f"message {msg!r} lacks {w!r}"
    info(srv)
    if before is not None:
        after = snapshot(srv.studies)
        assert after == before, f"stored files changed: {set(after.items()) ^ set(before.items())}"
    tmp = getattr(srv, "tmpdir", None)
    if tmp is not None:  # the refused upload's temporary copy is gone too (MONAI Label removed it on success only)
        left = sorted(p.name for p in tmp.iterdir() if p.name.endswith((".nii", ".nii.gz", ".nrrd", ".seg.nrrd")))
        assert left == [], f"the server left uploads {left} in its temporary folder"
    return msg


def publish_untrained_model(model_dir: Path) -> Path:
    """Publish a randomly initialised student through the real ModelRegistry (what inference loads)."""
    from dinomix_core.config import get_preset
    from dinomix_core.networks import build_student
    from dinomix_core.registry import ModelRegistry

    cfg = get_preset("cpu")
    torch.manual_seed(0)
    net = build_student(cfg, teacher_channels=None)
    src = model_dir.parent / "untrained.pt"
    torch.save({"model": net.state_dict(), "config": cfg.to_dict(), "iteration": 0, "metric": None}, src)
    ModelRegistry(str(model_dir), name="dinomix").publish(str(src), [])
    return model_dir / "dinomix.pt"


class Holder:
    srv = None


# ----------------------------------------------------------------------------- the faults server
@pytest.fixture(scope="module")
def faults(tmp_path_factory, sample_studies_src):
    import shutil

    root = tmp_path_factory.mktemp("faults")
    studies = root / "studies"
    shutil.copytree(sample_studies_src, studies)
    tmpdir = root / "server_tmp"  # the server's own TMPDIR: uploads land here while a request runs
    tmpdir.mkdir()
    h = Holder()
    h.root = root
    h.srv = start_server(studies, root / "model", root / "server.log",
                         conf={"max_voxels": MAX_VOXELS, "max_upload_mb": MAX_UPLOAD_MB},
                         env={**SERVER_ENV, "TMPDIR": str(tmpdir)})
    h.srv.tmpdir = tmpdir
    yield h
    stop_server(h.srv)


@pytest.fixture(scope="module")
def srv(faults):
    return faults.srv


def test_infer_before_any_model_is_409_with_a_message(srv):
    r = infer(srv, image=UNLABELED)
    assert_refused(srv, r, 409, "no trained DINO-Mix model")


@pytest.fixture(scope="module")
def model(srv):
    return publish_untrained_model(srv.model_dir)


@pytest.mark.parametrize("kind", ["truncated_gzip", "random_bytes", "empty"])
def test_unreadable_label_is_refused(srv, kind):
    shape, affine = grid(srv.studies, UNLABELED)
    bad = bad_files(nifti_bytes(box_label(shape), affine))[kind]
    before = snapshot(srv.studies)
    for image in (UNLABELED, LABELED):  # a new label, and a replacement of an existing one
        r = put_label(srv, image, bad)
        assert_refused(srv, r, 422, "not a readable NIfTI/NRRD", "nothing stored", before=before)


@pytest.mark.parametrize("kind", ["truncated_gzip", "random_bytes", "empty"])
def test_unreadable_image_is_refused(srv, kind):
    good = (srv.studies / f"{UNLABELED}.nii.gz").read_bytes()
    bad = bad_files(good)[kind]
    before = snapshot(srv.studies)
    r = add_image(srv, f"new_{kind}", bad)
    assert_refused(srv, r, 422, "not a readable NIfTI/NRRD", before=before)
    r = add_image(srv, f"new_{kind}", bad, path="/datastore/")  # MONAI Label's older route
    assert_refused(srv, r, 422, "not a readable NIfTI/NRRD", before=before)
    assert f"new_{kind}" not in requests.get(srv.url + "/datastore/?output=all", timeout=60).json()["objects"]


@pytest.mark.parametrize("kind", ["truncated_gzip", "random_bytes", "empty"])
def test_unreadable_upload_to_infer_is_refused(srv, model, kind):
    good = (srv.studies / f"{UNLABELED}.nii.gz").read_bytes()
    before, msha = snapshot(srv.studies), sha256(model)
    r = infer(srv, data=bad_files(good)[kind])
    assert_refused(srv, r, 422, "cannot read image", before=before)
    assert sha256(model) == msha


def test_wrong_dimensionality_images_are_refused(srv, model):
    before = snapshot(srv.studies)
    two_d = nifti_bytes(np.zeros((64, 64), np.int16), np.eye(4))
    four_d = nifti_bytes(np.zeros((20, 20, 10, 3), np.int16), np.eye(4))
    for name, data in (("2d", two_d), ("4d", four_d)):
        r = add_image(srv, f"new_{name}", data)
        assert_refused(srv, r, 422, "image must be a 3D volume", before=before)
        r = infer(srv, data=data)
        assert_refused(srv, r, 422, "3D volume", before=before)
    r = add_image(srv, "new_png", b"\x89PNG....", filename="slice.png")
    assert_refused(srv, r, 422, "NIfTI", before=before)


def _label_cases(shape, affine):
    flipped = affine.copy()
    flipped[0, 0] = -flipped[0, 0]
    good = box_label(shape)
    return {
        "2d": (nifti_bytes(good[:, :, 20], affine), "label must be a 3D volume"),
        "4d": (nifti_bytes(np.stack([good, good], -1), affine), "label must be a 3D volume"),
        "shape": (nifti_bytes(good[:, :, :-1], affine), "differs from the image shape"),
        "spacing": (nifti_bytes(good, _with_spacing(affine, (2.5, 3.0, 4.0))), "spacing"),
        "orientation": (nifti_bytes(good, flipped), "orientation"),
        "float": (nifti_bytes(np.where(good > 0, good + 0.5, 0).astype(np.float32), affine), "non-integer"),
        "id_14": (nifti_bytes(np.where(good == 6, 14, good).astype(np.uint8), affine), "outside 0..13: [14]"),
        "id_255": (nifti_bytes(np.where(good == 6, 255, good).astype(np.uint8), affine), "outside 0..13"),
        "id_negative": (nifti_bytes(np.where(good == 6, -1, good).astype(np.int16), affine), "outside 0..13: [-1]"),
        "all_background": (nifti_bytes(np.zeros(shape, np.uint8), affine), "no organ voxel"),
        "not_a_volume_type": (b"hello", "NIfTI"),
    }


def _with_spacing(affine, spacing):
    a = affine.copy()
    a[:3, :3] = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0) * np.asarray(spacing)
    return a


@pytest.mark.parametrize(
    "case", ["2d", "4d", "shape", "spacing", "orientation", "float", "id_14", "id_255", "id_negative",
             "all_background", "not_a_volume_type"]
)
def test_label_that_does_not_fit_its_image_is_refused(srv, case):
    shape, affine = grid(srv.studies, UNLABELED)
    cases = _label_cases(shape, affine)
    data, word = cases[case]
    filename = "label.txt" if case == "not_a_volume_type" else "label.nii.gz"
    before = snapshot(srv.studies)
    for image in (UNLABELED, LABELED) if case != "not_a_volume_type" else (UNLABELED,):
        if image == LABELED:
            s2, a2 = grid(srv.studies, LABELED)
            if (s2, a2.tolist()) != (shape, affine.tolist()):
                continue
        r = put_label(srv, image, data, filename=filename)
        assert_refused(srv, r, 422, word, before=before)


@pytest.mark.parametrize(
    "image_id",
    ["../../../../etc/passwd", "/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
     "labels/final/synthetic_phantom_001", "no_such_image", ""],
)
def test_path_escaping_or_unknown_image_ids(srv, model, image_id):
    shape, affine = grid(srv.studies, UNLABELED)
    good = nifti_bytes(box_label(shape), affine)
    before, msha = snapshot(srv.studies), sha256(model)
    # save a label for it
    r = put_label(srv, image_id, good)
    assert_refused(srv, r, 404, "unknown image id", before=before)
    # download it
    r = requests.get(srv.url + "/datastore/image", params={"image": image_id}, timeout=60)
    assert_refused(srv, r, 404, "not found", before=before)
    r = requests.get(srv.url + "/datastore/label", params={"label": image_id, "tag": "final"}, timeout=60)
    assert_refused(srv, r, 404, "not found", before=before)
    # infer on it, as the image query parameter and smuggled in through params
    if image_id:
        r = infer(srv, image=image_id)
        assert_refused(srv, r, 404, "unknown image", before=before)
    r = infer(srv, image=UNLABELED, params=json.dumps({"image": image_id or "/etc/passwd"}))
    assert_refused(srv, r, 404, "unknown image", before=before)
    assert sha256(model) == msha


def test_raw_url_encoded_escapes(srv, model):
    before = snapshot(srv.studies)
    for raw in ("..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%252F..%252Fetc"):
        r = requests.get(f"{srv.url}/datastore/image?image={raw}", timeout=60)
        assert_refused(srv, r, 404, "not found", before=before)
        r = requests.post(f"{srv.url}/infer/dinomix?image={raw}&output=json", timeout=60)
        assert_refused(srv, r, 404, "unknown image", before=before)
    for tag in ("../../../tmp/evil", "..", "history", "/abs"):
        r = requests.get(srv.url + "/datastore/label", params={"label": LABELED, "tag": tag}, timeout=60)
        assert_refused(srv, r, 404, "not found", before=before)
        shape, affine = grid(srv.studies, UNLABELED)
        r = put_label(srv, UNLABELED, nifti_bytes(box_label(shape), affine), tag=tag)
        assert_refused(srv, r, 400, "bad label tag", before=before)
    for bad_id in ("../evil", "..", ".hidden", "a/b", "/tmp/x"):
        good = (srv.studies / f"{UNLABELED}.nii.gz").read_bytes()
        r = add_image(srv, bad_id, good)
        assert_refused(srv, r, 400, "bad image id", before=before)
    assert not Path("/tmp/evil").exists() and not Path("/tmp/evil.nii.gz").exists()


def test_existing_image_id_is_not_overwritten(srv):
    before = snapshot(srv.studies)
    other = (srv.studies / "synthetic_phantom_004.nii.gz").read_bytes()
    r = add_image(srv, LABELED, other)
    assert_refused(srv, r, 409, "already exists", before=before)


def test_malformed_params_and_unknown_model(srv, model):
    shape, affine = grid(srv.studies, UNLABELED)
    before = snapshot(srv.studies)
    r = put_label(srv, UNLABELED, nifti_bytes(box_label(shape), affine), params="{not json")
    assert_refused(srv, r, 400, "not valid JSON", before=before)
    r = infer(srv, image=UNLABELED, params="[1, 2")
    assert_refused(srv, r, 400, "not valid JSON", before=before)
    r = infer(srv, image=UNLABELED, model="no_such_model")
    assert_refused(srv, r, 404, "no_such_model", before=before)
    r = train(srv, dict(FAST_TRAIN), model="no_such_model")
    assert_refused(srv, r, 404, "no_such_model", before=before)
    r = train(srv, {"max_iterations": -3})
    assert_refused(srv, r, 400, "max_iterations", before=before)
    r = train(srv, {"max_iterations": 2, "device": "tpu"})
    assert_refused(srv, r, 400, "device", before=before)
    tasks_before = requests.get(srv.url + "/train/", params={"all": "true"}, timeout=60).json()
    r = train(srv, {"max_iterations": "many"}, run_sync=False)  # a background request: refused, never queued
    assert_refused(srv, r, 400, "max_iterations", before=before)
    assert requests.get(srv.url + "/train/", params={"all": "true"}, timeout=60).json() == tasks_before
    r = infer(srv, image="")
    assert_refused(srv, r, 400, "no image given", before=before)


def test_model_endpoint_cannot_replace_the_published_model(srv, model):
    """MONAI Label's PUT /model/{name} would copy any upload (a pickle) over the model file: not for this app."""
    before, msha = snapshot(srv.studies), sha256(model)
    r = requests.put(srv.url + "/model/dinomix", files={"file": ("evil.pt", b"not a model")}, timeout=60)
    assert r.status_code >= 400, r.text
    print(f"REFUSED PUT /model/dinomix -> {r.status_code}: {detail(r)}")
    r = requests.delete(srv.url + "/model/dinomix", timeout=60)
    assert r.status_code == 404, r.text
    assert sha256(model) == msha and snapshot(srv.studies) == before
    info(srv)


def test_server_listens_on_loopback_only(srv):
    listening = [c.laddr for c in psutil.Process(srv.proc.pid).net_connections(kind="inet") if c.status == "LISTEN"]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "HOST ?= 127.0.0.1" in makefile and "--host $(HOST)" in makefile  # what `make serve` binds to


def _server_rss(srv) -> int:
    return psutil.Process(srv.proc.pid).memory_info().rss


def test_huge_volumes_are_refused_without_allocating(srv, model):
    shape, affine = grid(srv.studies, UNLABELED)
    huge = forged_huge_nifti()
    before, rss0 = snapshot(srv.studies), _server_rss(srv)
    r = add_image(srv, "huge_header", huge)
    assert_refused(srv, r, 413, "64000000000 voxels", "max_voxels", before=before)
    r = put_label(srv, UNLABELED, huge)
    assert_refused(srv, r, 413, "64000000000 voxels", before=before)
    r = infer(srv, data=huge)
    assert_refused(srv, r, 422, "64000000000 voxels", "above the limit", before=before)
    # a real (readable) volume just above the server's max_voxels
    big = nifti_bytes(np.zeros((160, 160, 90), np.int16), affine)
    r = add_image(srv, "too_big", big)
    assert_refused(srv, r, 413, "2304000 voxels", before=before)
    r = infer(srv, data=big)
    assert_refused(srv, r, 422, "2304000 voxels", before=before)
    grew = (_server_rss(srv) - rss0) / 2**20
    assert grew < 300, f"server memory grew by {grew:.0f} MiB on refused volumes"
    assert srv.proc.poll() is None


def test_uploads_over_the_size_limit_are_refused_before_they_are_stored(srv, model):
    """``max_upload_mb`` (lib/compat/limits.py): by Content-Length before reading, or while a chunked body streams in."""
    before = snapshot(srv.studies)
    big = os.urandom(MAX_UPLOAD_MB * 2**20 + 1024)
    for r in (add_image(srv, "too_many_bytes", big), put_label(srv, UNLABELED, big), infer(srv, data=big)):
        assert_refused(srv, r, 413, "exceeds the upload limit", "max_upload_mb", before=before)

    def chunks():  # no Content-Length: Transfer-Encoding chunked, a file part streamed 1 MB at a time, past the limit
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.nii.gz"\r\n\r\n'
        for _ in range(MAX_UPLOAD_MB + 2):
            yield b"\0" * 2**20

    r = requests.put(srv.url + "/datastore/image", params={"image": "chunked"}, data=chunks(), timeout=300,
                     headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert_refused(srv, r, 413, "exceeds the upload limit", before=before)


def test_good_input_is_accepted(srv, model):
    """The positive controls of the refusals above: the same endpoints accept valid files."""
    shape, affine = grid(srv.studies, UNLABELED)
    good = nifti_bytes(box_label(shape), affine)
    r = put_label(srv, UNLABELED, good)
    assert r.status_code == 200, detail(r)
    assert sha256(srv.studies / "labels" / "final" / f"{UNLABELED}.nii.gz") == hashlib.sha256(good).hexdigest()
    # replacing a label keeps the earlier one in labels/history/final
    old = sha256(srv.studies / "labels" / "final" / f"{LABELED}.nii.gz")
    s1, a1 = grid(srv.studies, LABELED)
    r = put_label(srv, LABELED, nifti_bytes(box_label(s1, 3), a1))
    assert r.status_code == 200, detail(r)
    hist = list((srv.studies / "labels" / "history" / "final").glob(f"{LABELED}.*.nii.gz"))
    assert old in {sha256(p) for p in hist}
    # a new image, then inference on it and on an upload (label on the input's grid)
    img = (srv.studies / "synthetic_phantom_005.nii.gz").read_bytes()
    r = add_image(srv, "added_case", img)
    assert r.status_code == 200 and r.json()["image"] == "added_case", detail(r)
    assert sha256(srv.studies / "added_case.nii.gz") == hashlib.sha256(img).hexdigest()
    r = infer(srv, data=img, output="image")
    assert r.status_code == 200, detail(r)
    out = nib.Nifti1Image.from_bytes(gzip.decompress(r.content) if r.content[:2] == b"\x1f\x8b" else r.content)
    assert out.shape == grid(srv.studies, "synthetic_phantom_005")[0]
    info(srv)


# ----------------------------------------------------------------------------- training faults on the faults server
def _wait(cond, timeout, what, srv=None, step=1.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        if srv is not None and srv.proc.poll() is not None:
            raise AssertionError(f"server died while waiting for {what}:\n{srv.log_tail()}")
        time.sleep(step)
    raise AssertionError(f"timed out ({timeout} s) waiting for {what}" + (f"\n{srv.log_tail()}" if srv else ""))


@pytest.fixture(scope="module")
def background_training(srv, model):
    """A long background Retrain (subprocess) with a published model already in place."""
    model_sha = sha256(model)
    hist = (srv.model_dir / "history.json").read_text()
    r = train(srv, {"max_iterations": 100, **CHEAP}, run_sync=False)
    assert r.status_code == 200, detail(r)

    def running():
        s = train_stats(srv)
        return s if s.get("status") == "RUNNING" and s.get("pid") not in (None, srv.proc.pid) else None

    stats = _wait(running, 600, "the training subprocess to start", srv)
    return {"pid": int(stats["pid"]), "model_sha": model_sha, "history": hist}


def test_second_training_request_while_one_runs_is_429(srv, background_training):
    before = snapshot(srv.studies)
    r = train(srv, {"max_iterations": 2, **CHEAP}, run_sync=False)
    assert_refused(srv, r, 429, "already running", before=before)
    r = train(srv, {"max_iterations": 2, **CHEAP}, run_sync=True)
    assert_refused(srv, r, 429, "already running", before=before)
    assert requests.get(srv.url + "/train/", params={"check_if_running": "true"}, timeout=60).status_code == 200


def test_inference_while_training_answers_with_the_current_model(srv, model, background_training):
    r = infer(srv, image="synthetic_phantom_004")
    assert r.status_code == 200, detail(r)
    assert r.json()["model"]["iteration"] == 0  # the published (untrained, iteration 0) model
    assert sha256(model) == background_training["model_sha"]
    assert train_stats(srv)["status"] == "RUNNING"


def test_training_subprocess_killed_keeps_model_and_next_training_resumes(srv, model, background_training):
    pid = background_training["pid"]
    children = {p.pid for p in psutil.Process(srv.proc.pid).children(recursive=True)}
    assert pid in children, "train_stats pid is not a child of the server"
    ckpt_path = srv.model_dir / "train" / "checkpoint.pt"

    def checkpointed():
        if not ckpt_path.exists():
            return None
        return torch.load(ckpt_path, map_location="cpu", weights_only=False)["iteration"] > 0

    _wait(checkpointed, 900, "the first checkpoint (iteration 10)", srv, step=2.0)
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: train_stats(srv).get("status") == "INTERRUPTED", 120, "train_stats INTERRUPTED", srv)
    _wait(lambda: requests.get(srv.url + "/train/", params={"check_if_running": "true"}, timeout=60).status_code == 404,
          120, "MONAI Label to see the training ended", srv)
    # the published model is still the last good one
    assert sha256(model) == background_training["model_sha"]
    assert (srv.model_dir / "history.json").read_text() == background_training["history"]
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    done = int(ckpt["iteration"])
    assert done >= 10 and not ckpt["finished"]
    r = infer(srv, image="synthetic_phantom_004")
    assert r.status_code == 200 and r.json()["model"]["iteration"] == 0, detail(r)

    # the next training resumes from checkpoint.pt: one more iteration, then publishes
    r = train(srv, {"max_iterations": done + 1, **CHEAP})
    assert r.status_code == 200, detail(r)
    stats = r.json()
    assert stats["status"] == "DONE", stats
    assert stats["start_iteration"] == done > 0, stats
    assert stats["epoch"] == done + 1
    assert stats["published_version"] == 2
    assert f"at iteration {done}" in srv.log_tail(200_000)  # "resumed from .../checkpoint.pt at iteration N"
    assert sha256(model) != background_training["model_sha"]
    r = infer(srv, image="synthetic_phantom_004")
    assert r.status_code == 200 and r.json()["model"]["iteration"] == done + 1, detail(r)


# ----------------------------------------------------------------------------- server killed during label saves
def test_server_killed_while_saving_labels_loses_no_acknowledged_label(faults):
    srv = faults.srv
    studies = srv.studies
    images = [f"synthetic_phantom_00{i}" for i in range(1, 8)]
    payloads = []
    for k in range(200):
        image = images[k % len(images)]
        shape, affine = grid(studies, image)
        payloads.append((image, nifti_bytes(box_label(shape, k, organ=1 + k % 13), affine)))
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def storm(part):
        for image, data in part:
            if stop.is_set():
                return
            try:
                r = put_label(srv, image, data)
            except requests.RequestException:
                return
            if r.status_code == 200:
                with lock:
                    acked.append((image, hashlib.sha256(data).hexdigest()))

    threads = [threading.Thread(target=storm, args=(payloads[i::2],), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    _wait(lambda: len(acked) >= 8, 600, "8 acknowledged label uploads", srv, step=0.05)
    stop_server(srv, signal.SIGKILL)  # mid-storm: requests are in flight
    stop.set()
    for t in threads:
        t.join(60)
    assert srv.proc.returncode == -signal.SIGKILL
    with lock:
        acked = list(acked)
    print(f"label storm: {len(acked)} uploads acknowledged before SIGKILL")

    def check_on_disk():
        ds = json.loads((studies / "datastore_v2.json").read_text())  # parses: never torn
        for image_id, obj in ds["objects"].items():
            assert (studies / obj["image"]["info"]["name"]).is_file(), image_id
            for tag, lab in obj["labels"].items():
                assert (studies / "labels" / tag / f"{image_id}{lab['ext']}").is_file(), (image_id, tag)
        for p in (studies / "labels").rglob("*.nii*"):
            if p.name.startswith("."):
                continue  # a temporary file of an unfinished write: never listed, removed at the next start
            arr = np.asanyarray(nib.load(str(p)).dataobj)  # every label file is a whole, readable NIfTI
            assert arr.ndim == 3, p
        return ds

    check_on_disk()
    faults.srv = srv = start_server(studies, srv.model_dir, faults.root / "server2.log",
                                    conf={"max_voxels": MAX_VOXELS}, env=SERVER_ENV)
    ds = check_on_disk()
    listed = requests.get(srv.url + "/datastore/?output=all", timeout=60).json()
    assert set(listed["objects"]) == set(ds["objects"])
    for image, digest in acked:
        final = studies / "labels" / "final" / f"{image}.nii.gz"
        hist = (studies / "labels" / "history" / "final").glob(f"{image}.*.nii.gz")
        kept = {sha256(final)} | {sha256(p) for p in hist}
        assert digest in kept, f"acknowledged label of {image} lost"
        assert "final" in listed["objects"][image]["labels"]
    # the restarted server takes new labels
    shape, affine = grid(studies, UNLABELED)
    r = put_label(srv, UNLABELED, nifti_bytes(box_label(shape, 7), affine))
    assert r.status_code == 200, detail(r)
    assert not list(studies.rglob(".*.tmp*")), "temporary files of the killed server were not cleaned up"


def test_start_up_removes_the_temporary_files_of_dead_writers_only(tmp_path):
    """The datastore's clean-up knows the names dinomix_core.artifacts.atomic_write gives its temporary files."""
    import sys

    from dinomix_core.artifacts import temp_path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "apps" / "dinomix"))
    from lib.datastore import remove_stale_temp_files

    final = tmp_path / "labels" / "final"
    final.mkdir(parents=True)
    mine = temp_path(final / "case.nii.gz")  # this process's: a write in flight cannot exist at start-up
    dead = tmp_path / f".datastore_v2.json.tmp{2**22 + 12345}.140000000000"
    alive = tmp_path / f".img.nii.gz.tmp{os.getppid()}.1"  # a running process's write in flight
    for p in (mine, dead, alive, tmp_path / "case.nii.gz"):
        p.write_bytes(b"x")
    assert mine.name.startswith(".case.nii.gz.tmp") and remove_stale_temp_files(str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted([alive.name, "case.nii.gz"])


# ----------------------------------------------------------------------------- training preconditions (empty server)
@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty")
    (root / "studies").mkdir()
    srv = start_server(root / "studies", root / "model", root / "server.log", env=SERVER_ENV)
    yield srv
    stop_server(srv)


def test_training_on_an_empty_datastore_is_422(empty):
    before = snapshot(empty.studies)
    r = train(empty, dict(FAST_TRAIN))
    assert_refused(empty, r, 422, "training not possible", "no usable labeled volume", before=before)
    assert train_stats(empty)["status"] == "FAILED"
    assert not (empty.model_dir / "dinomix.pt").exists()


def test_training_with_zero_labeled_volumes_is_422(empty, sample_studies_src):
    r = add_image(empty, UNLABELED, (sample_studies_src / f"{UNLABELED}.nii.gz").read_bytes())
    assert r.status_code == 200, detail(r)
    before = snapshot(empty.studies)
    r = train(empty, dict(FAST_TRAIN))
    assert_refused(empty, r, 422, "no usable labeled volume", before=before)
    assert not (empty.model_dir / "dinomix.pt").exists()


def test_one_labeled_no_unlabeled_trains_supervised_and_skips_a_corrupt_label(empty, sample_studies_src):
    src = sample_studies_src
    # turn the unlabeled image into a labeled one, and add a second labeled case whose label then rots on disk
    shape, affine = grid(empty.studies, UNLABELED)
    assert put_label(empty, UNLABELED, nifti_bytes(box_label(shape), affine)).status_code == 200
    for case in ("synthetic_phantom_002",):
        assert add_image(empty, case, (src / f"{case}.nii.gz").read_bytes()).status_code == 200
        r = put_label(empty, case, (src / "labels" / "final" / f"{case}.nii.gz").read_bytes())
        assert r.status_code == 200, detail(r)
    rotten = empty.studies / "labels" / "final" / "synthetic_phantom_002.nii.gz"
    rotten.write_bytes(rotten.read_bytes()[:200])
    before = snapshot(empty.studies)
    r = train(empty, {**FAST_TRAIN, "max_iterations": 2})
    assert r.status_code == 200, detail(r)
    stats = r.json()
    assert stats["status"] == "DONE" and stats["published_version"] == 1, stats
    assert stats["unlabeled"] == 0 and stats["labeled"] == 2
    assert "supervised only" in stats["note"]
    assert len(stats["skipped"]) == 1 and "synthetic_phantom_002" in stats["skipped"][0]
    assert "cannot read" in stats["skipped"][0]
    log = empty.log_tail(200_000)
    assert "training supervised only" in log and "skipping" in log
    assert train_stats(empty)["status"] == "DONE"
    assert snapshot(empty.studies) == before  # training never writes into the studies folder
    assert (empty.model_dir / "dinomix.pt").is_file()
