"""DinoMixConfig (validation, serialisation, presets) and the DINO-Mix student network (arXiv 2602.07819).

Everything here is pure CPU and takes well under a second per test.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dinomix_core.config import NUM_CLASSES, ORGANS, PRESETS, DinoMixConfig, get_preset
from dinomix_core.networks import DinoMixStudent, build_student

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- validation
BAD_FIELDS = [
    ("spatial_dims", 2),
    ("in_channels", 0),
    ("out_channels", 1),
    ("label_names", ("liver",)),  # 1 name for 13 organ channels
    ("channels", (8,)),  # one stage only
    ("strides", ((2, 2, 1), (2, 2, 2))),  # 2 strides for 4 stages
    ("strides", ((2, 2), (2, 2, 2), (2, 2, 2))),  # a stride that is not (x, y, z)
    ("fkd_stage", 4),
    ("fkd_stage", -1),
    ("patch_size", (96, 96)),
    ("patch_size", (0, 96, 32)),
    ("patch_size", (90, 96, 32)),  # 90 not divisible by the total x stride 8
    ("patch_size", (96, 96, 30)),  # 30 not divisible by the total z stride 4
    ("hu_range", (275.0, -75.0)),
    ("hu_range", (100.0, 100.0)),
    ("ema_momentum", 1.0),
    ("ema_momentum", -0.1),
    ("freq_momentum", 1.0),
    ("alignment_momentum", 1.0),
    ("alignment_momentum", -0.1),
    ("confidence_threshold", 1.5),
    ("confidence_threshold", -0.01),
    ("pic_schedule", "exponential"),
    ("pic_schedule_fraction", 0.0),
    ("pic_schedule_fraction", 1.5),
    ("rampup_fraction", -0.1),
    ("rampup_fraction", 1.1),
    ("pic_box_fraction", (0.0, 0.5, 0.5)),
    ("pic_box_fraction", (0.5, 0.5, 1.5)),
    ("pic_box_fraction", (0.5, 0.5)),
    ("optimizer", "adam"),
    ("max_iterations", 0),
    ("batch_size_labeled", 0),
    ("batch_size_unlabeled", -1),
    ("teacher_upsample", 0),
    ("learning_rate", 0.0),
    ("learning_rate", -1e-3),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in BAD_FIELDS])
def test_bad_field_raises_value_error(field, value):
    with pytest.raises(ValueError):
        DinoMixConfig(**{field: value})
    # the same through replace() and from_dict(): every constructor path validates
    with pytest.raises(ValueError):
        DinoMixConfig().replace(**{field: value})
    d = DinoMixConfig().to_dict()
    d[field] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ValueError):
        DinoMixConfig.from_dict(d)


# Settings the validator does not check yet although a bad value only shows up late (sw_overlap=1 fails at
# inference, after training), silently inverts a loss term (negative weights), or builds a degenerate network
# (a zero-channel stage builds without error). See the report for the proposed validate() additions.
UNVALIDATED_BAD_FIELDS = [
    ("sw_overlap", 1.0),
    ("sw_overlap", -0.1),
    ("fkd_weight", -0.5),
    ("consistency_weight", -1.0),
    ("dropout", 1.5),
    ("dropout", -0.1),
    ("teacher_batch_size", 0),
    ("val_interval", -1),
    ("channels", (0, 8, 16, 32)),
    ("num_res_units", -1),
    ("momentum", 1.5),
    ("weight_decay", -1e-3),
    ("sw_roi_size", (128, -1, 64)),
    ("sw_roi_size", (128, 128)),
]


@pytest.mark.parametrize("field,value", UNVALIDATED_BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in UNVALIDATED_BAD_FIELDS])
def test_bad_value_rejected_at_construction_not_later(field, value):
    with pytest.raises(ValueError, match=field):
        DinoMixConfig(**{field: value})


def test_boundary_values_are_accepted():
    c = DinoMixConfig(
        ema_momentum=0.0, freq_momentum=0.0, confidence_threshold=1.0, rampup_fraction=0.0, pic_schedule_fraction=1.0,
        pic_box_fraction=(1.0, 1.0, 1.0), batch_size_unlabeled=0, max_iterations=1, pic_schedule="step",
    )
    assert c.batch_size_unlabeled == 0 and c.pic_box_fraction == (1.0, 1.0, 1.0)


def test_validation_message_names_the_problem():
    with pytest.raises(ValueError, match="divisible by the total stride"):
        DinoMixConfig(patch_size=(90, 96, 32))
    with pytest.raises(ValueError, match="label_names has 1 names but out_channels=14"):
        DinoMixConfig(label_names=("liver",))


def test_unknown_fields_and_presets_raise():
    with pytest.raises(ValueError, match="unknown DinoMixConfig field"):
        DinoMixConfig().replace(learning_rat=1e-3)
    with pytest.raises(ValueError, match="unknown DinoMixConfig field"):
        DinoMixConfig.from_dict({**DinoMixConfig().to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("gpu")


# ---------------------------------------------------------------------------------------------- serialisation
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_dict_from_dict_round_trip(name):
    c = get_preset(name, teacher="/models/dinov3-vits16", seed=7, use_pic=False)
    d = c.to_dict()
    # JSON-safe: only lists, no tuples, and the JSON text gives the same dict back
    assert isinstance(d["strides"], list) and isinstance(d["strides"][0], list)
    assert json.loads(json.dumps(d)) == d
    back = DinoMixConfig.from_dict(d)
    assert back == c
    assert hash(back) == hash(c)
    # lists from JSON were normalised to (nested) tuples
    assert back.strides == tuple(tuple(s) for s in c.strides) and isinstance(back.strides[0], tuple)
    assert isinstance(back.label_names, tuple) and back.label_names == ORGANS
    assert DinoMixConfig.from_dict(json.loads(c.to_json())) == c


# ---------------------------------------------------------------------------------------------- presets
def test_cpu_preset_values():
    c = get_preset("cpu")
    assert c.preset == "cpu"
    assert c.out_channels == NUM_CLASSES == 14 and len(c.label_names) == 13
    assert c.channels == (8, 16, 32, 64)
    assert c.patch_size == (96, 96, 32)
    assert c.strides == ((2, 2, 1), (2, 2, 2), (2, 2, 2))
    assert (c.batch_size_labeled, c.batch_size_unlabeled) == (1, 1)
    assert c.teacher == "none" and not c.fkd_enabled
    assert c.replace(teacher="/some/dinov3").fkd_enabled
    assert not c.replace(teacher="/some/dinov3", use_fkd=False).fkd_enabled
    # DINO-Mix's semi-supervised recipe, chosen on the SYNTHETIC benchmark's validation split
    assert (c.consistency_weight, c.rampup_fraction, c.confidence_threshold, c.warmup_fraction) == (1.0, 1.0, 0.8, 0.0)
    assert (c.class_weighting, c.pic_shared_box, c.pic_box_fraction) == ("distdw", True, (0.67, 0.67, 0.67))
    assert c.clean_labeled_loss and c.pseudo_label_lcc


def test_paper_preset_values():
    c = get_preset("paper")
    assert c.preset == "paper"
    assert c.patch_size == (128, 128, 64)  # (x, y, z): 128 x 128 in-plane, 64 axial slices
    assert c.optimizer == "sgd"
    assert c.learning_rate == pytest.approx(3e-2)
    assert c.momentum == pytest.approx(0.9)
    assert (c.batch_size_labeled, c.batch_size_unlabeled) == (2, 2)
    assert c.channels == (32, 64, 128, 256, 512)
    assert len(c.strides) == len(c.channels) - 1
    # the baselines' settings (DHC, BCP): the recipe was never measured on this preset
    assert (c.consistency_weight, c.rampup_fraction, c.confidence_threshold) == (0.1, 0.4, 0.7)
    assert (c.class_weighting, c.pic_shared_box, c.pic_box_fraction) == ("none", False, (0.5, 0.5, 0.5))
    assert not (c.clean_labeled_loss or c.pseudo_label_lcc)


def test_get_preset_overrides_and_none_is_ignored():
    c = get_preset("paper", max_iterations=10, seed=None)
    assert c.max_iterations == 10
    assert c.seed == DinoMixConfig().seed  # None means "keep the preset's value"
    assert c.patch_size == (128, 128, 64)


def test_replace_does_not_mutate():
    c = get_preset("cpu")
    before = c.to_dict()
    c2 = c.replace(max_iterations=5, patch_size=(64, 64, 16))
    assert c.to_dict() == before
    assert (c.max_iterations, c.patch_size) == (300, (96, 96, 32))
    assert (c2.max_iterations, c2.patch_size) == (5, (64, 64, 16))
    assert c2 is not c
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_iterations = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        c.replace(patch_size=(90, 96, 32))
    assert c.to_dict() == before


# ---------------------------------------------------------------------------------------------- network
def test_build_student_output_shapes_cpu_preset():
    torch.manual_seed(0)
    c = get_preset("cpu", patch_size=(32, 32, 16))
    net = build_student(c).eval()
    x = torch.rand(2, 1, 32, 32, 16)
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 14, 32, 32, 16)
    assert torch.isfinite(logits).all()
    assert net.projection is None
    with pytest.raises(RuntimeError, match="projection head"):
        net(x, return_features=True)


def test_build_student_projected_features_shape():
    torch.manual_seed(0)
    c = get_preset("cpu")
    net = build_student(c, teacher_channels=32).eval()
    x = torch.rand(1, 1, 32, 32, 16)
    with torch.no_grad():
        logits, proj = net(x, return_features=True)
    assert logits.shape == (1, 14, 32, 32, 16)
    # fkd_stage=2 sits after strides (2,2,1) and (2,2,2): cumulative stride (4, 4, 2)
    assert proj.shape == (1, 32, 8, 8, 8)
    # the logits do not depend on whether features are requested
    with torch.no_grad():
        assert torch.equal(net(x), logits)


def test_projection_head_runs_on_the_requested_feature_grid():
    torch.manual_seed(0)
    net = build_student(get_preset("cpu", channels=(4, 8, 16, 32)), teacher_channels=6).eval()
    x = torch.rand(1, 1, 32, 32, 16)
    stage = []
    net.encoder[net.fkd_stage].register_forward_hook(lambda _m, _i, out: stage.append(out))
    with torch.no_grad():
        logits, proj = net(x, return_features=True, feature_size=(2, 2, 16))
        full_logits, full = net(x, return_features=True, feature_size=(8, 8, 8))  # the stage's own grid
    assert proj.shape == (1, 6, 2, 2, 16) and full.shape == (1, 6, 8, 8, 8)
    # the stage features are resized to the teacher grid first, then projected; the logits do not change
    resized = torch.nn.functional.interpolate(stage[0], size=(2, 2, 16), mode="trilinear", align_corners=False)
    assert torch.allclose(proj, net.projection(resized), atol=1e-6)
    assert torch.equal(logits, full_logits) and torch.equal(full, net.projection(stage[1]))


def test_build_student_non_cubic_input_and_fkd_stage_zero():
    c = get_preset("cpu", fkd_stage=0, channels=(4, 8, 16, 32))
    net = build_student(c, teacher_channels=6).eval()
    with torch.no_grad():
        logits, proj = net(torch.rand(1, 1, 16, 24, 8), return_features=True)
    assert logits.shape == (1, 14, 16, 24, 8)
    assert proj.shape == (1, 6, 16, 24, 8)  # stage 0 is at full resolution


def test_student_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = build_student(get_preset("cpu", channels=(4, 8, 16, 32)), teacher_channels=8)
    logits, proj = net(torch.rand(1, 1, 16, 16, 8), return_features=True)
    (logits.mean() + proj.mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing and all(n.startswith("refiner.") for n in missing)  # the click refiner has its own forward
    net.refiner(torch.rand(1, 5, 16, 16, 8)).mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=(8,), strides=()),
        dict(channels=(8, 16, 32), strides=((2, 2, 2),)),
        dict(fkd_stage=4),
        dict(fkd_stage=-1),
        dict(teacher_channels=0),
    ],
)
def test_student_constructor_value_errors(kwargs):
    with pytest.raises(ValueError):
        DinoMixStudent(**kwargs)


def test_parameter_count_cpu_preset():
    net = build_student(get_preset("cpu", refiner=False))
    n = sum(p.numel() for p in net.parameters())
    print(f"cpu preset student: {n} parameters")
    assert 200_000 <= n <= 300_000  # 242,173 with MONAI 1.5 blocks
    n_refiner = sum(p.numel() for p in build_student(get_preset("cpu")).refiner.parameters())
    assert n_refiner == 179_400  # the click refiner: channels (8, 16, 32, 32), 5 inputs, 1 output
    n_fkd = sum(p.numel() for p in build_student(get_preset("cpu", refiner=False), teacher_channels=384).parameters())
    # projection head on the 32-channel stage: 1x1x1 conv 32->32 (+ bias, PReLU) and 32->384 (+ bias)
    assert n_fkd - n == (32 * 32 + 32 + 1) + (32 * 384 + 384)


def test_same_seed_same_weights():
    c = get_preset("cpu", channels=(4, 8, 16, 32))
    torch.manual_seed(3)
    a = build_student(c).state_dict()
    torch.manual_seed(3)
    b = build_student(c).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("patch, roi, expected", [
    ((96, 96, 32), (128, 128, 64), (128, 128, 64)),
    ((96, 96, 32), (0, 0, 0), (96, 96, 32)),  # 0: the training patch
    ((96, 96, 32), (100, 64, 70), (104, 96, 72)),  # at least the patch, rounded up to the stride (8, 8, 4)
    ((128, 128, 64), (128, 128, 64), (128, 128, 64)),
])
def test_inference_roi(patch, roi, expected):
    assert DinoMixConfig(patch_size=patch, sw_roi_size=roi).inference_roi == expected
