"""Training jobs as a labeling server runs them: options, validation split, live stats, publishing.

Used by the MONAI Label app's train task (``apps/dinomix/lib/trainers``) so that the app holds no method logic.
Stats are written atomically to ``MODEL_DIR/train/train_stats.json`` after every iteration, in the keys the
stock 3D Slicer MONAI Label plugin polls (``epoch``, ``total_epochs``, ``best_metric``) plus per-organ Dice
and the losses.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .config import DinoMixConfig, get_preset
from .registry import ModelRegistry, atomic_write_text

__all__ = ["TRAIN_OPTIONS", "parse_train_options", "TrainingJob", "read_train_stats", "split_validation"]

logger = logging.getLogger(__name__)

#: Options a user can set per training request (shown and editable in 3D Slicer), with their defaults.
TRAIN_OPTIONS: Dict[str, Any] = {
    "max_iterations": 200,
    "preset": "cpu",
    "teacher": "none",
    "use_fkd": True,
    "use_pic": True,
    "use_consistency": True,
    "device": "auto",
    "val_fraction": 0.2,
    "min_labeled_for_validation": 5,
    "warm_start": True,
    "seed": 0,
}

_SUPERVISED_NOTE = "no usable unlabeled volume: trained supervised only (consistency and PIC need unlabeled images)"

_BOOL = ("use_fkd", "use_pic", "use_consistency", "warm_start")


def _to_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return v.strip().lower() in ("true", "1", "yes", "on")
    raise ValueError(f"option {name!r} must be true or false, got {v!r}.")


def parse_train_options(request: Dict[str, Any], defaults: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Merge a training request over the defaults and validate it (``ValueError`` naming the bad option).

    Keys that are not training options (``model``, MONAI Label's ``tracking``...) are ignored. The stock
    Slicer plugin's ``max_epochs`` is accepted as an alias of ``max_iterations``.
    """
    opts = dict(TRAIN_OPTIONS)
    opts.update(defaults or {})
    req = dict(request or {})
    if "max_epochs" in req and "max_iterations" not in req:
        req["max_iterations"] = req["max_epochs"]
    for k in TRAIN_OPTIONS:
        if k in req and req[k] is not None and req[k] != "":
            opts[k] = req[k]
    for key, kind in (("max_iterations", int), ("seed", int), ("min_labeled_for_validation", int),
                      ("val_fraction", float)):
        try:
            opts[key] = kind(opts[key])
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise ValueError(f"{key} must be {what}, got {opts[key]!r}.") from None
    if not 1 <= opts["max_iterations"] <= 1_000_000:
        raise ValueError(f"max_iterations must be between 1 and 1000000, got {opts['max_iterations']}.")
    if not 0.0 <= opts["val_fraction"] < 1.0:
        raise ValueError("val_fraction must be in [0, 1).")
    for k in _BOOL:
        opts[k] = _to_bool(k, opts[k])
    if opts["preset"] not in ("cpu", "paper"):
        raise ValueError(f"preset must be 'cpu' or 'paper', got {opts['preset']!r}.")
    dev = str(opts["device"]).strip().lower()
    if dev in ("", "auto", "default"):
        dev = "auto"
    elif not (dev == "cpu" or dev == "cuda" or dev.startswith("cuda:")):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {opts['device']!r}.")
    opts["device"] = dev
    opts["teacher"] = str(opts["teacher"] or "none")
    return opts


def split_validation(
    labeled: Sequence[Tuple[str, str, str]], fraction: float, minimum: int
) -> Tuple[List[Tuple[str, str, str]], List[Tuple[str, str, str]], str]:
    """Hold back every k-th labeled case (sorted by id) for validation when there are at least ``minimum``.

    Returns (train, validation, note) where note says why there is no validation set when there is none.
    """
    cases = sorted(labeled)
    if fraction <= 0:
        return cases, [], "no validation: val_fraction is 0"
    if len(cases) < max(2, minimum):
        return cases, [], f"no validation: {len(cases)} labeled volume(s), at least {max(2, minimum)} needed"
    n_val = max(1, int(round(len(cases) * fraction)))
    step = len(cases) / n_val
    idx = {int(i * step) for i in range(n_val)}
    val = [c for i, c in enumerate(cases) if i in idx]
    train = [c for i, c in enumerate(cases) if i not in idx]
    return train, val, f"validation on {len(val)} held-back labeled volume(s)"


def _pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def read_train_stats(model_dir: str) -> Dict[str, Any]:
    """The last training's stats; a run whose process died is reported as INTERRUPTED."""
    path = Path(model_dir) / "train" / "train_stats.json"
    if not path.exists():
        return {}
    try:
        stats = json.loads(path.read_text())
    except (ValueError, OSError):
        return {}
    if stats.get("status") == "RUNNING" and not _pid_alive(stats.get("pid")):
        stats["status"] = "INTERRUPTED"
    return stats


