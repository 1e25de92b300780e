"""Label maps, organ segments and a minimal NIfTI-1 reader/writer for the DinoMix Slicer module.

3D Slicer's Python has numpy but no nibabel, so this module needs only the standard library and numpy.
It converts between

* a list of per-organ binary masks (what a Slicer segmentation holds, one segment per organ) and
* one integer label map whose values are the DINO-Mix model's label ids (what MONAI Label stores as a
  ``final`` label and trains on; label id = index of the organ in the model's label list + 1, as in
  :data:`dinomix_core.config.ORGANS`).

Array layout is not interpreted here: masks and label maps just need the same shape. The NIfTI functions
take and return arrays in NIfTI/MONAI voxel order ``(x, y, z)`` (i, j, k) with a 4x4 voxel-to-RAS affine;
Slicer's ``arrayFromVolume`` gives ``(k, j, i)``, so the Slicer module transposes before writing.

DINO-Mix: arXiv 2602.07819.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "ORGAN_COLORS",
    "DEFAULT_COLOR",
    "organ_color",
    "label_ids",
    "segments_to_labelmap",
    "labelmap_to_segments",
    "write_nifti",
    "write_nifti_label",
    "read_nifti",
]

#: RGB (0-255) per organ, close to 3D Slicer's GenericAnatomyColors table. Paired organs that share one
#: GenericAnatomyColors entry (kidneys, adrenal glands) get a slightly lighter shade on the left side so the
#: two segments can be told apart; veins use GenericAnatomyColors' blue family.
ORGAN_COLORS: Dict[str, Tuple[int, int, int]] = {
    "spleen": (157, 108, 162),
    "right kidney": (185, 102, 83),
    "left kidney": (212, 126, 104),
    "gallbladder": (139, 150, 98),
    "esophagus": (211, 171, 143),
    "liver": (221, 130, 101),
    "stomach": (216, 132, 105),
    "aorta": (224, 97, 76),
    "inferior vena cava": (0, 151, 206),
    "portal and splenic veins": (0, 112, 165),
    "pancreas": (249, 180, 111),
    "right adrenal gland": (244, 214, 49),
    "left adrenal gland": (250, 232, 128),
}
#: colour of an empty label name
DEFAULT_COLOR: Tuple[int, int, int] = (128, 174, 128)
#: colours of label names not in :data:`ORGAN_COLORS` (another label set: a tumour, the bladder), by label id
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)

LabelNames = Union[Sequence[str], Mapping[str, int]]


def _norm(name: str) -> str:
    """Case-, underscore- and spacing-insensitive key for matching segment names to label names."""
    return " ".join(str(name).replace("_", " ").lower().split())


def organ_color(name: str, label_id: Optional[int] = None) -> Tuple[int, int, int]:
    """RGB (0-255) for an organ name (matched case-insensitively, ``_`` = space). A name :data:`ORGAN_COLORS`
    does not have gets the :data:`PALETTE` colour of its ``label_id`` (distinct for ids 1..17), or without an id
    one chosen by the name's CRC-32 (stable across sessions)."""
    key = _norm(name)
    known = {_norm(k): v for k, v in ORGAN_COLORS.items()}
    if key in known:
        return known[key]
    if not key:
        return DEFAULT_COLOR
    index = int(label_id) - 1 if label_id else zlib.crc32(key.encode("utf-8"))
    return PALETTE[index % len(PALETTE)]


def label_ids(label_names: LabelNames) -> Dict[str, int]:
    """Map each label name to its id.

    Args:
        label_names: either the ordered organ names (id = position + 1, background 0 excluded), or a dict
            name -> id as MONAI Label's ``/info`` gives it. A ``background`` entry with id 0 is dropped.

    Returns:
        dict name -> id, in id order.

    Raises:
        ValueError: duplicate names/ids or ids outside 1..255.
    """
    if isinstance(label_names, Mapping):
        pairs = [(str(k), int(v)) for k, v in label_names.items()]
    else:
        pairs = [(str(n), i + 1) for i, n in enumerate(label_names)]
    pairs = [(n, i) for n, i in pairs if not (i == 0 and _norm(n) == "background")]
    out: Dict[str, int] = {}
    seen_keys, seen_ids = set(), set()
    for name, idx in sorted(pairs, key=lambda p: p[1]):
        if not 1 <= idx <= 255:
            raise ValueError(f"label id {idx} of {name!r} must be in 1..255 to fit a uint8 label map.")
        if _norm(name) in seen_keys or idx in seen_ids:
            raise ValueError(f"duplicate label name or id: {name!r} -> {idx}.")
        seen_keys.add(_norm(name))
        seen_ids.add(idx)
        out[name] = idx
    return out


