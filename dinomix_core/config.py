"""One configuration object for DINO-Mix, saved inside every checkpoint and read back for inference.

The same :class:`DinoMixConfig` drives the network builder, preprocessing, training and inference
(as nnU-Net does with its plans), so a model file is self-describing.

DINO-Mix: arXiv 2602.07819. What the paper states and what is our choice is in ``docs/method.md``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from .labels import NUM_CLASSES, ORGAN_ABBREVIATIONS, ORGANS, SMALL_ORGANS

__all__ = ["ORGANS", "ORGAN_ABBREVIATIONS", "NUM_CLASSES", "SMALL_ORGANS", "DinoMixConfig", "PRESETS", "RECIPE", "get_preset",
           "CLASS_WEIGHTINGS"]

#: ``DinoMixConfig.class_weighting`` values: none, DHC's DistDW, DHC's DiffDW, or their product
CLASS_WEIGHTINGS = ("none", "distdw", "diffdw", "distdw_diffdw")


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _in_range(cfg: Any, name: str, low: float, high: float, upper_open: bool = False) -> None:
    """``ValueError`` unless ``low <= cfg.name <= high`` (``< high`` when ``upper_open``)."""
    v = getattr(cfg, name)
    if not (low <= v < high if upper_open else low <= v <= high):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{')' if upper_open else ']'}, got {v}.")


@dataclass(frozen=True)
class DinoMixConfig:
    """Everything needed to rebuild, train and run a DINO-Mix model.

    Frozen: a run never mutates its configuration; use :meth:`replace` to derive a new one.

    Args:
        preset: name of the preset this configuration started from (informative).
        spatial_dims: 3 (volumetric CT).
        in_channels: image channels (1 for CT).
        out_channels: classes including background (14 for Synapse).
        label_names: organ names for label ids 1..out_channels-1.
        channels: feature channels of the student's encoder stages.
        strides: down-sampling stride of each encoder stage after the first, as (x, y, z) tuples.
        num_res_units: residual units per stage (0 = plain conv blocks).
        dropout: dropout probability in the student.
        fkd_stage: index of the encoder stage whose features are distilled (the projection head sits there).
        patch_size: training / sliding-window patch in MONAI array order (x, y, z); axial slices are the last axis.
        target_spacing: preprocessing voxel spacing in mm, (x, y, z) as MONAI's Spacing takes it.
        # preprocessing
    hu_range: HU clip window, scaled to [0, 1].
        teacher: DINOv3 local folder or hub id, or "none" to disable FKD.
        teacher_upsample: integer factor axial slices are enlarged by before the ViT, so one teacher token covers
            ``vit_patch_size / teacher_upsample`` voxels in-plane (must divide the ViT patch size).
        teacher_batch_size: axial slices per teacher forward pass.
        teacher_cache: compute the teacher's features once per volume and crop/mix them per patch (True), or run
            the teacher live on every (mixed) patch (False).
        use_fkd / use_pic / use_consistency: switch each DINO-Mix component on or off (ablations).
        fkd_weight: weight beta of the FKD loss.
        # consistency: EMA teacher pseudo-labels
    consistency_weight: maximum weight lambda of the unlabeled loss (reached at the end of the ramp-up).
        rampup_fraction: fraction of training over which lambda follows the sigmoid ramp-up.
        confidence_threshold: pseudo-label confidence below which a voxel is masked out.
        pseudo_label_lcc: also mask out the pseudo-labeled voxels of an organ outside its largest connected
            component in the patch (BCP keeps the largest component of its pseudo-labels).
        pseudo_label_alignment: align the teacher's class probabilities with the class shares of uniformly drawn
            patches of the labeled volumes before pseudo-labelling (ReMixMatch's distribution alignment, damping
            only; see ``consistency.DistributionAlignment`` and ``DinoMixTrainer.build_aligner``).
        alignment_momentum: EMA momentum of the teacher's predicted class distribution for the alignment.
        ema_momentum: EMA teacher momentum.
        pic_start_power / pic_schedule: PIC class-sampling curriculum (see ``pic.curriculum_distribution``).
        # PIC: the CutMix curriculum
    pic_box_fraction: CutMix box size as a fraction of the patch, per axis (x, y, z).
        pic_shared_box: one box per labeled/unlabeled pair, centred on a ground-truth organ drawn from the
            curriculum, pasted both ways (BCP's one mask), instead of a second box centred on a pseudo-labeled organ.
        # recipe: warm-up, class weights, clean labeled loss
    warmup_fraction: fraction of training that is supervised only; at its end the EMA teacher is reset to the
            student (BCP initialises its teacher from a supervised pre-training).
        clean_labeled_loss: with PIC, the student also sees each labeled patch unmixed (its loss beside the mixed ones).
        class_weighting: class weights on the ground-truth and the pseudo-label losses: ``none``; ``distdw``:
            DHC's distribution-aware weights from the tracked class frequencies (``losses.distdw_weights``);
            ``diffdw``: DHC's difficulty-aware weights from the student's Dice on the labeled voxels
            (``losses.DifficultyTracker``); ``distdw_diffdw``: their product.
        class_weight_floor: the smallest class weight before scaling to mean 1 (keeps background in the CE).
        diffdw_accumulate_iters: EMA horizon, in iterations, of the DiffDW difficulty (DHC: 50).
        freq_momentum: EMA momentum of the class-frequency tracker.
        max_iterations: training iterations.
        batch_size_labeled / batch_size_unlabeled: patches per iteration. Supervised-only training (PIC and
            consistency off, or no unlabeled volume) takes ``batch_size_labeled + batch_size_unlabeled`` labeled
            patches instead, the same student batch (the baselines' supervised recipe: DHC trains its supervised
            V-Net on batch 4 against 2 labeled + 2 unlabeled).
        optimizer: "sgd" (baselines' recipe) or "adamw".
        learning_rate, momentum, weight_decay, poly_power: optimiser and poly learning-rate decay.
        val_interval: validate every N iterations (0 = only at the end).
        crop_foreground_prob: probability that a labeled training patch is centred on an organ voxel.
        crop_class_balanced: draw that organ uniformly among the organs present (else: a random foreground voxel,
            which is mostly liver).
        augment: augment training patches (``dinomix_core.augment``); the EMA teacher sees a weak view of each
            unlabeled patch and the student a strong one.
        aug_spatial_prob: probability of a random rotation + scaling per patch (0: no spatial augmentation).
        # patch sampling and augmentation
    aug_rotate_deg: maximum rotation in degrees about the x, y and z axes (z: in the axial plane).
        aug_scale: maximum relative scaling per axis (0.2: factors in [0.8, 1.2]).
        aug_intensity: maximum global intensity scale and shift, in units of the HU window.
        aug_noise_std: standard deviation of the additive Gaussian noise, in units of the HU window.
        aug_organ_prob: probability that a labeled patch's organs each get a random mean intensity (contrast
            phase: a contrast-enhanced kidney is about 200 HU, a non-contrast one 30 HU).
        aug_organ_hu: (low, high) HU range the organs' random mean intensities are drawn from.
        aug_curve_prob: probability that the student's view of an unlabeled patch gets a random monotone intensity
            curve (MONAI ``RandHistogramShift``): a label-free change of tissue contrast, which the pseudo-labels of
            the teacher's weak view teach the student to ignore. Labeled patches never get it (0: off).
        aug_curve_points: (min, max) control points of that curve; fewer points, larger intensity moves.
        seed: random seed.
        amp: mixed precision on CUDA.
        # inference
    sw_overlap: sliding-window overlap at inference.
        sw_roi_size: the inference window (x, y, z); a side below the patch's is the patch's (the network is fully
            convolutional). Larger than the training patch, fewer overlapping windows cover a volume: on the
            2-core CPU the ``cpu`` preset segments the 122 x 101 x 112 real CT about twice as fast, for 0.8
            points of mean Dice on SYNTHETIC phantoms (benchmarks/results/2026-12-02-inference-window.md).
        refiner: train the click refiner of interactive editing (``dinomix_edit``) beside the segmenter, in the
            same run: a small encoder-decoder of its own (``refiner_channels``) that takes the image, the
            segmenter's probabilities of the edited organ and of background (detached) and the two click guidance
            maps, and predicts that organ (``dinomix_core.interactive``). The segmenter's own training is untouched.
        refiner_channels: channels of the click refiner's stages (its strides are ``strides``; cut or extended
            with its last value to one per stage, see ``refiner_stage_channels``).
        refiner_weight: weight of the click refiner's loss in the training loss.
        refiner_max_clicks: simulated clicks per training patch are drawn from 1..this.
        refiner_sigma: width in voxels (model grid) of the Gaussian each click adds to its guidance map.
        keep_largest_component: at inference keep only the largest connected component of each organ (each of
            the 13 organs is one connected structure; removes scattered false positives in anatomy the training
            volumes did not cover).
    """

    # network (MONAI parameter names)
    preset: str = "cpu"
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = NUM_CLASSES
    label_names: Tuple[str, ...] = ORGANS
    fkd_stage: int = 2
    num_res_units: int = 1
    dropout: float = 0.0
    strides: Tuple[Tuple[int, int, int], ...] = ((2, 2, 1), (2, 2, 2), (2, 2, 2))
    channels: Tuple[int, ...] = (8, 16, 32, 64)
    hu_range: Tuple[float, float] = (-75.0, 275.0)
    patch_size: Tuple[int, int, int] = (96, 96, 32)
    target_spacing: Tuple[float, float, float] = (3.0, 3.0, 3.0)
    # FKD: the DINOv3 teacher
    teacher: str = "none"
    fkd_weight: float = 0.5
    teacher_upsample: int = 1
    use_fkd: bool = True
    teacher_batch_size: int = 16
    teacher_cache: bool = True
    consistency_weight: float = 1.0
    rampup_fraction: float = 0.4
    ema_momentum: float = 0.99
    use_consistency: bool = True
    confidence_threshold: float = 0.7
    pseudo_label_lcc: bool = False
    pseudo_label_alignment: bool = False
    alignment_momentum: float = 0.99
    pic_box_fraction: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    freq_momentum: float = 0.99
    pic_schedule_fraction: float = 0.8
    use_pic: bool = True
    pic_shared_box: bool = False
    pic_start_power: float = 1.0
    pic_schedule: str = "linear"
    warmup_fraction: float = 0.0
    class_weight_floor: float = 0.1
    class_weighting: str = "none"
    diffdw_accumulate_iters: int = 50
    clean_labeled_loss: bool = False
    # optimisation and budget
    batch_size_unlabeled: int = 1
    val_interval: int = 50
    amp: bool = True
    batch_size_labeled: int = 1
    poly_power: float = 0.9
    optimizer: str = "adamw"
    weight_decay: float = 3e-5
    max_iterations: int = 300
    momentum: float = 0.9
    learning_rate: float = 3e-3
    seed: int = 0
    aug_rotate_deg: Tuple[float, float, float] = (6.0, 6.0, 15.0)
    aug_spatial_prob: float = 0.8
    crop_class_balanced: bool = True
    aug_scale: float = 0.2
    aug_organ_hu: Tuple[float, float] = (0.0, 250.0)
    aug_organ_prob: float = 0.8
    aug_intensity: float = 0.1
    aug_noise_std: float = 0.03
    aug_curve_prob: float = 0.0
    aug_curve_points: Tuple[int, int] = (4, 10)
    crop_foreground_prob: float = 0.67
    augment: bool = True
    sw_overlap: float = 0.25
    sw_roi_size: Tuple[int, int, int] = (128, 128, 64)
    keep_largest_component: bool = True
    # interactive editing: the click refiner
    refiner: bool = True
    refiner_channels: Tuple[int, ...] = (8, 16, 32, 32)
    refiner_weight: float = 1.0
    refiner_max_clicks: int = 5
    refiner_sigma: float = 2.0

    def __post_init__(self) -> None:
        # normalise lists (from JSON) to tuples without mutating a frozen instance's identity semantics
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(_tuple(x) for x in v))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        self._validate_network()
        self._validate_method()
        self._validate_optimisation()
        self._validate_augmentation()

    def _validate_network(self) -> None:
        if self.spatial_dims != 3:
            raise ValueError(f"spatial_dims must be 3 for CT volumes, got {self.spatial_dims}.")
        if self.in_channels < 1 or self.out_channels < 2:
            raise ValueError("in_channels must be >= 1 and out_channels >= 2.")
        if len(self.label_names) != self.out_channels - 1:
            raise ValueError(
                f"label_names has {len(self.label_names)} names but out_channels={self.out_channels} needs "
                f"{self.out_channels - 1}."
            )
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise ValueError("strides must have one entry per encoder stage after the first (len(channels) - 1).")
        if any(int(c) < 1 for c in self.channels):
            raise ValueError(f"channels must all be positive, got {self.channels}.")
        if not 0 <= self.fkd_stage < len(self.channels):
            raise ValueError(f"fkd_stage must index an encoder stage (0..{len(self.channels) - 1}).")
        if len(self.patch_size) != 3 or any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size must be three positive sizes (x, y, z), got {self.patch_size}.")
        total = [1, 1, 1]
        for s in self.strides:
            if len(s) != 3:
                raise ValueError(f"each stride must be (x, y, z), got {s}.")
            total = [t * int(x) for t, x in zip(total, s)]
        if any(p % t for p, t in zip(self.patch_size, total)):
            raise ValueError(f"patch_size {self.patch_size} must be divisible by the total stride {tuple(total)}.")
        if self.num_res_units < 0:
            raise ValueError(f"num_res_units must be >= 0, got {self.num_res_units}.")
        if self.hu_range[0] >= self.hu_range[1]:
            raise ValueError("hu_range must be (low, high) with low < high.")
        if not self.refiner_channels or any(int(c) < 1 for c in self.refiner_channels):
            raise ValueError(f"refiner_channels must be positive sizes, got {self.refiner_channels}.")
        if self.refiner_weight < 0 or self.refiner_max_clicks < 1 or self.refiner_sigma <= 0:
            raise ValueError("refiner_weight must be >= 0, refiner_max_clicks >= 1 and refiner_sigma > 0.")

    def _validate_method(self) -> None:
        _in_range(self, "ema_momentum", 0.0, 1.0, upper_open=True)
        _in_range(self, "freq_momentum", 0.0, 1.0, upper_open=True)
        _in_range(self, "alignment_momentum", 0.0, 1.0, upper_open=True)
        _in_range(self, "confidence_threshold", 0.0, 1.0)
        _in_range(self, "rampup_fraction", 0.0, 1.0)
        _in_range(self, "warmup_fraction", 0.0, 1.0, upper_open=True)
        _in_range(self, "class_weight_floor", 0.0, 1.0)
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {self.class_weighting!r}.")
        if self.diffdw_accumulate_iters < 1:
            raise ValueError(f"diffdw_accumulate_iters must be >= 1, got {self.diffdw_accumulate_iters}.")
        if self.pic_schedule not in ("linear", "cosine", "step"):
            raise ValueError("pic_schedule must be 'linear', 'cosine' or 'step'.")
        if not 0.0 < self.pic_schedule_fraction <= 1.0:
            raise ValueError("pic_schedule_fraction must be in (0, 1].")
        if any(not 0.0 < b <= 1.0 for b in self.pic_box_fraction) or len(self.pic_box_fraction) != 3:
            raise ValueError("pic_box_fraction must be three fractions in (0, 1].")
        if self.fkd_weight < 0 or self.consistency_weight < 0:
            raise ValueError(
                f"fkd_weight and consistency_weight must be >= 0, got {self.fkd_weight} and {self.consistency_weight}."
            )
        if self.teacher_batch_size < 1 or self.teacher_upsample < 1:
            raise ValueError("teacher_batch_size and teacher_upsample must be >= 1.")

    def _validate_optimisation(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError("optimizer must be 'sgd' or 'adamw'.")
        if self.max_iterations < 1 or self.batch_size_labeled < 1 or self.batch_size_unlabeled < 0:
            raise ValueError("max_iterations and batch_size_labeled must be >= 1, batch_size_unlabeled >= 0.")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive.")
        if not 0.0 <= self.momentum < 1.0 or self.weight_decay < 0:
            raise ValueError(
                f"momentum must be in [0, 1) and weight_decay >= 0, got {self.momentum} and {self.weight_decay}."
            )
        _in_range(self, "dropout", 0.0, 1.0, upper_open=True)
        _in_range(self, "sw_overlap", 0.0, 1.0, upper_open=True)
        if len(self.sw_roi_size) != 3 or any(int(r) < 0 for r in self.sw_roi_size):
            raise ValueError(f"sw_roi_size must be three sizes >= 0 (x, y, z), got {self.sw_roi_size}.")
        if self.val_interval < 0:
            raise ValueError(f"val_interval must be >= 0 (0 = only at the end), got {self.val_interval}.")

    def _validate_augmentation(self) -> None:
        _in_range(self, "crop_foreground_prob", 0.0, 1.0)
        _in_range(self, "aug_spatial_prob", 0.0, 1.0)
        _in_range(self, "aug_scale", 0.0, 1.0, upper_open=True)
        _in_range(self, "aug_organ_prob", 0.0, 1.0)
        _in_range(self, "aug_curve_prob", 0.0, 1.0)
        if len(self.aug_curve_points) != 2 or not 3 <= self.aug_curve_points[0] <= self.aug_curve_points[1]:
            raise ValueError(f"aug_curve_points must be (min, max) with 3 <= min <= max, got {self.aug_curve_points}.")
        if len(self.aug_rotate_deg) != 3 or any(not 0 <= d <= 180 for d in self.aug_rotate_deg):
            raise ValueError(f"aug_rotate_deg must be three angles in [0, 180], got {self.aug_rotate_deg}.")
        if min(self.aug_intensity, self.aug_noise_std) < 0:
            raise ValueError("aug_intensity and aug_noise_std must be >= 0.")
        if len(self.aug_organ_hu) != 2 or self.aug_organ_hu[0] > self.aug_organ_hu[1]:
            raise ValueError(f"aug_organ_hu must be (low, high) with low <= high, got {self.aug_organ_hu}.")

    @property
    def inference_roi(self) -> Tuple[int, int, int]:
        """The sliding window of inference and validation: ``sw_roi_size``, at least ``patch_size``, rounded up
        to a multiple of the network's total stride."""
        total = [1, 1, 1]
        for s in self.strides:
            total = [t * int(x) for t, x in zip(total, s)]
        return tuple(-(-max(int(p), int(r)) // t) * t for p, r, t in zip(self.patch_size, self.sw_roi_size, total))

    @property
    def refiner_stage_channels(self) -> Tuple[int, ...]:
        """``refiner_channels`` with one entry per stage of ``channels`` (cut, or extended with its last value)."""
        rc, n = tuple(int(c) for c in self.refiner_channels), len(self.channels)
        return rc[:n] + (rc[-1],) * max(0, n - len(rc))

    @property
    def fkd_enabled(self) -> bool:
        """FKD runs only when switched on and a teacher is configured."""
        return self.use_fkd and str(self.teacher).lower() not in ("", "none")

    def replace(self, **changes: Any) -> "DinoMixConfig":
        """A new configuration with ``changes`` applied (validated)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown DinoMixConfig field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DinoMixConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DinoMixConfig field(s): {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


#: DINO-Mix's semi-supervised recipe (docs/method.md, "Recipe options"), every entry a DinoMixConfig field, each
#: chosen on the validation split of ``dinomix benchmark ssl`` (SYNTHETIC phantoms) with the ``cpu`` preset: the
#: consistency weight and threshold (benchmarks/results/2026-12-02-ssl-pseudo-label-weight/), no supervised warm-up
#: (30.1 against 28.6, 2026-12-04-ssl-no-warmup.md), pseudo-labels kept to each organ's largest connected
#: component (30.5 against 30.1, 2026-12-04-ssl-pseudo-label-lcc.md). The ``cpu`` preset carries it; the ``paper``
#: preset keeps the baselines' settings, on which it was never measured.
RECIPE: Dict[str, Any] = dict(
    consistency_weight=1.0, rampup_fraction=1.0, confidence_threshold=0.8, warmup_fraction=0.0,
    clean_labeled_loss=True, class_weighting="distdw", pic_shared_box=True, pic_box_fraction=(0.67, 0.67, 0.67),
    pseudo_label_lcc=True,
)

#: The named starting points of every configuration; the preset choices of the CLI and the app are
#: ``sorted(PRESETS)``. ``cpu``: a small network and patches for a CPU (the dataclass defaults) with DINO-Mix's
#: recipe (``RECIPE``). ``paper``: the baselines' recipe (DHC): V-Net-sized network, patch 128x128x64 (x, y, z),
#: SGD 3e-2 poly, batch 2+2.
PRESETS: Dict[str, DinoMixConfig] = {
    "cpu": DinoMixConfig(preset="cpu", **RECIPE),
    "paper": DinoMixConfig(
        preset="paper", channels=(32, 64, 128, 256, 512), strides=((2, 2, 2),) * 4, num_res_units=2, dropout=0.1,
        fkd_stage=3, patch_size=(128, 128, 64), target_spacing=(1.5, 1.5, 2.0), optimizer="sgd", learning_rate=3e-2,
        momentum=0.9, weight_decay=3e-5, batch_size_labeled=2, batch_size_unlabeled=2, max_iterations=2400,
        consistency_weight=0.1, val_interval=200, teacher_batch_size=32, refiner_channels=(16, 32, 64, 64, 64),
    ),
}


def get_preset(name: str, **overrides: Any) -> DinoMixConfig:
    """The configuration of preset ``name`` with ``overrides`` applied (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name].replace(**{k: v for k, v in overrides.items() if v is not None})
