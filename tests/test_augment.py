"""Training-patch augmentation (dinomix_core.augment): exact offsets, label integrity, determinism, trainer use."""

import pytest
import torch

from dinomix_core.augment import PatchAugmenter, RandOrganIntensityd
from dinomix_core.config import DinoMixConfig


def _patch(seed=0, shape=(24, 20, 12)):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((1, *shape), generator=g) * 0.6 + 0.2
    label = torch.zeros(shape, dtype=torch.long)
    label[4:12, 4:10, 2:8] = 6
    label[14:20, 12:18, 3:9] = 1
    return image, label


@pytest.mark.parametrize(
    "intensity_range, prob, expect_change",
    [((0.1, 0.9), 1.0, True), ((0.1, 0.9), 0.0, False), ((0.3, 0.3), 1.0, True)],
)
def test_organ_intensity_moves_each_organ_mean_into_range(intensity_range, prob, expect_change):
    image, label = _patch()
    t = RandOrganIntensityd("image", "label", intensity_range=intensity_range, prob=prob)
    t.set_random_state(3)
    out = t({"image": image, "label": label})["image"]
    diff = out - image
    assert torch.equal(diff[0][label == 0], torch.zeros_like(diff[0][label == 0]))  # background never changed
    for organ in (1, 6):
        d = diff[0][label == organ]
        assert torch.allclose(d, d[0].expand_as(d), atol=1e-6)  # one shift per organ: texture kept
        if expect_change:
            mean = float(out[0][label == organ].mean())
            assert intensity_range[0] - 1e-5 <= mean <= intensity_range[1] + 1e-5
    assert bool((diff.abs() > 1e-6).any()) == expect_change


def test_organ_intensity_rejects_bad_arguments():
    with pytest.raises(ValueError, match="intensity_range"):
        RandOrganIntensityd("image", "label", intensity_range=(0.5, 0.1))
    with pytest.raises(ValueError, match="prob"):
        RandOrganIntensityd("image", "label", intensity_range=(0.1, 0.5), prob=1.5)


def test_spatial_keeps_labels_integer_and_in_set():
    aug = PatchAugmenter(DinoMixConfig(aug_spatial_prob=1.0, aug_rotate_deg=(10.0, 10.0, 30.0), aug_scale=0.3), seed=1)
    image, label = _patch()
    warped, wl = aug.spatial(image, label)
    assert warped.shape == image.shape and wl.shape == label.shape and wl.dtype == label.dtype
    assert set(torch.unique(wl).tolist()) <= {0, 1, 6}
    assert not torch.equal(wl, label)  # prob 1 and 30 degrees: the label moved
    # the warp is shared: where the image is padded (outside the source patch) the label is background
    assert bool((wl[warped[0] == 0] == 0).all())


def test_spatial_off_is_identity():
    aug = PatchAugmenter(DinoMixConfig(aug_spatial_prob=0.0))
    image, label = _patch()
    out, ol = aug.spatial(image, label)
    assert out is image and ol is label


def test_intensity_stays_in_window_and_is_seeded():
    cfg = DinoMixConfig(aug_intensity=0.5, aug_noise_std=0.2)
    image, label = _patch()
    a = [PatchAugmenter(cfg, seed=5).intensity(image, label) for _ in range(2)]
    b = PatchAugmenter(cfg, seed=6).intensity(image, label)
    assert torch.equal(a[0], a[1])
    assert not torch.equal(a[0], b)
    for x in (*a, b):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_weak_view_is_milder_than_strong():
    cfg = DinoMixConfig(aug_intensity=0.2, aug_noise_std=0.05)
    image, label = _patch()
    aug = PatchAugmenter(cfg, seed=0)
    weak = torch.stack([(aug.intensity(image, None, strong=False) - image).abs().mean() for _ in range(20)]).mean()
    strong = torch.stack([(aug.intensity(image, label, strong=True) - image).abs().mean() for _ in range(20)]).mean()
    assert float(weak) < float(strong)


def test_curve_only_changes_the_strong_view_of_unlabeled_patches_and_keeps_intensity_order():
    image, label = _patch()
    off, on = PatchAugmenter(DinoMixConfig(), seed=2), PatchAugmenter(DinoMixConfig(aug_curve_prob=1.0), seed=2)
    assert torch.equal(off.intensity(image, label), on.intensity(image, label))  # labeled: never curved
    assert torch.equal(off.intensity(image, None, strong=False), on.intensity(image, None, strong=False))  # weak
    plain, curved = off.intensity(image, None), on.intensity(image, None)
    assert float((plain - curved).abs().max()) > 0.01
    assert float(curved.min()) >= 0.0 and float(curved.max()) <= 1.0
    ranked = curved.reshape(-1)[torch.argsort(plain.reshape(-1))]  # one monotone curve: the order of values kept
    assert bool((ranked[1:] >= ranked[:-1] - 1e-6).all())


def test_curve_adds_its_own_random_state_and_resumes():
    n_off = len(PatchAugmenter(DinoMixConfig()).state_dict()["states"])
    a = PatchAugmenter(DinoMixConfig(aug_curve_prob=0.5), seed=4)
    assert len(a.state_dict()["states"]) > n_off
    image, _ = _patch()
    a.intensity(image, None)
    b = PatchAugmenter(DinoMixConfig(aug_curve_prob=0.5), seed=9)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(a.intensity(image, None), b.intensity(image, None)) for _ in range(4))


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"aug_curve_prob": -0.1}, "aug_curve_prob"),
        ({"aug_curve_points": (2, 6)}, "aug_curve_points"),
        ({"aug_curve_points": (8, 5)}, "aug_curve_points"),
        ({"aug_spatial_prob": 1.5}, "aug_spatial_prob"),
        ({"aug_rotate_deg": (1.0, 2.0)}, "aug_rotate_deg"),
        ({"aug_scale": 1.0}, "aug_scale"),
        ({"aug_noise_std": -0.1}, "aug_noise_std"),
        ({"aug_organ_hu": (200.0, 100.0)}, "aug_organ_hu"),
    ],
)
def test_config_rejects_bad_augmentation(changes, match):
    with pytest.raises(ValueError, match=match):
        DinoMixConfig(**changes)
