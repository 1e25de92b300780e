"""The DINO-Mix student: a 3D U-Net-style segmenter with a projection head for feature distillation.

DINO-Mix (arXiv 2602.07819) distils a frozen DINOv3's features into an intermediate stage of the student (FKD).
The paper's baselines use a V-Net; we build an equivalent residual encoder-decoder from MONAI blocks with an
explicit encoder so the distilled stage can be tapped (MONAI's recursive ``UNet`` hides its stages).
The same :func:`build_student` is used by training and inference. With ``config.refiner`` the student carries
the click refiner of interactive editing as its ``refiner`` attribute (the same architecture, 5 input channels,
one output), so one model file, one optimiser and one EMA hold both.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import nn

from .config import DinoMixConfig
from .cpu_conv import use_onednn

__all__ = ["DinoMixStudent", "build_student", "REFINER_IN_CHANNELS"]

#: the click refiner's inputs: image, P(edited organ), P(background), foreground and background click guidance
REFINER_IN_CHANNELS = 5


def _block(spatial_dims: int, in_ch: int, out_ch: int, strides, num_res_units: int, dropout: float) -> nn.Module:
    if num_res_units > 0:
        return ResidualUnit(
            spatial_dims, in_ch, out_ch, strides=strides, subunits=num_res_units, norm="instance", act="PRELU",
            dropout=dropout,
        )
    return Convolution(spatial_dims, in_ch, out_ch, strides=strides, norm="instance", act="PRELU", dropout=dropout)


class DinoMixStudent(nn.Module):
    """Residual 3D encoder-decoder with a distillation projection head.

    Args:
        spatial_dims: number of spatial dimensions (3).
        in_channels: input channels.
        out_channels: output classes (background included).
        channels: channels of each encoder stage.
        strides: stride of each encoder stage after the first, per axis.
        num_res_units: residual sub-units per block (0: plain convolutions).
        dropout: dropout probability.
        fkd_stage: encoder stage whose features feed the projection head.
        teacher_channels: channels of the teacher's features (projection output); None: no projection head.
        refiner_channels: when given, a click refiner (:data:`REFINER_IN_CHANNELS` inputs, one output logit, these
            channels, the same strides) is attached as ``self.refiner``; ``forward`` does not use it.

    ``forward(x)`` returns logits; ``forward(x, return_features=True)`` returns ``(logits, projected)`` where
    ``projected`` are the ``fkd_stage`` features mapped to ``teacher_channels`` by a 1x1x1 conv head. With
    ``feature_size`` (the teacher's feature grid) the stage features are resized trilinearly to that grid *before*
    the head, so the wide head runs on the coarse teacher grid only (the ``cpu`` preset with a stride-16 teacher:
    1152 instead of 9216 positions per patch).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 14,
        channels: Sequence[int] = (8, 16, 32, 64),
        strides: Sequence[Sequence[int]] = ((2, 2, 1), (2, 2, 2), (2, 2, 2)),
        num_res_units: int = 1,
        dropout: float = 0.0,
        fkd_stage: int = 2,
        teacher_channels: Optional[int] = None,
        refiner_channels: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError("channels needs at least two stages.")
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides needs {len(channels) - 1} entries (one per stage after the first), got {len(strides)}.")
        if not 0 <= fkd_stage < len(channels):
            raise ValueError(f"fkd_stage must be in 0..{len(channels) - 1}, got {fkd_stage}.")
        if teacher_channels is not None and teacher_channels < 1:
            raise ValueError("teacher_channels must be positive or None.")
        self.spatial_dims = spatial_dims
        self.fkd_stage = fkd_stage
        self.encoder = nn.ModuleList()
        self.encoder.append(_block(spatial_dims, in_channels, channels[0], 1, num_res_units, dropout))
        for i, s in enumerate(strides):
            self.encoder.append(_block(spatial_dims, channels[i], channels[i + 1], tuple(s), num_res_units, dropout))
        self.upsamples = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(strides))):
            self.upsamples.append(
                UpSample(spatial_dims, channels[i + 1], channels[i], scale_factor=tuple(strides[i]), mode="deconv")
            )
            self.decoder.append(_block(spatial_dims, 2 * channels[i], channels[i], 1, num_res_units, dropout))
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)
        self.projection: Optional[nn.Module] = None
        if teacher_channels is not None:
            c = channels[fkd_stage]
            self.projection = nn.Sequential(
                Convolution(spatial_dims, c, c, kernel_size=1, norm="instance", act="PRELU"),
                Convolution(spatial_dims, c, teacher_channels, kernel_size=1, conv_only=True),
            )
        self.refiner: Optional[nn.Module] = None
        if refiner_channels is not None:
            self.refiner = DinoMixStudent(
                spatial_dims, REFINER_IN_CHANNELS, 1, refiner_channels, strides, num_res_units, 0.0, fkd_stage=0
            )

    def forward(
        self, x: torch.Tensor, return_features: bool = False, feature_size: Optional[Sequence[int]] = None
    ):
        skips = []
        h = x
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        feats = skips[self.fkd_stage]
        h = skips[-1]
        for up, dec, skip in zip(self.upsamples, self.decoder, reversed(skips[:-1])):
            h = dec(torch.cat([up(h), skip], dim=1))
        logits = self.head(h)
        if not return_features:
            return logits
        if self.projection is None:
            raise RuntimeError("this student was built without a projection head (teacher_channels=None).")
        if feature_size is not None and tuple(feature_size) != tuple(feats.shape[2:]):
            feats = F.interpolate(feats, size=tuple(int(v) for v in feature_size), mode="trilinear", align_corners=False)
        return logits, self.projection(feats)


def build_student(config: DinoMixConfig, teacher_channels: Optional[int] = None) -> DinoMixStudent:
    """The student network described by ``config`` (identical for training and inference), its 3D convolutions on
    oneDNN for float32 CPU inputs of any batch size (:func:`dinomix_core.cpu_conv.use_onednn`).

    Args:
        config: the model configuration.
        teacher_channels: hidden size of the DINOv3 teacher when FKD is used; adds the projection head.
    """
    return use_onednn(DinoMixStudent(
        spatial_dims=config.spatial_dims,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        fkd_stage=config.fkd_stage,
        teacher_channels=teacher_channels,
        refiner_channels=config.refiner_stage_channels if config.refiner else None,
    ))
