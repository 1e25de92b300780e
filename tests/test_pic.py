"""Tests of the PIC curriculum, box sampling and CutMix (dinomix_core.pic)."""

import math

import pytest
import torch

from dinomix_core.pic import (
    Box,
    ClassFrequencyTracker,
    PICMixer,
    box_mask,
    box_size_from_fraction,
    curriculum_distribution,
    cutmix,
    mix_batch,
    mix_pair,
    sample_box,
    schedule_progress,
)

FREQS = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
# inverse foreground frequencies 10/3, 20/3, 20 (sum 30) -> q_tail = [1/9, 2/9, 2/3]


def _close(t, expected, tol=1e-12):
    assert torch.allclose(t.double(), torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=0), (t, expected)


# ---------------------------------------------------------------- schedule / curriculum
def test_schedule_values():
    assert schedule_progress(0.0) == 0.0
    assert schedule_progress(0.4, "linear", 0.8) == pytest.approx(0.5, abs=1e-15)
    assert schedule_progress(0.8, "linear", 0.8) == 1.0
    assert schedule_progress(1.0, "linear", 0.8) == 1.0
    assert schedule_progress(-0.1, "linear", 0.8) == 0.0
    assert schedule_progress(0.4, "cosine", 0.8) == pytest.approx(0.5, abs=1e-15)
    assert schedule_progress(0.2, "cosine", 0.8) == pytest.approx(0.5 - 0.5 * math.sqrt(0.5), abs=1e-15)
    assert schedule_progress(0.8, "cosine", 0.8) == pytest.approx(1.0, abs=1e-15)
    assert schedule_progress(0.79, "step", 0.8) == 0.0
    assert schedule_progress(0.8, "step", 0.8) == 1.0
    assert schedule_progress(0.5, "linear", 1.0) == 0.5


def test_schedule_validation():
    with pytest.raises(ValueError):
        schedule_progress(0.5, "exp")
    with pytest.raises(ValueError):
        schedule_progress(0.5, "linear", 0.0)


def test_curriculum_start_middle_end():
    _close(curriculum_distribution(FREQS, 0.0), [1 / 9, 2 / 9, 2 / 3])
    # linear, s = 0.4 / 0.8 = 0.5: 0.5 * q + 0.5 / 3
    _close(curriculum_distribution(FREQS, 0.4), [2 / 9, 5 / 18, 1 / 2])
    _close(curriculum_distribution(FREQS, 0.8), [1 / 3, 1 / 3, 1 / 3])
    _close(curriculum_distribution(FREQS, 1.0), [1 / 3, 1 / 3, 1 / 3])
    # step: tail distribution until the end of the schedule
    _close(curriculum_distribution(FREQS, 0.7, schedule="step"), [1 / 9, 2 / 9, 2 / 3])


def test_curriculum_power_and_floor():
    # power 2: 1/f^2 = 100/9, 400/9, 400 -> sum 4100/9 -> [1/41, 4/41, 36/41]
    _close(curriculum_distribution(FREQS, 0.0, start_power=2.0), [1 / 41, 4 / 41, 36 / 41])
    # power 0: uniform throughout
    _close(curriculum_distribution(FREQS, 0.0, start_power=0.0), [1 / 3, 1 / 3, 1 / 3])
    # an unseen class is floored at 1e-6 and dominates the tail distribution: weights 1e6 vs 1/0.5 = 2
    p = curriculum_distribution(torch.tensor([0.5, 0.5, 0.0]), 0.0)
    _close(p, [2 / (2 + 1e6), 1e6 / (2 + 1e6)])
    assert abs(float(p.sum()) - 1.0) < 1e-12
    with pytest.raises(ValueError):
        curriculum_distribution(torch.tensor([0.5, -0.1, 0.6]), 0.0)
    with pytest.raises(ValueError):
        curriculum_distribution(FREQS, 0.0, start_power=-1.0)


# ---------------------------------------------------------------- tracker
def test_tracker_ema_two_updates():
    tr = ClassFrequencyTracker(4, momentum=0.5)
    _close(tr.frequencies, [0.25] * 4)
    tr.update(torch.tensor([0, 0, 1, 2]))
    _close(tr.frequencies, [0.5, 0.25, 0.25, 0.0])  # first update initialises directly
    tr.update(torch.tensor([[1, 1], [1, 3]]))  # fractions [0, .75, 0, .25]
    _close(tr.frequencies, [0.25, 0.5, 0.125, 0.125])
    assert tr.num_updates == 2


