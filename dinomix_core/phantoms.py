"""SYNTHETIC abdominal CT phantoms with the 13 Synapse organ labels.

The phantoms are generated, not scanned: they let the semi-supervised pipeline of DINO-Mix
(arXiv 2602.07819) run end to end on this machine, with an organ-size distribution as imbalanced as
real anatomy (the liver is roughly 200 times an adrenal gland), next to the one real sample CT in
``sample_data/``. They are *not* a substitute for real data and any number measured on them says
nothing about clinical accuracy.

What a phantom contains (contrast-enhanced, portal-venous-phase look):

* air outside the body (-1000 HU), a body ellipse with subcutaneous fat (about -100 HU) and an
  abdominal-wall muscle shell (about 45 HU), back muscles and psoas;
* bone: vertebral bodies (about 380 HU, cortex about 650 HU) with discs, neural arch and spinous
  process, and lower ribs in the upper half;
* lung bases and the heart's lower edge in the top slices, mesenteric fat mixed with bowel-like soft
  tissue and small gas pockets filling the rest of the abdominal cavity;
* the 13 Synapse organs (label ids and order as :data:`dinomix_core.labels.ORGANS`) as deformed
  ellipsoids and tubes at plausible positions, with per-organ HU; optionally (``PhantomVariation.fat_planes``,
  :data:`FAT_PLANES`) the fat planes that set the adrenal glands and the oesophagus apart from their neighbours.

Per seed (a :class:`numpy.random.Generator`, so fully deterministic): patient size, body-fat thickness,
global position shift, a smooth random low-frequency displacement field that deforms every structure,
per-organ size / position / orientation / shape jitter, per-organ HU jitter, partial-volume blur
(Gaussian, before quantisation) and mildly correlated Gaussian noise (10 to 20 HU).

Array layout: ``[X, Y, Z]`` in RAS+ with a diagonal affine, as MONAI's ``Orientation(axcodes="RAS")``
produces it: X index increases towards the patient's **left -> right** (world +x = patient right),
Y index posterior -> anterior, Z index inferior -> superior (axial slices are the last axis). The world
origin is the centre of the volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from .labels import ORGANS, SYNAPSE

__all__ = [
    "ORGAN_HU",
    "STOMACH_CONTENTS_HU",
    "phantom_affine",
    "generate_phantom",
    "PhantomVariation",
    "NARROW_VARIATION",
    "WIDE_VARIATION",
    "FAT_PLANES",
    "CONTRAST_PHASES",
    "write_phantom_nifti",
    "organ_volumes_ml",
]

_ID: Dict[str, int] = SYNAPSE.ids_by_name

#: Nominal HU of each organ label (portal-venous phase). The stomach value is its wall; contents are
#: :data:`STOMACH_CONTENTS_HU`. Per-seed jitter of a few HU is added on top.
ORGAN_HU: Dict[int, float] = {
    _ID["spleen"]: 110.0,
    _ID["right kidney"]: 150.0,
    _ID["left kidney"]: 150.0,
    _ID["gallbladder"]: 10.0,
    _ID["esophagus"]: 50.0,
    _ID["liver"]: 100.0,
    _ID["stomach"]: 60.0,
    _ID["aorta"]: 180.0,
    _ID["inferior vena cava"]: 140.0,
    _ID["portal and splenic veins"]: 150.0,
    _ID["pancreas"]: 90.0,
    _ID["right adrenal gland"]: 60.0,
    _ID["left adrenal gland"]: 60.0,
}
STOMACH_CONTENTS_HU: float = 20.0

#: HU offsets from :data:`ORGAN_HU` (portal-venous) for other contrast phases (30-180 HU shifts, after typical
#: enhancement curves): arterial (bright aorta and kidney cortex, liver not yet enhanced) and native (no contrast).
CONTRAST_PHASES: Dict[str, Dict[int, float]] = {
    "portal": {},
    "arterial": {_ID["aorta"]: 120.0, _ID["right kidney"]: 40.0, _ID["left kidney"]: 40.0, _ID["liver"]: -35.0,
                 _ID["spleen"]: 20.0, _ID["portal and splenic veins"]: -50.0, _ID["inferior vena cava"]: -60.0,
                 _ID["pancreas"]: 25.0},
    "native": {_ID["aorta"]: -140.0, _ID["right kidney"]: -120.0, _ID["left kidney"]: -120.0, _ID["liver"]: -45.0,
               _ID["spleen"]: -65.0, _ID["portal and splenic veins"]: -110.0, _ID["inferior vena cava"]: -100.0,
               _ID["pancreas"]: -50.0, _ID["stomach"]: -20.0, _ID["esophagus"]: -10.0,
               _ID["right adrenal gland"]: -25.0, _ID["left adrenal gland"]: -25.0},
}


@dataclass(frozen=True)
class PhantomVariation:
    """How much phantoms differ from each other (the defaults: the sample studies' phantoms, bit for bit).

    Args:
        body_scale: (low, high) patient size factor.
        organ_size_sd: log-normal standard deviation of each organ's size (0.2: about +-40 % at 2 sd).
        organ_shift_mm: standard deviation of each organ's own displacement.
        warp_mm: (low, high) amplitude of the smooth deformation of the whole anatomy.
        fov_shift_mm: standard deviation of the field of view's cranio-caudal position.
        noise_hu: (low, high) image noise.
        blur: (low, high) in-plane partial-volume blur (voxels), a reconstruction kernel's sharpness.
        phases: contrast phases drawn from (:data:`CONTRAST_PHASES`), uniformly.
        missing: organ name -> probability that it is absent (nephrectomy, splenectomy, cholecystectomy).
        fat_planes: organ name -> width (mm) of the fat plane painted around it (background label, fat HU) before
            the organ itself, over whatever was painted there: the fat that separates a small organ from its
            neighbours in a real CT (:data:`FAT_PLANES`). None by default.
    """

    body_scale: Tuple[float, float] = (0.93, 1.04)
    organ_size_sd: float = 0.04
    organ_shift_mm: float = 3.0
    warp_mm: Tuple[float, float] = (2.0, 4.0)
    fov_shift_mm: float = 8.0
    noise_hu: Tuple[float, float] = (10.0, 20.0)
    blur: Tuple[float, float] = (0.5, 0.8)
    phases: Tuple[str, ...] = ("portal",)
    missing: Tuple[Tuple[str, float], ...] = ()
    fat_planes: Tuple[Tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("body_scale", "warp_mm", "noise_hu", "blur"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}.")
        if min(self.organ_size_sd, self.organ_shift_mm, self.fov_shift_mm) < 0:
            raise ValueError("organ_size_sd, organ_shift_mm and fov_shift_mm must be >= 0.")
        unknown = [p for p in self.phases if p not in CONTRAST_PHASES] + [o for o, _ in self.missing if o not in _ID]
        if not self.phases or unknown:
            raise ValueError(f"phases must be some of {sorted(CONTRAST_PHASES)} and missing organs Synapse organs; "
                             f"unknown: {unknown}.")
        if any(not 0.0 <= p <= 1.0 for _, p in self.missing):
            raise ValueError("missing-organ probabilities must be in [0, 1].")
        bad = [(o, w) for o, w in self.fat_planes if o not in _ID or not 0.0 <= w <= 30.0]
        if bad:
            raise ValueError(f"fat_planes must be (Synapse organ, width in mm from 0 to 30) pairs; got {bad}.")

    def draw_extras(self, seed: int) -> Tuple[str, frozenset]:
        """The contrast phase and the absent organs of phantom ``seed``, from a stream of their own (so the
        defaults leave every other draw, and the sample phantoms, unchanged)."""
        rng = np.random.default_rng([int(seed), 7])
        phase = self.phases[int(rng.integers(len(self.phases)))]
        absent = frozenset(o for o, p in self.missing if rng.random() < p)
        return phase, absent


DEFAULT_VARIATION = PhantomVariation()
#: A narrow acquisition protocol (portal-venous phase, low noise, a sharp kernel) over anatomy as varied as
#: patients' (size, organ size and position, deformation, field of view, missing organs).
NARROW_VARIATION = PhantomVariation(
    body_scale=(0.85, 1.15), organ_size_sd=0.18, organ_shift_mm=10.0, warp_mm=(3.0, 8.0), fov_shift_mm=25.0,
    noise_hu=(10.0, 20.0), blur=(0.5, 0.8), phases=("portal",),
    missing=(("gallbladder", 0.3), ("left kidney", 0.1), ("spleen", 0.1)),
)
#: The same anatomy under a mix of protocols: every contrast phase, noise levels and reconstruction kernels.
WIDE_VARIATION = replace(NARROW_VARIATION, noise_hu=(10.0, 40.0), blur=(0.4, 1.5),
                         phases=("portal", "arterial", "native"))

#: Fat planes of the small organs, as a real CT shows them: the adrenal glands lie in the perirenal fat inside
#: Gerota's fascia, the oesophagus in the fat of the posterior mediastinum and the hiatus. Without them the
#: phantoms' adrenals and oesophagus (60 and 50 HU) touch the liver, kidneys and the bowel-like cavity filler
#: (30 HU) and have almost no contrast to their surroundings; widths are typical, not measured.
FAT_PLANES: Tuple[Tuple[str, float], ...] = (("esophagus", 4.0), ("right adrenal gland", 6.0),
                                            ("left adrenal gland", 6.0))

_AIR, _FAT, _MESENTERY, _MUSCLE, _BOWEL, _GAS, _LUNG, _HEART = -1000.0, -100.0, -90.0, 45.0, 30.0, -650.0, -850.0, 90.0
_BONE_CANCELLOUS, _BONE_CORTEX, _DISC, _CSF, _RIB = 380.0, 650.0, 90.0, 15.0, 550.0

# --------------------------------------------------------------------------------------------------
# Nominal anatomy, in mm, patient coordinates relative to the volume centre:
# x + = patient right, y + = anterior, z + = superior (RAS).
# ellipsoid: center, semi-axes (local x, y, z), rotation (deg about x, y, z), taper (0 = none)
# tube: polyline points, radius at each point, cross-section scale (x, y, z), wall thickness (mm, 0 = none)
# Paint order = dict order: later organs overwrite earlier ones where they touch.
# --------------------------------------------------------------------------------------------------
_ORGAN_SPECS: Dict[str, dict] = {
    "liver": dict(kind="ellipsoid", center=(36.0, 4.0, 22.0), semi=(94.0, 86.0, 76.0), rot=(0.0, 0.0, 0.0), taper=0.5,
                  power=2.6),
    "esophagus": dict(kind="tube", points=((2.0, -6.0, 104.0), (-8.0, -2.0, 78.0), (-26.0, 8.0, 60.0), (-44.0, 12.0, 52.0)),
                      radii=(8.0, 8.0, 8.0, 8.5), aniso=(1.0, 0.8, 1.0)),
    "stomach": dict(kind="tube", points=((-54.0, 8.0, 68.0), (-55.0, 20.0, 40.0), (-38.0, 32.0, 10.0), (-6.0, 44.0, 0.0),
                                         (22.0, 38.0, 6.0)),
                    radii=(30.0, 30.0, 24.0, 17.0, 11.0), aniso=(1.0, 1.0, 1.0), wall=4.0),
    "spleen": dict(kind="ellipsoid", center=(-80.0, -28.0, 42.0), semi=(22.0, 55.0, 44.0), rot=(0.0, 0.0, -140.0)),
    "pancreas": dict(kind="tube", points=((24.0, -2.0, -12.0), (6.0, 10.0, 2.0), (-30.0, -4.0, 12.0), (-66.0, -16.0, 24.0)),
                     radii=(17.0, 13.0, 12.0, 9.0), aniso=(1.0, 1.0, 1.0)),
    "right kidney": dict(kind="ellipsoid", center=(62.0, -40.0, -36.0), semi=(28.0, 22.0, 54.0), rot=(0.0, -12.0, 30.0)),
    "left kidney": dict(kind="ellipsoid", center=(-62.0, -40.0, -22.0), semi=(28.0, 22.0, 54.0), rot=(0.0, 12.0, -30.0)),
    "gallbladder": dict(kind="ellipsoid", center=(46.0, 42.0, -4.0), semi=(15.0, 15.0, 34.0), rot=(40.0, 0.0, 0.0)),
    "inferior vena cava": dict(kind="tube", points=((22.0, -20.0, -120.0), (24.0, -18.0, 20.0), (20.0, -6.0, 70.0),
                                                    (12.0, 0.0, 120.0)),
                               radii=(11.0, 11.0, 12.0, 12.0), aniso=(1.0, 0.7, 1.0)),
    "aorta": dict(kind="tube", points=((-10.0, -24.0, -120.0), (-10.0, -24.0, 0.0), (-6.0, -27.0, 120.0)),
                  radii=(10.0, 11.0, 11.5), aniso=(1.0, 1.0, 1.0)),
    "portal and splenic veins": dict(
        kind="tubes",
        parts=(
            dict(points=((40.0, 12.0, 30.0), (8.0, 0.0, 6.0)), radii=(6.5, 6.5)),  # portal vein
            dict(points=((8.0, 0.0, 6.0), (-30.0, -12.0, 12.0), (-68.0, -22.0, 26.0)), radii=(5.0, 4.5, 4.5)),  # splenic
            dict(points=((8.0, 0.0, 6.0), (6.0, 6.0, -45.0)), radii=(5.0, 4.5)),  # superior mesenteric vein
        ),
        aniso=(1.0, 1.0, 1.0),
    ),
    "right adrenal gland": dict(kind="ellipsoid", center=(36.0, -38.0, 26.0), semi=(5.0, 11.0, 19.0), rot=(0.0, 0.0, 25.0)),
    "left adrenal gland": dict(kind="ellipsoid", center=(-36.0, -36.0, 18.0), semi=(5.0, 11.0, 19.0), rot=(0.0, 0.0, -25.0)),
}


def phantom_affine(shape: Sequence[int] = (96, 96, 48), spacing: Sequence[float] = (3.0, 3.0, 4.0)) -> np.ndarray:
    """RAS+ voxel-to-world affine of a synthetic phantom: diagonal spacing, world origin at the volume centre."""
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"shape and spacing must have three entries (x, y, z), got {shape} and {spacing}.")
    aff = np.eye(4)
    for i in range(3):
        aff[i, i] = float(spacing[i])
        aff[i, 3] = -(int(shape[i]) - 1) / 2.0 * float(spacing[i])
    return aff


def _rotation(deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx (angles in degrees); local -> patient coordinates."""
    ax, ay, az = (math.radians(float(d)) for d in deg)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _bspline(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline kernel."""
    t = np.abs(t)
    return np.where(t < 1.0, 2.0 / 3.0 - t * t + 0.5 * t ** 3, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))


def _smooth_field(rng: np.random.Generator, shape: Tuple[int, int, int], ctrl: Tuple[int, int, int]) -> np.ndarray:
    """A smooth, unit-variance random field: a cubic B-spline through a random control grid of ``ctrl`` points
    per axis (separable, so it costs three small matrix products instead of a spline zoom)."""
    coarse = rng.standard_normal(tuple(k + 2 for k in ctrl))
    mats = []
    for n, k in zip(shape, ctrl):
        pos = np.linspace(0.0, k - 1.0, n)[:, None] + 1.0  # control points sit at 1..k (0 and k+1 pad)
        w = _bspline(pos - np.arange(k + 2)[None, :])
        mats.append(w / np.sqrt((w * w).sum(axis=1, keepdims=True)))
    field = np.einsum("ia,abc->ibc", mats[0], coarse)
    field = np.einsum("jb,ibc->ijc", mats[1], field)
    field = np.einsum("kc,ijc->ijk", mats[2], field)
    return field.astype(np.float32)


class _Coords:
    """Deformed patient coordinates (mm) of every voxel of a block of the grid."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        self.x, self.y, self.z = x, y, z

    def sub(self, sl: Tuple[slice, slice, slice]) -> "_Coords":
        return _Coords(self.x[sl], self.y[sl], self.z[sl])


def _ellipsoid(
    c: _Coords, center, semi, rot, taper: float = 0.0, shape_coef: Optional[np.ndarray] = None, power: float = 2.0
) -> np.ndarray:
    """Voxels inside a (tapered, shape-perturbed) rotated ellipsoid (a superellipsoid for ``power`` > 2)."""
    r = _rotation(rot)
    dx, dy, dz = c.x - center[0], c.y - center[1], c.z - center[2]
    # local = R^T (p - c)
    u = (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz) / semi[0]
    v = (r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz) / semi[1]
    w = (r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz) / semi[2]
    if taper:
        # thinner towards local -x (the patient's left for the liver): y/z extent shrinks to (1 - taper)
        t = 1.0 - taper * np.clip((1.0 - u) / 2.0, 0.0, 1.0)
        v = v / t
        w = w / t
    if power == 2.0:
        rho = np.sqrt(u * u + v * v + w * w)
    else:
        rho = (np.abs(u) ** power + np.abs(v) ** power + np.abs(w) ** power) ** (1.0 / power)
    if shape_coef is None:
        return rho <= 1.0
    # star-shaped perturbation: the boundary radius depends smoothly on the direction (nu, nv, nw)
    inv = 1.0 / np.maximum(rho, 1e-6)
    nu, nv, nw = u * inv, v * inv, w * inv
    a = shape_coef
    bound = 1.0 + a[0] * nu + a[1] * nv + a[2] * nw + a[3] * (nu * nu - nv * nv) + a[4] * (nv * nv - nw * nw) + a[5] * nu * nw
    return rho <= bound


def _tube_distance(c: _Coords, points, radii, aniso) -> np.ndarray:
    """Signed depth (radius minus distance, mm) inside a tube of linearly varying radius along a polyline."""
    pts = np.asarray(points, np.float64)
    rad = np.asarray(radii, np.float64)
    s = np.asarray(aniso, np.float64)
    depth = None
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        ab = b - a
        ab_s = ab / s
        denom = float(ab_s @ ab_s)
        px, py, pz = (c.x - a[0]) / s[0], (c.y - a[1]) / s[1], (c.z - a[2]) / s[2]
        t = np.clip((px * ab_s[0] + py * ab_s[1] + pz * ab_s[2]) / denom, 0.0, 1.0)
        qx, qy, qz = px - t * ab_s[0], py - t * ab_s[1], pz - t * ab_s[2]
        d = np.sqrt(qx * qx + qy * qy + qz * qz)
        seg = (rad[i] + t * (rad[i + 1] - rad[i])) - d
        depth = seg if depth is None else np.maximum(depth, seg)
    return depth


def _jitter_spec(rng: np.random.Generator, name: str, spec: dict, scale: float,
                 var: PhantomVariation = DEFAULT_VARIATION) -> dict:
    """Per-organ random size, position, orientation and shape (all draws happen in a fixed order)."""
    out = dict(spec)
    size = float(np.exp(rng.normal(0.0, var.organ_size_sd)))  # overall organ size factor
    shift = rng.normal(0.0, var.organ_shift_mm, 3)  # mm
    if spec["kind"] == "ellipsoid":
        axis = np.exp(rng.normal(0.0, 0.03, 3))
        out["center"] = tuple(np.asarray(spec["center"]) * scale + shift)
        out["semi"] = tuple(np.asarray(spec["semi"]) * scale * size * axis)
        out["rot"] = tuple(np.asarray(spec["rot"]) + rng.normal(0.0, 6.0, 3))
        out["shape_coef"] = rng.normal(0.0, 0.05, 6)
    else:
        parts = spec["parts"] if spec["kind"] == "tubes" else (dict(points=spec["points"], radii=spec["radii"]),)
        new_parts = []
        for part in parts:
            pts = np.asarray(part["points"], np.float64)
            pts = pts * scale + shift + rng.normal(0.0, 2.5, pts.shape)
            rad = np.asarray(part["radii"], np.float64) * scale * size * np.exp(rng.normal(0.0, 0.04, len(part["radii"])))
            new_parts.append(dict(points=pts, radii=rad))
        out["parts"] = tuple(new_parts)
        out["kind"] = "tubes"
    return out


def generate_phantom(
    seed: int,
    shape: Sequence[int] = (96, 96, 48),
    spacing: Sequence[float] = (3.0, 3.0, 4.0),
    variation: PhantomVariation = DEFAULT_VARIATION,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one SYNTHETIC contrast-enhanced abdominal CT with its 13-organ Synapse label map.

    Synthetic data for exercising the DINO-Mix (arXiv 2602.07819) pipeline; not real patient anatomy.

    Args:
        seed: random seed; the same seed (and shape/spacing) always gives identical arrays.
        shape: array size (x, y, z) in RAS order.
        spacing: voxel size in mm (x, y, z).
        variation: how much anatomy and acquisition vary (:class:`PhantomVariation`; the default is the
            sample studies' narrow, portal-venous protocol).

    Returns:
        ``(image, label, affine)``: image int16 ``[X, Y, Z]`` in HU, label uint8 ``[X, Y, Z]`` with ids
        0 (background) and 1..13 (:data:`dinomix_core.labels.ORGANS` order), and the 4x4 RAS+ affine.

    Raises:
        ValueError: for a shape or spacing that is not three positive numbers.
    """
    shape, spacing = _check_grid_args(shape, spacing)
    rng = np.random.default_rng(int(seed))
    affine = phantom_affine(shape, spacing)
    # the random draws happen in a fixed order: patient, deformation, cavity filler, organs, noise
    patient = _draw_patient(rng, variation)
    grid = _Grid(rng, shape, spacing, patient.gshift, patient.warp_amp)
    hu = np.full(shape, _AIR, np.float32)
    label = np.zeros(shape, np.uint8)
    body, cavity = _paint_body_wall(hu, grid.c, patient)
    _paint_cavity_filler(hu, rng, grid, cavity)
    _paint_thorax(hu, grid, cavity, patient.scale)
    _paint_muscles(hu, grid.c, body, patient.scale)
    _paint_ribs(hu, grid.c, patient)
    _paint_spine(hu, grid.c, body, patient.scale)
    _paint_organs(hu, label, rng, grid, cavity, patient, variation, *variation.draw_extras(seed))
    return _acquire(hu, rng, spacing, patient), label, affine


def _check_grid_args(shape: Sequence[int], spacing: Sequence[float]) -> Tuple[Tuple[int, int, int], Tuple[float, float, float]]:
    """``shape`` and ``spacing`` as int / float triples; ``ValueError`` unless three sizes >= 4 and three spacings > 0."""
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or any(s < 4 for s in shape):
        raise ValueError(f"shape must be three sizes >= 4 (x, y, z), got {shape}.")
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive sizes in mm (x, y, z), got {spacing}.")
    return shape, spacing  # type: ignore[return-value]


@dataclass(frozen=True)
class _Patient:
    """The patient-level random draws of one phantom."""

    scale: float  # patient size
    fat: float  # subcutaneous fat (mm)
    muscle: float  # abdominal wall (mm)
    gshift: np.ndarray  # global position shift (mm)
    warp_amp: float  # mm, std of the control-point displacement
    blur_sigma: float  # voxels in-plane
    noise_std: float  # HU
    hu_jitter: np.ndarray  # per organ (HU)
    stomach_fill_jitter: float  # HU


def _draw_patient(rng: np.random.Generator, var: PhantomVariation = DEFAULT_VARIATION) -> _Patient:
    """Draw the patient-level parameters (the first draws of a phantom, in a fixed order)."""
    scale = float(rng.uniform(*var.body_scale))
    fat = float(rng.uniform(6.0, 20.0))
    muscle = float(rng.uniform(8.0, 12.0))
    gshift = np.array([rng.normal(0.0, 4.0), rng.normal(0.0, 4.0), rng.normal(0.0, var.fov_shift_mm)])
    warp_amp = float(rng.uniform(*var.warp_mm))
    blur_sigma = float(rng.uniform(*var.blur))
    noise_std = float(rng.uniform(*var.noise_hu))
    hu_jitter = rng.normal(0.0, 6.0, len(ORGANS))
    stomach_fill_jitter = float(rng.normal(0.0, 5.0))
    return _Patient(scale, fat, muscle, gshift, warp_amp, blur_sigma, noise_std, hu_jitter, stomach_fill_jitter)


class _Grid:
    """The voxel grid of a phantom: world grid plus a smooth low-frequency displacement (deformed coordinates
    :attr:`c`, mm), and the index blocks that can hold a given box (:meth:`block`)."""

    def __init__(self, rng: np.random.Generator, shape: Tuple[int, int, int], spacing: Tuple[float, float, float],
                 gshift: np.ndarray, warp_amp: float) -> None:
        self.shape, self.spacing, self.gshift = shape, spacing, gshift
        self.fov = [n * s for n, s in zip(shape, spacing)]
        ctrl = tuple(max(2, int(round(f / 80.0)) + 1) for f in self.fov)
        disp = [warp_amp * _smooth_field(rng, shape, ctrl) for _ in range(3)]
        axes = [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s) for n, s in zip(shape, spacing)]
        gx = axes[0][:, None, None] - np.float32(gshift[0]) + disp[0]
        gy = axes[1][None, :, None] - np.float32(gshift[1]) + disp[1]
        gz = axes[2][None, None, :] - np.float32(gshift[2]) + disp[2]
        self.c = _Coords(*np.broadcast_arrays(gx, gy, gz))
        self.dmax = [float(np.abs(d).max()) for d in disp]

    def block(self, lo: np.ndarray, hi: np.ndarray) -> Optional[Tuple[slice, slice, slice]]:
        """Index slices of the voxels whose deformed coordinates can fall inside the box [lo, hi] (mm)."""
        shape, spacing = self.shape, self.spacing
        out = []
        for k in range(3):
            a_lo = lo[k] + self.gshift[k] - self.dmax[k] - spacing[k]
            a_hi = hi[k] + self.gshift[k] + self.dmax[k] + spacing[k]
            i0 = max(0, int(math.floor(a_lo / spacing[k] + (shape[k] - 1) / 2.0)))
            i1 = min(shape[k], int(math.ceil(a_hi / spacing[k] + (shape[k] - 1) / 2.0)) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]


def _cavity_axes(scale: float) -> Tuple[float, float]:
    """Semi-axes (x, y) of the abdominal cavity in mm."""
    return 106.0 * scale, 82.0 * scale


def _paint_body_wall(hu: np.ndarray, c: _Coords, p: _Patient) -> Tuple[np.ndarray, np.ndarray]:
    """Subcutaneous fat and the abdominal-wall muscle shell; returns the (body, cavity) masks."""
    cav_a, cav_b = _cavity_axes(p.scale)
    e_cav = (c.x / cav_a) ** 2 + (c.y / cav_b) ** 2
    body = (c.x / (cav_a + p.muscle + p.fat)) ** 2 + (c.y / (cav_b + p.muscle + p.fat)) ** 2 <= 1.0
    wall = (c.x / (cav_a + p.muscle)) ** 2 + (c.y / (cav_b + p.muscle)) ** 2 <= 1.0
    cavity = e_cav <= 1.0
    hu[body] = _FAT
    hu[wall & ~cavity] = _MUSCLE
    return body, cavity


def _paint_cavity_filler(hu: np.ndarray, rng: np.random.Generator, grid: _Grid, cavity: np.ndarray) -> None:
    """Mesenteric fat with bowel-like soft tissue and gas pockets filling the abdominal cavity."""
    ctrl_b = tuple(max(2, int(round(f / 22.0))) for f in grid.fov)
    bowel_field = _smooth_field(rng, grid.shape, ctrl_b)
    gas_field = _smooth_field(rng, grid.shape, ctrl_b)
    hu[cavity] = _MESENTERY
    bowel = cavity & (bowel_field > 0.15)
    hu[bowel] = _BOWEL
    hu[bowel & (gas_field > 1.3)] = _GAS


def _paint_thorax(hu: np.ndarray, grid: _Grid, cavity: np.ndarray, scale: float) -> None:
    """The thorax edge in the top slices: lung bases and the heart's lower edge."""
    thorax = [((62.0, -25.0, 160.0), (62.0, 55.0, 72.0), _LUNG), ((-62.0, -25.0, 160.0), (62.0, 55.0, 72.0), _LUNG),
              ((-12.0, 22.0, 148.0), (72.0, 52.0, 62.0), _HEART)]
    for center, semi, value in thorax:
        center, semi = np.asarray(center) * scale, np.asarray(semi) * scale
        sl = grid.block(center - semi, center + semi)
        if sl is not None:
            m = _ellipsoid(grid.c.sub(sl), center, semi, (0.0, 0.0, 0.0)) & cavity[sl]
            hu[sl][m] = value


def _paint_muscles(hu: np.ndarray, c: _Coords, body: np.ndarray, scale: float) -> None:
    """Back muscles and psoas on both sides."""
    for sgn in (1.0, -1.0):
        back = ((c.x - sgn * 28.0 * scale) / (22.0 * scale)) ** 2 + ((c.y + 88.0 * scale) / (14.0 * scale)) ** 2 <= 1.0
        hu[back & body] = _MUSCLE
        psoas_r = (6.0 + np.clip(40.0 - c.z, 0.0, None) * 0.12) * scale
        psoas = (c.x - sgn * 30.0 * scale) ** 2 + (c.y + 52.0 * scale) ** 2 <= psoas_r ** 2
        hu[psoas & body & (c.z < 50.0)] = _MUSCLE


def _paint_ribs(hu: np.ndarray, c: _Coords, p: _Patient) -> None:
    """Lower ribs: bands in the outer wall, upper half, not anteriorly."""
    cav_a, cav_b = _cavity_axes(p.scale)
    rib_zone = (c.x / (cav_a + p.muscle + 3.0)) ** 2 + (c.y / (cav_b + p.muscle + 3.0)) ** 2 <= 1.0
    rib_zone &= (c.x / (cav_a - 6.0)) ** 2 + (c.y / (cav_b - 6.0)) ** 2 > 1.0
    rib_band = np.mod(c.z + 0.35 * c.y + 0.1 * np.abs(c.x), 26.0 * p.scale) < 6.0 * p.scale
    hu[rib_zone & rib_band & (c.z > -10.0) & (c.y < 30.0)] = _RIB


def _paint_spine(hu: np.ndarray, c: _Coords, body: np.ndarray, scale: float) -> None:
    """Vertebral bodies (cancellous bone, cortex, discs), neural arch, spinous process and the spinal canal."""
    vb_r = 16.0 * scale
    rv2 = c.x ** 2 + (c.y + 56.0 * scale) ** 2
    vb = rv2 <= vb_r ** 2
    disc = np.mod(c.z, 32.0 * scale) < 7.0 * scale
    hu[vb] = _BONE_CANCELLOUS
    hu[vb & (rv2 >= (vb_r - 3.0) ** 2)] = _BONE_CORTEX
    hu[vb & disc] = _DISC
    rc2 = c.x ** 2 + (c.y + 80.0 * scale) ** 2
    hu[(rc2 <= (13.0 * scale) ** 2) & (c.y < -72.0 * scale)] = _BONE_CORTEX  # neural arch
    hu[(np.abs(c.x) <= 4.0 * scale) & (c.y < -88.0 * scale) & (c.y > -104.0 * scale) & body] = _BONE_CORTEX  # spinous
    hu[rc2 <= (7.0 * scale) ** 2] = _CSF


def _grown(js: dict, mm: float) -> dict:
    """A jittered organ spec ``mm`` thicker on every side (semi-axes or tube radii plus ``mm``)."""
    if js["kind"] == "ellipsoid":
        return dict(js, semi=tuple(np.asarray(js["semi"]) + mm))
    return dict(js, parts=tuple(dict(part, radii=np.asarray(part["radii"]) + mm) for part in js["parts"]), wall=0.0)


def _organ_mask(grid: _Grid, js: dict) -> Optional[Tuple[Tuple[slice, slice, slice], np.ndarray, Optional[np.ndarray]]]:
    """``(block, mask, inner)`` of a jittered organ spec, ``inner`` the lumen of a walled tube (else ``None``);
    ``None`` when the organ lies outside the grid."""
    if js["kind"] == "ellipsoid":
        reach = 1.7 * max(js["semi"])  # superellipsoid corners + shape perturbation stay inside
        sl = grid.block(np.asarray(js["center"]) - reach, np.asarray(js["center"]) + reach)
        if sl is None:
            return None
        cs = grid.c.sub(sl)
        mask = _ellipsoid(cs, js["center"], js["semi"], js["rot"], js.get("taper", 0.0), js["shape_coef"], js.get("power", 2.0))
        return sl, mask, None
    allp = np.concatenate([p["points"] for p in js["parts"]])
    reach = max(float(np.max(p["radii"])) for p in js["parts"]) * max(js.get("aniso", (1.0,) * 3))
    sl = grid.block(allp.min(axis=0) - reach, allp.max(axis=0) + reach)
    if sl is None:
        return None
    cs = grid.c.sub(sl)
    depth = None
    for part in js["parts"]:
        d = _tube_distance(cs, part["points"], part["radii"], js.get("aniso", (1.0, 1.0, 1.0)))
        depth = d if depth is None else np.maximum(depth, d)
    inner = depth >= js["wall"] if js.get("wall") else None
    return sl, depth >= 0.0, inner


def _paint_organs(hu: np.ndarray, label: np.ndarray, rng: np.random.Generator, grid: _Grid, cavity: np.ndarray,
                  p: _Patient, var: PhantomVariation = DEFAULT_VARIATION, phase: str = "portal",
                  absent: frozenset = frozenset()) -> None:
    """The 13 organs in :data:`_ORGAN_SPECS` order (later ones overwrite earlier ones), inside the cavity; the
    ``absent`` ones are drawn (so the random stream stays the same) but not painted; an organ with a fat plane
    (``var.fat_planes``) is painted inside it, fat and background over what was there."""
    planes = dict(var.fat_planes)
    for name, spec in _ORGAN_SPECS.items():
        oid = _ID[name]
        js = _jitter_spec(rng, name, spec, p.scale, var)
        value = ORGAN_HU[oid] + float(p.hu_jitter[oid - 1]) + CONTRAST_PHASES[phase].get(oid, 0.0)
        found = None if name in absent else _organ_mask(grid, js)
        if found is None:
            continue
        if planes.get(name, 0.0) > 0:  # the organ and its fat plane, in fat; the organ is painted over it below
            sp, plane, _ = _organ_mask(grid, _grown(js, planes[name]))  # type: ignore[misc]  # holds the organ
            plane &= cavity[sp]
            hu[sp][plane], label[sp][plane] = _FAT, 0
        sl, mask, inner = found
        mask &= cavity[sl]
        hu_b, lab_b = hu[sl], label[sl]  # views
        hu_b[mask] = value
        if inner is not None:
            hu_b[mask & inner] = STOMACH_CONTENTS_HU + p.stomach_fill_jitter
        lab_b[mask] = oid


def _acquire(hu: np.ndarray, rng: np.random.Generator, spacing: Tuple[float, float, float], p: _Patient) -> np.ndarray:
    """Acquisition: partial-volume blur, mildly correlated noise and quantisation to int16 HU."""
    z_sigma = p.blur_sigma * min(1.0, spacing[0] / spacing[2])
    img = ndimage.gaussian_filter(hu, sigma=(p.blur_sigma, p.blur_sigma, z_sigma), mode="nearest")
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), sigma=0.5, mode="wrap")
    noise *= np.float32(p.noise_std / max(float(noise.std()), 1e-6))
    img += noise
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16)


def organ_volumes_ml(label: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """Volume in ml of each of the 13 organs in a label map (0 for an absent organ)."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    counts = np.bincount(np.asarray(label).ravel().astype(np.int64), minlength=len(ORGANS) + 1)
    return {name: float(counts[i + 1]) * voxel_ml for i, name in enumerate(ORGANS)}


def write_phantom_nifti(
    path_image: Union[str, Path],
    path_label: Optional[Union[str, Path]],
    seed: int,
    shape: Sequence[int] = (96, 96, 48),
    spacing: Sequence[float] = (3.0, 3.0, 4.0),
    variation: PhantomVariation = DEFAULT_VARIATION,
) -> Tuple[Path, Optional[Path]]:
    """Generate the SYNTHETIC phantom of ``seed`` and write it as NIfTI (image int16, label uint8).

    Args:
        path_image: output image file (``.nii.gz`` or ``.nii``); parent folders are created.
        path_label: output label file, or ``None`` to write the image only (an unlabeled study).
        seed, shape, spacing, variation: as :func:`generate_phantom`.

    Returns:
        The written paths ``(image_path, label_path_or_None)``.
    """
    import nibabel as nib

    image, label, affine = generate_phantom(seed, shape, spacing, variation)
    written = []
    for path, arr in ((path_image, image), (path_label, label)):
        if path is None:
            written.append(None)
            continue
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nii = nib.Nifti1Image(arr, affine)
        nii.set_qform(affine, code=1)
        nii.set_sform(affine, code=1)
        nii.header.set_xyzt_units("mm")
        nii.header["descrip"] = f"SYNTHETIC dinomix phantom seed={int(seed)}".encode()[:79]
        nib.save(nii, str(path))
        written.append(path)
    return written[0], written[1]
