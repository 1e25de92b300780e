"""The app over a DICOMweb datastore (``--studies http://.../dicomweb``): a label saved the stock plugin's way is
checked and renamed by segment name before anything reaches the PACS, and its DICOM-SEG names every segment after
the organ of its voxels.

Real: the MONAI Label server with the app, MONAI Label's client (``save_label`` as the Slicer plugin calls it),
``dicomweb_client`` inside the server, dcmqi's conversion, a DICOM CT series made from the real sample CT. The
PACS is a stand-in (``tests/dicomweb_standin.py``): none can be installed here.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk
from conftest import start_server, stop_server
from dicomweb_standin import StandInDICOMweb
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from test_dicom_seg import CT_FILE, LABEL_FILE, present_ids, read_segments, write_ct_series

from dinomix_core.config import ORGANS


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """The stand-in PACS holding the sample CT as a DICOM series: ``(standin, series uids)``."""
    series_dir = tmp_path_factory.mktemp("pacs_series")
    uids = write_ct_series(sitk.ReadImage(str(CT_FILE)), series_dir)
    instances = [pydicom.dcmread(str(p)) for p in sorted(series_dir.glob("*.dcm"))]
    with StandInDICOMweb(instances) as standin:
        yield standin, uids


@pytest.fixture(scope="module")
def server(tmp_path_factory, pacs):
    standin, _ = pacs
    root = tmp_path_factory.mktemp("dicomweb_server")
    srv = start_server(standin.url, root / "model", root / "server.log",
                       env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache")})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("dicomweb_client")))


@pytest.fixture(scope="module")
def image(client, pacs, tmp_path_factory):
    """The series as the server serves it (MONAI Label's NIfTI of the DICOM series): its nibabel image."""
    _, uids = pacs
    path = tmp_path_factory.mktemp("served") / "image.nii.gz"
    r = requests.get(f"{client._server_url}/datastore/image", params={"image": uids["series"]}, timeout=120)
    assert r.status_code == 200, r.text
    path.write_bytes(r.content)
    return nib.load(str(path))


def _segments(ds: pydicom.Dataset) -> dict:
    return {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}


def _plugin_export(label: np.ndarray, deleted: str):
    """What the Slicer plugin sends after the user deleted segment ``deleted``: the other segments numbered
    1, 2, ... in their order, and ``label_info`` [{name, idx}] for them."""
    out = np.zeros_like(label)
    info = []
    for idx, organ_id in enumerate([i for i in present_ids(label) if ORGANS[i - 1] != deleted], start=1):
        out[label == organ_id] = idx
        info.append({"name": ORGANS[organ_id - 1], "idx": idx})
    return out, info


def test_plugin_label_is_renamed_checked_and_uploaded_with_organ_named_segments(client, pacs, image, tmp_path):
    standin, uids = pacs
    truth = np.asarray(nib.load(str(LABEL_FILE)).dataobj).astype(np.uint8)
    assert truth.shape == image.shape
    truth[truth == ORGANS.index("spleen") + 1] = 0  # the user deleted the spleen segment
    sent, label_info = _plugin_export(truth, "spleen")
    assert not np.array_equal(sent, truth)  # the plugin's values are not the app's ids
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(sent, image.affine), str(path))
    before = len(standin.stored)

    client.save_label(uids["series"], str(path), tag="final", params={"label_info": label_info})

    (seg,) = standin.stored[before:]
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["series"]
    ids = present_ids(truth)
    segments = _segments(seg)
    assert sorted(segments.values()) == sorted(ORGANS[i - 1] for i in ids)  # every organ present, rightly named
    numbers = sitk.GetArrayFromImage(read_segments(seg)).transpose(2, 1, 0)
    organ_of_segment = np.zeros(max(segments) + 1, np.uint8)
    for number, name in segments.items():
        organ_of_segment[number] = ORGANS.index(name) + 1
    np.testing.assert_array_equal(organ_of_segment[numbers], truth)  # each voxel under its organ's name
    # the server's cached label holds the app's ids, as training reads it
    stored = client.datastore()["objects"][uids["series"]]["labels"]["final"]
    assert stored["info"]["label_values"] == {str(e["idx"]): ORGANS.index(e["name"]) + 1 for e in label_info}


