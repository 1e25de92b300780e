"""Tests of the DINO-Mix losses (dinomix_core.losses)."""

import math

import pytest
import torch
from monai.losses import DiceCELoss

from dinomix_core.losses import (
    DICE_CE_KWARGS, fkd_loss, masked_dice_ce, region_dice_ce, region_dice_ce_terms, supervised_loss,
)


def _data(seed=0, b=2, c=5, shape=(6, 5, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *shape, generator=g, dtype=torch.float64)
    target = torch.randint(0, c, (b, *shape), generator=g)
    return logits, target


# ---------------------------------------------------------------- Dice + CE
def test_supervised_loss_is_monai_dicece_with_chosen_settings():
    loss = supervised_loss()
    assert isinstance(loss, DiceCELoss)
    assert DICE_CE_KWARGS["include_background"] is False and DICE_CE_KWARGS["batch"] is True
    logits, target = _data()
    ref = DiceCELoss(**DICE_CE_KWARGS)(logits.float(), target[:, None])
    assert float(loss(logits.float(), target[:, None])) == pytest.approx(float(ref), abs=1e-7)


@pytest.mark.parametrize("include_background,batch", [(False, True), (True, False), (True, True), (False, False)])
def test_masked_dice_ce_equals_monai_unweighted(include_background, batch):
    logits, target = _data(seed=1)
    kw = dict(DICE_CE_KWARGS, include_background=include_background, batch=batch)
    ref = DiceCELoss(**kw, lambda_dice=0.7, lambda_ce=1.3)(logits.float(), target[:, None])
    ours = masked_dice_ce(logits, target, None, 0.7, 1.3, include_background=include_background, batch=batch)
    ones = masked_dice_ce(logits, target, torch.ones(target.shape), 0.7, 1.3, include_background, batch)
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)
    assert float(ones) == pytest.approx(float(ref), abs=1e-6)


def test_masked_dice_ce_default_equals_supervised_loss():
    logits, target = _data(seed=2, c=14, shape=(8, 8, 4))
    ref = supervised_loss()(logits.float(), target[:, None])
    assert float(masked_dice_ce(logits, target)) == pytest.approx(float(ref), abs=1e-6)
    # target/weight with a channel dim of 1 are accepted
    assert float(masked_dice_ce(logits, target[:, None], torch.ones(2, 1, 8, 8, 4))) == pytest.approx(
        float(masked_dice_ce(logits, target)), abs=1e-7
    )


def test_masked_dice_ce_hand_computed():
    # 2 classes, zero logits -> probs 0.5 everywhere; all 8 voxels are class 1.
    logits = torch.zeros(1, 2, 2, 2, 2)
    target = torch.ones(1, 2, 2, 2, dtype=torch.long)
    ce = math.log(2.0)
    s = 1e-5
    dice_fg = 1 - (2 * 4 + s) / (8 + 4 + s)  # intersection 8*0.5, |g| 8, |p| 4
    assert float(masked_dice_ce(logits, target)) == pytest.approx(dice_fg + ce, abs=1e-6)
    # background included: class 0 has intersection 0, |g| 0, |p| 4
    dice_bg = 1 - s / (4 + s)
    got = masked_dice_ce(logits, target, include_background=True)
    assert float(got) == pytest.approx((dice_fg + dice_bg) / 2 + ce, abs=1e-6)
    # half the voxels weighted 0: CE unchanged (mean over weight), Dice on the 4 remaining voxels
    w = torch.zeros(1, 2, 2, 2)
    w[..., 0] = 1.0
    dice_half = 1 - (2 * 2 + s) / (4 + 2 + s)
    assert float(masked_dice_ce(logits, target, w)) == pytest.approx(dice_half + ce, abs=1e-6)
    # all weights 0 -> 0 (Dice (0 + s) / (0 + s) = 1, CE 0)
    assert float(masked_dice_ce(logits, target, torch.zeros(1, 2, 2, 2))) == pytest.approx(0.0, abs=1e-7)


def test_masked_dice_ce_ignores_zero_weight_voxels():
    logits, target = _data(seed=3)
    weight = (torch.rand(target.shape, generator=torch.Generator().manual_seed(4)) > 0.4).float()
    base = masked_dice_ce(logits, target, weight)
    changed = torch.where(weight[:, None] > 0, logits, torch.randn_like(logits) * 10)
    other_target = torch.where(weight > 0, target, (target + 1) % logits.shape[1])
    assert float(masked_dice_ce(changed, other_target, weight)) == pytest.approx(float(base), abs=1e-10)
    # the gradient at zero-weight voxels is exactly 0
    x = logits.clone().requires_grad_(True)
    masked_dice_ce(x, target, weight).backward()
    assert float(x.grad[(weight[:, None] == 0).expand_as(x)].abs().max()) == 0.0
    assert float(x.grad.abs().max()) > 0


