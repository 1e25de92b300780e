"""The DINO-Mix training loop: supervised Dice+CE, PIC CutMix, EMA-teacher consistency and DINOv3 FKD.

One trainer serves every variant (supervised-only, mean teacher, DINO-Mix with or without FKD), chosen by the
``use_*`` switches of :class:`~dinomix_core.config.DinoMixConfig`. It is a lifecycle, as nnU-Net v2's trainer
is: ``build_*`` hooks make the teacher, the augmenter, the student, the PIC mixer, the pseudo-label aligner, the EMA
teacher and the optimiser; :meth:`DinoMixTrainer.train_step` reads as sample -> pseudo-label -> mix -> forward ->
loss -> step; :meth:`DinoMixTrainer.fit` is the short loop around it, and logging (TensorBoard, progress,
``curves.png``) sits behind one :class:`TrainingCallback`. A variant overrides a hook in a subclass.

Per iteration (docs/method.md, section "Training step"):

1. sample ``batch_size_labeled`` labeled and ``batch_size_unlabeled`` unlabeled patches (supervised-only
   training: ``batch_size_labeled + batch_size_unlabeled`` labeled patches, the same student batch, as the
   baselines' supervised recipe has it);
2. the EMA teacher predicts the (weak view of the) unlabeled patches -> pseudo-labels and a confidence mask;
3. PIC (:meth:`~dinomix_core.pic.PICMixer.mix`): class frequencies updated, tail-first boxes cut from each
   labeled patch into an unlabeled one and vice versa; images, targets, weights and cached teacher features
   mixed with the same boxes;
4. loss = Dice+CE of the ground truth (weight 1) + ramp-up x Dice+CE of the pseudo-labels (weighted by
   confidence), each region scored apart in one pass (``losses.region_dice_ce_terms``)
   + ``fkd_weight`` x FKD (cosine distance of projected student features to DINOv3 features);
5. optimiser step (poly learning rate), EMA update.

Runs on CPU or CUDA (mixed precision on CUDA) and under ``torchrun`` with DDP (only rank 0 writes).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from torch import nn

from .artifacts import ModelFile, ResumeCheckpoint, atomic_write
from .augment import PatchAugmenter
from .config import DinoMixConfig
from .consistency import DistributionAlignment, pseudo_labels, sigmoid_rampup, update_ema
from .data import Volume, case_id_from_path, crop, load_cases, pad_to_patch, patch_coverage, random_patch_start
from .errors import ModelFileError, TrainingError
from .interactive import refiner_loss
from .losses import DifficultyTracker, distdw_weights, floor_mean_one, fkd_loss, region_dice_ce_terms
from .networks import build_student
from .pic import PICMixer, box_size_from_fraction
from .teacher import TeacherFeatureCache, build_teacher

__all__ = ["DinoMixTrainer", "run_training", "TrainingError", "TrainingCallback", "LogCallback"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[Dict[str, Any]], None]


def init_distributed(device: Optional[str]) -> int:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group (NCCL on CUDA, else gloo); returns the rank.

    The trainer then wraps the student in DDP and only rank 0 writes files (see :func:`_dist_info`).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if not dist.is_initialized():
        nccl = torch.cuda.is_available() and str(device or "cuda").startswith("cuda")
        if nccl:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    return dist.get_rank()


def _head_rows(own: Dict[str, torch.Tensor], theirs: Dict[str, torch.Tensor], their_labels: Sequence[str],
               our_labels: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The output head (``head.*``) of a model with labels ``their_labels``, rows moved to ``our_labels``' ids:
    background and the organs both have (by name); the other rows keep ``own``'s initialisation."""
    rows = [(0, 0)] + [(i + 1, list(their_labels).index(n) + 1) for i, n in enumerate(our_labels) if n in their_labels]
    out = {}
    for k, v in theirs.items():
        if k.startswith("head.") and k in own and own[k].shape[1:] == v.shape[1:] and v.shape[0] == len(their_labels) + 1:
            t = own[k].clone()
            for ours, src in rows:
                t[ours] = v[src]
            out[k] = t
    if out:
        logger.info("warm start: output head carried over for background and %d shared organ(s)", len(rows) - 1)
    return out


def _dist_info() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class Patches:
    """Patches sampled from one set of volumes."""

    image: torch.Tensor  # [B, 1, X, Y, Z]: the student's (strong) view
    label: Optional[torch.Tensor]  # [B, X, Y, Z] long; None for unlabeled patches
    feats: Optional[torch.Tensor]  # [B, C, x, y, Z] cached teacher features
    weak: Optional[torch.Tensor] = None  # [B, 1, X, Y, Z]: the EMA teacher's view of unlabeled patches


