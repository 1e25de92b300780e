"""DinoMixLib (the 3D Slicer module's Slicer-free helpers): client, label maps, NIfTI I/O, training helpers.

* Label maps and NIfTI: exact small arrays, the overlap rule, and the stdlib NIfTI writer/reader checked against
  nibabel (shape, affine, dtype, values) both ways.
* Client without a server: connection refused and timeout messages (real sockets), multipart bodies parsed by
  the parser FastAPI itself uses, error-detail formatting.
* Client against the real DINO-Mix MONAI Label server (``live_server`` fixture from tests/conftest.py):
  info/organs, next sample, image download, label submit round trip, refused labels, training (tiny run),
  inference on the image's grid, stop.
"""

import gzip
import io
import json
import os
import socket
import sys
import time

import nibabel as nib
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "slicer_module", "DinoMix"))

from DinoMixLib.client import DinoMixClient, DinoMixClientError, _detail, encode_multipart  # noqa: E402
from DinoMixLib.labelmap import (  # noqa: E402
    DEFAULT_COLOR,
    ORGAN_COLORS,
    label_ids,
    labelmap_to_segments,
    organ_color,
    read_nifti,
    segments_to_labelmap,
    write_nifti,
    write_nifti_label,
)
from DinoMixLib.training import TrainingMonitor, build_train_params, summarize_train_stats  # noqa: E402

from dinomix_core.config import ORGANS  # noqa: E402

# --------------------------------------------------------------------------------------------------------------
# label maps
# --------------------------------------------------------------------------------------------------------------


def test_segments_to_labelmap_exact_values():
    a = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    b = np.array([[0, 0, 0], [0, 1, 1]], dtype=bool)
    out = segments_to_labelmap([("spleen", a), ("Left_Adrenal_Gland", b)], list(ORGANS))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[1, 1, 0], [0, 13, 13]])


def test_segments_to_labelmap_later_segment_wins_on_overlap():
    a = np.array([1, 1, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 1], dtype=bool)
    names = {"liver": 6, "stomach": 7}
    np.testing.assert_array_equal(segments_to_labelmap([("liver", a), ("stomach", b)], names), [6, 7, 7, 7])
    np.testing.assert_array_equal(segments_to_labelmap([("stomach", b), ("liver", a)], names), [6, 6, 6, 7])


def test_segments_to_labelmap_errors_and_empty():
    with pytest.raises(ValueError, match="'kidney' is not an organ"):
        segments_to_labelmap([("kidney", np.ones(3, bool))], list(ORGANS))
    with pytest.raises(ValueError, match="shape"):
        segments_to_labelmap([("liver", np.ones(3, bool)), ("spleen", np.ones(4, bool))], list(ORGANS))
    with pytest.raises(ValueError, match="no shape"):
        segments_to_labelmap([], list(ORGANS))
    np.testing.assert_array_equal(segments_to_labelmap([], list(ORGANS), shape=(2, 2)), np.zeros((2, 2), np.uint8))


def test_label_ids_from_list_and_monailabel_dict():
    assert label_ids(["background", "a"]) == {"background": 1, "a": 2}  # a plain list counts from 1
    assert label_ids({"background": 0, "b": 2, "a": 1}) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="duplicate"):
        label_ids({"a": 1, "A": 2})
    with pytest.raises(ValueError, match="1..255"):
        label_ids({"a": 300})


def test_labelmap_to_segments_exact():
    lab = np.array([[0, 6, 6], [13, 0, 0]], dtype=np.uint8)
    segs = labelmap_to_segments(lab, list(ORGANS))
    assert [(n, i, c) for n, i, c, _ in segs] == [
        ("liver", 6, (221, 130, 101)),
        ("left adrenal gland", 13, ORGAN_COLORS["left adrenal gland"]),
    ]
    np.testing.assert_array_equal(segs[0][3], [[False, True, True], [False, False, False]])
    np.testing.assert_array_equal(segs[1][3], [[False, False, False], [True, False, False]])
    all_segs = labelmap_to_segments(lab, list(ORGANS), include_empty=True)
    assert [s[1] for s in all_segs] == list(range(1, 14))
    assert not all_segs[0][3].any()
    with pytest.raises(ValueError, match=r"\[14\]"):
        labelmap_to_segments(np.array([0, 14]), list(ORGANS))
    with pytest.raises(ValueError, match="integer"):
        labelmap_to_segments(np.array([0.5]), list(ORGANS))


