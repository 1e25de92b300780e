"""Every file DINO-Mix writes that must never be torn, and the two model-file formats.

- :func:`atomic_write`: the one way to write a file: a temporary file in the same folder, fsync, rename, then an
  fsync of the folder so the rename itself survives a power cut. A crash leaves the old file or the new one.
- :class:`ModelFile`: a trained model (weights + the :class:`~dinomix_core.config.DinoMixConfig` it was built
  from + what it was trained on), as written by the trainer, published by the registry and read by inference.
  Tensors and plain Python values only, so it is read with ``torch.load(weights_only=True)``.
- :class:`ResumeCheckpoint`: the state a stopped training continues from (optimiser, EMA teacher, random
  states). It holds NumPy random states, so it is read with ``weights_only=False``: only ever a file the trainer
  wrote itself in its own working folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Union

import torch

from . import __version__
from .errors import ModelFileError

__all__ = ["atomic_write", "atomic_copy", "pid_alive", "ModelFile", "ResumeCheckpoint", "ModelFileError"]

PathLike = Union[str, os.PathLike]
Content = Union[bytes, str, Callable[[BinaryIO], None]]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(path: PathLike) -> Path:
    """The temporary name :func:`atomic_write` uses for ``path``: ``.NAME.tmpPID.THREAD`` (found and removed by
    clean-ups when a writer was killed, see the app's datastore)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp{os.getpid()}.{threading.get_ident()}")


def atomic_write(path: PathLike, content: Content) -> Path:
    """Write ``content`` to ``path`` atomically.

    Args:
        path: the destination (its folder is created when missing).
        content: bytes, text (UTF-8), or a function that writes to an open binary file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(p)
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(p.parent)
    return p


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy ``src`` to ``dst`` with :func:`atomic_write` (content only, no permission bits)."""

    def copy(f: BinaryIO) -> None:
        with open(src, "rb") as fi:
            shutil.copyfileobj(fi, f)

    return atomic_write(dst, copy)


def pid_alive(pid: Any) -> bool:
    """Whether process ``pid`` still runs (a process of another user counts as running)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _torch_bytes(obj: Any) -> Callable[[BinaryIO], None]:
    return lambda f: torch.save(obj, f)


@dataclass
class ModelFile:
    """A trained DINO-Mix model, self-describing like an nnU-Net plans + weights pair.

    Args:
        model: the student's ``state_dict`` (CPU tensors).
        config: ``DinoMixConfig.to_dict()`` of the run (rebuilds the network and the preprocessing).
        label_ids: organ ids present in the training labels (what the model has seen).
        teacher_channels: the DINOv3 hidden size the FKD projection head maps to (None without FKD).
        iteration: training iterations done.
        metric: validation mean Dice of this model (None without a validation set).
        per_organ_dice: validation Dice per organ name.
        trained_on: case ids, ``{"labeled": [...], "unlabeled": [...], "validation": [...]}``.
        history: per-iteration training records (losses, validation Dice).
    """

    model: Dict[str, torch.Tensor]
    config: Dict[str, Any]
    label_ids: List[int] = field(default_factory=list)
    teacher_channels: Optional[int] = None
    iteration: int = 0
    metric: Optional[float] = None
    per_organ_dice: Optional[Dict[str, Any]] = None
    trained_on: Dict[str, List[str]] = field(default_factory=dict)
    history: List[Dict[str, Any]] = field(default_factory=list)
    dinomix_version: str = __version__
    saved_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def label_names(self) -> List[str]:
        return list(self.config.get("label_names") or [])

    def to_dict(self) -> Dict[str, Any]:
        """The file's dictionary (the tensors by reference, not copied)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["label_names"] = self.label_names
        return d

    def save(self, path: PathLike) -> Path:
        """Write the model file atomically."""
        return atomic_write(path, _torch_bytes(self.to_dict()))

    def summary(self) -> Dict[str, Any]:
        """What a model list shows: label ids, iteration, time, metric (no weights)."""
        return {"label_ids": self.label_ids, "iteration": self.iteration, "saved_at": self.saved_at,
                "metric": self.metric, "preset": self.config.get("preset"),
                "label_names": list(self.config.get("label_names") or ())}

    @classmethod
    def load(cls, path: PathLike) -> "ModelFile":
        """Read a model file; :class:`FileNotFoundError` when missing, :class:`ModelFileError` when not one."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no DINO-Mix model file at {str(p)!r}.")
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # not a torch file, or one holding arbitrary objects: never unpickle those
            raise ModelFileError(f"{str(p)!r} is not a DINO-Mix model file ({type(e).__name__}: {e}).") from e
        if not isinstance(d, dict) or not isinstance(d.get("model"), dict) or not isinstance(d.get("config"), dict):
            raise ModelFileError(f"{str(p)!r} is not a DINO-Mix model file (it lacks 'model' and 'config').")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["label_ids"] = [int(i) for i in values.get("label_ids") or []]
        values["trained_on"] = values.get("trained_on") or {}
        values["history"] = values.get("history") or []
        return cls(**values)

    @classmethod
    def is_model_file(cls, path: PathLike) -> bool:
        try:
            cls.load(path)
        except (OSError, ModelFileError):
            return False
        return True


@dataclass
class ResumeCheckpoint:
    """What a stopped or interrupted training continues from (``TRAIN_DIR/checkpoint.pt``)."""

    model: Dict[str, torch.Tensor]
    ema: Dict[str, torch.Tensor]
    optimizer: Dict[str, Any]
    tracker: Dict[str, Any]
    generator: torch.Tensor
    config: Dict[str, Any]
    iteration: int
    best_metric: float = -1.0
    history: List[Dict[str, Any]] = field(default_factory=list)
    augmenter: Optional[Dict[str, Any]] = None
    finished: bool = False
    click_rng: Optional[Dict[str, Any]] = None  # the click refiner's numpy random stream (bit_generator.state)
    difficulty: Optional[Dict[str, Any]] = None  # losses.DifficultyTracker state (DiffDW class weights)
    aligner: Optional[Dict[str, Any]] = None  # consistency.DistributionAlignment state (pseudo_label_alignment)

    def save(self, path: PathLike) -> Path:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return atomic_write(path, _torch_bytes(d))

    @classmethod
    def load(cls, path: PathLike) -> "ResumeCheckpoint":
        """Read a checkpoint the trainer wrote; :class:`ModelFileError` when torn or foreign."""
        try:
            d = torch.load(Path(path), map_location="cpu", weights_only=False)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except Exception as e:
            raise ModelFileError(f"{str(path)!r} is not a DINO-Mix resume checkpoint ({type(e).__name__}: {e}).") from e

