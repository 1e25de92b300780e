"""Frozen DINOv3 teacher and its feature cache for DINO-Mix's feature knowledge distillation (FKD).

DINO-Mix (arXiv 2602.07819) distils the patch features of a frozen 2D foundation model (DINOv3) into an
intermediate stage of the 3D student. This module provides:

* :func:`load_dinov3`: loads a Hugging Face ``DINOv3ViTModel`` (local folder or hub id), frozen, with a clear error
  when the (gated) weights are not available.
* :class:`DinoV3Teacher`: runs the ViT on every axial slice of a ``[B, 1, X, Y, Z]`` volume and returns a
  ``[B, hidden, ceil(X / s), ceil(Y / s), Z]`` feature volume (``s`` = :attr:`DinoV3Teacher.feature_stride`).
* :func:`build_teacher`: the above from a configuration string; ``"none"`` disables FKD (returns ``None``).
* :class:`TeacherFeatureCache`: teacher features of whole preprocessed volumes computed once (float16, CPU) and
  cropped to training patches, and :func:`mix_features`: the CutMix box of the images applied to cached features.

Array conventions (shared by the package): images are ``[B, C, X, Y, Z]`` after ``Orientation("RAS")``; the axial
slices are the last axis. A slice ``volume[..., z]`` is given to the ViT *in its own array layout*: image height =
the X axis, image width = the Y axis (no transpose / flip to radiological display orientation). The teacher was
trained on natural images, so the orientation only has to be consistent between the cache, the live teacher and
the student, which it is because all of them use this module.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_dinov3",
    "DinoV3Teacher",
    "build_teacher",
    "feature_box",
    "mix_features",
    "TeacherFeatureCache",
]

logger = logging.getLogger(__name__)

#: ImageNet normalisation used by DINOv3's image processor (RGB).
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

_DISABLED = ("", "none")

_HOW_TO_FIX = (
    "DINOv3 weights are gated (DINOv3 License): accept the licence of e.g. facebook/dinov3-vits16-pretrain-lvd1689m "
    "on huggingface.co, download it with a Hugging Face token (`hf auth login`, then "
    "`hf download facebook/dinov3-vits16-pretrain-lvd1689m --local-dir /path/to/dinov3-vits16`; older "
    "huggingface_hub: `huggingface-cli login` / `huggingface-cli download`) and pass the local folder as the "
    "teacher; or pass `--teacher none` to train without feature distillation (FKD disabled)."
)


def _is_disabled(teacher: Any) -> bool:
    return teacher is None or str(teacher).strip().lower() in _DISABLED


def _looks_like_local_path(name: str) -> bool:
    """Hub ids are ``owner/name`` (at most one ``/``, no leading ``/`` ``.`` or ``~``); anything else is a path."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def load_dinov3(name_or_path: str, device: Optional[Any] = None) -> "nn.Module":
    """Load a frozen Hugging Face ``DINOv3ViTModel`` (eval mode, ``requires_grad=False``).

    Uses ``transformers.DINOv3ViTModel.from_pretrained`` (transformers >= 4.56), so a local folder written by
    ``save_pretrained`` / ``hf download`` and a hub id (e.g. ``facebook/dinov3-vits16-pretrain-lvd1689m``) follow the
    same code path.

    Args:
        name_or_path: local folder or Hugging Face hub id.
        device: optional device to move the model to (default: stays where ``from_pretrained`` put it, the CPU).

    Returns:
        the ``DINOv3ViTModel``, in eval mode with all parameters frozen.

    Raises:
        ValueError: ``name_or_path`` is empty or ``"none"`` (use :func:`build_teacher` to disable FKD).
        ImportError: the installed transformers has no ``DINOv3ViTModel``.
        FileNotFoundError: a local path that does not exist, or a folder that holds no loadable DINOv3 checkpoint.
        RuntimeError: a hub id that could not be loaded (offline, gated without token, unknown id), or a checkpoint
            missing weights of the model (it would be partly random).
    """
    if _is_disabled(name_or_path):
        raise ValueError(
            f"load_dinov3 needs a DINOv3 folder or hub id, got {name_or_path!r}; use build_teacher() which returns "
            "None for 'none' (FKD disabled)."
        )
    try:
        import transformers
        from transformers import DINOv3ViTModel
    except ImportError as e:  # pragma: no cover - depends on the installed version
        raise ImportError(
            "transformers >= 4.56 is needed for DINOv3ViTModel (the DINOv3 teacher of DINO-Mix); "
            f"import failed: {e}. Upgrade transformers, or pass `--teacher none`."
        ) from e

    name = os.path.expanduser(os.fspath(name_or_path).strip())
    is_local = os.path.isdir(name)
    if not is_local and os.path.exists(name):
        raise FileNotFoundError(
            f"DINOv3 teacher {name!r} is a file; pass the folder holding config.json and model.safetensors. "
            + _HOW_TO_FIX
        )
    if not is_local and _looks_like_local_path(name):
        raise FileNotFoundError(f"DINOv3 teacher folder {name!r} does not exist. " + _HOW_TO_FIX)

    try:
        model, info = DINOv3ViTModel.from_pretrained(name, output_loading_info=True)
    except Exception as e:  # transformers turns missing files / offline / gated hub errors into OSError
        what = f"local folder {name!r}" if is_local else f"hub id {name!r}"
        msg = (
            f"Could not load the DINOv3 teacher from {what} with transformers {transformers.__version__} "
            f"DINOv3ViTModel.from_pretrained ({type(e).__name__}: {e}). "
        )
        if is_local:
            raise FileNotFoundError(msg + "The folder must hold config.json and the weights. " + _HOW_TO_FIX) from e
        raise RuntimeError(
            msg + f"No local folder {name!r} exists either (set HF_HUB_OFFLINE=1 to fail fast offline). " + _HOW_TO_FIX
        ) from e

    missing = list(info.get("missing_keys", []) or [])
    if missing:
        raise RuntimeError(
            f"DINOv3 checkpoint {name!r} lacks {len(missing)} weight(s) of DINOv3ViTModel (e.g. {missing[:3]}); "
            "the teacher would be partly random. Is it a DINOv3 ViT checkpoint (model type dinov3_vit)? " + _HOW_TO_FIX
        )
    if device is not None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


