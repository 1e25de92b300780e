"""Tests of the mean-teacher helpers (dinomix_core.consistency)."""

import math

import pytest
import torch
import torch.nn as nn

from dinomix_core.consistency import largest_component_mask, pseudo_labels, sigmoid_rampup, update_ema


def _net():
    return nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2))


def test_update_ema_exact_values():
    ema, model = _net(), _net()
    with torch.no_grad():
        for p in ema.parameters():
            p.fill_(1.0)
        for p in model.parameters():
            p.fill_(3.0)
        model[1].running_mean.fill_(0.25)
        model[1].running_var.fill_(4.0)
    model[1].num_batches_tracked.fill_(7)
    update_ema(ema, model, 0.75)
    for p in ema.parameters():
        assert torch.equal(p, torch.full_like(p, 1.5))  # 0.75 * 1 + 0.25 * 3
    for p in model.parameters():
        assert torch.equal(p, torch.full_like(p, 3.0))  # student untouched
    assert torch.equal(ema[1].running_mean, torch.full((2,), 0.25))
    assert torch.equal(ema[1].running_var, torch.full((2,), 4.0))
    assert int(ema[1].num_batches_tracked) == 7
    update_ema(ema, model, 0.5)
    assert torch.equal(ema[0].weight, torch.full_like(ema[0].weight, 2.25))  # 0.5 * 1.5 + 0.5 * 3
    update_ema(ema, model, 0.0)
    assert torch.equal(ema[0].bias, torch.full_like(ema[0].bias, 3.0))


def test_update_ema_no_grad_and_validation():
    ema, model = _net(), _net()
    model(torch.rand(2, 1, 2, 2, 2)).sum().backward()
    update_ema(ema, model, 0.9)
    assert all(p.grad is None for p in ema.parameters())
    with pytest.raises(ValueError):
        update_ema(ema, model, 1.5)
    with pytest.raises(ValueError):
        update_ema(ema, nn.Sequential(nn.Conv3d(1, 2, 1)), 0.9)


def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0), abs=1e-15)  # 0.006737947
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-1.25), abs=1e-15)  # 0.2865048
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(250, 100) == 1.0
    assert sigmoid_rampup(-5, 100) == pytest.approx(math.exp(-5.0), abs=1e-15)
    assert sigmoid_rampup(0, 0) == 1.0
    assert sigmoid_rampup(37, 0) == 1.0


def test_pseudo_labels_mask():
    # voxel 0: probs [0.5, 0.5] (argmax 0, conf 0.5); voxel 1: class 1 with conf e^2/(1+e^2) = 0.8808;
    # voxel 2: class 0 with conf 0.7311 (logit gap 1)
    logits = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]]])  # [B=1, C=2, N=3]
    labels, mask, probs = pseudo_labels(logits, threshold=0.7)
    assert labels.dtype == torch.long and labels.tolist() == [[0, 1, 0]]
    assert mask.dtype == torch.float32 and mask.tolist() == [[0.0, 1.0, 1.0]]
    assert probs.shape == (1, 2, 3)
    assert torch.allclose(probs.sum(1), torch.ones(1, 3))
    assert float(probs[0, 1, 1]) == pytest.approx(math.exp(2) / (1 + math.exp(2)), abs=1e-6)
    assert pseudo_labels(logits, 0.75)[1].tolist() == [[0.0, 1.0, 0.0]]
    assert pseudo_labels(logits, 0.5)[1].tolist() == [[1.0, 1.0, 1.0]]  # ">=" threshold
    assert pseudo_labels(logits, 0.0)[1].tolist() == [[1.0, 1.0, 1.0]]


def test_pseudo_labels_3d_detached():
    logits = torch.randn(2, 4, 3, 3, 2, requires_grad=True)
    labels, mask, probs = pseudo_labels(logits, 0.9)
    assert labels.shape == mask.shape == (2, 3, 3, 2) and probs.shape == (2, 4, 3, 3, 2)
    assert not probs.requires_grad and not mask.requires_grad
    assert torch.equal(labels, logits.argmax(1))
    with pytest.raises(ValueError):
        pseudo_labels(logits, 1.5)


def _blobs(*boxes, shape=(1, 8, 8, 4)):
    """A [B, X, Y, Z] label map with ``(batch, label, x0, x1, y0, y1, z0, z1)`` boxes drawn in order."""
    y = torch.zeros(shape, dtype=torch.long)
    for b, c, x0, x1, y0, y1, z0, z1 in boxes:
        y[b, x0:x1, y0:y1, z0:z1] = c
    return y


# (boxes, voxels masked out): an organ's pieces outside its largest 26-connected component are masked out,
# background and every organ's largest piece are kept, each batch item on its own
LCC_CASES = [
    ([], 0),  # all background
    ([(0, 1, 0, 3, 0, 3, 0, 2)], 0),  # one piece: 18 voxels kept
    ([(0, 1, 0, 3, 0, 3, 0, 2), (0, 1, 6, 8, 6, 8, 3, 4)], 4),  # a second, smaller piece of 2 x 2 x 1
    ([(0, 1, 0, 3, 0, 3, 0, 2), (0, 2, 6, 8, 6, 8, 3, 4)], 0),  # the same piece, another organ: its own largest
    ([(0, 1, 0, 2, 0, 2, 0, 1), (0, 1, 2, 3, 2, 3, 1, 2)], 0),  # touching at a corner: one 26-connected piece
    ([(0, 3, 0, 2, 0, 1, 0, 1), (0, 3, 4, 5, 0, 1, 0, 1), (0, 3, 7, 8, 7, 8, 3, 4)], 2),  # 2 + 1 + 1 voxels
]