@dataclass
class StudentBatch:
    """What the student is trained on in one step: the labeled rows first (``n_labeled``), then the unlabeled."""

    image: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor  # 1 on ground truth, the confidence on pseudo-labels
    is_gt: torch.Tensor  # True where the target is ground truth
    n_labeled: int
    feats: Optional[torch.Tensor] = None
    pic: bool = False


class TrainingCallback:
    """Hooks called on rank 0 (override what you need)."""

    def on_train_start(self, trainer: "DinoMixTrainer") -> None:
        pass

    def on_iteration_end(self, trainer: "DinoMixTrainer", record: Dict[str, Any], logs: Dict[str, float],
                         validation: Optional[Dict[str, Any]]) -> None:
        pass

    def on_train_end(self, trainer: "DinoMixTrainer", summary: Dict[str, Any]) -> None:
        pass


class LogCallback(TrainingCallback):
    """TensorBoard events (``OUT/logs``), the caller's progress function and ``OUT/curves.png``."""

    def __init__(self, output_dir: Path, progress: Optional[ProgressFn] = None) -> None:
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.writer = None
        self.t0 = time.time()

    def on_train_start(self, trainer: "DinoMixTrainer") -> None:
        self.t0 = time.time()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.output_dir / "logs"))
        except Exception as e:  # tensorboard missing: keep training
            logger.warning("no TensorBoard logging: %s", e)

    def on_iteration_end(self, trainer, record, logs, validation) -> None:
        it = record["iteration"]
        if self.writer is not None:
            for k, v in logs.items():
                self.writer.add_scalar(f"train/{k}", v, it)
            if validation:
                self.writer.add_scalar("val/mean_dice", validation["mean_dice"], it)
                for n, d in validation["per_organ_dice"].items():
                    if d is not None:
                        self.writer.add_scalar(f"val_dice/{n.replace(' ', '_')}", d, it)
        if self.progress is not None:
            self.progress({
                "iteration": it, "max_iterations": trainer.config.max_iterations, "losses": logs,
                "validation": validation, "best_metric": trainer.best_metric, "elapsed": time.time() - self.t0,
            })

    def on_train_end(self, trainer, summary) -> None:
        if self.writer is not None:
            self.writer.close()
        plot_curves(trainer.history, self.output_dir / "curves.png")


