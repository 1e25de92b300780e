"""The starter model: what the app serves before its first Retrain, trained from ``sample_data/`` only.

One reproducible command writes it (``make starter`` runs it)::

    dinomix train-starter --studies sample_data/studies --output apps/dinomix/model/pretrained_dinomix.pt

The recipe is the ``cpu`` preset (3 mm voxels, augmentation, class-balanced patches; teacher ``none``) trained
supervised-only for :data:`STARTER_ITERATIONS` iterations from scratch on every labeled sample study (the real
CT and the labeled SYNTHETIC phantoms). ``--phantoms N`` adds N labeled SYNTHETIC phantoms it generates itself
(:func:`starter_phantoms`): every contrast phase, noise level and kernel, varied anatomy, and a field of view that
reaches far below the kidneys, which no sample volume shows [ours]. Measured on the real ts_example CT, 4 of them
lifted the liver from 54 to 81 Dice but lost the right kidney and the aorta, 19.6 mean against 21.5; the
shipped starter therefore has none (benchmarks/results/2026-12-02-starter-fov-phantoms.md). ``--phantom-share``
draws those phantoms together a fixed share of the time (:data:`STARTER_PHANTOM_SHARE`), the studies' labeled
volumes sharing the rest, so that they do not dilute the one real CT. Supervised-only because the sample studies'
unlabeled volumes are SYNTHETIC phantoms, which carry no information about real CT, and a supervised step is
cheaper [ours]; the app's Retrain then runs DINO-Mix over the team's own unlabeled CTs. The model file carries its
configuration and training history like every published model; the app serves it as ``pretrained_dinomix.pt``
(MONAI Label's radiology convention) until a Retrain publishes a model, and the first Retrain starts from it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from .config import DinoMixConfig, get_preset
from .data import case_id_from_path
from .artifacts import atomic_copy
from .phantoms import WIDE_VARIATION, write_phantom_nifti
from .studies import list_studies

__all__ = ["STARTER_ITERATIONS", "STARTER_PHANTOM_SHARE", "STARTER_PHANTOMS", "starter_config", "starter_phantoms",
           "train_starter"]

logger = logging.getLogger(__name__)

#: iterations of the starter recipe (a default Retrain runs ``TRAIN_OPTIONS["max_iterations"]`` on top of it)
STARTER_ITERATIONS = 2000
#: labeled SYNTHETIC phantoms the shipped starter generates beside the sample studies (:func:`starter_phantoms`)
STARTER_PHANTOMS = 0
#: their grid, (x, y, z) voxels of (3, 3, 4) mm: 320 mm cranio-caudally, the sample phantoms' 192 mm plus 128 mm
STARTER_PHANTOM_SHAPE = (96, 96, 80)
#: the share of labeled patches drawn from the generated phantoms together (the studies' volumes share the rest
#: equally), so that they add the lower abdomen without diluting the one real CT's appearance [ours]
STARTER_PHANTOM_SHARE = 0.25
#: their seeds start here (the sample studies' phantoms and the benchmarks' use others)
STARTER_PHANTOM_SEED = 20_000


def starter_config(seed: int = 0, iterations: int = STARTER_ITERATIONS) -> DinoMixConfig:
    """The starter recipe: the ``cpu`` preset, supervised-only without class weights (as the shipped starter was
    trained), ``iterations`` and ``seed``, no validation set."""
    return get_preset("cpu", max_iterations=int(iterations), seed=int(seed), val_interval=0, use_pic=False,
                      use_consistency=False, class_weighting="none")


def starter_phantoms(folder: str, n: int = STARTER_PHANTOMS) -> List[Tuple[Path, Path]]:
    """Write the starter's ``n`` labeled SYNTHETIC phantoms to ``folder``; returns their (image, label) paths.

    Each is :data:`~dinomix_core.phantoms.WIDE_VARIATION` (every contrast phase, 10-40 HU noise, soft to sharp
    kernels, varied anatomy, missing organs) on a 320 mm tall field of view that moves by 40 mm (sd) up and down,
    so the lower abdomen below the kidneys is in most of them. Seeds ``STARTER_PHANTOM_SEED + i``: the same files
    every time.
    """
    if n < 0:
        raise ValueError(f"the number of starter phantoms must be >= 0, got {n}.")
    variation = replace(WIDE_VARIATION, fov_shift_mm=40.0)
    out = []
    for i in range(n):
        name = f"starter_phantom_{i + 1:03d}.nii.gz"
        out.append(write_phantom_nifti(Path(folder) / "images" / name, Path(folder) / "labels" / name,
                                       STARTER_PHANTOM_SEED + i, shape=STARTER_PHANTOM_SHAPE, variation=variation))
    return out


def train_starter(
    studies: str,
    output: str,
    *,
    seed: int = 0,
    iterations: int = STARTER_ITERATIONS,
    phantoms: int = STARTER_PHANTOMS,
    phantom_share: Optional[float] = STARTER_PHANTOM_SHARE,
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
        phantoms: labeled SYNTHETIC phantoms to generate and train on beside the studies (:func:`starter_phantoms`).
        phantom_share: the share of labeled patches drawn from those phantoms together, the studies' labeled
            volumes sharing the rest equally; None draws every labeled volume equally often.
        work_dir: training folder (checkpoint, logs, curves); default ``OUTPUT``'s folder + ``/starter_run``.
        device: "cpu", "cuda", ... (default: CUDA when available).
        progress: called after every iteration (see :class:`~dinomix_core.trainer.DinoMixTrainer`).

    Returns:
        the trainer's summary plus ``model`` (the written file).
    """
    from .trainer import run_training

    if phantom_share is not None and not 0.0 < phantom_share < 1.0:
        raise ValueError(f"phantom_share must be in (0, 1) or None, got {phantom_share}.")
    labeled, unlabeled = list_studies(studies)
    if not labeled:
        raise ValueError(f"{studies} has no labeled study (labels/final): the starter needs at least one.")
    out = Path(output)
    work = Path(work_dir) if work_dir else out.parent / "starter_run"
    config = starter_config(seed, iterations)
    generated = starter_phantoms(str(work / "phantoms"), phantoms)
    weights = None
    if generated and phantom_share is not None:
        weights = {case_id_from_path(i): (1.0 - phantom_share) / len(labeled) for i, _ in labeled}
        weights.update({case_id_from_path(i): phantom_share / len(generated) for i, _ in generated})
    labeled = list(labeled) + generated
    logger.info("starter: %d labeled (%d generated phantoms, share %s), %d unlabeled volumes, %d iterations, seed %d",
                len(labeled), phantoms, phantom_share if weights else "uniform", len(unlabeled), iterations, seed)
    summary = run_training(config, labeled, unlabeled, str(work), progress=progress, device=device,
                           labeled_weights=weights)
    atomic_copy(Path(summary["checkpoint"]), out)
    summary["model"] = str(out)
    return summary