@pytest.mark.parametrize("boxes,removed", LCC_CASES)
def test_largest_component_mask(boxes, removed):
    labels = _blobs(*boxes)
    keep = largest_component_mask(labels)
    assert keep.dtype == torch.bool and keep.shape == labels.shape
    assert int((~keep).sum()) == removed
    assert bool(keep[labels == 0].all())  # background is never masked out


def test_largest_component_mask_per_batch_item():
    # item 0: a 2-voxel and a 1-voxel piece of organ 1; item 1: only the 1-voxel piece, which is its largest
    labels = _blobs((0, 1, 0, 2, 0, 1, 0, 1), (0, 1, 5, 6, 5, 6, 2, 3), (1, 1, 5, 6, 5, 6, 2, 3), shape=(2, 8, 8, 4))
    keep = largest_component_mask(labels)
    assert (~keep).nonzero().tolist() == [[0, 5, 5, 2]]
    with pytest.raises(ValueError):
        largest_component_mask(torch.zeros(4, dtype=torch.long))


def test_pseudo_labels_largest_component():
    # two confident pieces of class 1 along a line: 3 voxels and 1 voxel, apart
    logits = torch.zeros(1, 2, 8, 1, 1)
    logits[0, 0] = 5.0
    logits[0, 1, [0, 1, 2, 6], 0, 0] = 10.0
    labels, mask, _ = pseudo_labels(logits, 0.7)
    assert mask.flatten().tolist() == [1.0] * 8
    labels, mask, _ = pseudo_labels(logits, 0.7, largest_component=True)
    assert mask.flatten().tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert labels.flatten().tolist() == [1, 1, 1, 0, 0, 0, 1, 0]  # labels unchanged; only the mask


def test_distribution_alignment_damps_only_the_over_predicted_classes():
    from dinomix_core.consistency import DistributionAlignment

    da = DistributionAlignment(torch.tensor([8.0, 1.0, 1.0]), momentum=0.5)  # target 0.8 / 0.1 / 0.1
    assert da.ratio().tolist() == [1.0, 1.0, 1.0]  # before any update: the identity
    probs = torch.tensor([[0.6, 0.2, 0.2], [0.6, 0.4, 0.0]]).T.reshape(1, 3, 2)  # two voxels
    da.update(probs)  # predicted: 0.6 / 0.3 / 0.1
    assert torch.allclose(da.ratio(), torch.tensor([1.0, 1 / 3, 1.0], dtype=torch.float64))
    out = da(probs)
    # voxel 1: (0.6, 0.2/3, 0.2) / 0.8667; voxel 2: (0.6, 0.4/3, 0) / 0.7333
    assert torch.allclose(out[0, :, 0], torch.tensor([0.6, 0.2 / 3, 0.2]) / (0.8 + 0.2 / 3), atol=1e-6)
    assert torch.allclose(out[0, :, 1], torch.tensor([0.6, 0.4 / 3, 0.0]) / (0.6 + 0.4 / 3), atol=1e-6)
    assert torch.allclose(out.sum(1), torch.ones(1, 2)) and out.dtype == probs.dtype
    # the running mean: m * old + (1 - m) * new
    da.update(torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1))
    assert torch.allclose(da.predicted, torch.tensor([0.8, 0.15, 0.05], dtype=torch.float64))
    # restored from its state, it aligns the same
    again = DistributionAlignment(torch.tensor([8.0, 1.0, 1.0]))
    again.load_state_dict(da.state_dict())
    assert torch.equal(again.ratio(), da.ratio()) and again.num_updates == 2


def test_pseudo_labels_read_the_aligned_probabilities():
    from dinomix_core.consistency import DistributionAlignment, pseudo_labels

    # class 1 is predicted on half the voxels where the labels hold 10 %: its less certain voxel drops below 0.8
    logits = torch.log(torch.tensor([[0.01, 0.99], [0.15, 0.85], [0.9, 0.1], [0.9, 0.1]])).T.reshape(1, 2, 4)
    labels, mask, _ = pseudo_labels(logits, 0.8)
    assert labels.tolist() == [[1, 1, 0, 0]] and mask.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    da = DistributionAlignment(torch.tensor([0.9, 0.1]))
    da.update(torch.softmax(logits, 1))  # predicted class 1: 0.51 -> ratio 0.1 / 0.51
    labels, mask, probs = pseudo_labels(logits, 0.8, align=da)
    assert labels.tolist() == [[1, 1, 0, 0]] and mask.tolist() == [[1.0, 0.0, 1.0, 1.0]]
    r = 0.1 / 0.51
    assert abs(float(probs[0, 1, 0]) - 0.99 * r / (0.01 + 0.99 * r)) < 1e-5  # 0.951: kept
    assert abs(float(probs[0, 1, 1]) - 0.85 * r / (0.15 + 0.85 * r)) < 1e-5  # 0.526: masked


@pytest.mark.parametrize("args, message", [
    (([1.0],), "target must be"),
    (([0.5, -0.5],), "target must be"),
    (([0.0, 0.0],), "target must be"),
    (([0.5, 0.5], 1.0), "momentum must be in"),
])
def test_distribution_alignment_rejects(args, message):
    from dinomix_core.consistency import DistributionAlignment

    with pytest.raises(ValueError, match=message):
        DistributionAlignment(torch.tensor(args[0]), *args[1:])
    da = DistributionAlignment(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="probs must be"):
        da.update(torch.ones(1, 3, 2))
    with pytest.raises(ValueError, match="state has 3 classes"):
        da.load_state_dict({"predicted": torch.ones(3)})
