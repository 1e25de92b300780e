"""Click simulation, guidance, the click refiner's training term and ``Predictor.refine`` (dinomix_core/interactive.py)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from dinomix_core.config import DinoMixConfig, get_preset
from dinomix_core.errors import ModelNotFoundError
from dinomix_core.inference import Predictor
from dinomix_core.interactive import Click, edit_window, guidance_maps, local_changes, next_click, simulate_clicks
from dinomix_core.networks import build_student
from dinomix_core.trainer import DinoMixTrainer


@pytest.mark.parametrize("point, sigma, probe, expected", [
    ((5, 5, 5), 2.0, (5, 5, 5), 1.0),
    ((5, 5, 5), 2.0, (6, 5, 5), math.exp(-1 / 8)),
    ((5, 5, 5), 2.0, (5, 7, 6), math.exp(-5 / 8)),
    ((5, 5, 5), 1.0, (5, 5, 9), 0.0),  # beyond 3 sigma: not computed
])
def test_guidance_is_a_gaussian_per_click(point, sigma, probe, expected):
    g = guidance_maps((12, 12, 12), [point], [], sigma)
    assert g.shape == (2, 12, 12, 12) and float(g[1].abs().sum()) == 0.0
    assert float(g[0][probe]) == pytest.approx(expected, abs=1e-6)


def test_guidance_keeps_the_maximum_where_clicks_overlap_and_skips_points_outside():
    g = guidance_maps((10, 10, 10), [(4, 4, 4), (5, 4, 4), (50, 50, 50)], [(0, 0, 0)], 1.0)
    assert float(g[0].max()) == 1.0 and float(g[0][4, 4, 4]) == 1.0 and float(g[0][5, 4, 4]) == 1.0
    assert float(g[1][0, 0, 0]) == 1.0


@pytest.mark.parametrize("kind", ["missing", "extra"])
def test_next_click_goes_to_the_centre_of_the_largest_error(kind):
    truth = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(truth)
    big, small = (slice(2, 9), slice(2, 9), slice(2, 9)), (slice(14, 16), slice(14, 16), slice(14, 16))
    if kind == "missing":
        truth[big] = truth[small] = True
    else:
        pred[big] = pred[small] = True
    c = next_click(pred, truth)
    assert c == Click((5, 5, 5), kind == "missing")
    assert next_click(truth, truth) is None


def test_simulated_clicks_follow_the_errors_and_stop_when_none_is_left():
    truth = np.zeros((20, 20, 20), bool)
    truth[2:7, 2:7, 2:7] = True  # missing
    pred = np.zeros_like(truth)
    pred[12:17, 12:17, 12:17] = True  # wrong
    clicks = simulate_clicks(pred, truth, 5, radius=4.0)
    assert {c.foreground for c in clicks} == {True, False}
    assert clicks[0].point in ((4, 4, 4), (14, 14, 14))
    assert len(clicks) < 5  # a radius of 4 corrects each 5-voxel cube around its centre


def test_edit_window_covers_the_clicks_and_rounds_to_the_stride():
    mask = np.zeros((100, 90, 40), bool)
    mask[30:50, 30:45, 10:20] = True
    win = edit_window(mask.shape, [(40, 40, 15)], mask, margin=(4, 4, 2), multiple=(8, 8, 4), max_size=(64, 64, 32))
    sizes = [s.stop - s.start for s in win]
    assert all(n % k == 0 for n, k in zip(sizes, (8, 8, 4)))
    assert win[0].start <= 26 and win[0].stop >= 54 and win[2].start <= 8 and win[2].stop >= 22
    assert all(0 <= s.start and s.stop <= n for s, n in zip(win, mask.shape))


def _organ_and_changes():
    """An organ (a 6^3 cube), and a refiner output that grows it by 2 slices, removes 2 of its slices and adds a
    separate blob far away."""
    old = np.zeros((20, 20, 20), dtype=bool)
    old[2:8, 2:8, 2:8] = True
    new = old.copy()
    new[8:10, 2:8, 2:8] = True  # 72 voxels grown from the organ
    new[2:4, 2:8, 2:8] = False  # 72 voxels removed
    new[14:16, 14:16, 14:16] = True  # 8 voxels far from everything
    return old, new


@pytest.mark.parametrize("clicks, reach, expected_sum, why", [
    ([], 2.0, 216, "no click: nothing changes"),
    ([Click((9, 4, 4), True)], 2.0, 216 + 72, "a foreground click in the grown part keeps only that part"),
    ([Click((11, 4, 4), True)], 2.0, 216 + 72, "within reach of the grown part"),
    ([Click((12, 4, 4), True)], 2.0, 216, "just out of reach"),
    ([Click((2, 4, 4), False)], 2.0, 216 - 72, "a background click keeps only the removal it touches"),
    ([Click((9, 4, 4), False)], 2.0, 216, "a background click does not keep an addition"),
    ([Click((9, 4, 4), True), Click((2, 4, 4), False), Click((15, 15, 15), True)], 2.0, 216 + 72 - 72 + 8,
     "each click keeps its own change"),
    ([Click((40, 4, 4), True), Click((-3, 4, 4), False)], 2.0, 216, "clicks outside the arrays are ignored"),
])
def test_only_changes_connected_to_a_click_are_kept(clicks, reach, expected_sum, why):
    old, new = _organ_and_changes()
    out = local_changes(new, old, clicks, reach)
    assert int(out.sum()) == expected_sum, why
    assert not (out & ~(old | new)).any() and not (~out & old & new).any()  # only the refiner's changes, if any


def test_the_refiner_does_not_change_the_segmenter_training(phantoms, tmp_path, one_thread):
    """The segmenter's losses are identical with and without the click refiner (its clicks draw from their own
    random stream, its inputs are detached)."""
    labeled = phantoms["labeled"][:1]
    runs = {}
    for refiner in (False, True):
        cfg = get_preset("cpu", max_iterations=3, val_interval=0, use_pic=False, use_consistency=False,
                         augment=False, patch_size=(32, 32, 16), refiner=refiner)
        t = DinoMixTrainer(cfg, labeled, [], str(tmp_path / str(refiner)), device="cpu")
        t.fit()
        runs[refiner] = t.history
    assert [h["sup"] for h in runs[True]] == [h["sup"] for h in runs[False]]
    assert all("refiner" in h and h["refiner"] > 0 for h in runs[True]) and "refiner" not in runs[False][0]


@pytest.fixture(scope="module")
def refiner_model(phantoms, tmp_path_factory):
    """A real (tiny, 4-iteration) model file with a click refiner, and one image it segments."""
    cfg = get_preset("cpu", max_iterations=4, val_interval=0, use_pic=False, use_consistency=False,
                     patch_size=(32, 32, 16))
    out = tmp_path_factory.mktemp("refiner")
    summary = DinoMixTrainer(cfg, phantoms["labeled"][:1], [], str(out), device="cpu").fit()
    return summary["checkpoint"], phantoms["labeled"][1][0]


def test_refine_without_clicks_is_the_automatic_result(refiner_model):
    model, image = refiner_model
    p = Predictor(model, device="cpu")
    auto, affine = p.predict(image)
    same, affine2 = p.refine(image, {}, [], None)
    assert np.array_equal(auto, same) and np.allclose(affine, affine2)


def test_a_click_sets_its_voxel_and_changes_only_a_window_around_it(refiner_model):
    model, image = refiner_model
    p = Predictor(model, device="cpu")
    auto, _ = p.predict(image)
    shape = nib.load(image).shape
    point = [s // 2 for s in shape]
    out, _ = p.refine(image, {6: [point]}, [], 6)
    assert out[tuple(point)] == 6
    changed = np.argwhere(out != auto)
    assert len(changed) and (np.abs(changed - np.asarray(point)).max(0) <= [shape[0], shape[1], shape[2]]).all()
    out_bg, _ = p.refine(image, {}, [point], 6)
    assert out_bg[tuple(point)] != 6


@pytest.mark.parametrize("clicks, background, edited, why", [
    ({6: [[10_000, 0, 0]]}, [], 6, "outside the image"),
    ({6: [[1, 2]]}, [], 6, "three voxel indices"),
    ({99: [[1, 2, 3]]}, [], 99, "not one of this model's organs"),
])
def test_refine_refuses_bad_clicks(refiner_model, clicks, background, edited, why):
    model, image = refiner_model
    with pytest.raises(ValueError, match=why):
        Predictor(model, device="cpu").refine(image, clicks, background, edited)


def test_a_model_file_without_a_refiner_is_served_but_cannot_edit(refiner_model, tmp_path):
    model, image = refiner_model
    mf = torch.load(model, map_location="cpu", weights_only=True)
    mf["model"] = {k: v for k, v in mf["model"].items() if not k.startswith("refiner.")}
    old = tmp_path / "old.pt"
    torch.save(mf, old)
    p = Predictor(str(old), device="cpu")
    p.predict(image)
    assert p.config.refiner is False
    with pytest.raises(ModelNotFoundError, match="no click refiner"):
        p.refine(image, {6: [[5, 5, 5]]}, [], 6)


def test_refiner_channels_are_validated():
    with pytest.raises(ValueError, match="refiner_channels"):
        DinoMixConfig(refiner_channels=(8, 0))
    assert DinoMixConfig(channels=(4, 8), strides=((2, 2, 2),), fkd_stage=1, patch_size=(16, 16, 16)).refiner_stage_channels == (8, 16)
    assert DinoMixConfig(refiner_channels=(8, 16)).refiner_stage_channels == (8, 16, 16, 16)
    assert build_student(DinoMixConfig(refiner=False)).refiner is None
    assert build_student(DinoMixConfig()).refiner is not None
