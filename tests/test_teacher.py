"""Tests of the frozen DINOv3 teacher, its feature cache and feature CutMix (dinomix_core.teacher).

A tiny randomly initialised DINOv3ViTConfig is saved with ``save_pretrained`` and loaded back through
``load_dinov3`` / ``build_teacher``: the same ``from_pretrained`` code path a real (gated) checkpoint uses.
"""

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import DINOv3ViTConfig, DINOv3ViTModel  # noqa: E402

from dinomix_core.teacher import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    DinoV3Teacher,
    TeacherFeatureCache,
    build_teacher,
    feature_box,
    load_dinov3,
    mix_features,
)

HIDDEN = 32
PATCH = 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=PATCH,
        num_register_tokens=4,
        image_size=32,
    )
    path = tmp_path_factory.mktemp("tiny_dinov3")
    DINOv3ViTModel(cfg).save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def teacher(tiny_dir):
    return build_teacher(tiny_dir, upsample=1, batch_size=4)


def _volume(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def test_load_dinov3_frozen(tiny_dir):
    model = load_dinov3(tiny_dir)
    assert isinstance(model, DINOv3ViTModel)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert model.config.num_register_tokens == 4 and model.config.patch_size == PATCH


def test_shape_stride_properties(teacher):
    assert isinstance(teacher, DinoV3Teacher)
    assert (teacher.patch_size, teacher.hidden_size, teacher.feature_stride) == (4, 32, 4)
    assert teacher.num_register_tokens == 4
    x = _volume((2, 1, 10, 13, 3))
    f = teacher(x)
    assert f.shape == (2, HIDDEN, 3, 4, 3)  # ceil(10/4), ceil(13/4), Z
    assert f.dtype == torch.float32 and not f.requires_grad
    assert teacher.feature_shape((10, 13, 3)) == (3, 4, 3)
    assert torch.isfinite(f).all()


def test_matches_direct_vit_call_on_one_slice(teacher):
    """Layout: slice z of volume b is the image with H = X, W = Y, padded with 0 then ImageNet-normalised."""
    x = _volume((2, 1, 10, 13, 3), seed=1)
    f = teacher(x)
    img = torch.zeros(1, 1, 12, 16)
    img[0, 0, :10, :13] = x[1, 0, :, :, 2]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pix = (img.expand(-1, 3, -1, -1) - mean) / std
    with torch.no_grad():
        tok = teacher.model(pixel_values=pix).last_hidden_state[0, 5:]  # 1 CLS + 4 registers
    expected = tok.reshape(3, 4, HIDDEN).permute(2, 0, 1)
    torch.testing.assert_close(f[1, :, :, :, 2], expected, rtol=1e-4, atol=1e-5)
    # batching slices differently does not change the result
    t1 = DinoV3Teacher(teacher.model, batch_size=1)
    torch.testing.assert_close(t1(x), f, rtol=1e-4, atol=1e-5)


def test_upsample2(tiny_dir):
    t = build_teacher(tiny_dir, upsample=2, batch_size=8)
    assert t.feature_stride == 2
    f = t(_volume((1, 1, 10, 13, 2)))
    assert f.shape == (1, HIDDEN, 5, 7, 2)  # ceil(10/2), ceil(13/2)


def test_constructor_validation(teacher):
    with pytest.raises(ValueError, match="divide"):
        DinoV3Teacher(teacher.model, upsample=3)
    with pytest.raises(ValueError):
        DinoV3Teacher(teacher.model, upsample=0)
    with pytest.raises(ValueError):
        DinoV3Teacher(teacher.model, batch_size=0)
    with pytest.raises(ValueError):
        teacher(torch.rand(1, 2, 8, 8, 2))


def test_frozen_after_train_and_student_step(teacher):
    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert all(not m.training for m in teacher.modules())
    before = [p.detach().clone() for p in teacher.parameters()]
    torch.manual_seed(0)
    student = torch.nn.Conv3d(1, HIDDEN, kernel_size=(4, 4, 1), stride=(4, 4, 1))
    student_before = student.weight.detach().clone()
    x = _volume((1, 1, 8, 8, 2), seed=2)
    target = teacher(x)
    assert not target.requires_grad
    pred = student(x)
    assert pred.shape == target.shape
    loss = torch.nn.functional.mse_loss(pred, target)
    loss.backward()
    opt = torch.optim.SGD(list(student.parameters()) + list(teacher.parameters()), lr=1.0, momentum=0.9)
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert not torch.equal(student_before, student.weight)  # the student did learn


def test_missing_folder_clear_error(tmp_path):
    missing = tmp_path / "no_such_dinov3"
    with pytest.raises(FileNotFoundError, match="--teacher none") as e:
        load_dinov3(str(missing))
    assert str(missing) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_teacher(str(empty))


def test_none_disables_fkd(caplog):
    with caplog.at_level(logging.WARNING, logger="dinomix_core.teacher"):
        assert build_teacher("none") is None
        assert build_teacher("") is None
        assert build_teacher("None") is None
    assert sum("FKD" in r.getMessage() for r in caplog.records) == 3
    with pytest.raises(ValueError):
        load_dinov3("none")


def test_cache_computes_once(teacher):
    calls = []
    handle = teacher.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        cache = TeacherFeatureCache(teacher)
        vol = _volume((1, 9, 12, 3), seed=3)
        a = cache.get("case0", vol)
        b = cache.get("case0", vol)
        c = cache.get("case0")
        assert len(calls) == 1
        assert a is b and b is c
        assert a.shape == (HIDDEN, 3, 3, 3) and a.dtype == torch.float16 and a.device.type == "cpu"
        assert "case0" in cache and len(cache) == 1 and cache.nbytes == a.numel() * 2
        with pytest.raises(KeyError):
            cache.get("other")
        with pytest.raises(ValueError):
            cache.get("case0", _volume((1, 8, 12, 3)))
    finally:
        handle.remove()


def test_cache_crop_equals_full_volume_then_slice(teacher):
    vol = _volume((1, 16, 20, 5), seed=4)
    full = teacher(vol[None])[0]
    cache = TeacherFeatureCache(teacher)
    cache.get("v", vol)
    crop = cache.crop("v", (4, 8, 1), (8, 9, 3))
    # x: 4//4 .. ceil(12/4) = 1:3, y: 8//4 .. ceil(17/4) = 2:5, z: 1:4
    assert crop.shape == (HIDDEN, 2, 3, 3) and crop.dtype == torch.float32
    assert torch.equal(crop, full[:, 1:3, 2:5, 1:4].half().float())
    crop.zero_()  # the crop is a copy: the cache is unchanged
    assert torch.equal(cache.crop("v", (4, 8, 1), (8, 9, 3)), full[:, 1:3, 2:5, 1:4].half().float())


def test_cache_crop_errors(teacher):
    cache = TeacherFeatureCache(teacher)
    cache.get("v", _volume((1, 16, 20, 5), seed=5))
    with pytest.raises(ValueError, match="multiple"):
        cache.crop("v", (2, 0, 0), (8, 8, 2))
    with pytest.raises(ValueError, match="multiple"):
        cache.crop("v", (0, 5, 0), (8, 8, 2))
    with pytest.raises(ValueError, match="exceeds"):
        cache.crop("v", (12, 0, 0), (8, 8, 2))
    with pytest.raises(KeyError):
        cache.crop("unknown", (0, 0, 0), (4, 4, 1))


def test_feature_box():
    assert feature_box((4, 8, 1), (8, 9, 3), 4) == (slice(1, 3), slice(2, 5), slice(1, 4))
    assert feature_box((0, 0, 0), (3, 1, 1), 2) == (slice(0, 2), slice(0, 1), slice(0, 1))
    with pytest.raises(ValueError):
        feature_box((1, 0, 0), (4, 4, 1), 2)


def test_mix_features_exact():
    dst = torch.zeros(1, 4, 3, 2)
    src = torch.arange(24, dtype=torch.float32).reshape(1, 4, 3, 2)
    # box in voxels at stride 4: x 4..7 -> cell 1, y 0..7 -> cells 0,1, z 1
    out = mix_features(dst, src, (4, 0, 1), (3, 8, 1), stride=4)
    expected = torch.zeros(1, 4, 3, 2)
    expected[0, 1, 0, 1] = 7.0  # src index (1, 0, 1) = 1*6 + 0*2 + 1
    expected[0, 1, 1, 1] = 9.0  # (1, 1, 1) = 6 + 2 + 1
    assert torch.equal(out, expected)
    assert torch.equal(dst, torch.zeros(1, 4, 3, 2))  # not mutated
    # batched features [B, C, Xf, Yf, Z] work the same way
    outb = mix_features(dst[None].repeat(2, 1, 1, 1, 1), src[None].repeat(2, 1, 1, 1, 1), (4, 0, 1), (3, 8, 1), 4)
    assert torch.equal(outb, expected[None].repeat(2, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="multiple"):
        mix_features(dst, src, (2, 0, 0), (4, 4, 1), stride=4)
    with pytest.raises(ValueError, match="shape"):
        mix_features(dst, src[:, :3], (0, 0, 0), (4, 4, 1), stride=4)
    with pytest.raises(ValueError, match="outside"):
        mix_features(dst, src, (12, 0, 0), (8, 4, 1), stride=4)


def test_mixed_patch_features_from_cache_match_mix_of_crops(teacher):
    """Cropping then mixing cached features = mixing the cropped full-volume features with the image box."""
    a, b = _volume((1, 16, 16, 4), seed=6), _volume((1, 16, 16, 4), seed=7)
    cache = TeacherFeatureCache(teacher)
    fa, fb = cache.get("a", a), cache.get("b", b)
    mixed = mix_features(cache.crop("a", (4, 0, 0), (8, 12, 4)), cache.crop("b", (0, 4, 0), (8, 12, 4)),
                         (4, 4, 1), (4, 8, 2), 4)
    expected = fa[:, 1:3, 0:3, :].float().clone()
    expected[:, 1:2, 1:3, 1:3] = fb[:, 0:2, 1:4, :][:, 1:2, 1:3, 1:3].float()
    assert torch.equal(mixed, expected)
