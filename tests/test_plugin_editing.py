"""Interactive editing through the real server with the stock MONAILabel plugin's requests (3D Slicer cannot run
here; the plugin's request building is re-stated from MONAI Label 0.8.5's ``MONAILabel.py``):

* DeepEdit, multi-label (``onClickDeepgrow`` with a ``deepedit`` model whose ``labels`` are not empty): one entry
  per server label with that segment's landmark points ``[i, j, k]`` (IJK of the volume), ``label`` = the selected
  segment, the model's config params, ``result_extension=".nrrd"``, ``result_dtype="uint8"``; the whole label map
  comes back and is split into segments by ``label_names``;
* scribbles (``onUpdateScribbles``): every segment exported as value ``position + 1`` (the organ segments, then
  ``background_scribbles`` and ``foreground_scribbles``), ``label_info=[{"name", "id"}]``, ``selected_label_name``,
  ``roi``; the result is a binary mask of the selected segment.
"""

from __future__ import annotations

from typing import Dict

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import sample_server
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from test_stock_plugin import STARTER, plugin_models, plugin_params, plugin_result_segments

from dinomix_core.config import ORGANS
from dinomix_core.interactive import next_click

IMAGE = "real_ct_001"
NRRD = {"result_extension": ".nrrd", "result_dtype": "uint8"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_studies_src):
    yield from sample_server(tmp_path_factory, sample_studies_src, "plugin_editing", {"starter": str(STARTER)})


@pytest.fixture(scope="module")
def client(server, tmp_path_factory) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("editing")))


@pytest.fixture(scope="module")
def truth(server) -> np.ndarray:
    """The sample CT's reference label, on the image's grid, [i, j, k] (IJK) order."""
    return np.asarray(nib.load(str(server.studies / "labels" / "final" / f"{IMAGE}.nii.gz")).dataobj).astype(np.int64)