def plot_curves(history: Sequence[Dict[str, Any]], path: Path) -> None:
    """Losses and validation mean Dice over iterations, as a PNG (nothing without matplotlib)."""
    if not history:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        logger.warning("no curves.png: %s", e)
        return
    its = [h["iteration"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k in ("total", "sup", "unsup", "fkd", "refiner"):  # total: the segmenter's; the refiner's is apart
        pts = [(i, h[k]) for i, h in zip(its, history) if h.get(k) is not None]
        if pts:
            axes[0].plot(*zip(*pts), label=k)
    axes[0].set(xlabel="iteration", ylabel="loss")
    axes[0].legend()
    val = [(h["iteration"], h["val_mean_dice"]) for h in history if "val_mean_dice" in h]
    if val:
        axes[1].plot(*zip(*val), marker="o")
    axes[1].set(xlabel="iteration", ylabel="validation mean Dice", title="validation" if val else "no validation set")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


class DinoMixTrainer:
    """Semi-supervised DINO-Mix trainer (arXiv 2602.07819).

    Args:
        config: the run's configuration (saved in every checkpoint).
        labeled: (image path, label path) pairs.
        unlabeled: image paths.
        output_dir: folder for ``model.pt`` (the trained model), ``checkpoint.pt`` (resume), ``summary.json``,
            TensorBoard events (``logs/``) and ``curves.png``.
        validation: held-back labeled cases for per-organ validation Dice (optional).
        init_checkpoint: a model file to warm-start the student from (e.g. the currently published model).
        resume: continue from ``output_dir/checkpoint.pt`` when it exists and matches the configuration.
        progress: called with a dict after every iteration (rank 0 only).
        device: "cpu", "cuda", "cuda:1", ... (default: CUDA when available).
        teacher_model: an already built :class:`~dinomix_core.teacher.DinoV3Teacher` (else built from config).
        should_stop: polled every iteration; when it returns True training ends early and saves.
        callbacks: more :class:`TrainingCallback` objects (after the built-in :class:`LogCallback`).
        labeled_weights: sampling weight of labeled cases by case id (the others weigh 1): a labeled patch comes
            from a case with probability weight / sum of weights. Default: every labeled case equally often.
    """

    def __init__(
        self,
        config: DinoMixConfig,
        labeled: Sequence[Tuple[str, str]],
        unlabeled: Sequence[str],
        output_dir: str,
        *,
        validation: Sequence[Tuple[str, str]] = (),
        init_checkpoint: Optional[str] = None,
        resume: bool = False,
        progress: Optional[ProgressFn] = None,
        device: Optional[str] = None,
        teacher_model: Any = None,
        should_stop: Optional[Callable[[], bool]] = None,
        callbacks: Sequence[TrainingCallback] = (),
        labeled_weights: Optional[Mapping[str, float]] = None,
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.should_stop = should_stop
        self.callbacks = [LogCallback(self.output_dir, progress), *callbacks]
        self.rank, self.world_size = _dist_info()
        self.device = self._select_device(device)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        _seed_everything(config.seed)
        self.gen = torch.Generator().manual_seed(config.seed * 1000 + self.rank)
        # the click refiner's simulated clicks draw from their own stream: the segmenter's is the same with or without it
        self.click_rng = np.random.default_rng(config.seed * 1000 + self.rank + 7)
        self.load_data(labeled, unlabeled, validation)
        self.labeled_probs = self._labeled_probs(labeled_weights, [case_id_from_path(i) for i, _ in labeled])
        self.teacher = self.build_teacher(teacher_model)
        self.stride = self.teacher.feature_stride if self.teacher is not None else 1
        self.cache = TeacherFeatureCache(self.teacher) if (self.teacher is not None and config.teacher_cache) else None
        self.augmenter = self.build_augmenter()
        # cached teacher features are computed on the unwarped volume and cannot follow a rotation
        self.spatial_augment = self.augmenter is not None and config.aug_spatial_prob > 0 and self.cache is None
        self.labeled = [pad_to_patch(v, config.patch_size, self.stride) for v in self.labeled]
        self.unlabeled = [pad_to_patch(v, config.patch_size, self.stride) for v in self.unlabeled]
        self.model = self.build_student()
        self.mixer = self.build_mixer()
        self.tracker = self.mixer.tracker
        self.aligner = self.build_aligner()
        self.difficulty = (DifficultyTracker(config.out_channels, config.diffdw_accumulate_iters)
                           if "diffdw" in config.class_weighting else None)
        self.start_iteration, self.best_metric = 0, -1.0
        self.history: List[Dict[str, Any]] = []
        self.best_model: Optional[ModelFile] = None
        if init_checkpoint:
            self.warm_start(init_checkpoint)
        self.ema = self.build_ema()
        self.optimizer = self.build_optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if resume:
            self.resume()
        self.net = self.model
        if self.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.total_stride = tuple(int(np.prod([s[a] for s in config.strides])) for a in range(3))
        self.dice_metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)

    # ------------------------------------------------------------------ build hooks
    def _select_device(self, device: Optional[str]) -> torch.device:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device) == "cuda" and self.world_size > 1:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        return torch.device(device)

    def load_data(self, labeled: Sequence[Tuple[str, str]], unlabeled: Sequence[str],
                  validation: Sequence[Tuple[str, str]]) -> None:
        """Read and preprocess every volume; decide between semi-supervised and supervised-only training."""
        cfg = self.config
        self.labeled, sk1 = load_cases(cfg, [(i, l) for i, l in labeled])
        self.unlabeled, sk2 = load_cases(cfg, [(i, None) for i in unlabeled])
        self.validation, sk3 = load_cases(cfg, [(i, l) for i, l in validation])
        self.skipped: List[str] = sk1 + sk2 + sk3
        if not self.labeled:
            raise TrainingError(
                "no usable labeled volume: DINO-Mix needs at least one image with a final label"
                + (f" ({len(self.skipped)} skipped: {'; '.join(self.skipped)})" if self.skipped else ".")
            )
        #: organ ids present in the training labels (saved with the model: what it has seen)
        self.label_ids = sorted({int(i) for v in self.labeled for i in torch.unique(v.label).tolist()} - {0})
        self.semi_supervised = (
            bool(self.unlabeled) and (cfg.use_consistency or cfg.use_pic) and cfg.batch_size_unlabeled > 0
        )
        # Supervised-only training puts as many labeled patches through the student as a semi-supervised step puts
        # labeled + unlabeled ones: the baselines' recipe (DHC trains its supervised V-Net on batch 4 against 2 + 2).
        self.labeled_batch = cfg.batch_size_labeled + (0 if self.semi_supervised else cfg.batch_size_unlabeled)
        #: supervised-only iterations before the semi-supervised terms start (BCP's pre-training)
        self.warmup_iterations = int(round(cfg.warmup_fraction * cfg.max_iterations)) if self.semi_supervised else 0
        if (cfg.use_consistency or cfg.use_pic) and not self.unlabeled:
            logger.warning("no unlabeled volumes: training supervised only (consistency and PIC need unlabeled data)")

    def _labeled_probs(self, weights: Optional[Mapping[str, float]], given: Sequence[str]) -> Optional[torch.Tensor]:
        """Each labeled volume's sampling probability from ``labeled_weights``; None for uniform sampling. Weights of
        cases that were given but skipped (unreadable) are ignored; a case id never given is an error."""
        if not weights:
            return None
        ids = [v.case_id for v in self.labeled]
        unknown = sorted(set(weights) - set(given))
        if unknown:
            raise ValueError(f"labeled_weights names cases that are not labeled training volumes: {unknown}.")
        w = torch.tensor([float(weights.get(i, 1.0)) for i in ids], dtype=torch.float64)
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"labeled_weights must be finite and >= 0 with a positive sum, got {dict(weights)}.")
        return w / w.sum()

    def build_teacher(self, teacher_model: Any = None) -> Any:
        """The frozen DINOv3 teacher of FKD, or None (FKD off or no teacher configured)."""
        cfg = self.config
        if not cfg.use_fkd:
            return None
        if teacher_model is None and cfg.fkd_enabled:
            teacher_model = build_teacher(cfg.teacher, upsample=cfg.teacher_upsample,
                                          batch_size=cfg.teacher_batch_size, device=self.device)
        if teacher_model is None:
            logger.warning("FKD is off: no teacher configured (teacher=%r)", cfg.teacher)
        return teacher_model

    def build_augmenter(self) -> Optional[PatchAugmenter]:
        cfg = self.config
        if not cfg.augment:
            return None
        if self.cache is not None and cfg.aug_spatial_prob > 0:
            logger.info("teacher-feature cache on: spatial augmentation off (intensity augmentation stays on)")
        return PatchAugmenter(cfg, seed=cfg.seed * 1000 + self.rank)

    def build_student(self) -> nn.Module:
        """The student on the training device; on the CPU its weights are channels-last, which makes oneDNN's
        convolutions of a training batch (and so the EMA copy's) about 15 % faster here."""
        channels = self.teacher.hidden_size if self.teacher is not None else None
        net = build_student(self.config, teacher_channels=channels).to(self.device)
        return net.to(memory_format=torch.channels_last_3d) if self.device.type == "cpu" else net

    def build_mixer(self) -> PICMixer:
        cfg, s = self.config, self.stride
        return PICMixer(
            cfg.out_channels, box_size=box_size_from_fraction(cfg.patch_size, cfg.pic_box_fraction, (s, s, 1)),
            align=(s, s, 1), start_power=cfg.pic_start_power, schedule=cfg.pic_schedule,
            schedule_fraction=cfg.pic_schedule_fraction, freq_momentum=cfg.freq_momentum, generator=self.gen,
            shared_box=cfg.pic_shared_box,
        )

    def build_aligner(self) -> Optional[DistributionAlignment]:
        """ReMixMatch's distribution alignment of the teacher's probabilities before pseudo-labelling
        (``pseudo_label_alignment``), towards the class shares that uniformly drawn patches of the labeled volumes
        hold (the unlabeled patches are drawn so; the labeled ones are organ-centred and would overstate the small
        organs, whole volumes understate the central organs); None when off."""
        cfg = self.config
        if not (cfg.pseudo_label_alignment and self.semi_supervised):
            return None
        align, n = (self.stride, self.stride, 1), cfg.out_channels
        counts = sum(torch.bincount(v.label.reshape(-1).long().cpu(), minlength=n,
                                    weights=patch_coverage(v.shape, cfg.patch_size, align).reshape(-1))[:n]
                     for v in self.labeled)
        return DistributionAlignment(counts, cfg.alignment_momentum)

    def build_ema(self) -> nn.Module:
        """The EMA teacher: a frozen copy of the (warm-started) student."""
        ema = copy.deepcopy(self.model).eval()
        for p in ema.parameters():
            p.requires_grad_(False)
        return ema

    def build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                   nesterov=True, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    # ------------------------------------------------------------------ model files and checkpoints
    def warm_start(self, path: str) -> None:
        """Load every tensor of a model file whose name and shape match the student's; the output head of a model
        trained for another label set carries over the organs the two share (matched by name) and background."""
        try:
            mf = ModelFile.load(path)
        except (OSError, ModelFileError) as e:
            raise TrainingError(f"cannot read the warm-start model {path!r}: {e}") from e
        own, state = self.model.state_dict(), mf.model
        compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        theirs = tuple(mf.config.get("label_names") or ())
        if theirs and theirs != tuple(self.config.label_names):
            compatible.update(_head_rows(own, state, theirs, self.config.label_names))
        if not compatible:
            logger.warning("warm start: %s shares no weights with this configuration; starting from scratch", path)
            return
        own.update(compatible)
        self.model.load_state_dict(own)
        logger.info("warm start from %s (%d/%d tensors)", path, len(compatible), len(own))

    def checkpoint_path(self) -> Path:
        return self.output_dir / "checkpoint.pt"

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` when it is an unfinished run of this configuration."""
        path = self.checkpoint_path()
        if not path.exists():
            return
        try:
            ckpt = ResumeCheckpoint.load(path)
        except ModelFileError as e:  # a torn or foreign file: start again rather than crash
            logger.warning("cannot resume (%s); starting a new run", e)
            return
        own = self.model.state_dict()
        same_model = set(ckpt.model) == set(own) and all(ckpt.model[k].shape == own[k].shape for k in own)
        same_optimizer = ckpt.config.get("optimizer") == self.config.optimizer
        if ckpt.finished or not same_model or not same_optimizer or ckpt.iteration >= self.config.max_iterations:
            logger.info("checkpoint %s is from a finished or different run; starting a new run", path)
            return
        self.model.load_state_dict(ckpt.model)
        self.ema.load_state_dict(ckpt.ema)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.tracker.load_state_dict(ckpt.tracker)
        if self.difficulty is not None and ckpt.difficulty:
            self.difficulty.load_state_dict(ckpt.difficulty)
        if self.aligner is not None and ckpt.aligner:
            self.aligner.load_state_dict(ckpt.aligner)
        self.gen.set_state(ckpt.generator)
        if self.augmenter is not None and ckpt.augmenter:
            self.augmenter.load_state_dict(ckpt.augmenter)
        if ckpt.click_rng:
            self.click_rng.bit_generator.state = ckpt.click_rng
        self.start_iteration, self.best_metric, self.history = ckpt.iteration, ckpt.best_metric, list(ckpt.history)
        logger.info("resumed from %s at iteration %d", path, self.start_iteration)

    def save_checkpoint(self, iteration: int, finished: bool = False) -> None:
        ResumeCheckpoint(
            model=self.model.state_dict(), ema=self.ema.state_dict(), optimizer=self.optimizer.state_dict(),
            tracker=self.tracker.state_dict(), generator=self.gen.get_state(), config=self.config.to_dict(),
            iteration=iteration, best_metric=self.best_metric, history=self.history[-2000:],
            augmenter=self.augmenter.state_dict() if self.augmenter is not None else None, finished=finished,
            click_rng=self.click_rng.bit_generator.state,
            difficulty=self.difficulty.state_dict() if self.difficulty is not None else None,
            aligner=self.aligner.state_dict() if self.aligner is not None else None,
        ).save(self.checkpoint_path())

    def model_file(self, iteration: int, validation: Optional[Dict[str, Any]]) -> ModelFile:
        """The student as a :class:`~dinomix_core.artifacts.ModelFile`."""
        return ModelFile(
            model={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            config=self.config.to_dict(), label_ids=self.label_ids,
            teacher_channels=self.teacher.hidden_size if self.teacher is not None else None, iteration=iteration,
            metric=validation["mean_dice"] if validation else None,
            per_organ_dice=validation["per_organ_dice"] if validation else None,
            trained_on={k: [v.case_id for v in vols] for k, vols in
                        (("labeled", self.labeled), ("unlabeled", self.unlabeled), ("validation", self.validation))},
        )

    # ------------------------------------------------------------------ one step
    def sample(self, volumes: Sequence[Volume], n: int, labeled: bool) -> Patches:
        """``n`` random patches (organ-centred and class-balanced for labeled ones), augmented."""
        cfg = self.config
        images, labels, feats, weak = [], [], [], []
        probs = self.labeled_probs if volumes is self.labeled else None
        for _ in range(n):
            if probs is None:
                v = volumes[int(torch.randint(len(volumes), (), generator=self.gen))]
            else:
                v = volumes[int(torch.multinomial(probs, 1, generator=self.gen))]
            start = random_patch_start(
                v.shape, cfg.patch_size, self.gen, align=(self.stride, self.stride, 1),
                label=v.label if labeled else None, foreground_prob=cfg.crop_foreground_prob if labeled else 0.0,
                class_voxels=v.class_voxels() if labeled and cfg.crop_class_balanced else None,
            )
            image = crop(v.image, start, cfg.patch_size)
            label = crop(v.label, start, cfg.patch_size).long() if labeled else None
            image, label, weak_view = self.augment(image, label)
            images.append(image)
            labels += [label] if labeled else []
            weak += [weak_view] if weak_view is not None else []
            if self.cache is not None:
                self.cache.get(v.case_id, v.image)
                feats.append(self.cache.crop(v.case_id, start, cfg.patch_size))

        def stack(xs: List[torch.Tensor]) -> Optional[torch.Tensor]:
            return torch.stack(xs).to(self.device) if xs else None

        feats_t = stack(feats)
        return Patches(stack(images), stack(labels), None if feats_t is None else feats_t.float(), stack(weak))

    def augment(self, image: torch.Tensor, label: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """One patch's augmentation: the same warp for image and label, then the strong intensity view; an
        unlabeled patch also gets a weak view (same warp) for the EMA teacher. Returns (image, label, weak)."""
        if self.augmenter is None:
            return image, label, None
        if self.spatial_augment:
            image, label = self.augmenter.spatial(image, label)
        weak = self.augmenter.intensity(image, strong=False) if label is None else None
        return self.augmenter.intensity(image, label, strong=True), label, weak

    @torch.no_grad()
    def pseudo_label(self, unl: Patches) -> Tuple[torch.Tensor, torch.Tensor]:
        """The EMA teacher's hard pseudo-labels of the unlabeled patches and their 0/1 confidence mask."""
        with torch.autocast(self.device.type, enabled=self.use_amp):
            logits = self.ema(unl.weak if unl.weak is not None else unl.image)
        if self.aligner is not None:
            self.aligner.update(torch.softmax(logits.float(), dim=1))
        labels, conf, _ = pseudo_labels(logits.float(), self.config.confidence_threshold,
                                        self.config.pseudo_label_lcc, align=self.aligner)
        return labels, conf

    def mix(self, lab: Patches, unl: Optional[Patches], pseudo: Optional[Tuple[torch.Tensor, torch.Tensor]],
            progress: float) -> StudentBatch:
        """The student's batch: labeled patches, then unlabeled ones with pseudo-labels (PIC-mixed when on)."""
        ones = torch.ones_like(lab.label, dtype=torch.float32)
        if unl is None:
            self.tracker.update(lab.label)
            return StudentBatch(lab.image, lab.label, ones, ones.bool(), lab.image.shape[0], lab.feats)
        y_u, conf = pseudo
        if not self.config.use_pic:
            self.tracker.update(lab.label)
            self.tracker.update(y_u, conf.bool())
            feats = torch.cat([lab.feats, unl.feats]) if lab.feats is not None else None
            return StudentBatch(torch.cat([lab.image, unl.image]), torch.cat([lab.label, y_u]), torch.cat([ones, conf]),
                                torch.cat([ones.bool(), torch.zeros_like(y_u, dtype=torch.bool)]),
                                lab.image.shape[0], feats)
        m = self.mixer.mix(lab.image, lab.label, unl.image, y_u, conf, progress, lab.feats, unl.feats, self.stride)
        # the clean labeled patches first when they are trained on too: they count as labeled rows
        clean = [lab] if self.config.clean_labeled_loss else []
        feats = None if m.feats_l is None else torch.cat([*(c.feats for c in clean), m.feats_l, m.feats_u])
        return StudentBatch(
            torch.cat([*(c.image for c in clean), m.image_l, m.image_u]),
            torch.cat([*(c.label for c in clean), m.target_l, m.target_u]),
            torch.cat([*(ones for _ in clean), m.weight_l, m.weight_u]),
            torch.cat([*(ones.bool() for _ in clean), m.gt_l, m.gt_u]),
            lab.image.shape[0] * (1 + len(clean)), feats, pic=True,
        )

    def forward(self, batch: StudentBatch) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Student logits, projected features and the teacher features they are distilled to (FKD)."""
        feats = batch.feats
        if self.teacher is not None and feats is None:  # live teacher on the (mixed) patches
            feats = self.teacher(batch.image).to(self.device)
        self.net.train()
        with torch.autocast(self.device.type, enabled=self.use_amp):
            # the projection head runs on the teacher's grid (networks.DinoMixStudent.forward)
            if feats is None:
                return self.net(batch.image).float(), None, None
            logits, proj = self.net(batch.image, return_features=True, feature_size=tuple(feats.shape[2:]))
        return logits.float(), proj.float(), feats.float()

    def class_weights(self, logits: torch.Tensor, target: torch.Tensor, gt_mask: torch.Tensor) -> Optional[torch.Tensor]:
        """``[C]`` class weights of this step's losses (``class_weighting``), or None: DHC's DistDW from the tracked
        class frequencies, DiffDW from the student's Dice on the ground-truth voxels (``gt_mask``), or their
        product [ours: DHC gives each to one of its two co-trained networks]."""
        cfg = self.config
        if cfg.class_weighting == "none":
            return None
        if self.difficulty is None:
            return distdw_weights(self.tracker.frequencies, cfg.class_weight_floor)
        scores = self.difficulty.update(logits.detach().argmax(1), target, gt_mask)
        if cfg.class_weighting == "distdw_diffdw":
            scores = distdw_weights(self.tracker.frequencies, 0.0) * scores
        return floor_mean_one(scores, cfg.class_weight_floor)

    def compute_loss(self, batch: StudentBatch, logits: torch.Tensor, proj: Optional[torch.Tensor],
                     feats: Optional[torch.Tensor], iteration: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Ground truth at weight 1 (labeled rows: ``sup``; GT boxes pasted into unlabeled rows: ``gt_box``),
        pseudo-labels at λ(t) (``unsup``), each scored on its own region in one pass, + FKD."""
        cfg = self.config
        semi_its = iteration - self.warmup_iterations
        ramp = sigmoid_rampup(max(0, semi_its), cfg.rampup_fraction * (cfg.max_iterations - self.warmup_iterations))
        labeled_rows = (torch.arange(batch.image.shape[0], device=self.device) < batch.n_labeled).view(-1, 1, 1, 1)
        regions = {"sup": batch.is_gt & labeled_rows}
        cw = self.class_weights(logits, batch.target, regions["sup"])
        if batch.image.shape[0] > batch.n_labeled:
            regions["unsup"] = ~batch.is_gt
            if batch.pic:
                regions["gt_box"] = batch.is_gt & ~labeled_rows
        terms = dict(zip(regions, region_dice_ce_terms(logits, batch.target, batch.weight, list(regions.values()), cw)))
        unsup_w = cfg.consistency_weight * ramp if cfg.use_consistency else 0.0
        loss = terms["sup"] + unsup_w * terms.get("unsup", 0.0) + terms.get("gt_box", 0.0)
        logs = {"lr": self._lr(iteration), "ramp": ramp, **{k: float(v.detach()) for k, v in terms.items()}}
        if proj is not None:
            loss_f = fkd_loss(proj, feats)
            loss = loss + cfg.fkd_weight * loss_f
            logs["fkd"] = float(loss_f.detach())
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {float(loss)} at iteration {iteration}; lower the learning rate.")
        logs["total"] = float(loss.detach())
        return loss, logs

    #: labeled patches per iteration the click refiner is trained on
    refiner_rows = 1

    def refiner_term(self, batch: StudentBatch, logits: torch.Tensor, logs: Dict[str, float]) -> torch.Tensor:
        """The click refiner's weighted loss on the labeled rows (``interactive.refiner_loss``; 0 without one)."""
        cfg, refiner = self.config, getattr(self.model, "refiner", None)
        if refiner is None or cfg.refiner_weight == 0:
            return torch.zeros((), device=self.device)
        n = min(batch.n_labeled, self.refiner_rows)
        with torch.autocast(self.device.type, enabled=self.use_amp):
            term = refiner_loss(refiner, batch.image[:n], logits[:n], batch.target[:n], batch.is_gt[:n],
                                cfg.refiner_max_clicks, cfg.refiner_sigma, self.click_rng, self.total_stride)
        if term is None:
            return torch.zeros((), device=self.device)
        logs["refiner"] = float(term.detach())
        return cfg.refiner_weight * term

    def _lr(self, iteration: int) -> float:
        return self.config.learning_rate * (1.0 - iteration / self.config.max_iterations) ** self.config.poly_power

    def step(self, loss: torch.Tensor, iteration: int) -> None:
        """Backward, optimiser step at the poly learning rate, EMA update."""
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr(iteration)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        update_ema(self.ema, self.model, self.config.ema_momentum)

    def train_step(self, iteration: int) -> Dict[str, float]:
        """One iteration: sample -> pseudo-label -> mix -> forward -> loss -> step; returns the logged values.

        During the warm-up the step is supervised only (as many labeled patches as a supervised run takes); at
        its end the EMA teacher restarts from the student.
        """
        cfg = self.config
        warm = iteration < self.warmup_iterations
        if iteration == self.warmup_iterations > 0:
            self.ema.load_state_dict(self.model.state_dict())
        semi = self.semi_supervised and not warm
        n_lab = self.labeled_batch if semi or not self.semi_supervised else cfg.batch_size_labeled + cfg.batch_size_unlabeled
        lab = self.sample(self.labeled, n_lab, labeled=True)
        unl = self.sample(self.unlabeled, cfg.batch_size_unlabeled, labeled=False) if semi else None
        pseudo = self.pseudo_label(unl) if unl is not None else None
        batch = self.mix(lab, unl, pseudo, iteration / cfg.max_iterations)
        logits, proj, feats = self.forward(batch)
        loss, logs = self.compute_loss(batch, logits, proj, feats, iteration)
        loss = loss + self.refiner_term(batch, logits, logs)
        self.step(loss, iteration)
        if pseudo is not None:
            logs["confident"] = float(pseudo[1].float().mean())
        return logs

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> Optional[Dict[str, Any]]:
        """Per-organ Dice of the student on the validation volumes (None without any)."""
        if not self.validation:
            return None
        cfg = self.config
        self.model.eval()
        per_case = []
        for v in self.validation:
            with torch.autocast(self.device.type, enabled=self.use_amp):
                logits = sliding_window_inference(v.image[None].to(self.device), cfg.inference_roi, 2, self.model,
                                                  overlap=cfg.sw_overlap)
            pred = one_hot(logits.float().argmax(1, keepdim=True), cfg.out_channels)
            ref = one_hot(v.label[None, None].long().to(self.device), cfg.out_channels)
            per_case.append(self.dice_metric(pred, ref).cpu()[0])
        self.dice_metric.reset()
        per_organ = torch.nanmean(torch.stack(per_case), 0)
        organs = {n: (None if math.isnan(x) else round(float(x), 4)) for n, x in zip(cfg.label_names, per_organ)}
        valid = per_organ[~torch.isnan(per_organ)]
        return {"mean_dice": float(valid.mean()) if len(valid) else 0.0, "per_organ_dice": organs}

    def _validation_due(self, it: int) -> bool:
        cfg = self.config
        return bool(self.validation) and ((cfg.val_interval and it % cfg.val_interval == 0) or it == cfg.max_iterations)

    # ------------------------------------------------------------------ loop
    def _notify(self, event: str, *args: Any) -> None:
        if self.rank == 0:
            for cb in self.callbacks:
                getattr(cb, event)(self, *args)

    def fit(self) -> Dict[str, Any]:
        """Train to ``max_iterations`` (or until ``should_stop``); write ``model.pt``; return a summary."""
        t0, it, stopped = time.time(), self.start_iteration, False
        val: Optional[Dict[str, Any]] = None
        ckpt_every = max(10, self.config.max_iterations // 10)
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._notify("on_train_start")
        while it < self.config.max_iterations:
            if self.should_stop is not None and self.should_stop():
                stopped = True
                break
            logs = self.train_step(it)
            it += 1
            record = {"iteration": it, **{k: round(v, 5) for k, v in logs.items()}}
            due = self._validation_due(it)
            if due:
                val = self.validate()
                record["val_mean_dice"] = val["mean_dice"]
                if val["mean_dice"] > self.best_metric and self.rank == 0:
                    self.best_metric, self.best_model = val["mean_dice"], self.model_file(it, val)
            self.history.append(record)
            if self.rank == 0 and it % ckpt_every == 0:
                self.save_checkpoint(it)
            self._notify("on_iteration_end", record, logs, val if due else None)
        return self.finish(it, stopped, time.time() - t0, val)

    def finish(self, it: int, stopped: bool, seconds: float, last_val: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Save the best (else the last) model and the checkpoint; the run's summary."""
        summary: Dict[str, Any] = {"iterations": it, "stopped": stopped, "seconds": seconds,
                                   "checkpoint": str(self.output_dir / "model.pt"), "skipped": self.skipped,
                                   "labeled": len(self.labeled), "unlabeled": len(self.unlabeled),
                                   "validation": len(self.validation), "best_metric": None, "per_organ_dice": None}
        if self.labeled_probs is not None:
            summary["labeled_shares"] = {v.case_id: round(float(p), 4) for v, p in zip(self.labeled, self.labeled_probs)}
        if self.rank != 0:
            return summary
        best = self.best_model or self.model_file(it, last_val)
        best.history = self.history[-2000:]
        best.save(self.output_dir / "model.pt")
        self.save_checkpoint(it, finished=not stopped)
        summary.update(best_metric=best.metric, per_organ_dice=best.per_organ_dice)
        self._notify("on_train_end", summary)
        atomic_write(self.output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
        return summary


def run_training(
    config: DinoMixConfig,
    labeled: Sequence[Tuple[str, str]],
    unlabeled: Sequence[str],
    output_dir: str,
    **kwargs: Any,
) -> Dict[str, Any]:
    """Train DINO-Mix and write ``output_dir/model.pt``; returns the summary. Keyword arguments: those of
    :class:`DinoMixTrainer` (``validation``, ``init_checkpoint``, ``resume``, ``progress``, ``device``,
    ``should_stop``, ...)."""
    return DinoMixTrainer(config, labeled, unlabeled, output_dir, **kwargs).fit()