class TrainingJob:
    """One training request: runs :func:`dinomix_core.trainer.run_training` and publishes the result.

    Args:
        model_dir: the model folder (published model, history, ``train/`` working folder).
        base_config: the app's configuration (preset, teacher) that request options refine.
        options: validated options from :func:`parse_train_options`.
        should_stop: polled every iteration.
        starter_path: the app's starter model, the warm start while nothing is published.
    """

    def __init__(
        self,
        model_dir: str,
        options: Dict[str, Any],
        base_overrides: Optional[Dict[str, Any]] = None,
        should_stop: Optional[Callable[[], bool]] = None,
        starter_path: Optional[str] = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.registry = ModelRegistry(str(self.model_dir), starter_path=starter_path)
        self.work_dir = self.model_dir / "train"
        self.options = options
        self.base_overrides = dict(base_overrides or {})
        self.should_stop = should_stop
        self.stats: Dict[str, Any] = {}

    def config(self) -> DinoMixConfig:
        o = self.options
        overrides = dict(self.base_overrides)
        overrides.update(
            max_iterations=o["max_iterations"], teacher=o["teacher"], use_fkd=o["use_fkd"], use_pic=o["use_pic"],
            use_consistency=o["use_consistency"], seed=o["seed"],
        )
        cfg = get_preset(o["preset"], **overrides)
        return cfg.replace(val_interval=max(1, min(cfg.val_interval, cfg.max_iterations)))

    def _write_stats(self, **updates: Any) -> None:
        self.stats.update(updates)
        atomic_write_text(self.work_dir / "train_stats.json", json.dumps(self.stats, indent=2, default=str))

    def run(self, labeled: Sequence[Tuple[str, str, str]], unlabeled: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
        """Train on (id, image, label) labeled and (id, image) unlabeled cases; publish; return the stats."""
        from .trainer import TrainingError, run_training

        cfg = self.config()
        train, val, val_note = split_validation(labeled, self.options["val_fraction"], self.options["min_labeled_for_validation"])
        self.work_dir.mkdir(parents=True, exist_ok=True)
        device = None if self.options["device"] == "auto" else self.options["device"]
        # warm start from the served model: the last published one, else the app's starter model
        prev = self.registry.served_path() if self.options["warm_start"] else None
        t0 = time.time()
        self.stats = {}
        self._write_stats(
            status="RUNNING", pid=os.getpid(), start_ts=t0, epoch=0, total_epochs=cfg.max_iterations, best_metric=0.0,
            labeled=len(train), unlabeled=len(unlabeled), validation=len(val), validation_note=val_note,
            options=self.options, per_organ_dice={}, losses={},
            warm_start_from=None if prev is None else (
                "published model" if prev == self.registry.model_path else "starter model"),
        )
        if not unlabeled:
            self._write_stats(note=_SUPERVISED_NOTE)

        def progress(p: Dict[str, Any]) -> None:
            if "start_iteration" not in self.stats:  # > 0 when resumed from checkpoint.pt
                self.stats["start_iteration"] = p["iteration"] - 1
            # `total_time` only when the run ends (MONAI Label's meaning): the stock Slicer plugin shows 0 epochs done
            # while it is set, so a running job reports `elapsed`
            upd = dict(epoch=p["iteration"], losses={k: round(v, 5) for k, v in p["losses"].items()},
                       elapsed=round(p["elapsed"], 1))
            if p.get("validation"):
                upd["per_organ_dice"] = p["validation"]["per_organ_dice"]
                upd["mean_dice"] = p["validation"]["mean_dice"]
            upd["best_metric"] = max(0.0, p.get("best_metric", 0.0))
            self._write_stats(**upd)

        try:
            summary = run_training(
                cfg, [(i, l) for _, i, l in train], [i for _, i in unlabeled], str(self.work_dir),
                validation=[(i, l) for _, i, l in val], init_checkpoint=str(prev) if prev else None, resume=True,
                progress=progress, device=device, should_stop=self.should_stop,
            )
        except Exception as e:  # any failure is reported as FAILED in the stats, then re-raised
            self._write_stats(status="FAILED", error=f"{type(e).__name__}: {e}", end_ts=time.time())
            raise
        if summary.get("stopped"):
            self._write_stats(status="STOPPED", end_ts=time.time(), note="stopped before the end: nothing published")
            return self.stats
        entry = self.registry.publish(
            summary["checkpoint"], [c[0] for c in train],
            extra={"validation_ids": [c[0] for c in val], "unlabeled_count": len(unlabeled)},
        )
        self._write_stats(
            status="DONE", end_ts=time.time(), total_time=round(time.time() - t0, 1), published_version=entry["version"],
            published_at=entry["published_at"], skipped=summary.get("skipped", []),
            best_metric=max(0.0, summary.get("best_metric") or 0.0),
            per_organ_dice=summary.get("per_organ_dice") or self.stats.get("per_organ_dice", {}),
            **({"note": _SUPERVISED_NOTE} if not summary.get("unlabeled") else {}),
        )
        return self.stats