def as_ijk(segments: Dict[str, np.ndarray]) -> np.ndarray:
    """The plugin's segments (SimpleITK arrays, [k, j, i]) as one label map in IJK order."""
    first = next(iter(segments.values()))
    out = np.zeros(first.shape, np.int64)
    for name, mask in segments.items():
        out[mask] = ORGANS.index(name) + 1
    return out.transpose(2, 1, 0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def deepedit_params(info, model: str, points: Dict[str, list], label: str) -> dict:
    """``onClickDeepgrow`` for a multi-label DeepEdit model."""
    params = {name: list(points.get(name, [])) for name in info["labels"]}
    params["label"] = label
    params.update(plugin_params(info, "infer", model))
    return dict(params, **NRRD)


def test_deepedit_clicks_correct_the_clicked_organ(client, truth):
    info = client.info()
    assert "dinomix_edit" in plugin_models(info, "deepedit")
    model = info["models"]["dinomix_edit"]
    assert model["labels"] and set(model["labels"]) == set(info["labels"])  # the plugin's multi-label mode
    auto_file, auto_params = client.infer("dinomix", IMAGE, dict(NRRD))
    auto = as_ijk(plugin_result_segments(auto_file, auto_params, info, "dinomix"))

    # no landmark: exactly the automatic result
    f, p = client.infer("dinomix_edit", IMAGE, deepedit_params(info, "dinomix_edit", {}, "liver"))
    assert np.array_equal(as_ijk(plugin_result_segments(f, p, info, "dinomix_edit")), auto)

    # clicks on the worst organ, each at the centre of its largest error, as a user would place them
    organs = [i for i in range(1, len(ORGANS) + 1) if (truth == i).any()]
    worst = min(organs, key=lambda i: dice(auto == i, truth == i))
    name = ORGANS[worst - 1]
    points: Dict[str, list] = {}
    result = auto
    for _ in range(3):
        c = next_click(result == worst, truth == worst)
        assert c is not None
        owner = int(truth[c.point])
        if owner:
            points.setdefault(ORGANS[owner - 1], []).append(list(c.point))
        f, p = client.infer("dinomix_edit", IMAGE, deepedit_params(info, "dinomix_edit", points, name))
        assert p["label_names"] == auto_params["label_names"]
        result = as_ijk(plugin_result_segments(f, p, info, "dinomix_edit"))
    for organ_name, pts in points.items():  # every landmark voxel has its segment's label
        for q in pts:
            assert result[tuple(q)] == ORGANS.index(organ_name) + 1
    assert dice(result == worst, truth == worst) > dice(auto == worst, truth == worst) + 0.05
    assert (result != auto).mean() < 0.05  # a local correction, not a new segmentation


@pytest.mark.parametrize("points, label, why", [
    ({"liver": [[1, 2]]}, "liver", "list of [i, j, k]"),
    ({"liver": [[100000, 0, 0]]}, "liver", "outside the image"),
    ({"liver": "here"}, "liver", "list of [i, j, k]"),
    ({}, "brain", "not one of this app's labels"),
])
def test_deepedit_refuses_bad_points(client, points, label, why):
    info = client.info()
    params = deepedit_params(info, "dinomix_edit", {}, label)
    params.update(points)
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("dinomix_edit", IMAGE, params)
    assert "Status: 422" in e.value.msg and why in e.value.msg


@pytest.mark.parametrize("method", ["dinomix_histogram_graphcut", "dinomix_gmm_graphcut"])
def test_scribbles_fix_the_selected_organ(server, client, truth, method, tmp_path):
    info = client.info()
    assert method in plugin_models(info, "scribbles")
    auto_file, auto_params = client.infer("dinomix", IMAGE, dict(NRRD))
    segments = plugin_result_segments(auto_file, auto_params, info, "dinomix")  # [k, j, i] arrays
    organ = "spleen"
    sid = ORGANS.index(organ) + 1
    ref = truth.transpose(2, 1, 0)  # as the plugin's arrays
    # strokes: foreground inside the true spleen, background just outside it
    inside = np.argwhere(ref == sid)
    centre = inside[len(inside) // 2]
    fg = np.zeros(ref.shape, bool)
    fg[centre[0], centre[1] - 2:centre[1] + 3, centre[2] - 2:centre[2] + 3] = True
    fg &= ref == sid
    outside = np.argwhere((ref == 0) & (np.abs(np.indices(ref.shape) - centre[:, None, None, None]).max(0) < 12))
    bg = np.zeros(ref.shape, bool)
    bg[tuple(outside[: min(40, len(outside))].T)] = True
    segments = dict(segments, background_scribbles=bg, foreground_scribbles=fg)
    labelmap, label_info = np.zeros(ref.shape, np.uint8), []
    for idx, (name, mask) in enumerate(segments.items()):
        labelmap[mask] = idx + 1
        label_info.append({"name": name, "id": idx + 1})
    scribbles = tmp_path / "scribbles.nrrd"
    img = sitk.ReadImage(str(server.studies / f"{IMAGE}.nii.gz"))
    out = sitk.GetImageFromArray(labelmap)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(scribbles))
    params = dict(plugin_params(info, "infer", method), roi=[], label_info=label_info, selected_label_name=organ, **NRRD)
    f, _ = client.infer(method, IMAGE, params, str(scribbles))
    result = sitk.GetArrayFromImage(sitk.ReadImage(f))
    assert result.shape == ref.shape and set(np.unique(result)) <= {0, 1}
    assert result[fg].all() and not result[bg].any()  # the strokes are hard constraints
    assert result.sum() > fg.sum()  # the model's probability grows the organ beyond the strokes


def test_editing_answers_409_without_a_model(tmp_path_factory, sample_studies_src):
    gen = sample_server(tmp_path_factory, sample_studies_src, "editing_no_model", {"starter": "none"})
    srv = next(gen)
    try:
        c = MONAILabelClient(srv.url, tmpdir=str(tmp_path_factory.mktemp("nomodel")))
        assert "dinomix_edit" not in c.info()["models"]  # not listed: the plugin offers no click mode
        with pytest.raises(MONAILabelClientException) as e:
            c.infer("dinomix_edit", IMAGE, {"liver": [[10, 10, 10]], "label": "liver"})
        assert "Status: 409" in e.value.msg and "Retrain" in e.value.msg
    finally:
        next(gen, None)