def test_masked_dice_ce_box_weight_equals_monai_on_crop():
    logits, target = _data(seed=5, shape=(8, 6, 4))
    w = torch.zeros(target.shape)
    w[:, 2:6, 1:4, 1:3] = 1.0
    crop = (slice(None), slice(None), slice(2, 6), slice(1, 4), slice(1, 3))
    ref = supervised_loss()(logits[crop].float(), target[:, None][crop])
    assert float(masked_dice_ce(logits, target, w)) == pytest.approx(float(ref), abs=1e-6)


def test_masked_dice_ce_validation_and_dtype():
    logits, target = _data()
    with pytest.raises(ValueError):
        masked_dice_ce(logits, target[:, :3])
    with pytest.raises(ValueError):
        masked_dice_ce(logits, target, torch.ones(2, 6, 5, 3))
    out = masked_dice_ce(logits.half(), target)
    assert out.dtype == torch.float32 and out.ndim == 0



def test_region_dice_ce_terms_exact_values():
    # 2 voxels, 2 classes, logits 0 -> p = 0.5 everywhere; target (0, 1)
    logits, target = torch.zeros(1, 2, 2, 1, 1), torch.tensor([[[[0]], [[1]]]])
    regions = [torch.ones(1, 2, 1, 1, dtype=torch.bool), torch.tensor([[[[True]], [[False]]]]),
               torch.zeros(1, 2, 1, 1, dtype=torch.bool)]
    got = region_dice_ce_terms(logits, target, None, regions)
    ln2, s = math.log(2.0), 1e-5
    # all voxels: class 1 has I = 0.5, G = 1, P = 1; the first voxel only: I = 0, G = 0, P = 0.5; empty region: 0
    expected = [1 - (1 + s) / (2 + s) + ln2, 1 - s / (0.5 + s) + ln2, 0.0]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    # a voxel weight w enters the CE as w and the Dice as MONAI's loss on p * w and one_hot * w
    w = torch.tensor([[[[1.0]], [[0.5]]]])
    one = region_dice_ce_terms(logits, target, w, regions[:1])
    assert float(one[0]) == pytest.approx(1 - (2 * 0.125 + s) / (0.5 + 0.75 + s) + ln2, abs=1e-6)


@pytest.mark.parametrize("include_background, batch", [(False, True), (False, False), (True, True), (True, False)])
def test_region_dice_ce_terms_equal_masked_dice_ce_per_region(include_background, batch):
    torch.manual_seed(3)
    logits = torch.randn(3, 5, 6, 5, 4, requires_grad=True)
    target, weight = torch.randint(0, 5, (3, 6, 5, 4)), torch.rand(3, 6, 5, 4)
    regions = [torch.rand(3, 6, 5, 4) > 0.5, torch.zeros(3, 6, 5, 4, dtype=torch.bool)]
    regions.append(~regions[0])
    kw = dict(include_background=include_background, batch=batch)
    got = region_dice_ce_terms(logits, target, weight, regions, **kw)
    ref = torch.stack([masked_dice_ce(logits, target, weight * r.float(), **kw) for r in regions])
    assert torch.allclose(got, ref, atol=1e-6) and float(got[1]) == 0.0
    coef = torch.tensor([1.0, 2.0, 0.3])
    g_got, = torch.autograd.grad((coef * got).sum(), logits)
    g_ref, = torch.autograd.grad((coef * ref).sum(), logits)
    assert torch.allclose(g_got, g_ref, atol=1e-7)


def test_region_dice_ce_terms_rejects_bad_input():
    logits, target = torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="at least one"):
        region_dice_ce_terms(logits, target, None, [])
    with pytest.raises(ValueError, match="region must have shape"):
        region_dice_ce_terms(logits, target, None, [torch.ones(1, 2, 2, 3, dtype=torch.bool)])


# ---------------------------------------------------------------- FKD
def test_a_common_weight_factor_cancels_in_masked_dice_ce():
    """Why the consistency ramp multiplies a loss, not voxel weights: scaling all weights by 0.01 changes little."""
    torch.manual_seed(0)
    logits, target = torch.randn(1, 4, 6, 6, 3), torch.randint(0, 4, (1, 6, 6, 3))
    conf = (torch.rand(1, 6, 6, 3) > 0.3).float()
    full, scaled = float(masked_dice_ce(logits, target, conf)), float(masked_dice_ce(logits, target, 0.01 * conf))
    assert abs(scaled - full) / full < 0.2  # not 0.01 * full


