"""The starter model: what the app serves before its first Retrain, trained from ``sample_data/`` only.

One reproducible command writes it (``make starter`` runs it)::

    dinomix train-starter --studies sample_data/studies --output apps/dinomix/model/pretrained_dinomix.pt

The recipe is the ``cpu`` preset (3 mm voxels, augmentation, class-balanced patches; teacher ``none``) trained
supervised-only for :data:`STARTER_ITERATIONS` iterations from scratch on every labeled sample study (the real
CT and the labeled SYNTHETIC phantoms). Supervised-only because the sample studies' unlabeled volumes are
SYNTHETIC phantoms, which carry no information about real CT, and a supervised step is cheaper [ours]; the app's
Retrain then runs DINO-Mix over the team's own unlabeled CTs. The model file carries its
configuration and training history like every published model; the app serves it as ``pretrained_dinomix.pt``
(MONAI Label's radiology convention) until a Retrain publishes a model, and the first Retrain starts from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .config import DinoMixConfig, get_preset
from .artifacts import atomic_copy
from .studies import list_studies

__all__ = ["STARTER_ITERATIONS", "starter_config", "train_starter"]

logger = logging.getLogger(__name__)

#: iterations of the starter recipe (a default Retrain runs ``TRAIN_OPTIONS["max_iterations"]`` on top of it)
STARTER_ITERATIONS = 1000


def starter_config(seed: int = 0, iterations: int = STARTER_ITERATIONS) -> DinoMixConfig:
    """The starter recipe: the ``cpu`` preset, supervised-only, ``iterations`` and ``seed``, no validation set."""
    return get_preset("cpu", max_iterations=int(iterations), seed=int(seed), val_interval=0, use_pic=False,
                      use_consistency=False)


def train_starter(
    studies: str,
    output: str,
    *,
    seed: int = 0,
    iterations: int = STARTER_ITERATIONS,
    work_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Train the starter recipe on a studies folder and write the model file to ``output`` (atomically).

    Args:
        studies: a MONAI Label studies folder (labels in ``labels/final``): ``sample_data/studies`` for the
            shipped starter.
        output: the model file to write (``apps/dinomix/model/pretrained_dinomix.pt`` for the app).
        seed: the recipe's seed (the shipped starter uses 0).
        iterations: training iterations.
        work_dir: training folder (checkpoint, logs, curves); default ``OUTPUT``'s folder + ``/starter_run``.
        device: "cpu", "cuda", ... (default: CUDA when available).
        progress: called after every iteration (see :class:`~dinomix_core.trainer.DinoMixTrainer`).

    Returns:
        the trainer's summary plus ``model`` (the written file).
    """
    from .trainer import run_training

    labeled, unlabeled = list_studies(studies)
    if not labeled:
        raise ValueError(f"{studies} has no labeled study (labels/final): the starter needs at least one.")
    out = Path(output)
    work = Path(work_dir) if work_dir else out.parent / "starter_run"
    config = starter_config(seed, iterations)
    logger.info("starter: %d labeled, %d unlabeled volumes, %d iterations, seed %d", len(labeled), len(unlabeled),
                iterations, seed)
    summary = run_training(config, labeled, unlabeled, str(work), progress=progress, device=device)
    atomic_copy(Path(summary["checkpoint"]), out)
    summary["model"] = str(out)
    return summary