def test_tracker_mask_state_and_validation():
    tr = ClassFrequencyTracker(3, momentum=0.9)
    labels = torch.tensor([0, 1, 2, 2, 0])
    tr.update(labels, weight_mask=torch.tensor([False, True, True, False, False]))
    _close(tr.frequencies, [0.0, 0.5, 0.5])
    tr.update(labels, weight_mask=torch.zeros(5))  # nothing counted: unchanged
    _close(tr.frequencies, [0.0, 0.5, 0.5])
    assert tr.num_updates == 1
    weighted = ClassFrequencyTracker(3)
    weighted.update(torch.tensor([0, 1, 2]), weight_mask=torch.tensor([2.0, 1.0, 1.0]))  # float weights count
    _close(weighted.frequencies, [0.5, 0.25, 0.25])
    other = ClassFrequencyTracker(3)
    other.load_state_dict(tr.state_dict())
    _close(other.frequencies, [0.0, 0.5, 0.5])
    assert other.momentum == 0.9 and other.num_updates == 1
    with pytest.raises(ValueError):
        ClassFrequencyTracker(4).load_state_dict(tr.state_dict())
    with pytest.raises(ValueError):
        tr.update(torch.tensor([0, 3]))
    with pytest.raises(ValueError):
        ClassFrequencyTracker(3, momentum=1.0)


# ---------------------------------------------------------------- boxes
def _label_with_small_organ():
    lab = torch.zeros(16, 12, 8, dtype=torch.long)
    lab[:10, :, :] = 1  # large organ
    lab[13, 10, 7] = 3  # one voxel near the far corner
    lab[2:4, 1:3, 0:2] = 2
    return lab


def test_sample_box_contains_class_aligned_inside():
    lab = _label_with_small_organ()
    probs = torch.tensor([0.2, 0.3, 0.5])
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        start, size, cls = sample_box(lab, probs, (8, 6, 4), g, align=(4, 2, 1))
        seen.add(cls)
        assert cls in (1, 2, 3)
        assert size == (8, 6, 4)
        assert all(s % a == 0 for s, a in zip(start, (4, 2, 1)))
        assert all(0 <= s and s + z <= n for s, z, n in zip(start, size, lab.shape))
        region = lab[start[0] : start[0] + 8, start[1] : start[1] + 6, start[2] : start[2] + 4]
        assert bool((region == cls).any())
    assert seen == {1, 2, 3}
    # all mass on the one-voxel class 3 at (13, 10, 7): the only aligned box containing it
    for _ in range(5):
        box = sample_box(lab, torch.tensor([0.0, 0.0, 1.0]), (8, 6, 4), g, align=(4, 2, 1))
        assert box == Box((8, 6, 4), (8, 6, 4), 3)


def test_sample_box_far_corner_and_size_snapping():
    lab = torch.zeros(10, 10, 6, dtype=torch.long)
    lab[9, 9, 5] = 4  # last voxel; shape not a multiple of align 4 in x/y
    g = torch.Generator().manual_seed(1)
    # class 4 only lies outside the aligned region [0, 8): treated as absent -> random box, class 0
    b = sample_box(lab, torch.tensor([0.1, 0.1, 0.1, 0.7]), (5, 5, 3), g, align=(4, 4, 1))
    assert isinstance(b, Box) and b.label == 0 and b.size == (4, 4, 3)
    assert all(s % a == 0 and s + z <= e for s, z, a, e in zip(b.start, b.size, (4, 4, 1), (8, 8, 6)))
    lab[7, 7, 5] = 4
    b = sample_box(lab, torch.tensor([0.1, 0.1, 0.1, 0.7]), (5, 5, 3), g, align=(4, 4, 1))
    assert b == Box((4, 4, 3), (4, 4, 3), 4)


def test_sample_box_restricts_to_present_classes():
    lab = torch.zeros(8, 8, 8, dtype=torch.long)
    lab[0:2, 0:2, 0:2] = 2
    g = torch.Generator().manual_seed(0)
    # class 1 has most mass but is absent; class 2 must always be chosen, and the box hugs the corner
    for _ in range(20):
        assert sample_box(lab, torch.tensor([0.99, 0.01, 0.0]), (4, 4, 4), g) == Box((0, 0, 0), (4, 4, 4), 2)
    # all present classes with probability 0 -> uniform among them
    assert sample_box(lab, torch.tensor([1.0, 0.0, 0.0]), (4, 4, 4), g).label == 2
    empty = sample_box(torch.zeros(8, 8, 8, dtype=torch.long), torch.tensor([0.5, 0.5]), (4, 4, 4), g)
    assert empty.label == 0 and all(0 <= s <= 4 for s in empty.start)
    with pytest.raises(ValueError):
        sample_box(lab, torch.tensor([0.5, 0.5]), (9, 4, 4), g)
    with pytest.raises(ValueError):
        sample_box(lab, torch.tensor([1.0]), (4, 4, 4), g)  # label has class 2 but probs cover only 1