@pytest.mark.parametrize(
    "case, expect",
    [
        ("unknown name", "kidney_x"),
        ("wrong grid", "differs from the image shape"),
        ("not a volume", "NIfTI"),
    ],
)
def test_refused_label_reaches_neither_pacs_nor_cache(client, pacs, image, tmp_path, case, expect):
    standin, uids = pacs
    truth = np.asarray(nib.load(str(LABEL_FILE)).dataobj).astype(np.uint8)
    sent, label_info = _plugin_export(truth, "")
    path = tmp_path / "label.nii.gz"
    if case == "unknown name":
        label_info[0]["name"] = "kidney_x"
        nib.save(nib.Nifti1Image(sent, image.affine), str(path))
    elif case == "wrong grid":
        nib.save(nib.Nifti1Image(sent[:-4], image.affine), str(path))
    else:
        path = tmp_path / "label.txt"
        path.write_text("not a label")
    before = len(standin.stored)
    labels_before = client.datastore()["objects"][uids["series"]]["labels"]

    with pytest.raises(MONAILabelClientException) as err:
        client.save_label(uids["series"], str(path), tag="final", params={"label_info": label_info})

    assert "422" in str(err.value) or getattr(err.value, "status_code", None) == 422, err.value
    assert expect.lower() in str(err.value.msg).lower(), err.value.msg
    assert len(standin.stored) == before  # nothing uploaded
    assert client.datastore()["objects"][uids["series"]]["labels"] == labels_before  # nothing cached


def test_a_refused_upload_is_a_502_and_the_label_stays_in_the_cache(client, pacs, image, server, tmp_path):
    standin, uids = pacs
    truth = np.asarray(nib.load(str(LABEL_FILE)).dataobj).astype(np.uint8)
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(truth, image.affine), str(path))
    before = len(standin.stored)
    standin.refuse_stores = True
    try:
        with pytest.raises(MONAILabelClientException) as err:
            client.save_label(uids["series"], str(path), tag="final")
    finally:
        standin.refuse_stores = False
    assert "Status: 502" in err.value.msg and "kept in this server's cache" in err.value.msg, err.value.msg
    assert len(standin.stored) == before
    cached = client.datastore()["objects"][uids["series"]]["labels"]["final"]
    assert "label_values" not in cached["info"] and cached["info"]["label_info"][0] == {"name": "spleen", "idx": 1}
    (kept,) = (server.model_dir.parent / "cache").glob(f"*/labels/final/{uids['series']}.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(kept)).dataobj), truth)  # the submitted label, not lost


def test_an_ohif_binary_mask_is_checked_and_uploaded(client, pacs, image, tmp_path):
    """OHIF sends a raw uint8 mask on the image grid (``.bin``, Fortran order), read with MONAI Label's reader."""
    standin, uids = pacs
    truth = np.asarray(nib.load(str(LABEL_FILE)).dataobj).astype(np.uint8)
    path = tmp_path / "label.bin"
    path.write_bytes(truth.tobytes(order="F"))
    before = len(standin.stored)
    client.save_label(uids["series"], str(path), tag="final")
    (seg,) = standin.stored[before:]
    assert sorted(_segments(seg).values()) == sorted(ORGANS[i - 1] for i in present_ids(truth))


def test_unknown_series_is_a_404(client, tmp_path, image):
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(path))
    with pytest.raises(MONAILabelClientException) as err:
        client.save_label("1.2.3.4.5", str(path), tag="final")
    assert "404" in str(err.value) or "unknown image" in str(err.value.msg)


def test_stand_in_answers_dicomweb_client(pacs):
    """The stand-in's QIDO and WADO answers are what dicomweb_client parses (a guard against it drifting)."""
    standin, uids = pacs
    from dicomweb_client import DICOMwebClient

    series = DICOMwebClient(standin.url).search_for_series(search_filters={"SeriesInstanceUID": uids["series"]})
    assert [s["0020000E"]["Value"] for s in series] == [[uids["series"]]]
    instances = DICOMwebClient(standin.url).retrieve_series(uids["study"], uids["series"])
    assert sorted(str(d.SOPInstanceUID) for d in instances) == sorted(uids["sops"])