def segments_to_labelmap(
    segments: Sequence[Tuple[str, np.ndarray]], label_names: LabelNames, shape: Optional[Sequence[int]] = None
) -> np.ndarray:
    """Merge per-organ binary masks into one uint8 label map.

    Overlaps: segments are painted in list order, so where masks overlap the LATER segment wins (as when
    Slicer exports overlapping segments to a label map, the last one written is kept).

    Args:
        segments: ``(organ_name, mask)`` pairs; masks are boolean (or 0/1) arrays of one common shape.
            Names are matched to ``label_names`` case-insensitively, ``_`` counting as a space.
        label_names: the model's organ names (list: id = index + 1) or dict name -> id.
        shape: shape of the output when ``segments`` is empty (otherwise must equal the masks' shape).

    Returns:
        uint8 array, 0 = background, organ voxels = the organ's label id.

    Raises:
        ValueError: unknown organ name, masks of different shapes, or no shape available.
    """
    ids = {_norm(k): v for k, v in label_ids(label_names).items()}
    if not segments and shape is None:
        raise ValueError("no segments given and no shape to build an empty label map.")
    out_shape = tuple(int(s) for s in shape) if shape is not None else None
    out: Optional[np.ndarray] = None
    for name, mask in segments:
        key = _norm(name)
        if key not in ids:
            raise ValueError(
                f"segment {name!r} is not an organ of the model; expected one of {sorted(ids)} "
                "(rename or delete the segment)."
            )
        m = np.asarray(mask)
        if out_shape is None:
            out_shape = m.shape
        if m.shape != out_shape:
            raise ValueError(f"segment {name!r} has shape {m.shape}, expected {out_shape}.")
        if out is None:
            out = np.zeros(out_shape, dtype=np.uint8)
        out[m.astype(bool)] = ids[key]
    if out is None:
        out = np.zeros(out_shape, dtype=np.uint8)
    return out


def labelmap_to_segments(
    labelmap: np.ndarray, label_names: LabelNames, include_empty: bool = False
) -> List[Tuple[str, int, Tuple[int, int, int], np.ndarray]]:
    """Split a label map into one named, coloured binary mask per organ.

    Args:
        labelmap: integer array of label ids (0 = background).
        label_names: the model's organ names (list: id = index + 1) or dict name -> id.
        include_empty: also return organs absent from the map (all-False mask), so every organ has a segment
            the user can paint into (useful when the model missed a small organ).

    Returns:
        list of ``(name, label_id, rgb_0_255, bool_mask)`` in label-id order.

    Raises:
        ValueError: the map holds a non-zero value that is not a label id (or is not an integer map).
    """
    lm = np.asarray(labelmap)
    if lm.dtype.kind == "f":
        if not np.all(np.isfinite(lm)) or np.any(lm != np.round(lm)):
            raise ValueError("label map must hold integer label ids.")
        lm = lm.astype(np.int64)
    elif lm.dtype.kind not in "iub":
        raise ValueError(f"label map must be an integer array, got dtype {lm.dtype}.")
    ids = label_ids(label_names)
    present = set(int(v) for v in np.unique(lm)) - {0}
    unknown = sorted(present - set(ids.values()))
    if unknown:
        raise ValueError(f"label map holds value(s) {unknown} that are not label ids of {list(ids)}.")
    out = []
    for name, idx in ids.items():
        if idx in present or include_empty:
            out.append((name, idx, organ_color(name, idx), lm == idx))
    return out


# --------------------------------------------------------------------------------------------------------------
# Minimal NIfTI-1 (single file .nii / .nii.gz)
# --------------------------------------------------------------------------------------------------------------

#: NIfTI-1 datatype code -> numpy dtype (little-endian forms; byte order is applied on read)
_NIFTI_TYPES: Dict[int, str] = {
    2: "u1",
    4: "i2",
    8: "i4",
    16: "f4",
    64: "f8",
    256: "i1",
    512: "u2",
    768: "u4",
}
_DTYPE_CODES: Dict[str, int] = {v: k for k, v in _NIFTI_TYPES.items()}
_HDR = 348
_VOX_OFFSET = 352