def test_sample_box_is_reproducible():
    lab = _label_with_small_organ()
    probs = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    a = [sample_box(lab, probs, (4, 4, 4), torch.Generator().manual_seed(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_box_size_from_fraction():
    assert box_size_from_fraction((96, 96, 32), (0.5, 0.5, 0.5)) == (48, 48, 16)
    assert box_size_from_fraction((96, 96, 32), (0.5, 0.5, 0.5), align=(16, 16, 1)) == (48, 48, 16)
    assert box_size_from_fraction((96, 96, 32), (0.3, 0.1, 1.0), align=(16, 16, 1)) == (16, 16, 32)
    with pytest.raises(ValueError):
        box_size_from_fraction((8, 8, 8), (0.5, 0.0, 0.5))


# ---------------------------------------------------------------- cutmix / mixing
def test_box_mask_and_cutmix():
    m = box_mask((3, 2, 2), (1, 0, 1), (2, 1, 1))
    assert m.dtype == torch.bool and int(m.sum()) == 2
    assert m[1, 0, 1] and m[2, 0, 1] and not m[0, 0, 1]
    dst = torch.zeros(2, 3, 2, 2)
    src = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2)
    out = cutmix(dst, src, (1, 0, 1), (2, 1, 1))
    expected = torch.zeros(2, 3, 2, 2)
    expected[:, 1, 0, 1] = torch.tensor([5.0, 17.0])
    expected[:, 2, 0, 1] = torch.tensor([9.0, 21.0])
    assert torch.equal(out, expected)
    assert torch.equal(dst, torch.zeros(2, 3, 2, 2))  # not mutated
    assert torch.equal(out, torch.where(m, src, dst))
    with pytest.raises(ValueError):
        cutmix(dst, src, (2, 0, 0), (2, 1, 1))
    with pytest.raises(ValueError):
        cutmix(dst, src[:1], (0, 0, 0), (1, 1, 1))


def test_mix_pair_targets_and_weights():
    shape = (4, 2, 1)
    x_l, x_u = torch.full((1, *shape), 1.0), torch.full((1, *shape), 2.0)
    # flat index = 2 * x + y
    y_l = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2]).reshape(shape)
    y_u = torch.tensor([3, 3, 3, 3, 0, 0, 0, 0]).reshape(shape)
    w_u = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).reshape(shape)
    box_l = Box((2, 0, 0), (2, 1, 1), 2)  # rows x=2..3, y=0
    box_u = ((0, 1, 0), (1, 1, 1))  # x=0, y=1
    mp = mix_pair(x_l, y_l, None, x_u, y_u, w_u, box_l, box_u)
    # unlabeled patch with the labeled box: GT (weight 1) at x=2,3 y=0
    assert mp.target_u.reshape(-1).tolist() == [3, 3, 3, 3, 2, 0, 2, 0]
    assert mp.weight_u.reshape(-1).tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert mp.image_u.reshape(-1).tolist() == [2, 2, 2, 2, 1, 2, 1, 2]
    # labeled patch with the unlabeled box: pseudo-label and its confidence at x=0 y=1
    assert mp.target_l.reshape(-1).tolist() == [1, 3, 1, 1, 2, 2, 2, 2]
    assert mp.weight_l.reshape(-1).tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert mp.image_l.reshape(-1).tolist() == [1, 2, 1, 1, 1, 1, 1, 1]
    assert mp.weight_l.dtype == torch.float32 and mp.target_l.dtype == torch.long
    # an unconfident pseudo-label voxel pasted into the labeled patch keeps weight 0
    mp2 = mix_pair(x_l, y_l, None, x_u, y_u, w_u, box_l, ((1, 1, 0), (1, 1, 1)))
    assert mp2.weight_l.reshape(-1).tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_mix_batch_and_mixer():
    torch.manual_seed(0)
    b, shape = 2, (8, 8, 4)
    x_l, x_u = torch.rand(b, 1, *shape), torch.rand(b, 1, *shape)
    y_l = torch.zeros(b, *shape, dtype=torch.long)
    y_l[:, 1:3, 1:3, 1:3] = 2
    y_l[:, 5:8, 5:8, :] = 1
    y_u = torch.zeros(b, *shape, dtype=torch.long)
    y_u[:, 4:6, 0:2, 0:2] = 3
    w_u = torch.ones(b, *shape)
    mixer = PICMixer(4, box_size=(4, 4, 2), align=(2, 2, 1), freq_momentum=0.5, seed=3)
    mixed, boxes_l, boxes_u = mixer(x_l, y_l, x_u, y_u, w_u, progress=0.0)
    assert len(boxes_l) == len(boxes_u) == b
    assert all(bx.label in (1, 2) for bx in boxes_l) and all(bx.label == 3 for bx in boxes_u)
    ref = mix_batch(x_l, y_l, None, x_u, y_u, w_u, boxes_l, boxes_u)
    for got, exp in zip(mixed, ref):
        assert torch.equal(got, exp)
    for i in range(b):
        single = mix_pair(x_l[i], y_l[i], None, x_u[i], y_u[i], w_u[i], boxes_l[i], boxes_u[i])
        assert torch.equal(mixed.target_u[i], single.target_u) and torch.equal(mixed.image_l[i], single.image_l)
    # frequencies of both batches counted in one (first) update: class 1: 2*36, 2: 2*8, 3: 2*8 voxels of n
    f = mixer.tracker.frequencies
    n = 2 * 8 * 8 * 4 * 2
    _close(f, [(n - 2 * (8 + 36) - 2 * 8) / n, 2 * 36 / n, 2 * 8 / n, 2 * 8 / n])
    state = mixer.state_dict()
    again = PICMixer(4, box_size=(4, 4, 2), align=(2, 2, 1), freq_momentum=0.5, seed=99)
    again.load_state_dict(state)
    m1 = mixer(x_l, y_l, x_u, y_u, w_u, progress=0.5)
    m2 = again(x_l, y_l, x_u, y_u, w_u, progress=0.5)
    assert m1[1] == m2[1] and m1[2] == m2[2]