def test_segments_labelmap_round_trip():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 14, size=(5, 6, 7)).astype(np.uint8)
    segs = labelmap_to_segments(lab, list(ORGANS))
    back = segments_to_labelmap([(n, m) for n, _, _, m in segs], list(ORGANS))
    np.testing.assert_array_equal(back, lab)


def test_organ_colours_cover_the_13_organs_and_differ():
    assert set(ORGAN_COLORS) == set(ORGANS)
    assert len(set(ORGAN_COLORS.values())) == 13
    assert organ_color("Right_Kidney") == (185, 102, 83)
    # another label set's names: a distinct palette colour per label id, not one grey for all
    others = [organ_color(n, i) for i, n in enumerate(("liver", "tumour", "bladder", "duodenum", "cyst"), start=1)]
    assert others[0] == ORGAN_COLORS["liver"] and len(set(others)) == 5
    assert organ_color("tumour", 2) == (60, 180, 75)
    assert organ_color("tumour") == organ_color("Tumour") != DEFAULT_COLOR  # no id: by the name's checksum


# --------------------------------------------------------------------------------------------------------------
# NIfTI-1 writer/reader vs nibabel
# --------------------------------------------------------------------------------------------------------------

OBLIQUE = np.array(
    [
        [-0.7, 0.0, 0.0, 120.5],
        [0.0, 0.0, 2.5, -80.25],
        [0.0, -0.8, 0.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _rotated_affine():
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.703125, 0.703125, 2.5])
    aff[:3, 3] = [-180.0, 12.5, -300.0]
    return aff


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("affine", [np.diag([0.7, 0.7, 2.5, 1.0]), OBLIQUE, _rotated_affine()])
def test_write_nifti_label_read_by_nibabel(tmp_path, suffix, affine):
    lab = np.zeros((5, 4, 3), dtype=np.int64)
    lab[1, 2, 0] = 13
    lab[4, 3, 2] = 6
    lab[0, 0, 1] = 1
    path = str(tmp_path / f"lab{suffix}")
    write_nifti_label(path, lab, affine)
    img = nib.load(path)
    assert img.shape == (5, 4, 3)
    assert img.get_data_dtype() == np.uint8
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, lab)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)  # rigid + zoom affines fit the qform exactly
    np.testing.assert_allclose(img.header.get_zooms(), np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-6)
    if suffix == ".nii.gz":
        with open(path, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.int32, np.uint16])
