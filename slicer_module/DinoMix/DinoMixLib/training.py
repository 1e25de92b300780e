"""Training requests and progress for the DinoMix Slicer module (standard library only, no Slicer).

* :func:`build_train_params`: the JSON body of ``POST /train/dinomix`` from the widget's settings. Keys use the
  names of :class:`dinomix_core.config.DinoMixConfig` (``max_iterations``, ``preset``, ``use_fkd``, ``use_pic``)
  plus ``device``.
* :func:`summarize_train_stats`: progress fraction and a per-organ Dice text from MONAI Label's
  ``/info`` ``train_stats`` entry.
* :class:`TrainingMonitor`: follows one run (running -> stopped) and says whether a new model was published.

DINO-Mix: arXiv 2602.07819 (FKD = DINOv3 feature knowledge distillation, PIC = progressive imbalance-aware
CutMix).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional, Sequence

__all__ = ["build_train_params", "training_progress", "per_organ_dice", "summarize_train_stats", "TrainingMonitor"]

#: keys of ``train_stats`` that may hold per-organ Dice (dict organ name -> Dice)
PER_ORGAN_KEYS = ("per_organ_dice", "best_per_organ_dice", "organ_dice", "dice_per_organ")
#: (done, total) key pairs of ``train_stats``, tried in order
PROGRESS_KEYS = (("epoch", "total_epochs"), ("iteration", "total_iterations"), ("iteration", "max_iterations"))


def build_train_params(
    max_iterations: int,
    preset: str = "cpu",
    use_fkd: bool = True,
    use_pic: bool = True,
    device: str = "auto",
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The parameters of a DINO-Mix training request.

    Args:
        max_iterations: training iterations (>= 1).
        preset: configuration preset name (``cpu`` or ``paper`` in ``dinomix_core.config.PRESETS``).
        use_fkd: DINOv3 feature distillation on/off.
        use_pic: PIC CutMix on/off.
        device: ``auto`` (the server picks), ``cpu``, ``cuda`` or ``cuda:N``.
        extra: further keys passed through unchanged.

    Raises:
        ValueError: non-positive iterations, empty preset, or an unknown device string.
    """
    n = _number(max_iterations) if not isinstance(max_iterations, bool) else None
    if n is None or n < 1 or not n.is_integer():
        raise ValueError(f"iterations must be a whole number >= 1, got {max_iterations!r}.")
    iters = int(n)
    preset = str(preset or "").strip()
    if not preset:
        raise ValueError("choose a preset (e.g. 'cpu' or 'paper').")
    dev = str(device or "auto").strip().lower()
    if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}.")
    params: Dict[str, Any] = {
        "max_iterations": iters,
        "preset": preset,
        "use_fkd": bool(use_fkd),
        "use_pic": bool(use_pic),
        "device": dev,
    }
    if extra:
        params.update(dict(extra))
    return params