def test_mixer_weights_and_unequal_batches():
    """Pseudo-label voxels keep their weight ``w_u``, GT voxels 1; B_l=2, B_u=1 pair cyclically."""
    shape = (4, 2, 1)
    x_l = torch.stack([torch.full((1, *shape), 1.0), torch.full((1, *shape), 5.0)])
    x_u = torch.full((1, 1, *shape), 2.0)
    y_l = torch.tensor([1, 1, 1, 1, 2, 2, 2, 2]).reshape(1, *shape).repeat(2, 1, 1, 1)
    y_u = torch.tensor([3, 3, 0, 0, 0, 0, 0, 0]).reshape(1, *shape)
    w_u = torch.tensor([0.25, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).reshape(1, *shape)
    mixer = PICMixer(4, box_size=(1, 1, 1), seed=0)
    mixed, boxes_l, boxes_u = mixer(x_l, y_l, x_u, y_u, w_u, progress=0.0)
    assert mixed.image_l.shape[0] == 2 and mixed.image_u.shape[0] == 1 and len(boxes_l) == len(boxes_u) == 2
    # the unlabeled boxes sit on confident class-3 voxels (flat index 0 or 1): pasted with weight 0.25
    for i in range(2):
        assert boxes_u[i].label == 3
        flat = 2 * boxes_u[i].start[0] + boxes_u[i].start[1]
        w = mixed.weight_l[i].reshape(-1)
        assert w[flat] == 0.25 and float(w.sum()) == 7.25
        assert mixed.target_l[i].reshape(-1)[flat] == 3
        assert float(mixed.image_l[i].reshape(-1)[flat]) == 2.0
    # the unlabeled patch (paired with labeled sample 0) holds one GT voxel of weight 1, pseudo weights 0.25
    expected = [0.25, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    expected[2 * boxes_l[0].start[0] + boxes_l[0].start[1]] = 1.0
    assert mixed.weight_u[0].reshape(-1).tolist() == expected
    img_u = mixed.image_u[0].reshape(-1).tolist()
    assert img_u == [1.0 if w == 1.0 else 2.0 for w in expected]  # pasted from labeled sample 0 (1.0), not 1 (5.0)


def test_shared_box_is_one_box_both_ways():
    """BCP's single mask: the labeled box (on the ground truth) is also where the unlabeled content goes."""
    from dinomix_core.pic import PICMixer

    y_l = torch.zeros(2, 8, 8, 4, dtype=torch.long)
    y_l[:, 2:4, 2:4, 1:3] = 3
    x_l, x_u = torch.zeros(2, 1, 8, 8, 4), torch.ones(2, 1, 8, 8, 4)
    y_u, w_u = torch.full((2, 8, 8, 4), 1), torch.ones(2, 8, 8, 4)
    m = PICMixer(4, box_size=(4, 4, 2), shared_box=True, seed=0).mix(x_l, y_l, x_u, y_u, w_u, 0.0)
    assert m.boxes_l == m.boxes_u and all(b.label == 3 for b in m.boxes_l)
    # every voxel is ground truth in exactly one of the two mixed patches, and images swap inside the box
    assert torch.equal(m.gt_l, ~m.gt_u)
    assert torch.equal(m.image_l[:, 0] == 1, ~m.gt_l) and torch.equal(m.image_u[:, 0] == 0, m.gt_u)