def test_region_dice_ce_scores_only_its_region():
    torch.manual_seed(1)
    logits, target = torch.randn(2, 3, 4, 4, 2), torch.randint(0, 3, (2, 4, 4, 2))
    weight = torch.rand(2, 4, 4, 2)
    region = torch.zeros(2, 4, 4, 2, dtype=torch.bool)
    region[0, :2] = True
    got = region_dice_ce(logits, target, weight, region)
    assert torch.allclose(got, masked_dice_ce(logits, target, weight * region.float()))
    # voxels outside the region do not matter
    other = logits.clone()
    other[:, :, 2:] = 5.0
    other[1] = -3.0
    assert torch.allclose(region_dice_ce(other, target, weight, region), got)
    # an empty region is a zero that keeps the graph; the loss is linear in an outer factor
    logits.requires_grad_(True)
    zero = region_dice_ce(logits, target, weight, torch.zeros_like(region))
    assert float(zero) == 0.0 and zero.requires_grad
    total = region_dice_ce(logits, target, weight, region) + 0.25 * region_dice_ce(logits, target, weight, ~region)
    total.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_fkd_identical_orthogonal_opposite():
    t = torch.randn(2, 8, 3, 3, 2)
    assert float(fkd_loss(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
    assert float(fkd_loss(3.0 * t, t)) == pytest.approx(0.0, abs=1e-6)  # scale-invariant
    assert float(fkd_loss(-t, t)) == pytest.approx(2.0, abs=1e-6)
    e1 = torch.zeros(1, 4, 2, 2, 2)
    e1[:, 0] = 1.0
    e2 = torch.zeros(1, 4, 2, 2, 2)
    e2[:, 1] = 2.0
    assert float(fkd_loss(e1, e2)) == pytest.approx(1.0, abs=1e-7)


def test_fkd_resizes_student_to_teacher_grid():
    # a spatially constant student stays constant after trilinear resizing
    vec = torch.tensor([1.0, 2.0, -1.0])
    student = vec.view(1, 3, 1, 1, 1).expand(1, 3, 2, 2, 1).contiguous()
    teacher = vec.view(1, 3, 1, 1, 1).expand(1, 3, 4, 4, 3).contiguous()
    assert float(fkd_loss(student, teacher)) == pytest.approx(0.0, abs=1e-6)
    teacher_half = teacher.clone()
    teacher_half[:, :, :2] = -teacher_half[:, :, :2]  # opposite on half the positions
    assert float(fkd_loss(student, teacher_half)) == pytest.approx(1.0, abs=1e-6)
    # mask selects the opposite half only -> 2; the aligned half only -> 0
    mask = torch.zeros(1, 4, 4, 3)
    mask[:, :2] = 1
    assert float(fkd_loss(student, teacher_half, mask)) == pytest.approx(2.0, abs=1e-6)
    assert float(fkd_loss(student, teacher_half, 1 - mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(fkd_loss(student, teacher_half, torch.zeros(1, 4, 4, 3))) == 0.0


def test_fkd_grad_and_validation():
    s = torch.randn(1, 4, 2, 2, 2, requires_grad=True)
    t = torch.randn(1, 4, 4, 4, 2, requires_grad=True)
    fkd_loss(s, t).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None  # teacher is a detached target
    with pytest.raises(ValueError):
        fkd_loss(torch.randn(1, 3, 2, 2, 2), torch.randn(1, 4, 2, 2, 2))
    with pytest.raises(ValueError):
        fkd_loss(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2))


@pytest.mark.parametrize("freq, floor, expected", [
    # DHC: log(f_max / f_c) / max -> [0, 0.5, 1] for frequencies 1, 0.1, 0.01; floor 0.1 -> [0.1, 0.55, 1]; mean 1
    ([1.0, 0.1, 0.01], 0.1, [0.1 / 0.55, 0.55 / 0.55, 1.0 / 0.55]),
    ([1.0, 0.1, 0.01], 0.0, [0.0, 1.0, 2.0]),
    ([0.5, 0.5], 0.1, [1.0, 1.0]),  # balanced classes: all equal
    ([1.0, 0.0], 1.0, [1.0, 1.0]),  # floor 1: no weighting
])
def test_distdw_weights(freq, floor, expected):
    from dinomix_core.losses import distdw_weights

    assert distdw_weights(torch.tensor(freq), floor).tolist() == pytest.approx(expected, abs=1e-4)


def test_class_weighted_terms_equal_the_weighted_definitions():
    """CE = sum(w cw_t ce) / sum(w cw_t) (torch's weighted CE); Dice = cw-weighted mean over the organs."""
    from dinomix_core.losses import region_dice_ce_terms

    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4, 2), torch.randint(0, 3, (2, 4, 4, 2))
    region = torch.ones(2, 4, 4, 2, dtype=torch.bool)
    cw = torch.tensor([0.5, 1.0, 2.0])
    got = region_dice_ce_terms(logits, target, None, [region], cw)[0]
    ce = torch.nn.functional.cross_entropy(logits, target, weight=cw)
    p = torch.softmax(logits, 1)
    dice = []
    for c in (1, 2):
        g = (target == c).float()
        dice.append(1 - (2 * (p[:, c] * g).sum() + 1e-5) / (g.sum() + p[:, c].sum() + 1e-5))
    want = ce + (1.0 * dice[0] + 2.0 * dice[1]) / 3.0
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert float(region_dice_ce_terms(logits, target, None, [region], torch.ones(3))[0]) == pytest.approx(
        float(region_dice_ce_terms(logits, target, None, [region])[0]), rel=1e-6)


@pytest.mark.parametrize("scores, floor, expected", [
    ([10.986, 42.24, 0.5], 0.1, [0.6937, 2.0765, 0.2298]),  # / max, floor, mean 1
    ([1.0, 1.0], 0.1, [1.0, 1.0]),
    ([0.0, 0.0, 0.0], 0.5, [1.0, 1.0, 1.0]),  # all zero: no weighting
    ([0.0, 2.0], 0.0, [0.0, 2.0]),
])
def test_floor_mean_one(scores, floor, expected):
    from dinomix_core.losses import floor_mean_one

    assert floor_mean_one(torch.tensor(scores), floor).tolist() == pytest.approx(expected, abs=1e-4)


_TARGET = [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("num_classes, predictions, mask, expected", [
    # first measurement: no learning history yet, every score 1
    (3, [[0, 0, 1, 0, 2, 2]], None, [1.0, 1.0, 1.0]),
    # Dice 0.8 / 0.67 / 1 -> 0.67 / 0 (clamped to 0.01) / 1 with accumulate_iters 2: class 1 collapses and scores
    # highest, class 0 unlearns a little, class 2 neither learns nor unlearns (ratio 1) at EMA(1 - d) = 0.5
    (3, [[0, 0, 1, 0, 2, 2], [0, 0, 0, 0, 2, 2]], None, [10.98647, 42.24058, 0.5]),
    # both classes improve (unlearn 0): low scores; class 3 is never present: never updated, score 1
    (4, [[0, 0, 1, 0, 2, 2], [0, 0, 1, 1, 2, 2]], None, [0.026869, 0.021528, 0.5, 1.0]),
    # class 2 collapses outside the mask, so it is never measured (score 1); classes 0 and 1 hold Dice 0.8 / 0.67
    # (ratio 1) at EMA(1 - d) = 0.6 / 0.67
    (3, [[0, 0, 1, 0, 2, 2], [0, 0, 1, 0, 0, 0]], [True, True, True, True, False, False], [0.6, 2 / 3, 1.0]),
])
def test_difficulty_tracker_scores(num_classes, predictions, mask, expected):
    """DHC's DiffDW: (unlearn / learn) ** (1/5) * EMA(1 - Dice), by hand for these label vectors."""
    from dinomix_core.losses import DifficultyTracker

    tracker = DifficultyTracker(num_classes, accumulate_iters=2)
    m = None if mask is None else torch.tensor(mask)
    for p in predictions:
        scores = tracker.update(torch.tensor(p), torch.tensor(_TARGET), m)
    assert scores.tolist() == pytest.approx(expected, rel=1e-4)


def test_difficulty_tracker_state_round_trip_and_errors():
    from dinomix_core.losses import DifficultyTracker

    a = DifficultyTracker(3, accumulate_iters=2)
    a.update(torch.tensor([0, 0, 1, 0, 2, 2]), torch.tensor(_TARGET))
    b = DifficultyTracker(3, accumulate_iters=2)
    b.load_state_dict(a.state_dict())
    step = torch.tensor([0, 0, 0, 0, 2, 2]), torch.tensor(_TARGET)
    assert torch.equal(a.update(*step), b.update(*step))
    with pytest.raises(ValueError, match="classes"):
        DifficultyTracker(4).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="one shape"):
        a.update(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    for kwargs in ({"num_classes": 1}, {"num_classes": 3, "accumulate_iters": 0}, {"num_classes": 3, "alpha": 0.0},
                   {"num_classes": 3, "min_dice": 0.0}):
        with pytest.raises(ValueError):
            DifficultyTracker(**kwargs)