def _affine_to_quatern(affine: np.ndarray) -> Tuple[float, float, float, float, np.ndarray]:
    """(quatern_b, quatern_c, quatern_d, qfac, zooms) of the rotation part of ``affine`` (NIfTI-1 qform rules)."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    zooms = np.sqrt((m**2).sum(axis=0))
    zooms[zooms == 0] = 1.0
    r = m / zooms
    u, _, vt = np.linalg.svd(r)  # nearest orthogonal matrix (qform cannot store shears)
    r = u @ vt
    qfac = 1.0
    if np.linalg.det(r) < 0:
        r[:, 2] *= -1
        qfac = -1.0
    (r11, r12, r13), (r21, r22, r23), (r31, r32, r33) = r
    a = r11 + r22 + r33 + 1.0
    if a > 0.5:
        a = 0.5 * np.sqrt(a)
        b, c, d = 0.25 * (r32 - r23) / a, 0.25 * (r13 - r31) / a, 0.25 * (r21 - r12) / a
    else:
        xd, yd, zd = 1.0 + r11 - (r22 + r33), 1.0 + r22 - (r11 + r33), 1.0 + r33 - (r11 + r22)
        if xd > 1.0:
            b = 0.5 * np.sqrt(xd)
            c, d, a = 0.25 * (r12 + r21) / b, 0.25 * (r13 + r31) / b, 0.25 * (r32 - r23) / b
        elif yd > 1.0:
            c = 0.5 * np.sqrt(yd)
            b, d, a = 0.25 * (r12 + r21) / c, 0.25 * (r23 + r32) / c, 0.25 * (r13 - r31) / c
        else:
            d = 0.5 * np.sqrt(zd)
            b, c, a = 0.25 * (r13 + r31) / d, 0.25 * (r23 + r32) / d, 0.25 * (r21 - r12) / d
        if a < 0:
            b, c, d = -b, -c, -d
    return float(b), float(c), float(d), qfac, zooms


def _quatern_to_affine(b: float, c: float, d: float, qfac: float, zooms: Sequence[float], offset) -> np.ndarray:
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    r = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    z = np.array([zooms[0], zooms[1], zooms[2] * (-1.0 if qfac < 0 else 1.0)], dtype=np.float64)
    aff = np.eye(4)
    aff[:3, :3] = r * z
    aff[:3, 3] = offset
    return aff


def write_nifti(path: str, data: np.ndarray, affine: Optional[np.ndarray] = None) -> str:
    """Write ``data`` (voxel order x, y, z[, ...]) as a single-file NIfTI-1 image; gzip when ``path`` ends in ``.gz``.

    Both sform (exact ``affine``) and qform (its nearest rigid part) are written with code 1 (scanner RAS),
    so ITK/Slicer and nibabel read the same geometry.

    Args:
        path: output file (``.nii`` or ``.nii.gz``).
        data: 1-7 dimensional array of dtype uint8, int8, int16, uint16, int32, uint32, float32, float64
            (bool is written as uint8, float16 as float32).
        affine: 4x4 voxel-to-RAS matrix (identity if None).

    Returns:
        ``path``.
    """
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    key = arr.dtype.newbyteorder("=").str[1:]
    if key not in _DTYPE_CODES:
        raise ValueError(
            f"dtype {arr.dtype} cannot be written by this NIfTI writer; use one of {sorted(_DTYPE_CODES)}."
        )
    if not 1 <= arr.ndim <= 7:
        raise ValueError(f"NIfTI-1 holds 1 to 7 dimensions, got {arr.ndim}.")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError("affine must be a finite 4x4 matrix.")
    code = _DTYPE_CODES[key]
    b, c, d, qfac, zooms = _affine_to_quatern(aff)

    dim = [arr.ndim] + list(arr.shape) + [1] * (7 - arr.ndim)
    pixdim = [qfac] + [float(z) for z in zooms] + [1.0] * 4
    hdr = bytearray(_HDR)
    struct.pack_into("<i", hdr, 0, _HDR)
    hdr[38:39] = b"r"
    struct.pack_into("<8h", hdr, 40, *dim)
    struct.pack_into("<hhh", hdr, 70, code, arr.dtype.itemsize * 8, 0)
    struct.pack_into("<8f", hdr, 76, *pixdim)
    struct.pack_into("<f", hdr, 108, float(_VOX_OFFSET))
    struct.pack_into("<ff", hdr, 112, 1.0, 0.0)  # scl_slope, scl_inter
    hdr[123] = 2 | 8  # xyzt_units: mm, s
    descrip = b"DinoMix Slicer module (stdlib NIfTI writer)"
    hdr[148 : 148 + len(descrip)] = descrip
    struct.pack_into("<hh", hdr, 252, 1, 1)  # qform_code, sform_code = scanner
    struct.pack_into("<6f", hdr, 256, b, c, d, *aff[:3, 3])
    struct.pack_into("<4f", hdr, 280, *aff[0])
    struct.pack_into("<4f", hdr, 296, *aff[1])
    struct.pack_into("<4f", hdr, 312, *aff[2])
    hdr[344:348] = b"n+1\x00"

    payload = bytes(hdr) + b"\x00" * 4 + arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(order="F")
    if str(path).endswith(".gz"):
        with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)
    return str(path)


def write_nifti_label(path: str, labelmap: np.ndarray, affine: Optional[np.ndarray] = None) -> str:
    """Write an integer label map as a uint8 NIfTI-1 file (see :func:`write_nifti`).

    Raises:
        ValueError: values outside 0..255 or non-integer values.
    """
    lm = np.asarray(labelmap)
    if lm.dtype.kind == "f" and (not np.all(np.isfinite(lm)) or np.any(lm != np.round(lm))):
        raise ValueError("label map must hold integer label ids.")
    if lm.dtype.kind not in "iubf":
        raise ValueError(f"label map must be numeric, got dtype {lm.dtype}.")
    if lm.size and (lm.min() < 0 or lm.max() > 255):
        raise ValueError(f"label values must be in 0..255 for a uint8 label map, got {lm.min()}..{lm.max()}.")
    return write_nifti(path, lm.astype(np.uint8), affine)


def read_nifti(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read a single-file NIfTI-1 image (``.nii`` or gzip-compressed, detected from the content).

    The affine is the sform when ``sform_code > 0``, else the qform when ``qform_code > 0``, else a diagonal of
    the voxel sizes (NIfTI-1 "method 1..3" order, as nibabel does). ``scl_slope``/``scl_inter`` are applied when
    they are not the identity (the result is then float32/float64).

    Returns:
        ``(data, affine)``: data in voxel order (x, y, z[, ...]); affine 4x4 float64 voxel-to-RAS.

    Raises:
        ValueError: not a NIfTI-1 single file, or an unsupported datatype.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.GzipFile(fileobj=io.BytesIO(raw)).read()
    if len(raw) < _HDR:
        raise ValueError(f"{path}: too short for a NIfTI-1 header.")
    if struct.unpack("<i", raw[:4])[0] == _HDR:
        e = "<"
    elif struct.unpack(">i", raw[:4])[0] == _HDR:
        e = ">"
    else:
        raise ValueError(f"{path}: not a NIfTI-1 file (sizeof_hdr != 348).")
    if raw[344:347] != b"n+1":
        raise ValueError(f"{path}: only single-file NIfTI-1 ('n+1') is supported, magic is {raw[344:348]!r}.")
    dim = struct.unpack(e + "8h", raw[40:56])
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise ValueError(f"{path}: invalid dim[0]={ndim}.")
    shape = tuple(int(s) for s in dim[1 : ndim + 1])
    code = struct.unpack(e + "h", raw[70:72])[0]
    if code not in _NIFTI_TYPES:
        raise ValueError(f"{path}: unsupported NIfTI datatype code {code}.")
    dtype = np.dtype(e + _NIFTI_TYPES[code])
    pixdim = struct.unpack(e + "8f", raw[76:108])
    vox_offset = int(struct.unpack(e + "f", raw[108:112])[0])
    slope, inter = struct.unpack(e + "ff", raw[112:120])
    qform_code, sform_code = struct.unpack(e + "hh", raw[252:256])
    quat = struct.unpack(e + "6f", raw[256:280])
    srows = struct.unpack(e + "12f", raw[280:328])

    n = int(np.prod(shape)) if shape else 1
    nbytes = n * dtype.itemsize
    if len(raw) < vox_offset + nbytes:
        raise ValueError(f"{path}: truncated data ({len(raw) - vox_offset} of {nbytes} bytes).")
    data = np.frombuffer(raw, dtype=dtype, count=n, offset=vox_offset).reshape(shape, order="F")
    data = data.astype(dtype.newbyteorder("="))  # native byte order, writable copy
    if np.isfinite(slope) and slope != 0 and not (slope == 1 and inter == 0):
        out_type = np.float64 if dtype == np.float64 else np.float32
        data = data.astype(out_type) * out_type(slope) + out_type(inter)

    if sform_code > 0:
        affine = np.eye(4)
        affine[:3, :] = np.asarray(srows, dtype=np.float64).reshape(3, 4)
    elif qform_code > 0:
        affine = _quatern_to_affine(quat[0], quat[1], quat[2], pixdim[0] or 1.0, pixdim[1:4], quat[3:6])
    else:
        affine = np.diag([pixdim[1] or 1.0, pixdim[2] or 1.0, pixdim[3] or 1.0, 1.0])
    return data, affine