def test_read_nifti_reads_nibabel_files(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = (
        (rng.standard_normal((6, 5, 4)) * 100).astype(dtype)
        if np.dtype(dtype).kind == "f"
        else rng.integers(0, 200, size=(6, 5, 4)).astype(dtype)
    )
    aff = _rotated_affine()
    path = str(tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(data, aff), path)
    got, got_aff = read_nifti(path)
    assert got.dtype == np.dtype(dtype) and got.shape == data.shape
    np.testing.assert_array_equal(got, data)
    np.testing.assert_allclose(got_aff, nib.load(path).affine, atol=1e-6)


def test_read_nifti_applies_scaling_and_qform_only(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, _rotated_affine())
    img.header.set_slope_inter(2.0, -1024.0)
    img.set_sform(None, code=0)
    img.set_qform(_rotated_affine(), code=1)
    path = str(tmp_path / "scaled.nii")
    nib.save(img, path)
    got, aff = read_nifti(path)
    np.testing.assert_allclose(got, data * 2.0 - 1024.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(aff, nib.load(path).affine, atol=1e-5)


def test_write_nifti_round_trip_float_and_big_endian_read(tmp_path):
    data = np.linspace(-1000, 3000, 60, dtype=np.float32).reshape(3, 4, 5)
    path = str(tmp_path / "f.nii.gz")
    write_nifti(path, data, OBLIQUE)
    got, aff = read_nifti(path)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_allclose(aff, OBLIQUE, atol=1e-5)
    np.testing.assert_array_equal(nib.load(path).get_fdata(dtype=np.float32), data)
    # a big-endian file written by nibabel
    be = nib.Nifti1Image(data.astype(">i2"), OBLIQUE)
    be_path = str(tmp_path / "be.nii")
    nib.save(be, be_path)
    got_be, _ = read_nifti(be_path)
    np.testing.assert_array_equal(got_be, data.astype(np.int16))


def test_nifti_writer_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="0..255"):
        write_nifti_label(str(tmp_path / "x.nii"), np.array([[[256]]]))
    with pytest.raises(ValueError, match="integer"):
        write_nifti_label(str(tmp_path / "x.nii"), np.array([[[0.5]]]))
    with pytest.raises(ValueError, match="4x4"):
        write_nifti(str(tmp_path / "x.nii"), np.zeros((2, 2, 2)), np.eye(3))
    bad = tmp_path / "bad.nii.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00" * 400)
    with pytest.raises(ValueError, match="not a NIfTI-1"):
        read_nifti(str(bad))


# --------------------------------------------------------------------------------------------------------------
# training helpers
# --------------------------------------------------------------------------------------------------------------


def test_build_train_params():
    assert build_train_params(50, "paper", use_fkd=False, use_pic=True, device="CUDA:1") == {
        "max_iterations": 50, "preset": "paper", "use_fkd": False, "use_pic": True, "device": "cuda:1"}  # fmt: skip
    assert build_train_params(300.0)["max_iterations"] == 300
    for bad in (0, 2.5, "x", True):
        with pytest.raises(ValueError, match="iterations"):
            build_train_params(bad)
    with pytest.raises(ValueError, match="device"):
        build_train_params(10, device="tpu")
    with pytest.raises(ValueError, match="preset"):
        build_train_params(10, preset=" ")


def test_summarize_train_stats_exact():
    stats = {"status": "RUNNING", "epoch": 30, "total_epochs": 200, "best_metric": 0.41234,
             "per_organ_dice": {"spleen": 0.9, "left adrenal gland": 0.05, "unknown": 1.0}}  # fmt: skip
    s = summarize_train_stats(stats, list(ORGANS))
    assert (s["done"], s["total"], s["percent"]) == (30.0, 200.0, 15)
    assert s["fraction"] == pytest.approx(0.15)
    assert s["per_organ_dice"] == {"spleen": 0.9, "left adrenal gland": 0.05}
    assert s["text"] == "status: RUNNING\nepoch 30/200\nbest mean Dice 0.412\nspleen: 0.900\nleft adrenal gland: 0.050"
    empty = summarize_train_stats({}, list(ORGANS))
    assert (empty["percent"], empty["text"], empty["total"]) == (0, "no training statistics yet", None)
    over = summarize_train_stats({"iteration": 12, "max_iterations": 10}, [])
    assert (over["percent"], over["text"]) == (100, "iteration 12/10")


def _info(version=None, status=None, present=True, epoch=0):
    entry = {"labels": {}, "model_present": present}
    if version is not None:
        entry["model_version"] = version
    stats = {"epoch": epoch, "total_epochs": 4}
    if status:
        stats["status"] = status
    return {"models": {"dinomix": entry}, "train_stats": {"dinomix": stats}}


