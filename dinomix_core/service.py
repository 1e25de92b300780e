"""Training jobs as a labeling server runs them: options, validation split, live stats, publishing.

Used by the MONAI Label app's train task (``apps/dinomix/lib/trainers``) so that the app holds no method logic.
Stats are written atomically to ``MODEL_DIR/train/train_stats.json`` after every iteration, in the keys the
stock 3D Slicer MONAI Label plugin polls (``epoch``, ``total_epochs``, ``best_metric``) plus per-organ Dice
and the losses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import PRESETS, DinoMixConfig, get_preset
from .artifacts import atomic_write, pid_alive
from .registry import ModelRegistry

__all__ = ["TrainRequest", "TrainingJob", "read_train_stats", "split_validation"]

logger = logging.getLogger(__name__)

_SUPERVISED_NOTE = "no usable unlabeled volume: trained supervised only (consistency and PIC need unlabeled images)"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _to_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
        return v.strip().lower() in _TRUE
    raise ValueError(f"option {name!r} must be true or false, got {v!r}.")


def _to_number(name: str, kind: type, v: Any) -> Any:
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {v!r}.") from None


def _to_device(v: Any) -> str:
    dev = str(v).strip().lower()
    if dev in ("", "auto", "default"):
        return "auto"
    if dev in ("cpu", "cuda") or dev.startswith("cuda:"):
        return dev
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}.")


@dataclass(frozen=True)
class TrainRequest:
    """One training request, as the app's train task, the CLI and the Slicer module send it.

    The fields are what a user may set per Retrain (3D Slicer shows them, with the app's defaults, from the
    train task's ``config()``); everything else comes from the preset. Built with :meth:`from_request`, which
    validates; turned into the run's configuration with :meth:`to_config`.

    Args:
        max_iterations: training iterations.
        preset: a name of :data:`~dinomix_core.config.PRESETS`.
        teacher: DINOv3 local folder or hub id, or ``none``.
        use_fkd / use_pic / use_consistency: the DINO-Mix components (ablations).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        val_fraction / min_labeled_for_validation: the validation split (:func:`split_validation`).
        warm_start: start from the served model (the published one, else the starter model).
        seed: random seed.
        multi_gpu / gpus: train with torch DDP, one process per GPU of ``gpus`` (``all`` or ids ``0,1``), started
            with ``torchrun`` (MONAI Label's option names). With fewer than two GPUs (or ids) the run is a single
            process, as MONAI Label does; on the CPU (``device cpu``) the ids count processes (gloo), for tests.
    """

    max_iterations: int = 200
    preset: str = "cpu"
    teacher: str = "none"
    use_fkd: bool = True
    use_pic: bool = True
    use_consistency: bool = True
    device: str = "auto"
    val_fraction: float = 0.2
    min_labeled_for_validation: int = 5
    warm_start: bool = True
    seed: int = 0
    multi_gpu: bool = False
    gpus: str = "all"

    def __post_init__(self) -> None:
        gpus = str(self.gpus).strip().replace(" ", "")
        if gpus != "all" and (not gpus or not all(g.isdigit() for g in gpus.split(","))):
            raise ValueError(f"gpus must be 'all' or GPU ids like '0,1', got {self.gpus!r}.")
        if not 1 <= self.max_iterations <= 1_000_000:
            raise ValueError(f"max_iterations must be between 1 and 1000000, got {self.max_iterations}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1).")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(repr(p) for p in PRESETS)}, got {self.preset!r}.")

    @classmethod
    def from_request(cls, request: Optional[Mapping[str, Any]] = None,
                     defaults: Optional["TrainRequest"] = None) -> "TrainRequest":
        """Validate ``request`` over ``defaults`` (``ValueError`` naming the bad option).

        Keys that are not fields (``model``, MONAI Label's ``tracking``...) and empty values are ignored; the
        stock Slicer plugin's ``max_epochs`` is an alias of ``max_iterations``.
        """
        req = dict(request or {})
        if "max_epochs" in req and "max_iterations" not in req:
            req["max_iterations"] = req["max_epochs"]
        values = (defaults or cls()).to_dict()
        values.update({k: v for k, v in req.items() if k in values and v is not None and v != ""})
        for f in dataclasses.fields(cls):
            v = values[f.name]
            if f.type in ("bool", bool):
                values[f.name] = _to_bool(f.name, v)
            elif f.type in ("int", int, "float", float):
                values[f.name] = _to_number(f.name, int if f.type in ("int", int) else float, v)
        values["device"] = _to_device(values["device"])
        values["teacher"] = str(values["teacher"] or "none")
        values["preset"] = str(values["preset"])
        values["gpus"] = str(values["gpus"]).strip().replace(" ", "")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_config(self, label_names: Optional[Sequence[str]] = None) -> DinoMixConfig:
        """The run's configuration: the preset with this request's settings, for ``label_names`` (organ names in
        id order; default the preset's, the 13 Synapse organs)."""
        labels = {} if label_names is None else {"label_names": tuple(label_names),
                                                  "out_channels": len(label_names) + 1}
        cfg = get_preset(
            self.preset, max_iterations=self.max_iterations, teacher=self.teacher, use_fkd=self.use_fkd,
            use_pic=self.use_pic, use_consistency=self.use_consistency, seed=self.seed, **labels,
        )
        return cfg.replace(val_interval=max(1, min(cfg.val_interval, cfg.max_iterations)))

    @property
    def torch_device(self) -> Optional[str]:
        """The device for the trainer (None: CUDA when available)."""
        return None if self.device == "auto" else self.device

    @property
    def world_size(self) -> int:
        """Processes a run starts: 1 unless ``multi_gpu`` names (or ``all`` finds) at least two GPUs. MONAI Label
        hands a task ``gpus="all"`` and the ids in ``CUDA_VISIBLE_DEVICES``; those count too."""
        if not self.multi_gpu:
            return 1
        ids = self.gpus if self.gpus != "all" else os.environ.get("CUDA_VISIBLE_DEVICES", "all").strip()
        if ids not in ("all", ""):
            return len([i for i in ids.split(",") if i.strip()])
        if self.device == "cpu":
            return 1
        import torch

        return torch.cuda.device_count()


def split_validation(
    labeled: Sequence[Tuple[str, str, str]], fraction: float, minimum: int
) -> Tuple[List[Tuple[str, str, str]], List[Tuple[str, str, str]], str]:
    """Hold back every k-th labeled case (sorted by id) for validation when there are at least ``minimum``.

    The one validation rule of the app, the CLI and the benchmarks.

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


def _torchrun_main(spec_path: str) -> int:
    """One process of :meth:`TrainingJob.run_torchrun` (``python -m dinomix_core.service SPEC`` under torchrun)."""
    from .trainer import init_distributed

    spec = json.loads(Path(spec_path).read_text())
    request = TrainRequest.from_request(spec["request"])
    init_distributed(request.torch_device)
    logging.basicConfig(level=logging.INFO, format=f"rank {os.environ.get('RANK', '0')} %(levelname)s %(name)s: %(message)s")
    job = TrainingJob(spec["model_dir"], request, starter_path=spec.get("starter_path"),
                      label_names=spec.get("label_names"))
    job.run([tuple(c) for c in spec["labeled"]], [tuple(c) for c in spec["unlabeled"]])
    return 0


def read_train_stats(model_dir: str) -> Dict[str, Any]:
    """The last training's stats; a run whose process died is reported as INTERRUPTED."""
    path = Path(model_dir) / "train" / "train_stats.json"
    if not path.exists():
        return {}
    try:
        stats = json.loads(path.read_text())
    except (ValueError, OSError):
        return {}
    if stats.get("status") == "RUNNING" and not pid_alive(stats.get("pid")):
        stats["status"] = "INTERRUPTED"
    return stats


class TrainingJob:
    """One training request: runs :func:`dinomix_core.trainer.run_training` and publishes the result.

    Args:
        model_dir: the model folder (published model, history, ``train/`` working folder).
        request: the validated request (:meth:`TrainRequest.from_request`).
        should_stop: polled every iteration.
        starter_path: the app's starter model, the warm start while nothing is published.
        label_names: the organs the run learns (id order; default the 13 Synapse organs). A warm-start model
            trained for other labels carries over the organs in common.
    """

    def __init__(
        self,
        model_dir: str,
        request: TrainRequest,
        should_stop: Optional[Callable[[], bool]] = None,
        starter_path: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
    ) -> None:
        if not isinstance(request, TrainRequest):
            raise TypeError(f"request must be a TrainRequest, got {type(request).__name__}.")
        self.model_dir = Path(model_dir)
        self.registry = ModelRegistry(str(self.model_dir), starter_path=starter_path)
        self.work_dir = self.model_dir / "train"
        self.request = request
        self.should_stop = should_stop
        self.stats: Dict[str, Any] = {}
        self.rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 writes stats and publishes
        self.label_names = tuple(label_names) if label_names is not None else None

    def _write_stats(self, **updates: Any) -> None:
        self.stats.update(updates)
        if self.rank == 0:
            atomic_write(self.work_dir / "train_stats.json", json.dumps(self.stats, indent=2, default=str))

    def _progress(self, p: Dict[str, Any]) -> None:
        if "start_iteration" not in self.stats:  # > 0 when resumed from checkpoint.pt
            self.stats["start_iteration"] = p["iteration"] - 1
        # `total_time` only when the run ends (MONAI Label's meaning): the stock Slicer plugin shows 0 epochs done
        # while it is set, so a running job reports `elapsed`
        upd = dict(epoch=p["iteration"], losses={k: round(v, 5) for k, v in p["losses"].items()},
                   elapsed=round(p["elapsed"], 1), best_metric=max(0.0, p.get("best_metric", 0.0)))
        if p.get("validation"):
            upd.update(per_organ_dice=p["validation"]["per_organ_dice"], mean_dice=p["validation"]["mean_dice"])
        self._write_stats(**upd)

    def _start(self, cfg: DinoMixConfig, train: Sequence, val: Sequence, note: str, unlabeled: Sequence,
               warm: Optional[Path]) -> None:
        self.stats = {}
        self._write_stats(
            status="RUNNING", pid=os.getpid(), start_ts=time.time(), epoch=0, total_epochs=cfg.max_iterations,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            best_metric=0.0, labeled=len(train), unlabeled=len(unlabeled), validation=len(val), validation_note=note,
            options=self.request.to_dict(), per_organ_dice={}, losses={},
            warm_start_from=None if warm is None else (
                "published model" if warm == self.registry.model_path else "starter model"),
            **({"note": _SUPERVISED_NOTE} if not unlabeled else {}),
        )

    def run_torchrun(self, labeled: Sequence[Tuple[str, str, str]], unlabeled: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
        """The run as ``torchrun --standalone --nproc_per_node N`` processes (DDP: NCCL on GPUs, gloo on the CPU),
        each one :meth:`run` of this job; rank 0 writes the stats and publishes. ``should_stop`` ends them all."""
        import subprocess
        import sys

        n = self.request.world_size
        self.work_dir.mkdir(parents=True, exist_ok=True)
        spec = self.work_dir / "torchrun_job.json"
        atomic_write(spec, json.dumps({
            "model_dir": str(self.model_dir), "starter_path": str(self.registry.starter_path or "") or None,
            "label_names": list(self.label_names) if self.label_names is not None else None,
            "request": self.request.to_dict(), "labeled": [list(c) for c in labeled],
            "unlabeled": [list(c) for c in unlabeled]}))
        env = dict(os.environ)
        if self.request.gpus != "all" and self.request.device != "cpu":
            env["CUDA_VISIBLE_DEVICES"] = self.request.gpus
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               "-m", "dinomix_core.service", str(spec)]
        logger.info("multi-GPU training: %d processes (%s)", n, " ".join(cmd))
        proc = subprocess.Popen(cmd, env=env)
        while proc.poll() is None:
            if self.should_stop is not None and self.should_stop():
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
            time.sleep(0.5)
        if proc.returncode not in (0, None) and not (self.should_stop and self.should_stop()):
            raise RuntimeError(f"multi-GPU training failed: torchrun exited with {proc.returncode} (see the log).")
        self.stats = read_train_stats(str(self.model_dir))
        return self.stats

    def run(self, labeled: Sequence[Tuple[str, str, str]], unlabeled: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
        """Train on (id, image, label) labeled and (id, image) unlabeled cases; publish; return the stats.

        With ``multi_gpu`` over two or more GPUs the run is :meth:`run_torchrun`'s processes."""
        from .trainer import run_training

        if self.request.world_size > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return self.run_torchrun(labeled, unlabeled)
        cfg = self.request.to_config(self.label_names)
        train, val, note = split_validation(labeled, self.request.val_fraction, self.request.min_labeled_for_validation)
        # warm start from the served model: the last published one, else the app's starter model
        warm = self.registry.served_path() if self.request.warm_start else None
        self._start(cfg, train, val, note, unlabeled, warm)
        try:
            summary = run_training(
                cfg, [(i, l) for _, i, l in train], [i for _, i in unlabeled], str(self.work_dir),
                validation=[(i, l) for _, i, l in val], init_checkpoint=str(warm) if warm else None, resume=True,
                progress=self._progress, device=self.request.torch_device, should_stop=self.should_stop,
            )
        except Exception as e:  # any failure is reported as FAILED in the stats, then re-raised
            self._write_stats(status="FAILED", error=f"{type(e).__name__}: {e}", end_ts=time.time())
            raise
        if summary.get("stopped"):
            self._write_stats(status="STOPPED", end_ts=time.time(), note="stopped before the end: nothing published")
            return self.stats
        if self.rank != 0:
            return self.stats
        entry = self.registry.publish(
            summary["checkpoint"], [c[0] for c in train],
            extra={"validation_ids": [c[0] for c in val], "unlabeled_count": len(unlabeled)},
        )
        self._write_stats(
            status="DONE", end_ts=time.time(), total_time=round(time.time() - self.stats["start_ts"], 1),
            published_version=entry["version"], published_at=entry["published_at"],
            skipped=summary.get("skipped", []), best_metric=max(0.0, summary.get("best_metric") or 0.0),
            per_organ_dice=summary.get("per_organ_dice") or self.stats.get("per_organ_dice", {}),
            **({"note": _SUPERVISED_NOTE} if not summary.get("unlabeled") else {}),
        )
        return self.stats


if __name__ == "__main__":  # pragma: no cover - run by torchrun (TrainingJob.run_torchrun)
    import sys

    sys.exit(_torchrun_main(sys.argv[1]))
