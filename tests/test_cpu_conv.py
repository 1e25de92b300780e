"""dinomix_core.cpu_conv: 3D convolutions on oneDNN whatever the batch, equal to PyTorch's up to float rounding."""

import copy

import pytest
import torch
from torch import nn

from dinomix_core.config import DinoMixConfig
from dinomix_core.cpu_conv import OneDNNConv3d, use_onednn
from dinomix_core.networks import build_student

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")

# (batch, in, out, kernel, stride, padding, bias, channels_last): batch 1 with small first sizes is the shape PyTorch
# sends to slow_conv3d; the others check that nothing else changes
CASES = [
    (1, 8, 16, 3, 1, 1, True, False),
    (1, 32, 16, 3, 1, 1, False, False),
    (1, 16, 32, 3, 2, 1, True, False),
    (1, 16, 8, 1, 1, 0, True, False),
    (3, 8, 8, 3, 1, 1, True, False),
    (3, 16, 8, 3, 1, 1, True, True),
    (2, 4, 4, (3, 3, 1), (2, 2, 1), (1, 1, 0), True, True),
]


@pytest.mark.parametrize("batch,cin,cout,k,stride,pad,bias,cl", CASES)
def test_forward_and_gradients_match_pytorch(batch, cin, cout, k, stride, pad, bias, cl):
    torch.manual_seed(0)
    ref = nn.Conv3d(cin, cout, k, stride=stride, padding=pad, bias=bias)
    fast = use_onednn(copy.deepcopy(ref))
    assert type(fast) is OneDNNConv3d
    x = torch.randn(batch, cin, 12, 10, 8)
    if cl:
        x, fast = x.contiguous(memory_format=torch.channels_last_3d), fast.to(memory_format=torch.channels_last_3d)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fast(xf)
    torch.testing.assert_close(yf, yr, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    if bias:
        torch.testing.assert_close(fast.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_other_dtypes_take_pytorchs_own_path_bit_identically():
    torch.manual_seed(0)
    ref = nn.Conv3d(2, 3, 3, padding=1).double()
    fast = use_onednn(copy.deepcopy(ref))
    x = torch.randn(1, 2, 6, 6, 4, dtype=torch.float64)
    assert torch.equal(fast(x), ref(x))


def test_switching_onednn_off_is_respected():
    fast = use_onednn(nn.Conv3d(2, 3, 3, padding=1))
    x = torch.randn(1, 2, 6, 6, 4)

    def backends(enabled):
        with torch.backends.mkldnn.flags(enabled=enabled), torch.profiler.profile() as prof:
            fast(x)
        return {e.name for e in prof.events() if "conv" in e.name}

    assert "aten::mkldnn_convolution" in backends(True)
    assert not any("mkldnn" in name for name in backends(False))


def test_only_zero_padded_convolutions_change_and_the_state_dict_stays():
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Conv3d(2, 2, 3, padding=1, padding_mode="reflect"),
                        nn.Conv3d(2, 2, 3, padding="same"), nn.ConvTranspose3d(2, 2, 2, stride=2), nn.Conv2d(2, 2, 1))
    keys = list(net.state_dict())
    use_onednn(net)
    assert [type(m).__name__ for m in net] == ["OneDNNConv3d", "Conv3d", "Conv3d", "ConvTranspose3d", "Conv2d"]
    assert list(net.state_dict()) == keys


def test_the_student_uses_it_and_predicts_as_before():
    cfg = DinoMixConfig(channels=(4, 8, 16), strides=((2, 2, 1), (2, 2, 2)), refiner=True)
    net = build_student(cfg).eval()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d) and not isinstance(m, nn.ConvTranspose3d)]
    assert convs and all(type(m) is OneDNNConv3d for m in convs)
    plain = copy.deepcopy(net)
    for m in plain.modules():
        if type(m) is OneDNNConv3d:
            m.__class__ = nn.Conv3d
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), rtol=1e-4, atol=1e-5)