def _number(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def training_progress(stats: Mapping[str, Any]) -> Optional[tuple]:
    """``(done, total, unit)`` from ``train_stats`` (``epoch``/``total_epochs`` first; unit is ``epoch`` or
    ``iteration``), or None when unknown."""
    for done_key, total_key in PROGRESS_KEYS:
        done, total = _number(stats.get(done_key)), _number(stats.get(total_key))
        if done is not None and total is not None and total > 0:
            return done, total, done_key
    return None


def per_organ_dice(stats: Mapping[str, Any], organ_names: Sequence[str]) -> Dict[str, float]:
    """Per-organ Dice from ``train_stats``, in ``organ_names`` order (organs without a value are left out).

    Looks for a dict under one of :data:`PER_ORGAN_KEYS`, else top-level keys named like an organ.
    """
    source: Mapping[str, Any] = {}
    for key in PER_ORGAN_KEYS:
        if isinstance(stats.get(key), Mapping):
            source = stats[key]
            break
    else:
        source = stats
    lowered = {str(k).lower().replace("_", " "): v for k, v in source.items()}
    out: Dict[str, float] = {}
    for name in organ_names:
        v = _number(lowered.get(name.lower().replace("_", " ")))
        if v is not None:
            out[name] = v
    return out


def summarize_train_stats(stats: Optional[Mapping[str, Any]], organ_names: Sequence[str]) -> Dict[str, Any]:
    """What the widget shows for one ``train_stats`` snapshot.

    Returns:
        dict with ``done``, ``total`` (None if unknown), ``fraction`` in [0, 1], ``percent`` (int 0..100),
        ``best_metric`` (float or None), ``per_organ_dice`` (dict) and ``text`` (multi-line, human readable).
    """
    stats = stats or {}
    prog = training_progress(stats)
    done, total, unit = prog if prog else (None, None, None)
    fraction = min(1.0, max(0.0, done / total)) if prog else 0.0
    best = _number(stats.get("best_metric"))
    dice = per_organ_dice(stats, organ_names)
    lines = []
    if stats.get("status"):
        lines.append(f"status: {stats['status']}")
    if prog:
        lines.append(f"{unit} {int(done)}/{int(total)}")
    if best is not None:
        lines.append(f"best mean Dice {best:.3f}")
    if stats.get("error"):
        lines.append(f"error: {stats['error']}")
    lines.extend(f"{name}: {v:.3f}" for name, v in dice.items())
    return {
        "done": done,
        "total": total,
        "fraction": fraction,
        "percent": int(round(100 * fraction)),
        "best_metric": best,
        "per_organ_dice": dice,
        "text": "\n".join(lines) if lines else "no training statistics yet",
    }


#: ``train_stats`` ``status`` values of a run that published nothing (the DINO-Mix app's TrainingJob)
NOT_PUBLISHED = ("FAILED", "STOPPED", "INTERRUPTED")
#: keys of ``models.<model>`` in ``/info`` that identify the published model (the DINO-Mix app sets them)
VERSION_KEYS = ("model_version", "model_published_at")


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class TrainingMonitor:
    """Follows one training run through ``/info`` snapshots and says when a new model was published.

    When the run has stopped, a new model counts as published unless ``train_stats`` says otherwise
    (``status`` in :data:`NOT_PUBLISHED` or an ``error``) or the server says ``model_present: false``; and then
    only if the published model's identity changed since the run started: the :data:`VERSION_KEYS` of
    ``models.<model>`` when the server gives them, otherwise the whole ``models.<model>`` entry and
    ``train_stats.<model>``.

    Args:
        organ_names: organ names for the per-organ Dice text.
        model: the model name in ``/info``.
    """

    def __init__(self, organ_names: Sequence[str], model: str = "dinomix"):
        self.organ_names = list(organ_names)
        self.model = model
        self.active = False
        self._start: Optional[Dict[str, Any]] = None

    def _parts(self, info: Mapping[str, Any]):
        entry = (info.get("models") or {}).get(self.model)
        stats = (info.get("train_stats") or {}).get(self.model) or {}
        return entry, stats

    def start(self, info_before: Mapping[str, Any]) -> None:
        """Remember the server's state just before (or when first seeing) a run."""
        entry, stats = self._parts(info_before)
        self._start = {"entry": entry, "stats": stats}
        self.active = True

    def _published(self, entry: Any, stats: Mapping[str, Any]) -> bool:
        if self._start is None or entry is None:
            return False
        if str(stats.get("status", "")).upper() in NOT_PUBLISHED or stats.get("error"):
            return False
        if isinstance(entry, Mapping) and entry.get("model_present") is False:
            return False
        before = self._start["entry"] if isinstance(self._start["entry"], Mapping) else {}
        if isinstance(entry, Mapping) and any(k in entry for k in VERSION_KEYS):
            return any(entry.get(k) != before.get(k) for k in VERSION_KEYS)
        return _fingerprint([entry, stats]) != _fingerprint([self._start["entry"], self._start["stats"]])

    def update(self, running: bool, info: Mapping[str, Any]) -> Dict[str, Any]:
        """One poll: ``summarize_train_stats`` plus ``running``, ``finished`` (stopped since the last poll) and
        ``new_model``."""
        entry, stats = self._parts(info)
        out = summarize_train_stats(stats, self.organ_names)
        out.update(running=bool(running), finished=False, new_model=False)
        if self.active and not running:
            self.active = False
            out["finished"] = True
            out["new_model"] = self._published(entry, stats)
        return out