def test_training_monitor_new_model_rules():
    m = TrainingMonitor(list(ORGANS))
    m.start(_info(version=1, status="DONE"))
    running = m.update(True, _info(version=1, status="RUNNING", epoch=2))
    assert running["running"] and not running["finished"] and running["percent"] == 50
    done = m.update(False, _info(version=2, status="DONE", epoch=4))
    assert done["finished"] and done["new_model"]
    assert not m.update(False, _info(version=2, status="DONE"))["finished"]  # reported once

    for end in (_info(version=1, status="DONE", epoch=4), _info(version=2, status="STOPPED"),
                _info(version=2, status="FAILED"), _info(version=2, status="DONE", present=False)):  # fmt: skip
        m = TrainingMonitor(list(ORGANS))
        m.start(_info(version=1, status="DONE"))
        out = m.update(False, end)
        assert out["finished"] and not out["new_model"], end
    # a server without version keys: any change of the model entry / stats counts
    m = TrainingMonitor([])
    m.start({"models": {"dinomix": {}}, "train_stats": {"dinomix": {}}})
    assert m.update(False, {"models": {"dinomix": {}}, "train_stats": {"dinomix": {"epoch": 4}}})["new_model"]


# --------------------------------------------------------------------------------------------------------------
# client without a server
# --------------------------------------------------------------------------------------------------------------


def _dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_connection_refused_message():
    url = f"http://127.0.0.1:{_dead_port()}"
    client = DinoMixClient(url, timeout=5)
    for call in (client.info, client.training_running, lambda: client.next_sample()):
        with pytest.raises(DinoMixClientError) as e:
            call()
        assert str(e.value) == f"cannot reach server at {url}: is `make serve` running?"
        assert e.value.status is None


def test_timeout_message():
    with socket.socket() as listener:  # accepts the TCP connection (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = DinoMixClient(url, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(DinoMixClientError, match="did not answer") as e:
            client.info()
        assert time.monotonic() - t0 < 10 and e.value.status is None


def test_server_url_normalisation():
    assert DinoMixClient("localhost:8000/").server_url == "http://localhost:8000"
    assert DinoMixClient(" https://h.example/ml/ ").server_url == "https://h.example/ml"
    for bad in ("", "ftp://x", "http://"):
        with pytest.raises(ValueError):
            DinoMixClient(bad)


def test_multipart_body_parsed_by_fastapis_parser():
    import python_multipart

    payload = bytes(range(256)) * 3 + b"\r\n--not-a-boundary\r\n"
    ctype, body = encode_multipart(
        {"params": json.dumps({"label_info": [{"name": "liver", "idx": 6}]})}, {"label": ("lab.nii.gz", payload)}
    )
    fields, files = {}, {}
    python_multipart.parse_form(
        {"Content-Type": ctype.encode(), "Content-Length": str(len(body)).encode()},
        io.BytesIO(body),
        lambda f: fields.__setitem__(f.field_name, f.value),
        lambda f: files.__setitem__(f.field_name, (f.file_name, f.file_object.getvalue())),
    )
    assert json.loads(fields[b"params"]) == {"label_info": [{"name": "liver", "idx": 6}]}
    assert files[b"label"] == (b"lab.nii.gz", payload)


def test_error_detail_formatting():
    assert _detail(b'{"detail": "label refused, nothing stored: label shape (1, 2, 3) differs"}') == (
        "label refused, nothing stored: label shape (1, 2, 3) differs"
    )
    body = json.dumps({"detail": [{"loc": ["body", "label"], "msg": "Field required", "type": "missing"}]})
    assert _detail(body.encode()) == "label: Field required"
    assert _detail(b"Internal Server Error") == "Internal Server Error"


# --------------------------------------------------------------------------------------------------------------
# client against the real DINO-Mix MONAI Label server
# --------------------------------------------------------------------------------------------------------------

DEFAULT_STRATEGY = "dinomix_minority_uncertainty"
TINY_TRAIN = {"max_iterations": 4, "val_fraction": 0.0, "device": "cpu"}


@pytest.fixture(scope="module")
def client(live_server):
    return DinoMixClient(live_server.url, timeout=60, infer_timeout=600)


def _objects(client):
    return client.datastore("all")["objects"]