class DinoV3Teacher(nn.Module):
    """Frozen DINOv3 ViT applied slice by slice to a 3D volume: the FKD teacher of DINO-Mix (arXiv 2602.07819).

    Each axial slice ``x[b, 0, :, :, z]`` (last axis = axial) is used as a 2D image in its array layout
    (height = X, width = Y), replicated to 3 channels, normalised with the ImageNet mean/std, enlarged by
    ``upsample`` (bilinear), zero-padded at the high end of H and W (value 0 = below the HU window, i.e. air) to a
    multiple of the ViT patch size, and encoded in batches of ``batch_size`` slices under ``torch.no_grad()``.
    The patch tokens ``last_hidden_state[:, 1 + num_register_tokens:]`` (after the final LayerNorm) are reshaped to
    the token grid, giving features at in-plane stride ``feature_stride = patch_size // upsample`` voxels and full
    resolution along Z.

    The wrapped model is always frozen: :meth:`train` keeps it in eval mode (DINOv3's RoPE coordinates are randomly
    rescaled in training mode), parameters have ``requires_grad=False``, and outputs carry no gradient.
    Computation happens on the device of the model; inputs are moved there batch by batch and the features are
    returned on the device of the input.

    Args:
        model: a ``transformers.DINOv3ViTModel`` (see :func:`load_dinov3`).
        upsample: integer in-plane enlargement of slices before the ViT; must divide the ViT patch size.
        batch_size: slices per forward pass of the ViT.
    """

    def __init__(self, model: nn.Module, upsample: int = 1, batch_size: int = 16) -> None:
        super().__init__()
        cfg = getattr(model, "config", None)
        if cfg is None or not hasattr(cfg, "patch_size") or not hasattr(cfg, "hidden_size"):
            raise ValueError("model must be a transformers DINOv3ViTModel (with .config.patch_size/.hidden_size).")
        patch = cfg.patch_size
        if isinstance(patch, (tuple, list)):
            if len(set(patch)) != 1:
                raise ValueError(f"only square ViT patches are supported, got patch_size={patch}.")
            patch = patch[0]
        patch = int(patch)
        if int(getattr(cfg, "num_channels", 3)) != 3:
            raise ValueError(f"the DINOv3 teacher must take 3-channel (RGB) images, got num_channels={cfg.num_channels}.")
        if isinstance(upsample, bool) or int(upsample) != upsample or upsample < 1:
            raise ValueError(f"upsample must be a positive integer, got {upsample!r}.")
        if patch % int(upsample):
            raise ValueError(
                f"upsample={upsample} must divide the ViT patch size {patch} so that one token covers a whole "
                "number of voxels."
            )
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if not any(True for _ in model.parameters()):
            raise ValueError("model has no parameters.")
        self.model = model
        self.upsample = int(upsample)
        self.batch_size = int(batch_size)
        self._patch_size = patch
        self._num_prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self.model.requires_grad_(False)
        self.train(False)

    # ------------------------------------------------------------------ properties
    @property
    def patch_size(self) -> int:
        """ViT patch size in (upsampled) pixels."""
        return self._patch_size

    @property
    def hidden_size(self) -> int:
        """Channels of the teacher features."""
        return int(self.model.config.hidden_size)

    @property
    def num_register_tokens(self) -> int:
        return self._num_prefix_tokens - 1

    @property
    def feature_stride(self) -> int:
        """In-plane voxels covered by one teacher token (``patch_size // upsample``); 1 along Z."""
        return self._patch_size // self.upsample

    def feature_shape(self, spatial_xyz: Sequence[int]) -> Tuple[int, int, int]:
        """Spatial shape of the features of an ``(X, Y, Z)`` volume: ``(ceil(X/s), ceil(Y/s), Z)``."""
        x, y, z = (int(v) for v in spatial_xyz)
        s = self.feature_stride
        return (-(-x // s), -(-y // s), z)

    # ------------------------------------------------------------------ frozen
    def train(self, mode: bool = True) -> "DinoV3Teacher":
        """Ignore ``mode``: the teacher always stays in eval mode (it is frozen)."""
        return super().train(False)

    # ------------------------------------------------------------------ forward
    def _encode_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """``[n, 1, H, W]`` slices in [0, 1] on the model device -> ``[n, hidden, gh, gw]`` patch features."""
        param = next(self.model.parameters())
        img = slices.to(device=param.device, dtype=torch.float32)
        n, _, h, w = img.shape
        if self.upsample > 1:
            h, w = h * self.upsample, w * self.upsample
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
        p = self._patch_size
        pad_h, pad_w = (-h) % p, (-w) % p
        if pad_h or pad_w:
            img = F.pad(img, (0, pad_w, 0, pad_h), value=0.0)
        gh, gw = (h + pad_h) // p, (w + pad_w) // p
        mean = torch.tensor(IMAGENET_MEAN, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
        img = ((img.expand(-1, 3, -1, -1) - mean) / std).to(param.dtype)
        tokens = self.model(pixel_values=img).last_hidden_state[:, self._num_prefix_tokens :]
        if tokens.shape[1] != gh * gw:
            raise RuntimeError(
                f"DINOv3 returned {tokens.shape[1]} patch tokens for a {gh}x{gw} grid; check num_register_tokens "
                f"({self.num_register_tokens}) in the model config."
            )
        return tokens.reshape(n, gh, gw, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher features of a batch of volumes.

        Args:
            x: ``[B, 1, X, Y, Z]`` float image in [0, 1] (HU-windowed), any device.

        Returns:
            float32 ``[B, hidden_size, ceil(X / s), ceil(Y / s), Z]`` on the device of ``x``, ``s = feature_stride``;
            no gradient.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"DinoV3Teacher expects a [B, 1, X, Y, Z] tensor, got {shape}.")
        if min(x.shape) < 1:
            raise ValueError(f"DinoV3Teacher got an empty tensor of shape {tuple(x.shape)}.")
        if hasattr(x, "as_tensor"):  # MONAI MetaTensor -> plain tensor (no meta tracking)
            x = x.as_tensor()
        b, _, sx, sy, sz = x.shape
        # [B, 1, X, Y, Z] -> [B, Z, X, Y] -> [B*Z, 1, X, Y]: slice z of volume b is row b*Z + z
        slices = x[:, 0].permute(0, 3, 1, 2).reshape(b * sz, 1, sx, sy)
        out = []
        with torch.no_grad():
            for i in range(0, b * sz, self.batch_size):
                feats = self._encode_slices(slices[i : i + self.batch_size])
                out.append(feats.to(device=x.device, dtype=torch.float32))
        feats = torch.cat(out, 0)
        c, gx, gy = feats.shape[1:]
        return feats.reshape(b, sz, c, gx, gy).permute(0, 2, 3, 4, 1).contiguous()


def build_teacher(
    teacher: Optional[str], upsample: int = 1, batch_size: int = 16, device: Optional[Any] = None
) -> Optional[DinoV3Teacher]:
    """The frozen DINOv3 teacher named by ``teacher`` (local folder or hub id), or ``None`` when FKD is disabled.

    Args:
        teacher: DINOv3 folder / hub id, or ``"none"`` / ``""`` / ``None`` to disable FKD (a warning is logged).
        upsample: see :class:`DinoV3Teacher`.
        batch_size: see :class:`DinoV3Teacher`.
        device: device for the ViT (default CPU).

    Raises:
        FileNotFoundError / RuntimeError: the weights are not available (see :func:`load_dinov3`).
    """
    if _is_disabled(teacher):
        logger.warning(
            "No DINOv3 teacher (teacher=%r): feature knowledge distillation (FKD) of DINO-Mix is disabled.", teacher
        )
        return None
    return DinoV3Teacher(load_dinov3(str(teacher), device=device), upsample=upsample, batch_size=batch_size)


def _three_ints(v: Sequence[int], what: str) -> Tuple[int, int, int]:
    t = tuple(int(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"{what} must be three integers (x, y, z), got {v!r}.")
    return t  # type: ignore[return-value]


def feature_box(
    start_xyz: Sequence[int], size_xyz: Sequence[int], stride: int
) -> Tuple[slice, slice, slice]:
    """Feature-grid slices of a voxel box ``[start, start + size)`` (x, y, z) at in-plane ``stride``.

    x covers ``start_x // stride .. ceil((start_x + size_x) / stride)`` (a partially covered last token is included),
    the same for y; z is unchanged (the teacher keeps full resolution along Z).

    Raises:
        ValueError: negative start, non-positive size, or an in-plane start that is not a multiple of ``stride``.
    """
    start = _three_ints(start_xyz, "start_xyz")
    size = _three_ints(size_xyz, "size_xyz")
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}.")
    if any(s < 0 for s in start) or any(s < 1 for s in size):
        raise ValueError(f"box start must be >= 0 and size >= 1, got start={start}, size={size}.")
    if start[0] % stride or start[1] % stride:
        raise ValueError(
            f"in-plane box start {start[:2]} must be a multiple of the teacher feature stride {stride} "
            "(sample patch / CutMix box origins on that grid)."
        )
    sl = [slice(start[i] // stride, -(-(start[i] + size[i]) // stride)) for i in range(2)]
    return sl[0], sl[1], slice(start[2], start[2] + size[2])


def mix_features(
    dst_feats: torch.Tensor,
    src_feats: torch.Tensor,
    box_start_xyz: Sequence[int],
    box_size_xyz: Sequence[int],
    stride: int,
) -> torch.Tensor:
    """CutMix on the teacher-feature grid: a copy of ``dst_feats`` with the box taken from ``src_feats``.

    The box is the CutMix box of the *images* (voxels, relative to the patch, (x, y, z)); its in-plane start must be
    a multiple of ``stride``. It maps to the feature grid with :func:`feature_box`. For an exact correspondence
    choose in-plane box sizes that are multiples of ``stride`` too (otherwise the partially covered border token is
    taken from ``src``). Used by DINO-Mix (arXiv 2602.07819) to get teacher targets of mixed unlabeled patches from
    cached features instead of re-running the teacher.

    Args:
        dst_feats: ``[..., C, Xf, Yf, Z]`` features of the patch the box is pasted into (not modified).
        src_feats: features of the patch the box comes from, same shape.
        box_start_xyz / box_size_xyz: the box in voxels.
        stride: teacher feature stride (``DinoV3Teacher.feature_stride``).

    Returns:
        a new tensor like ``dst_feats``.
    """
    if dst_feats.shape != src_feats.shape or dst_feats.ndim < 3:
        raise ValueError(
            f"dst_feats and src_feats must have the same [..., C, Xf, Yf, Z] shape, got {tuple(dst_feats.shape)} "
            f"and {tuple(src_feats.shape)}."
        )
    sx, sy, sz = feature_box(box_start_xyz, box_size_xyz, stride)
    grid = tuple(dst_feats.shape[-3:])
    if sx.stop > grid[0] or sy.stop > grid[1] or sz.stop > grid[2]:
        raise ValueError(
            f"box start={tuple(box_start_xyz)} size={tuple(box_size_xyz)} (stride {stride}) covers feature cells "
            f"up to ({sx.stop}, {sy.stop}, {sz.stop}) outside the feature grid {grid}."
        )
    out = dst_feats.clone()
    out[..., sx, sy, sz] = src_feats[..., sx, sy, sz].to(device=out.device, dtype=out.dtype)
    return out


class TeacherFeatureCache:
    """Teacher features of whole preprocessed volumes, computed once and cropped to training patches.

    Running DINOv3 on every slice of every patch at every iteration dominates DINO-Mix training on small hardware;
    the volumes are fixed (after deterministic preprocessing), so their features are computed once, kept in
    ``storage_dtype`` (float16) on the CPU, keyed by a string id (e.g. the image path), and cropped to the patch.
    Because the ViT sees whole slices in the cache but only the patch when run live, the two differ slightly
    (context and RoPE coordinates); ``benchmarks/teacher_cache_similarity.py`` measures it.

    Args:
        teacher: a :class:`DinoV3Teacher` (anything with ``feature_stride`` mapping ``[1, 1, X, Y, Z]`` to
            ``[1, C, ceil(X/s), ceil(Y/s), Z]``).
        storage_dtype: dtype of stored features (float16 halves memory; crops are returned as float32).
    """

    def __init__(self, teacher: nn.Module, storage_dtype: torch.dtype = torch.float16) -> None:
        if not hasattr(teacher, "feature_stride"):
            raise ValueError("teacher must be a DinoV3Teacher (it needs a feature_stride).")
        if not storage_dtype.is_floating_point:
            raise ValueError(f"storage_dtype must be a floating dtype, got {storage_dtype}.")
        self.teacher = teacher
        self.storage_dtype = storage_dtype
        self._feats: Dict[str, torch.Tensor] = {}
        self._shapes: Dict[str, Tuple[int, int, int]] = {}

    @property
    def feature_stride(self) -> int:
        return int(self.teacher.feature_stride)

    def __contains__(self, key: object) -> bool:
        return key in self._feats

    def __len__(self) -> int:
        return len(self._feats)

    def keys(self) -> Iterator[str]:
        return iter(list(self._feats))

    @property
    def nbytes(self) -> int:
        """Memory held by the cached features."""
        return sum(t.numel() * t.element_size() for t in self._feats.values())

    def clear(self) -> None:
        self._feats.clear()
        self._shapes.clear()

    def volume_shape(self, key: str) -> Tuple[int, int, int]:
        """``(X, Y, Z)`` of the volume cached under ``key``."""
        if key not in self._shapes:
            raise KeyError(f"no teacher features cached under {key!r}.")
        return self._shapes[key]

    def get(self, key: str, volume: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Teacher features ``[C, ceil(X/s), ceil(Y/s), Z]`` (storage dtype, CPU) of the volume cached as ``key``.

        Computed from ``volume`` (``[1, X, Y, Z]`` in [0, 1], the preprocessed image the patches are cropped from)
        on the first call; later calls return the stored tensor (the same object: do not modify it in place) and
        ``volume`` may be omitted.

        Raises:
            KeyError: ``key`` is not cached and no ``volume`` is given.
            ValueError: ``volume`` is not ``[1, X, Y, Z]``, or differs in shape from the one cached under ``key``.
        """
        if not isinstance(key, str):
            raise ValueError(f"cache keys are strings, got {type(key).__name__}.")
        if volume is not None:
            if hasattr(volume, "as_tensor"):  # MONAI MetaTensor
                volume = volume.as_tensor()
            volume = torch.as_tensor(volume)
            if volume.ndim != 4 or volume.shape[0] != 1:
                raise ValueError(f"volume must be [1, X, Y, Z], got {tuple(volume.shape)}.")
        if key in self._feats:
            if volume is not None and tuple(volume.shape[1:]) != self._shapes[key]:
                raise ValueError(
                    f"key {key!r} is cached for a volume of shape {self._shapes[key]}, got {tuple(volume.shape[1:])}."
                )
            return self._feats[key]
        if volume is None:
            raise KeyError(f"no teacher features cached under {key!r}; pass the volume to compute them.")
        feats = self.teacher(volume[None].float())[0]
        self._feats[key] = feats.detach().to(device="cpu", dtype=self.storage_dtype).contiguous()
        self._shapes[key] = tuple(int(v) for v in volume.shape[1:])  # type: ignore[assignment]
        return self._feats[key]

    def crop(self, key: str, start_xyz: Sequence[int], size_xyz: Sequence[int]) -> torch.Tensor:
        """float32 teacher features of the patch ``volume[:, start:start + size]`` of the volume cached as ``key``.

        The in-plane start must be a multiple of :attr:`feature_stride`; the result is
        ``[C, ceil((start_x + size_x)/s) - start_x/s, ..., size_z]`` (see :func:`feature_box`), a new tensor on the
        CPU, equal (up to float16 storage) to the teacher run on the whole volume and then sliced.

        Raises:
            KeyError: nothing cached under ``key`` (call :meth:`get` with the volume first).
            ValueError: misaligned start or a patch outside the volume.
        """
        if key not in self._feats:
            raise KeyError(f"no teacher features cached under {key!r}; call get(key, volume) first.")
        start = _three_ints(start_xyz, "start_xyz")
        size = _three_ints(size_xyz, "size_xyz")
        shape = self._shapes[key]
        if any(a + b > n for a, b, n in zip(start, size, shape)):
            raise ValueError(f"patch start={start} size={size} exceeds the cached volume {shape} of {key!r}.")
        sx, sy, sz = feature_box(start, size, self.feature_stride)
        return self._feats[key][:, sx, sy, sz].to(torch.float32, copy=True)
