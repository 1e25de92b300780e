"""The DINO-Mix training loop: supervised Dice+CE, PIC CutMix, EMA-teacher consistency and DINOv3 FKD.

One loop serves every variant (supervised-only, mean teacher, DINO-Mix with or without FKD), chosen by the
``use_*`` switches of :class:`~dinomix_core.config.DinoMixConfig`. Per iteration (docs/method.md, section
"Training step"):

1. sample ``batch_size_labeled`` labeled and ``batch_size_unlabeled`` unlabeled patches (supervised-only
   training: ``batch_size_labeled + batch_size_unlabeled`` labeled patches, the same student batch, as the
   baselines' supervised recipe has it);
2. the EMA teacher predicts the unlabeled patches -> pseudo-labels and a confidence mask;
3. the class-frequency tracker is updated (ground truth + confident pseudo-labels);
4. PIC: boxes around voxels of a class drawn from the tail-first-to-uniform curriculum are cut from each
   labeled patch into an unlabeled one and vice versa; images, targets, loss weights and cached teacher
   features are mixed with the same boxes;
5. loss = Dice+CE of the ground truth (weight 1) + ramp-up x Dice+CE of the pseudo-labels (weighted by
   confidence), each region scored apart in one pass (``losses.region_dice_ce_terms``)
   + ``fkd_weight`` x FKD (cosine distance of projected student features to DINOv3 features);
6. optimiser step (poly learning rate), EMA update.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from . import __version__
from .augment import PatchAugmenter
from .config import DinoMixConfig
from .consistency import pseudo_labels, sigmoid_rampup, update_ema
from .data import Volume, crop, load_cases, pad_to_patch, random_patch_start
from .losses import fkd_loss, region_dice_ce_terms
from .errors import TrainingError
from .networks import build_student
from .pic import PICMixer, box_mask, box_size_from_fraction
from .teacher import TeacherFeatureCache, build_teacher, mix_features

__all__ = ["DinoMixTrainer", "run_training", "TrainingError", "atomic_save"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[Dict[str, Any]], None]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _dist_info() -> Tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class _Batch:
    image: torch.Tensor  # [B, 1, X, Y, Z]
    label: Optional[torch.Tensor]  # [B, X, Y, Z] long
    feats: Optional[torch.Tensor]  # [B, C, x, y, Z]
    weak: Optional[torch.Tensor] = None  # [B, 1, X, Y, Z]: the EMA teacher's view of unlabeled patches


class DinoMixTrainer:
    """Semi-supervised DINO-Mix trainer.

    Args:
        config: the run's configuration (saved in every checkpoint).
        labeled: (image path, label path) pairs.
        unlabeled: image paths.
        output_dir: folder for ``model.pt`` (published model), ``checkpoint.pt`` (resume), ``train_stats.json``,
            TensorBoard events (``logs/``) and ``curves.png``.
        validation: held-back labeled cases for per-organ validation Dice (optional).
        init_checkpoint: a model file to warm-start the student from (e.g. the currently published model).
        resume: continue from ``output_dir/checkpoint.pt`` when it exists and matches the configuration.
        progress: called with a dict after every iteration (rank 0 only).
        device: "cpu", "cuda", "cuda:1", ... (default: CUDA when available).
        teacher_model: an already built :class:`~dinomix_core.teacher.DinoV3Teacher` (else built from config).
        should_stop: polled every iteration; when it returns True training ends early and saves.
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
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.should_stop = should_stop
        self.rank, self.world_size = _dist_info()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and self.world_size > 1 and str(device) == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device)
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        _seed_everything(config.seed)
        self.gen = torch.Generator().manual_seed(config.seed * 1000 + self.rank)

        self.skipped: List[str] = []
        self.labeled, sk1 = load_cases(config, [(i, l) for i, l in labeled])
        self.unlabeled, sk2 = load_cases(config, [(i, None) for i in unlabeled])
        self.validation, sk3 = load_cases(config, [(i, l) for i, l in validation])
        self.skipped = sk1 + sk2 + sk3
        if not self.labeled:
            raise TrainingError(
                "no usable labeled volume: DINO-Mix needs at least one image with a final label"
                + (f" ({len(self.skipped)} skipped: {'; '.join(self.skipped)})" if self.skipped else ".")
            )
        #: organ ids present in the training labels (saved with the model: what it has seen)
        self.label_ids = sorted({int(i) for v in self.labeled for i in torch.unique(v.label).tolist()} - {0})
        self.semi_supervised = (
            bool(self.unlabeled) and (config.use_consistency or config.use_pic) and config.batch_size_unlabeled > 0
        )
        # Supervised-only training puts as many labeled patches through the student as a semi-supervised step puts
        # labeled + unlabeled ones: the baselines' recipe (DHC trains its supervised V-Net on batch 4 against 2 + 2).
        self.labeled_batch = config.batch_size_labeled + (0 if self.semi_supervised else config.batch_size_unlabeled)
        if (config.use_consistency or config.use_pic) and not self.unlabeled:
            logger.warning("no unlabeled volumes: training supervised only (consistency and PIC need unlabeled data)")

        # teacher (FKD)
        self.teacher = teacher_model
        if self.teacher is None and config.fkd_enabled:
            self.teacher = build_teacher(
                config.teacher, upsample=config.teacher_upsample, batch_size=config.teacher_batch_size, device=self.device
            )
        if not config.use_fkd:
            self.teacher = None
        elif self.teacher is None:
            logger.warning("FKD is off: no teacher configured (teacher=%r)", config.teacher)
        self.stride = self.teacher.feature_stride if self.teacher is not None else 1
        self.cache = TeacherFeatureCache(self.teacher) if (self.teacher is not None and config.teacher_cache) else None

        self.augmenter = PatchAugmenter(config, seed=config.seed * 1000 + self.rank) if config.augment else None
        # cached teacher features are computed on the unwarped volume and cannot follow a rotation
        self.spatial_augment = self.augmenter is not None and config.aug_spatial_prob > 0 and self.cache is None
        if self.augmenter is not None and self.cache is not None and config.aug_spatial_prob > 0:
            logger.info("teacher-feature cache on: spatial augmentation off (intensity augmentation stays on)")

        multiple = self.stride
        self.labeled = [pad_to_patch(v, config.patch_size, multiple) for v in self.labeled]
        self.unlabeled = [pad_to_patch(v, config.patch_size, multiple) for v in self.unlabeled]

        # networks
        teacher_channels = self.teacher.hidden_size if self.teacher is not None else None
        self.model = build_student(config, teacher_channels=teacher_channels).to(self.device)
        self.start_iteration = 0
        self.best_metric = -1.0
        self.history: List[Dict[str, Any]] = []
        self.mixer = PICMixer(
            config.out_channels,
            box_size=box_size_from_fraction(config.patch_size, config.pic_box_fraction, (self.stride, self.stride, 1)),
            align=(self.stride, self.stride, 1),
            start_power=config.pic_start_power,
            schedule=config.pic_schedule,
            schedule_fraction=config.pic_schedule_fraction,
            freq_momentum=config.freq_momentum,
            generator=self.gen,
        )
        self.tracker = self.mixer.tracker
        if init_checkpoint:
            self._warm_start(init_checkpoint)
        self.ema = copy.deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=config.learning_rate, momentum=config.momentum, nesterov=True,
                weight_decay=config.weight_decay,
            )
        else:
            self.optimizer = torch.optim.AdamW(
                self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
            )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        if resume:
            self._resume()
        self.net = self.model
        if self.world_size > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.dice_metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)

    # ------------------------------------------------------------------ checkpoints
    def _warm_start(self, path: str) -> None:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise TrainingError(f"cannot read the warm-start model {path!r}: {e}") from e
        state = ckpt.get("model", ckpt)
        own = self.model.state_dict()
        compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not compatible:
            logger.warning("warm start: %s shares no weights with this configuration; starting from scratch", path)
            return
        own.update(compatible)
        self.model.load_state_dict(own)
        logger.info("warm start from %s (%d/%d tensors)", path, len(compatible), len(own))

    def checkpoint_path(self) -> Path:
        return self.output_dir / "checkpoint.pt"

    def _resume(self) -> None:
        path = self.checkpoint_path()
        if not path.exists():
            return
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: start again rather than crash
            logger.warning("cannot resume from %s (%s); starting a new run", path, e)
            return
        own, state = self.model.state_dict(), ckpt.get("model", {})
        same_model = set(state) == set(own) and all(tuple(state[k].shape) == tuple(own[k].shape) for k in own)
        same_optimizer = ckpt.get("config", {}).get("optimizer") == self.config.optimizer
        done = int(ckpt.get("iteration", 0)) >= self.config.max_iterations
        if ckpt.get("finished") or not same_model or not same_optimizer or done:
            logger.info("checkpoint %s is from a finished or different run; starting a new run", path)
            return
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.tracker.load_state_dict(ckpt["tracker"])
        self.start_iteration = int(ckpt["iteration"])
        self.best_metric = float(ckpt.get("best_metric", -1.0))
        self.history = list(ckpt.get("history", []))
        self._ema_state = ckpt.get("ema")
        if self._ema_state is not None:
            self.ema.load_state_dict(self._ema_state)
        self.gen.set_state(ckpt["generator"])
        if self.augmenter is not None and ckpt.get("augmenter"):
            self.augmenter.load_state_dict(ckpt["augmenter"])
        logger.info("resumed from %s at iteration %d", path, self.start_iteration)

    def _save_checkpoint(self, iteration: int, finished: bool = False) -> None:
        if self.rank != 0:
            return
        atomic_save(
            {
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "tracker": self.tracker.state_dict(),
                "iteration": iteration,
                "best_metric": self.best_metric,
                "history": self.history[-2000:],
                "generator": self.gen.get_state(),
                "augmenter": self.augmenter.state_dict() if self.augmenter is not None else None,
                "config": self.config.to_dict(),
                "finished": finished,
            },
            self.checkpoint_path(),
        )

    def model_payload(self, iteration: int, metric: Optional[float]) -> Dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "config": self.config.to_dict(),
            "label_names": list(self.config.label_names),
            "teacher_channels": self.teacher.hidden_size if self.teacher is not None else None,
            "iteration": iteration,
            "metric": metric,
            "label_ids": self.label_ids,
            "trained_on": {
                "labeled": [v.case_id for v in self.labeled],
                "unlabeled": [v.case_id for v in self.unlabeled],
                "validation": [v.case_id for v in self.validation],
            },
            "dinomix_version": __version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    # ------------------------------------------------------------------ batches
    def _sample(self, volumes: Sequence[Volume], n: int, labeled: bool) -> _Batch:
        cfg = self.config
        images, labels, feats, weak = [], [], [], []
        for _ in range(n):
            v = volumes[int(torch.randint(len(volumes), (), generator=self.gen))]
            start = random_patch_start(
                v.shape, cfg.patch_size, self.gen, align=(self.stride, self.stride, 1),
                label=v.label if labeled else None, foreground_prob=cfg.crop_foreground_prob if labeled else 0.0,
                class_voxels=v.class_voxels() if labeled and cfg.crop_class_balanced else None,
            )
            image = crop(v.image, start, cfg.patch_size)
            label = crop(v.label, start, cfg.patch_size).long() if labeled else None
            if self.augmenter is not None:
                image, label, weak_view = self._augment(image, label)
                if weak_view is not None:
                    weak.append(weak_view)
            images.append(image)
            if labeled:
                labels.append(label)
            if self.cache is not None:
                if v.case_id not in self.cache:
                    self.cache.get(v.case_id, v.image)
                feats.append(self.cache.crop(v.case_id, start, cfg.patch_size))
        return _Batch(
            torch.stack(images).to(self.device),
            torch.stack(labels).to(self.device) if labeled else None,
            torch.stack(feats).to(self.device).float() if feats else None,
            torch.stack(weak).to(self.device) if weak else None,
        )

    def _augment(
        self, image: torch.Tensor, label: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """One patch's augmentation: the same warp for image and label, then the strong intensity view; an
        unlabeled patch also gets a weak view (same warp) for the EMA teacher. Returns (image, label, weak)."""
        if self.spatial_augment:
            image, label = self.augmenter.spatial(image, label)
        weak = self.augmenter.intensity(image, strong=False) if label is None else None
        return self.augmenter.intensity(image, label, strong=True), label, weak

    def _lr(self, iteration: int) -> float:
        return self.config.learning_rate * (1.0 - iteration / self.config.max_iterations) ** self.config.poly_power

    # ------------------------------------------------------------------ one step
    def train_step(self, iteration: int) -> Dict[str, float]:
        cfg = self.config
        progress = iteration / cfg.max_iterations
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr(iteration)
        lab = self._sample(self.labeled, self.labeled_batch, labeled=True)
        bl = lab.image.shape[0]
        ramp = sigmoid_rampup(iteration, cfg.rampup_fraction * cfg.max_iterations)
        pseudo_w = cfg.consistency_weight * ramp
        images, targets = lab.image, lab.label
        weights = torch.ones_like(lab.label, dtype=torch.float32)  # 1 on ground truth, confidence on pseudo-labels
        is_gt = torch.ones_like(lab.label, dtype=torch.bool)
        unsup_w = 0.0  # λ(t): multiplies the pseudo-label loss
        feats = lab.feats
        logs: Dict[str, float] = {"lr": self._lr(iteration), "ramp": ramp}
        if self.semi_supervised:
            unl = self._sample(self.unlabeled, cfg.batch_size_unlabeled, labeled=False)
            with torch.no_grad(), torch.autocast(self.device.type, enabled=self.use_amp):
                ema_logits = self.ema(unl.weak if unl.weak is not None else unl.image)
            y_u, conf, _ = pseudo_labels(ema_logits.float(), cfg.confidence_threshold)
            unsup_w = pseudo_w if cfg.use_consistency else 0.0
            logs["confident"] = float(conf.float().mean())
            nu = unl.image.shape[0]
            x_l, t_l, w_l, f_l, g_l = lab.image, lab.label, weights, lab.feats, is_gt
            x_u, t_u, w_u, f_u = unl.image, y_u, conf.float(), unl.feats
            g_u = torch.zeros_like(y_u, dtype=torch.bool)
            if cfg.use_pic:
                # counts GT + confident pseudo-labels, samples tail-first boxes, mixes both ways (pic.PICMixer)
                mixed, boxes_l, boxes_u = self.mixer(
                    lab.image, lab.label, unl.image, y_u, conf.float(), progress, w_l=weights
                )
                x_l, t_l, w_l = mixed.image_l, mixed.target_l, mixed.weight_l
                x_u, t_u, w_u = mixed.image_u, mixed.target_u, mixed.weight_u
                shape = tuple(lab.label.shape[1:])
                g_l = torch.stack([~box_mask(shape, boxes_u[i].start, boxes_u[i].size, self.device) for i in range(bl)])
                g_u = torch.stack([box_mask(shape, boxes_l[i].start, boxes_l[i].size, self.device) for i in range(nu)])
                if lab.feats is not None:  # cached teacher features, mixed with the same boxes
                    f_l = torch.stack([
                        mix_features(lab.feats[i % bl], unl.feats[i % nu], boxes_u[i].start, boxes_u[i].size, self.stride)
                        for i in range(bl)
                    ])
                    f_u = torch.stack([
                        mix_features(unl.feats[i % nu], lab.feats[i % bl], boxes_l[i].start, boxes_l[i].size, self.stride)
                        for i in range(nu)
                    ])
                logs["pic_class"] = float(boxes_l[-1].label)
            else:
                self.tracker.update(lab.label)
                self.tracker.update(y_u, conf.bool())
            images = torch.cat([x_l, x_u])
            targets = torch.cat([t_l, t_u])
            weights = torch.cat([w_l, w_u])
            is_gt = torch.cat([g_l, g_u])
            feats = torch.cat([f_l, f_u]) if f_l is not None else None
        else:
            self.tracker.update(lab.label)

        use_fkd = self.teacher is not None
        if use_fkd and feats is None:  # live teacher on the (mixed) patches
            feats = self.teacher(images).to(self.device)
        self.net.train()
        with torch.autocast(self.device.type, enabled=self.use_amp):
            # the projection head runs on the teacher's grid (networks.DinoMixStudent.forward)
            out = self.net(images, return_features=use_fkd, feature_size=tuple(feats.shape[2:]) if use_fkd else None)
        logits, proj = (out if use_fkd else (out, None))
        logits = logits.float()
        # ground truth at weight 1 (labeled patches: "sup"; GT boxes pasted into unlabeled ones: "gt_box") and
        # pseudo-labels at λ(t) ("unsup"), each scored on its own region (see losses.region_dice_ce), in one pass
        labeled_rows = (torch.arange(images.shape[0], device=self.device) < bl).view(-1, 1, 1, 1)
        regions = {"sup": is_gt & labeled_rows}
        if images.shape[0] > bl:
            regions["unsup"] = ~is_gt
            if cfg.use_pic:
                regions["gt_box"] = is_gt & ~labeled_rows
        terms = dict(zip(regions, region_dice_ce_terms(logits, targets, weights, list(regions.values()))))
        loss = terms["sup"]
        if "unsup" in terms:
            loss = loss + unsup_w * terms["unsup"]
        if "gt_box" in terms:
            loss = loss + terms["gt_box"]
        logs.update({k: float(v.detach()) for k, v in terms.items()})
        if use_fkd:
            loss_f = fkd_loss(proj.float(), feats.float())
            loss = loss + cfg.fkd_weight * loss_f
            logs["fkd"] = float(loss_f.detach())
        if not torch.isfinite(loss):
            raise TrainingError(f"loss became {float(loss)} at iteration {iteration}; lower the learning rate.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        update_ema(self.ema, self.model, cfg.ema_momentum)
        logs["total"] = float(loss.detach())
        return logs

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> Optional[Dict[str, Any]]:
        if not self.validation:
            return None
        self.model.eval()
        per_case = []
        for v in self.validation:
            with torch.autocast(self.device.type, enabled=self.use_amp):
                logits = sliding_window_inference(
                    v.image[None].to(self.device), self.config.patch_size, 2, self.model, overlap=self.config.sw_overlap
                )
            pred = one_hot(logits.float().argmax(1, keepdim=True), self.config.out_channels)
            ref = one_hot(v.label[None, None].long().to(self.device), self.config.out_channels)
            per_case.append(self.dice_metric(pred, ref).cpu()[0])
        self.dice_metric.reset()
        d = torch.stack(per_case)
        per_organ = torch.nanmean(d, 0)
        organs = {n: (None if math.isnan(x) else round(float(x), 4)) for n, x in zip(self.config.label_names, per_organ)}
        valid = per_organ[~torch.isnan(per_organ)]
        mean = float(valid.mean()) if len(valid) else 0.0
        return {"mean_dice": mean, "per_organ_dice": organs}

    # ------------------------------------------------------------------ loop
    def fit(self) -> Dict[str, Any]:
        cfg = self.config
        t0 = time.time()
        writer = None
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.output_dir / "logs"))
            except Exception as e:  # tensorboard missing: keep training
                logger.warning("no TensorBoard logging: %s", e)
        it = self.start_iteration
        last_val: Optional[Dict[str, Any]] = None
        stopped = False
        best_payload = None
        ckpt_every = max(10, cfg.max_iterations // 10)
        while it < cfg.max_iterations:
            if self.should_stop is not None and self.should_stop():
                stopped = True
                break
            logs = self.train_step(it)
            it += 1
            record = {"iteration": it, **{k: round(v, 5) for k, v in logs.items()}}
            val_due = self.validation and ((cfg.val_interval and it % cfg.val_interval == 0) or it == cfg.max_iterations)
            if val_due:
                last_val = self.validate()
                record["val_mean_dice"] = last_val["mean_dice"]
                if last_val["mean_dice"] > self.best_metric and self.rank == 0:
                    self.best_metric = last_val["mean_dice"]
                    best_payload = self.model_payload(it, self.best_metric)
                    best_payload["per_organ_dice"] = last_val["per_organ_dice"]
            self.history.append(record)
            if self.rank == 0:
                if writer is not None:
                    for k, v in logs.items():
                        writer.add_scalar(f"train/{k}", v, it)
                    if last_val and val_due:
                        writer.add_scalar("val/mean_dice", last_val["mean_dice"], it)
                        for n, d in last_val["per_organ_dice"].items():
                            if d is not None:
                                writer.add_scalar(f"val_dice/{n.replace(' ', '_')}", d, it)
                if it % ckpt_every == 0:
                    self._save_checkpoint(it)
                if self.progress is not None:
                    self.progress(
                        {
                            "iteration": it,
                            "max_iterations": cfg.max_iterations,
                            "losses": logs,
                            "validation": last_val if val_due else None,
                            "best_metric": self.best_metric,
                            "elapsed": time.time() - t0,
                        }
                    )
        summary: Dict[str, Any] = {"iterations": it, "stopped": stopped, "seconds": time.time() - t0}
        if self.rank == 0:
            if writer is not None:
                writer.close()
            if best_payload is None:
                best_payload = self.model_payload(it, last_val["mean_dice"] if last_val else None)
                if last_val:
                    best_payload["per_organ_dice"] = last_val["per_organ_dice"]
            best_payload["history"] = self.history[-2000:]
            atomic_save(best_payload, self.output_dir / "model.pt")
            self._save_checkpoint(it, finished=not stopped)
            self._plot_curves()
        summary.update(
            {
                "checkpoint": str(self.output_dir / "model.pt"),
                "best_metric": best_payload["metric"] if self.rank == 0 else None,
                "per_organ_dice": (best_payload or {}).get("per_organ_dice"),
                "skipped": self.skipped,
                "labeled": len(self.labeled),
                "unlabeled": len(self.unlabeled),
                "validation": len(self.validation),
            }
        )
        if self.rank == 0:
            (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary

    def _plot_curves(self) -> None:
        if not self.history:
            return
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except Exception as e:
            logger.warning("no curves.png: %s", e)
            return
        its = [h["iteration"] for h in self.history]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for k in ("total", "sup", "unsup", "fkd"):
            ys = [h.get(k) for h in self.history]
            if any(y is not None for y in ys):
                axes[0].plot([i for i, y in zip(its, ys) if y is not None], [y for y in ys if y is not None], label=k)
        axes[0].set_xlabel("iteration")
        axes[0].set_ylabel("loss")
        axes[0].legend()
        vx = [h["iteration"] for h in self.history if "val_mean_dice" in h]
        vy = [h["val_mean_dice"] for h in self.history if "val_mean_dice" in h]
        if vx:
            axes[1].plot(vx, vy, marker="o")
        axes[1].set_xlabel("iteration")
        axes[1].set_ylabel("validation mean Dice")
        axes[1].set_title("no validation set" if not vx else "validation")
        fig.tight_layout()
        tmp = self.output_dir / ".curves.tmp.png"
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, self.output_dir / "curves.png")


def run_training(
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
    should_stop: Optional[Callable[[], bool]] = None,
) -> Dict[str, Any]:
    """Train DINO-Mix and publish ``output_dir/model.pt``; returns a summary (see :class:`DinoMixTrainer`)."""
    trainer = DinoMixTrainer(
        config, labeled, unlabeled, output_dir, validation=validation, init_checkpoint=init_checkpoint,
        resume=resume, progress=progress, device=device, should_stop=should_stop,
    )
    return trainer.fit()