def test_info_organs_and_model_status(client, trained):
    info = client.info()
    assert "config" not in info  # the stock Slicer MONAI Label plugin refuses such a server
    assert client.organs(info=info) == list(ORGANS)
    assert client.label_ids(info=info) == {n: i + 1 for i, n in enumerate(ORGANS)}
    assert "dinomix" in client.models(info=info)
    assert DEFAULT_STRATEGY in client.strategies(info=info) and "random" in client.strategies(info=info)
    status = client.model_status(info=info)
    assert status["listed"] is True and isinstance(status["model_present"], bool)
    assert isinstance(client.train_stats(info=info), dict)


def test_next_sample_returns_an_unlabeled_image_id(client):
    res = client.next_sample()
    assert res["strategy_used"] == DEFAULT_STRATEGY
    objects = _objects(client)
    assert res["id"] in objects
    assert "final" not in objects[res["id"]]["labels"]


def test_next_sample_unknown_strategy(client):
    assert client.next_sample("no_such_strategy")["strategy_used"] == "random"
    with pytest.raises(DinoMixClientError, match="no strategy 'no_such_strategy'") as e:
        client.next_sample("no_such_strategy", fallback=None)
    assert e.value.status == 404


def test_download_image_writes_a_readable_nifti(client, tmp_path, live_server):
    image_id = client.next_sample()["id"]
    path = client.download_image(image_id, str(tmp_path))
    assert os.path.dirname(path) == str(tmp_path) and path.endswith((".nii.gz", ".nii"))
    data, affine = read_nifti(path)
    ref = nib.load(path)
    assert data.shape == ref.shape and data.ndim == 3
    np.testing.assert_allclose(affine, ref.affine, atol=1e-5)
    np.testing.assert_array_equal(data, np.asanyarray(ref.dataobj))
    with pytest.raises(DinoMixClientError) as e:
        client.download_image("no_such_image", str(tmp_path))
    assert e.value.status == 404


#: what the DinoMix module sends with a label: one entry per organ id in the file
LABEL_INFO = [{"name": "liver", "idx": 6}, {"name": "right adrenal gland", "idx": 12}]


def _label_for(client, image_id, tmp_path, shape_delta=0):
    img_path = client.download_image(image_id, str(tmp_path / "img"))
    data, affine = read_nifti(img_path)
    shape = list(data.shape)
    shape[2] += shape_delta
    lab = np.zeros(shape, dtype=np.uint8)
    x, y, z = (s // 2 for s in shape)
    lab[x - 4 : x + 4, y - 4 : y + 4, max(0, z - 2) : z + 2] = 6  # a liver block
    lab[x - 8 : x - 6, y - 8 : y - 6, max(0, z - 1) : z + 1] = 12  # a tiny right adrenal gland
    path = str(tmp_path / f"{image_id}_label.nii.gz")
    write_nifti_label(path, lab, affine)
    return path, lab


def test_submit_label_round_trip(client, tmp_path):
    image_id = client.next_sample()["id"]
    path, lab = _label_for(client, image_id, tmp_path)
    try:
        res = client.submit_label(image_id, path, tag="final", params={"label_info": LABEL_INFO})
        assert res["image"] == image_id and res["label"] == image_id
        assert "final" in _objects(client)[image_id]["labels"]
        back = client.download_label(image_id, str(tmp_path / "back"))
        data, _ = read_nifti(back)
        np.testing.assert_array_equal(data, lab)
    finally:  # leave the shared server's datastore as it was
        client.remove_label(image_id, "final")
    assert "final" not in _objects(client)[image_id]["labels"]


@pytest.mark.parametrize("bad", ["shape", "garbage", "unknown_image"])
def test_bad_label_refused_with_4xx(client, tmp_path, bad):
    image_id = client.next_sample()["id"]
    if bad == "shape":
        path, _ = _label_for(client, image_id, tmp_path, shape_delta=-1)
        match = "label refused.*shape"
    elif bad == "garbage":
        path = str(tmp_path / "garbage.nii.gz")
        with open(path, "wb") as f:
            f.write(b"this is not a NIfTI file")
        match = "label refused.*not a readable"
    else:
        path, _ = _label_for(client, image_id, tmp_path)
        image_id, match = "no_such_image", "unknown image"
    with pytest.raises(DinoMixClientError, match=match) as e:
        client.submit_label(image_id, path)
    assert 400 <= e.value.status < 500
    assert str(e.value).startswith(f"request refused ({e.value.status}) for PUT /datastore/label")


def _wait_idle(client, timeout_s=600):
    t0 = time.monotonic()
    while client.training_running():
        assert time.monotonic() - t0 < timeout_s, "a training run on the shared server does not end"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory):
    """Make sure the server has a published model: submit one label if none exists, run a tiny training."""
    _wait_idle(client)
    if client.model_status()["model_present"]:
        return None
    submitted = None
    if not client.datastore("stats").get("completed"):
        image_id = client.next_sample()["id"]
        path, _ = _label_for(client, image_id, tmp_path_factory.mktemp("train_label"))
        client.submit_label(image_id, path)
        submitted = image_id
    before = client.info()
    monitor = TrainingMonitor(client.organs(info=before))
    monitor.start(before)
    client.train("dinomix", TINY_TRAIN)
    seen = []
    stats = client.wait_for_training(poll_s=1, callback=seen.append, timeout_s=600)
    end = monitor.update(client.training_running(), client.info())
    return {"stats": stats, "seen": seen, "end": end, "submitted": submitted}


