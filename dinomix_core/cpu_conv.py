"""Fast 3D convolutions on the CPU: a workaround for PyTorch's choice of convolution backend (torch 2.14.1).

PyTorch picks oneDNN (MKLDNN) for a float32 CPU convolution only if the batch is larger than one or the product of
the input's first four sizes (N * C * H * W, the depth left out) exceeds 20480
(``ConvParams::use_mkldnn`` in aten/src/ATen/native/Convolution.cpp). Every other 3D convolution runs the
reference ``slow_conv3d`` kernel. The student's batch-1 forwards (the EMA teacher's pseudo-labels, validation,
sliding-window inference) hit that path in most layers: on this project's 2-core AMD EPYC, one thread, a 3x3x3
convolution of 8 channels on a 48 x 48 x 24 patch took 55 ms there against 7 ms in oneDNN (3 ms channels-last).

:func:`use_onednn` sends every float32 CPU 3D convolution of a module to oneDNN, whatever its batch, through
``torch.mkldnn_convolution`` (differentiable; same parameters, so state dicts are unchanged), unless oneDNN is
switched off (``torch.backends.mkldnn.flags(enabled=False)``). Results equal
PyTorch's up to float rounding (``tests/test_cpu_conv.py`` checks forward and gradients). Remove this module when
PyTorch's heuristic no longer sends these shapes to ``slow_conv3d``; ``benchmarks/cpu_conv_speed.py`` measures both
ways.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["OneDNNConv3d", "use_onednn"]


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs on oneDNN for float32 CPU inputs of any batch size (zero padding only)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias):
        if (input.device.type == "cpu" and input.dtype == torch.float32 and torch.backends.mkldnn.is_available()
                and torch.backends.mkldnn.enabled):
            return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def use_onednn(module: nn.Module) -> nn.Module:
    """Turn each zero-padded ``nn.Conv3d`` of ``module`` into a :class:`OneDNNConv3d` in place; returns ``module``.

    Only the class changes (no new state): parameters, buffers, hooks and state-dict keys stay as they are.
    Convolutions with another padding mode, string padding or transposed ones are left alone.
    """
    for m in module.modules():
        if type(m) is nn.Conv3d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            m.__class__ = OneDNNConv3d
    return module