def test_training_publishes_a_model(client, trained):
    if trained is None:  # the shared server already had a model: train state is checked elsewhere
        assert client.model_status()["model_present"] is True
        return
    assert trained["stats"].get("status") == "DONE", trained["stats"]
    assert trained["stats"]["total_epochs"] == 4 and trained["stats"]["epoch"] == 4
    assert trained["seen"] and all(isinstance(s, dict) for s in trained["seen"])
    assert trained["end"]["finished"] and trained["end"]["new_model"] and trained["end"]["percent"] == 100
    assert client.model_status()["model_present"] is True
    assert not client.training_running()


def test_infer_returns_a_label_on_the_image_grid(client, trained, tmp_path):
    # an unlabeled image, taken from the datastore listing (next_sample would score every image with the model)
    image_id = sorted(i for i, o in _objects(client).items() if "final" not in o["labels"])[-1]
    img_path = client.download_image(image_id, str(tmp_path))
    img, img_affine = read_nifti(img_path)
    out = client.infer(image_id, output_path=str(tmp_path / "pred.nii.gz"))
    assert out == str(tmp_path / "pred.nii.gz")
    lab, lab_affine = read_nifti(out)
    assert lab.shape == img.shape
    assert lab.dtype == np.uint8 and int(lab.max()) <= 13
    np.testing.assert_allclose(lab_affine, img_affine, atol=1e-3)
    segs = labelmap_to_segments(lab, client.label_ids(), include_empty=True)
    assert len(segs) == 13
    with pytest.raises(DinoMixClientError) as e:
        client.infer("no_such_image")
    assert 400 <= e.value.status < 500


def test_train_twice_is_429_and_stop_ends_the_run(client, trained):
    _wait_idle(client)
    before = client.info()
    monitor = TrainingMonitor(client.organs(info=before))
    monitor.start(before)
    task = client.train("dinomix", dict(TINY_TRAIN, max_iterations=100000))
    assert task["status"] == "SUBMITTED"
    try:
        assert client.training_running()  # also in the moment before the server has started the process
        t0 = time.monotonic()
        while client.training_status().get("status") != "RUNNING":  # a 2nd POST gets 429 once the process runs
            assert time.monotonic() - t0 < 60, client.training_status()
            time.sleep(0.2)
        with pytest.raises(DinoMixClientError, match="^training already running") as e:
            client.train("dinomix", TINY_TRAIN)
        assert e.value.status == 429
    finally:
        client.stop_training()
    t0 = time.monotonic()
    while client.training_running():
        assert time.monotonic() - t0 < 60, "training did not stop"
        time.sleep(0.5)
    end = monitor.update(False, client.info())
    assert end["finished"] and not end["new_model"]
