"""``dinomix benchmark ssl``: a SYNTHETIC semi-supervised benchmark that can show what unlabeled volumes add.

Every volume is a SYNTHETIC phantom (:mod:`dinomix_core.phantoms`). What makes a gain from unlabeled data possible:

- **variation between patients that four labeled volumes cannot cover**: organ size (log-sd 0.18, about +-35 % at
  2 sd), organ position (sd 10 mm), body size (0.85-1.15), smooth deformation (3-8 mm), field of view (sd 25 mm
  cranio-caudal), absent organs (gallbladder 30 %, left kidney 10 %, spleen 10 %);
- **a protocol shift** from the labeled set to the unlabeled and test sets: the labeled volumes come from one
  narrow protocol (portal-venous phase, noise 10-20 HU, a sharp kernel); the unlabeled, validation and test
  volumes from a mix (portal, arterial, native phases: organ HU shifts of 20-140 HU; noise 10-40 HU; blur
  0.4-1.5 voxels), so the unlabeled volumes carry information about the test distribution;
- **small organs that labels can teach**: at the default scale the adrenal glands and the oesophagus lie in their
  fat planes, as in a real CT.

Every method, supervised-only included, trains with the same **weak augmentation** (intensity shift and scale,
noise, blur, small rotation and scale; no flips). The organ-wise intensity randomisation of the few-real-labels
recipe (``aug_organ_prob``) is off here: it would synthesise the contrast phases the labeled set lacks and so
erase the protocol shift this benchmark is built on. Each run is long enough to reach its validation plateau
(:data:`SCALES` gives each scale's budgets and why).

The runner measures its own headroom: ``supervised_all`` trains with every training volume labeled, on the same
budget. Each method is selected on a labeled validation split (never the test set) and scored on the test set:
per-organ Dice, the mean and the small-organ mean, over seeds. For the semi-supervised methods it also tracks the
precision and recall of the EMA teacher's confident pseudo-labels per organ, against the hidden labels of the
unlabeled volumes, over training.

Results: ``OUT/ssl_benchmark.json`` (+ ``.md``, a per-organ chart and validation curves).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .artifacts import atomic_write
from .config import RECIPE, DinoMixConfig, get_preset
from .labels import ORGAN_ABBREVIATIONS, ORGANS, SMALL_ORGANS
from .phantoms import FAT_PLANES, NARROW_VARIATION, WIDE_VARIATION
from .trainer import TrainingCallback

__all__ = ["METHODS", "SCALES", "DEFAULT_SCALE", "NARROW", "WIDE", "RECIPE", "WARMUP", "run_ssl_benchmark",
           "compare_on_validation", "with_method_runs", "merge_results", "ssl_main"]

logger = logging.getLogger(__name__)

#: the labeled volumes' protocol and everyone else's (unlabeled, validation, test): see dinomix_core.phantoms
NARROW, WIDE = NARROW_VARIATION, WIDE_VARIATION

#: The recipe the mean teacher baseline was measured on: RECIPE before ``pseudo_label_lcc`` joined it.
_MEASURED = dict(RECIPE, pseudo_label_lcc=False)
#: supervised-only: no unlabeled losses; the ``cpu`` preset's class weights, which need no unlabeled data
#: (benchmarks/results/2026-12-05-ssl-supervised-class-weights.md: the stronger baseline on validation)
_SUP = dict(use_pic=False, use_consistency=False, use_fkd=False)
#: BCP's supervised warm-up, as a fraction of the run: the mean teacher baseline keeps it, DINO-Mix's ablation adds it
WARMUP = 0.2
#: the benchmark's DINO-Mix: the recipe, its unlabeled losses ramped over half the run: the budgets of 6000-9000
#: iterations leave the whole-run ramp little time at full weight (benchmarks/results/2026-12-06-ssl-rampup-half.md)
_DINOMIX = dict(RECIPE, use_pic=True, use_consistency=True, use_fkd=True, rampup_fraction=0.5)

#: method -> (config overrides, every training volume labeled?)
METHODS: Dict[str, Tuple[Dict[str, Any], bool]] = {
    "supervised": (_SUP, False),
    "supervised_all": (_SUP, True),
    "mean_teacher": (dict(_MEASURED, use_pic=False, use_consistency=True, use_fkd=False, warmup_fraction=WARMUP),
                     False),
    "dinomix": (_DINOMIX, False),
    # ablations: the DINO-Mix row without one component each (with it, for the warm-up); at every scale they take
    # DINO-Mix's budget and settings (``Scale.iterations_of``, ``Scale.settings_of``)
    "dinomix_no_lcc": (dict(_DINOMIX, pseudo_label_lcc=False), False),
    "dinomix_no_pic": (dict(_DINOMIX, use_pic=False), False),
    "dinomix_no_consistency": (dict(_DINOMIX, use_consistency=False), False),
    "dinomix_no_class_weights": (dict(_DINOMIX, class_weighting="none"), False),
    "dinomix_warmup": (dict(_DINOMIX, warmup_fraction=WARMUP), False),
    "dinomix_no_augment": (dict(_DINOMIX, augment=False), False),
    "supervised_no_augment": (dict(_SUP, augment=False), False),
}
MAIN_METHODS = ("supervised", "supervised_all", "mean_teacher", "dinomix")


@dataclass(frozen=True)
class Scale:
    """Data and budget of a run of the benchmark."""

    n_labeled: int
    n_unlabeled: int
    n_validation: int
    n_test: int
    shape: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    patch: Tuple[int, int, int]
    iterations: int
    val_interval: int
    #: methods trained to another budget than ``iterations``, as ``((method, iterations), ...)``
    method_iterations: Tuple[Tuple[str, int], ...] = ()
    #: fat planes (organ, mm) in every phantom (``PhantomVariation.fat_planes``); none by default
    fat_planes: Tuple[Tuple[str, float], ...] = ()
    #: DinoMixConfig fields a method takes at this scale (adopted there by a rule), as ``((method, ((field, value),
    #: ...)), ...)``; ``--set`` still wins
    method_settings: Tuple[Tuple[str, Tuple[Tuple[str, Any], ...]], ...] = ()

    def variations(self) -> Dict[str, Any]:
        """The labeled volumes' protocol and everyone else's, as ``{"labeled": ..., "other": ...}``."""
        return {"labeled": replace(NARROW, fat_planes=self.fat_planes),
                "other": replace(WIDE, fat_planes=self.fat_planes)}

    def iterations_of(self, method: str) -> int:
        """The method's training budget at this scale (an ablation of DINO-Mix: DINO-Mix's)."""
        return dict(self.method_iterations).get(_row_of(method), self.iterations)

    def settings_of(self, method: str) -> Dict[str, Any]:
        """The DinoMixConfig fields ``method`` takes at this scale beyond its own (``method_settings``; an ablation
        of DINO-Mix: DINO-Mix's)."""
        return dict(dict(self.method_settings).get(_row_of(method), ()))


def _row_of(method: str) -> str:
    """The main-table row a method is a variant of: ``dinomix`` for DINO-Mix's ablations, else the method itself."""
    return "dinomix" if method.startswith("dinomix_") else method


#: DINO-Mix with its pseudo-labels' class distribution aligned to the labeled volumes' (the fat-plane scales)
_ALIGNED_DINOMIX = (("dinomix", (("pseudo_label_alignment", True),)),)
#: and, at the main table's scale, twice the pseudo-label weight (adopted there by its rule:
#: benchmarks/results/2026-12-07-ssl-consistency-weight-2.md)
_MAIN_DINOMIX = (("dinomix", (("pseudo_label_alignment", True), ("consistency_weight", 2.0))),)

#: ``fat_planes_fast`` (the default, ``DEFAULT_SCALE``): the main table. 4 labeled / 16 unlabeled / 4 validation /
#: 10 test phantoms of 64 x 64 x 32 at 4.5 x 4.5 x 6 mm whose adrenal glands and oesophagus lie in their fat planes,
#: as in a real CT (without them the small organs have almost no contrast to their neighbours and every volume
#: labeled adds 1.6 points on them: benchmarks/results/2026-12-07-ssl-fat-planes.md); patch 48 x 48 x 24; budgets of
#: 3000 / 6000 (DINO-Mix) iterations, chosen from measured step times so that the 3-seed table fits 90 minutes of the
#: 2-core CPU it was measured on (2026-12-07-ssl-fat-planes-fast.md); its DINO-Mix aligns the pseudo-labels' class
#: distribution (adopted by its rule at ``fat_planes``: 2026-12-07-ssl-distribution-alignment.md) and weighs the
#: pseudo-labels twice the recipe's (adopted by its rule here: 2026-12-07-ssl-consistency-weight-2.md).
#: ``fat_planes``: the same with 4000 / 9000 iterations and the recipe's weight. ``full``: the same phantoms at 96 x 96 x 48 (3 x 3 x 4 mm), whole-volume patches, 6000
#: iterations, for a GPU. ``quick``: a smoke run.
#:
#: Without fat planes: ``plain``, the first CPU table (4000 / 9000 iterations: at 4000 and again at 6000 DINO-Mix
#: selected its last checkpoint in every seed while the baselines had peaked: 2026-12-04-ssl-dinomix-6000-3seeds.md,
#: 2026-12-05-ssl-dinomix-9000.md); ``fast``: its phantoms with a patch of 32 x 32 x 16 and 3000 / 6000 iterations
#: (2026-12-06-ssl-fast-scale.md); ``coarse``: the same patients rendered at 6 x 6 x 8 mm (48 x 48 x 24 voxels, the
#: same field of view), patch 32 x 32 x 16, 4000 / 6000 iterations, validation every 500
#: (2026-12-06-ssl-coarse-scale.md). Neither small scale left the headroom the benchmark needs.
SCALES: Dict[str, Scale] = {
    "fat_planes_fast": Scale(4, 16, 4, 10, (64, 64, 32), (4.5, 4.5, 6.0), (48, 48, 24), 3000, 500,
                             (("dinomix", 6000),), fat_planes=FAT_PLANES, method_settings=_MAIN_DINOMIX),
    "fat_planes": Scale(4, 16, 4, 10, (64, 64, 32), (4.5, 4.5, 6.0), (48, 48, 24), 4000, 500, (("dinomix", 9000),),
                        fat_planes=FAT_PLANES, method_settings=_ALIGNED_DINOMIX),
    "full": Scale(4, 16, 4, 10, (96, 96, 48), (3.0, 3.0, 4.0), (96, 96, 48), 6000, 250,
                  fat_planes=FAT_PLANES, method_settings=_ALIGNED_DINOMIX),
    "quick": Scale(2, 2, 1, 2, (32, 32, 16), (9.0, 9.0, 12.0), (32, 32, 16), 4, 2),
    "plain": Scale(4, 16, 4, 10, (64, 64, 32), (4.5, 4.5, 6.0), (48, 48, 24), 4000, 500, (("dinomix", 9000),)),
    "fast": Scale(4, 16, 4, 10, (64, 64, 32), (4.5, 4.5, 6.0), (32, 32, 16), 3000, 250, (("dinomix", 6000),)),
    "coarse": Scale(4, 16, 4, 10, (48, 48, 24), (6.0, 6.0, 8.0), (32, 32, 16), 4000, 500, (("dinomix", 6000),)),
}
#: the scale of ``dinomix benchmark ssl`` without ``--scale``
DEFAULT_SCALE = "fat_planes_fast"


# ---------------------------------------------------------------------------------------------- data
def write_dataset(root: Path, scale: Scale) -> Dict[str, List[Tuple[str, str]]]:
    """Generate (or reuse) the phantoms; returns ``{split: [(image, label)]}``; unlabeled ones keep their hidden
    label for the pseudo-label measurements and for ``supervised_all``."""
    from .phantoms import write_phantom_nifti

    var = scale.variations()
    splits = {"labeled": (scale.n_labeled, var["labeled"]), "unlabeled": (scale.n_unlabeled, var["other"]),
              "validation": (scale.n_validation, var["other"]), "test": (scale.n_test, var["other"])}
    out: Dict[str, List[Tuple[str, str]]] = {}
    seed = 5000  # fixed data seeds; the method seeds vary
    for split, (n, variation) in splits.items():
        out[split] = []
        for _ in range(n):
            img, lab = root / split / f"phantom_{seed}.nii.gz", root / split / f"phantom_{seed}_label.nii.gz"
            if not (img.exists() and lab.exists()):
                write_phantom_nifti(img, lab, seed, scale.shape, scale.spacing, variation)
            out[split].append((str(img), str(lab)))
            seed += 1
    return out


# ---------------------------------------------------------------------------------------------- scoring
def dice_per_organ(pred: np.ndarray, ref: np.ndarray, num_classes: int = len(ORGANS) + 1) -> List[float]:
    """Dice of organs 1..C-1; NaN where the organ is absent from both (not scored), 0 for a false positive."""
    out = []
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        denom = int(p.sum()) + int(r.sum())
        out.append(float("nan") if denom == 0 else 2.0 * int((p & r).sum()) / denom)
    return out


def score_model(model_path: str, cases: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
    """Mean over cases (absent organs skipped), then over organs; the small-organ mean."""
    import nibabel as nib

    from .inference import Predictor

    predictor = Predictor(model_path, device="cpu")
    rows = []
    for img, lab in cases:
        pred, _ = predictor.predict(img)
        rows.append(dice_per_organ(pred, np.asarray(nib.load(lab).dataobj)))
    with np.errstate(all="ignore"):
        per_organ = np.nanmean(np.asarray(rows, dtype=np.float64), axis=0)
    per_organ = np.nan_to_num(per_organ, nan=0.0)
    return {"mean_dice": 100 * float(per_organ.mean()),
            "small_organ_dice": 100 * float(np.mean([per_organ[c - 1] for c in SMALL_ORGANS])),
            "per_organ": {o: round(100 * float(d), 2) for o, d in zip(ORGANS, per_organ)}}


# ---------------------------------------------------------------------------------------------- pseudo-labels
class PseudoLabelMonitor(TrainingCallback):
    """A trainer callback: precision and recall of the EMA teacher's confident pseudo-labels, per organ, against
    the hidden labels of the unlabeled volumes, every ``every`` iterations (semi-supervised runs only; the hidden
    labels are read at the first measurement)."""

    def __init__(self, hidden: Sequence[Tuple[str, str]], every: int) -> None:
        self.hidden, self.every = list(hidden), max(1, every)
        self.curve: List[Dict[str, Any]] = []
        self._labels: Optional[Dict[str, torch.Tensor]] = None

    def on_iteration_end(self, trainer, record, logs, validation) -> None:
        if trainer.semi_supervised and record["iteration"] % self.every == 0:
            self.curve.append({"iteration": record["iteration"], **self.measure(trainer)})

    @torch.no_grad()
    def measure(self, trainer) -> Dict[str, Any]:
        from monai.inferers import sliding_window_inference

        from .consistency import pseudo_labels

        if self._labels is None:
            from .data import load_cases

            self._labels = {v.case_id: v.label for v in load_cases(trainer.config, self.hidden)[0]}
        cfg, tp, npred, nref = trainer.config, np.zeros(len(ORGANS)), np.zeros(len(ORGANS)), np.zeros(len(ORGANS))
        for v in trainer.unlabeled:
            ref = self._labels[v.case_id]
            logits = sliding_window_inference(v.image[None].to(trainer.device), cfg.patch_size, 2, trainer.ema,
                                              overlap=0.25)
            y, conf, _ = pseudo_labels(logits.float(), cfg.confidence_threshold, cfg.pseudo_label_lcc,
                                       align=trainer.aligner)
            crop = tuple(slice(0, s) for s in ref.shape)  # the trainer pads volumes at the end only
            y, conf = y[0][crop].cpu(), conf[0].bool()[crop].cpu()
            for c in range(1, len(ORGANS) + 1):
                pc, rc = (y == c) & conf, ref == c
                tp[c - 1] += int((pc & rc).sum())
                npred[c - 1] += int(pc.sum())
                nref[c - 1] += int(rc.sum())
        with np.errstate(all="ignore"):
            prec, rec = tp / npred, tp / nref
        return {"precision": {o: _pct(p) for o, p in zip(ORGANS, prec)},
                "recall": {o: _pct(r) for o, r in zip(ORGANS, rec)}}


class RunProgress(TrainingCallback):
    """One line on stderr when a run starts and at each validation (iteration, validation Dice, best so far,
    seconds): a run of the benchmark can take half an hour, and with ``--workers`` it runs in another process."""

    def __init__(self, name: str) -> None:
        self.name, self.t0 = name, time.time()

    def on_train_start(self, trainer) -> None:
        self.t0 = time.time()
        _say(f"{self.name}: starts, {trainer.config.max_iterations} iterations")

    def on_iteration_end(self, trainer, record, logs, validation) -> None:
        if validation:
            _say(f"{self.name}: iteration {record['iteration']}/{trainer.config.max_iterations}, validation Dice "
                 f"{100 * validation['mean_dice']:.2f} (best {100 * trainer.best_metric:.2f}), "
                 f"{time.time() - self.t0:.0f} s")


def _say(line: str) -> None:
    print(f"[ssl] {line}", file=sys.stderr, flush=True)


def _pct(x: float) -> Optional[float]:
    return None if not math.isfinite(x) else round(100 * float(x), 1)


# ---------------------------------------------------------------------------------------------- runs
def parse_overrides(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``["consistency_weight=1.0", "class_weighting=none"]`` -> DinoMixConfig overrides (``--set``).

    A value is read as JSON where it parses (numbers, ``true``/``false``, ``[0.5, 0.5, 0.5]``), else as a string.

    Raises:
        ValueError: an item without ``=`` or a name that is not a DinoMixConfig field.
    """
    fields = {f.name for f in dataclasses.fields(DinoMixConfig)}
    out: Dict[str, Any] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}.")
        if name not in fields:
            raise ValueError(f"--set {name}: not a DinoMixConfig field; see `dinomix_core.config.DinoMixConfig`.")
        try:
            v = json.loads(value)
        except ValueError:
            v = value
        out[name] = tuple(v) if isinstance(v, list) else v
    return out


def method_config(method: str, scale: Scale, seed: int, teacher: str = "none",
                  overrides: Optional[Dict[str, Any]] = None) -> DinoMixConfig:
    """The configuration of one run: the ``cpu`` preset at ``scale``, the method's settings, its settings at
    ``scale``, then ``overrides``."""
    return _preset(
        method, {**scale.settings_of(method), **(overrides or {})}, seed=seed,
        max_iterations=scale.iterations_of(method), patch_size=scale.patch, target_spacing=scale.spacing,
        teacher=teacher, batch_size_labeled=1, batch_size_unlabeled=1, val_interval=scale.val_interval,
        sw_roi_size=(0, 0, 0),  # windows of the training patch, as every recorded result of this benchmark
        aug_organ_prob=0.0,  # weak augmentation only (module docstring)
        refiner=False,  # the click refiner leaves the segmenter bit-identical (tests/test_interactive.py), at a cost
    )


def _preset(method: str, overrides: Optional[Dict[str, Any]], **run: Any) -> DinoMixConfig:
    """The ``cpu`` preset with the run's fields, then the method's settings, then ``overrides`` (each wins)."""
    return get_preset("cpu", **{**run, **METHODS[method][0], **(overrides or {})})


def training_sets(method: str, data: Dict[str, List[Tuple[str, str]]]) -> Tuple[List[Tuple[str, str]], List[str]]:
    """The (image, label) pairs and the unlabeled images ``method`` trains on: ``supervised_all`` has the unlabeled
    volumes' hidden labels too, every other method their images only."""
    if METHODS[method][1]:
        return data["labeled"] + data["unlabeled"], []
    return list(data["labeled"]), [img for img, _ in data["unlabeled"]]


def run_method(method: str, seed: int, data: Dict[str, List[Tuple[str, str]]], scale: Scale, out: Path,
               teacher: str = "none", device: Optional[str] = None,
               overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train one method with one seed (model selected on validation), score it on the test set."""
    from .trainer import DinoMixTrainer

    cfg = method_config(method, scale, seed, teacher, overrides)
    labeled, unlabeled = training_sets(method, data)
    monitor = PseudoLabelMonitor(data["unlabeled"], scale.val_interval)
    run_dir = out / "runs" / f"{method}_seed{seed}"
    t0 = time.time()
    trainer = DinoMixTrainer(cfg, labeled, unlabeled, str(run_dir), validation=data["validation"], device=device,
                             callbacks=[monitor, RunProgress(f"{method} seed {seed}")])
    summary = trainer.fit()
    seconds = time.time() - t0
    scores = score_model(summary["checkpoint"], data["test"])
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    curve = [{"iteration": h["iteration"], "val_mean_dice": round(100 * h["val_mean_dice"], 2)}
             for h in trainer.history if "val_mean_dice" in h]
    best = max(curve, key=lambda c: c["val_mean_dice"]) if curve else None
    return {"seed": seed, **scores, "train_seconds": round(seconds, 1), "selected_iteration": best and best["iteration"],
            "validation_curve": curve, "pseudo_labels": monitor.curve}


def aggregate(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Mean and std over seeds per method, per organ and for the small organs; rows in ``METHODS`` order (others
    after them, by name), whatever order the runs finished in."""
    out = {}
    for m in sorted(runs, key=lambda m: (list(METHODS).index(m), "") if m in METHODS else (len(METHODS), m)):
        rs = runs[m]
        if not rs:
            continue
        out[m] = {
            "mean_dice": round(float(np.mean([r["mean_dice"] for r in rs])), 2),
            "mean_dice_std": round(float(np.std([r["mean_dice"] for r in rs])), 2),
            "small_organ_dice": round(float(np.mean([r["small_organ_dice"] for r in rs])), 2),
            "small_organ_dice_std": round(float(np.std([r["small_organ_dice"] for r in rs])), 2),
            "per_organ": {o: round(float(np.mean([r["per_organ"][o] for r in rs])), 2) for o in ORGANS},
            "seeds": [r["seed"] for r in rs], "runs": rs,
        }
    return out


def run_ssl_benchmark(output_dir: str, seeds: Sequence[int] = (0, 1, 2), methods: Optional[Sequence[str]] = None,
                      scale: str = DEFAULT_SCALE, teacher: str = "none", device: Optional[str] = None,
                      existing: Optional[Dict[str, Any]] = None,
                      overrides: Optional[Dict[str, Any]] = None, workers: int = 1) -> Dict[str, Any]:
    """Run (or continue) the benchmark; the results file is rewritten after every run.

    Args:
        overrides: DinoMixConfig fields set for every method of the run (``--set``), recorded in the results.
            Runs kept from ``existing`` must have been made with the same overrides.
        workers: runs trained at once, each in its own process on ``cpu_count // workers`` threads (the recorded
            CPU results: 2 workers, one thread each); the semi-supervised runs, the longest, start first, those
            with the largest budget before the others.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}.")
    methods = list(methods or MAIN_METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}.")
    overrides = dict(overrides or {})
    if existing:
        _check_resumable(existing, scale, teacher, overrides)
    t0, sc, out = time.time(), SCALES[scale], Path(output_dir)
    for m in methods:  # a bad value fails here, before any training
        method_config(m, sc, seeds[0] if seeds else 0, teacher, overrides)
    data = write_dataset(out / "data" / scale, sc)  # one folder per scale: the same file names hold other phantoms
    runs = {m: list(r["runs"]) for m, r in (existing or {}).get("methods", {}).items()}
    jobs = [(m, seed) for seed in seeds for m in methods if not any(r["seed"] == seed for r in runs.get(m, []))]

    def timed(results: Dict[str, Any]) -> Dict[str, Any]:
        # this invocation's wall time so far: data, training, scoring, with the runs kept from ``existing`` not in it
        return {**results, "wall_seconds": round(time.time() - t0)}

    def finished(m: str, seed: int, rec: Dict[str, Any]) -> None:
        runs.setdefault(m, []).append(rec)
        runs[m].sort(key=lambda r: r["seed"])
        _say(f"{m} seed {seed}: test mean Dice {rec['mean_dice']:.2f}, small organs {rec['small_organ_dice']:.2f}, "
             f"{rec['train_seconds']:.0f} s")
        write_results(out, timed(results_dict(runs, sc, scale, seeds, teacher, overrides)))

    if workers == 1 or len(jobs) < 2:
        for m, seed in jobs:
            finished(m, seed, run_method(m, seed, data, sc, out, teacher, device, overrides))
    else:
        _run_parallel(job_order(jobs, sc), workers, finished,
                      data=data, scale=sc, out=out, teacher=teacher, device=device, overrides=overrides)
    results = timed(results_dict(runs, sc, scale, seeds, teacher, overrides))
    write_results(out, results)
    return results


def best_validation(run: Dict[str, Any]) -> float:
    """A run's best validation Dice (its ``validation_curve``'s highest ``val_mean_dice``)."""
    return max(c["val_mean_dice"] for c in run["validation_curve"])


def compare_on_validation(baseline: Sequence[Dict[str, Any]], candidate: Sequence[Dict[str, Any]],
                          margin: float = 0.3, min_seeds_above: int = 2) -> Dict[str, Any]:
    """The decision rule of a pre-registered change, on the validation split only.

    Each run's quantity is its best validation Dice (the checkpoint the benchmark selects). Runs are paired by
    seed; the candidate is adopted when its mean over the paired seeds is at least ``margin`` above the baseline's
    and it is above in at least ``min_seeds_above`` seeds. The test Dice of the selected models is returned beside
    the rule and decides nothing.

    Args:
        baseline: the runs of the current row (``ssl_benchmark.json`` ``methods[m]["runs"]``).
        candidate: the runs of the change, one per seed of ``baseline`` (a seed missing from either is an error:
            a rule is never judged on part of its runs).
        margin: Dice points the candidate's mean must gain.
        min_seeds_above: seeds in which the candidate must be above.

    Raises:
        ValueError: when the seeds differ, a seed repeats, or a run has no validation curve.
    """
    def by_seed(runs: Sequence[Dict[str, Any]], what: str) -> Dict[int, Dict[str, Any]]:
        out = {r["seed"]: r for r in runs}
        if len(out) != len(runs):
            raise ValueError(f"{what}: a seed appears twice ({[r['seed'] for r in runs]}).")
        for s, r in out.items():
            if not r.get("validation_curve"):
                raise ValueError(f"{what}: seed {s} has no validation curve.")
        return out

    base, cand = by_seed(baseline, "baseline"), by_seed(candidate, "candidate")
    if sorted(base) != sorted(cand) or not base:
        raise ValueError(f"the rule pairs runs by seed: baseline seeds {sorted(base)}, candidate seeds {sorted(cand)}.")
    if not 0 < min_seeds_above <= len(base):
        raise ValueError(f"min_seeds_above must be in 1..{len(base)}, got {min_seeds_above}.")

    seeds = sorted(base)
    rows = {s: {"val_baseline": best_validation(base[s]), "val_candidate": best_validation(cand[s]),
                "selected_candidate": cand[s].get("selected_iteration"),
                "test_baseline": round(base[s]["mean_dice"], 2), "test_candidate": round(cand[s]["mean_dice"], 2),
                "small_baseline": round(base[s]["small_organ_dice"], 2),
                "small_candidate": round(cand[s]["small_organ_dice"], 2)} for s in seeds}
    vb, vc = (float(np.mean([rows[s][k] for s in seeds])) for k in ("val_baseline", "val_candidate"))
    above = sum(rows[s]["val_candidate"] > rows[s]["val_baseline"] for s in seeds)
    rule = {"val_mean_baseline": round(vb, 2), "val_mean_candidate": round(vc, 2), "threshold": round(vb + margin, 2),
            "seeds_above": above, "min_seeds_above": min_seeds_above,
            "met": bool(vc >= vb + margin - 1e-9 and above >= min_seeds_above)}
    test = {k: [round(float(f([rows[s][k] for s in seeds])), 2) for f in (np.mean, np.std)]
            for k in ("test_baseline", "test_candidate", "small_baseline", "small_candidate")}
    return {"seeds": seeds, "runs": rows, "rule": rule, "test": test}


def with_method_runs(results: Dict[str, Any], method: str, runs: Sequence[Dict[str, Any]], note: str,
                     iterations: Optional[int] = None) -> Dict[str, Any]:
    """``results`` (an ``ssl_benchmark.json``) with the row of ``method`` made of ``runs`` and ``note`` saying how:
    what an adopted change of a pre-registered rule does to the results file. Every other row is kept as it is.

    Args:
        results: the results file's content (not modified).
        method: the row to replace (an existing one).
        runs: its new runs, one per seed of the results file.
        note: how the row was made (kept in ``notes``, printed under the table).
        iterations: the row's budget where it differs from the file's ``iterations``.

    Raises:
        ValueError: for an unknown row, or runs whose seeds are not the file's.
    """
    if method not in results.get("methods", {}):
        raise ValueError(f"no row {method!r} in the results; rows: {sorted(results.get('methods', {}))}.")
    seeds = sorted(r["seed"] for r in runs)
    if seeds != sorted(results["methods"][method]["seeds"]):
        raise ValueError(f"row {method!r} has seeds {results['methods'][method]['seeds']}, the new runs {seeds}.")
    out = copy.deepcopy(results)
    out["methods"][method] = aggregate({method: list(runs)})[method]
    out["headroom"] = headroom(out["methods"])
    by = dict(out.get("iterations_by_method") or {})
    if iterations is not None and iterations != out["iterations"]:
        by[method] = iterations
    if by:
        out["iterations_by_method"] = by
    out["notes"] = {**(out.get("notes") or {}), method: note}
    return out


#: what must be equal for runs of two results files to share a table
_MADE_ALIKE = ("benchmark", "scale", "data", "patch_size", "val_interval", "recipe", "overrides", "method_settings",
               "teacher")


def merge_results(parts: Sequence[Dict[str, Any]], sources: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """One results file from several made the same way, e.g. by processes or machines that each ran some
    (method, seed) pairs of one table. Each row is then the mean over the seeds it has, which the markdown names
    where they differ from the table's.

    Args:
        parts: ``ssl_benchmark.json`` contents (not modified); the header (scale, data, recipe, ...) is the first's.
        sources: where each part came from (folders), recorded in ``merged_from``.

    Raises:
        ValueError: for fewer than two parts, parts made differently (scale, data, patch, recipe, ``--set``,
            teacher, a method's budget), two different runs of one (method, seed), or more than one real-CT
            check.
    """
    parts = list(parts)
    sources = list(sources) if sources is not None else [f"part {i + 1}" for i in range(len(parts))]
    if len(parts) < 2 or len(sources) != len(parts):
        raise ValueError(f"merge needs two or more results files (and one source name each), got {len(parts)}.")
    without = [s for s, p in zip(sources, parts) if "methods" not in p]
    if without:
        raise ValueError(f"no phantom runs to merge in {without}.")
    first = parts[0]

    def budget(p: Dict[str, Any], m: str) -> int:
        return (p.get("iterations_by_method") or {}).get(m, p["iterations"])

    runs: Dict[str, List[Dict[str, Any]]] = {}
    budgets: Dict[str, int] = {}
    where: Dict[Tuple[str, int], str] = {}
    for src, p in zip(sources, parts):
        differ = [k for k in _MADE_ALIKE if p.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"{src} was made differently from {sources[0]} ({', '.join(differ)}).")
        for m, row in p["methods"].items():
            if budgets.setdefault(m, budget(p, m)) != budget(p, m):
                raise ValueError(f"{m} trained {budget(p, m)} iterations in {src}, {budgets[m]} elsewhere.")
            for r in row["runs"]:
                seen = next((x for x in runs.get(m, []) if x["seed"] == r["seed"]), None)
                if seen is None:
                    where[(m, r["seed"])] = src
                    runs.setdefault(m, []).append(r)
                elif seen != r:  # the same run kept in two files (e.g. one resumed from the other) counts once
                    raise ValueError(f"{m} seed {r['seed']}: different runs in {where[(m, r['seed'])]} and {src}.")
    real = [p["real_transductive"] for p in parts if p.get("real_transductive")]
    if len(real) > 1:
        raise ValueError("more than one part holds a real-CT check; merge the phantom runs only.")
    runs = {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in runs.items()}
    methods = aggregate(runs)
    by = {m: n for m, n in budgets.items() if n != first["iterations"]}
    out = {k: copy.deepcopy(first[k]) for k in (*_MADE_ALIKE, "iterations", "small_organs") if k in first}
    out.update({
        "command": "dinomix benchmark ssl --merge " + " ".join(sources),
        "merged_from": [{"source": s, "command": p.get("command"), "wall_seconds": p.get("wall_seconds"),
                         "machine": p.get("machine"),
                         "runs": sorted(f"{m} {r['seed']}" for m, row in p["methods"].items() for r in row["runs"])}
                        for s, p in zip(sources, parts)],
        **({"iterations_by_method": by} if by else {}),
        "seeds": sorted({r["seed"] for rs in runs.values() for r in rs}),
        "headroom": headroom(methods), "methods": methods,
    })
    machines = {json.dumps(p.get("machine"), sort_keys=True) for p in parts}
    if len(machines) == 1 and first.get("machine"):
        out["machine"] = copy.deepcopy(first["machine"])
    notes = {k: v for p in parts for k, v in (p.get("notes") or {}).items()}
    if notes:
        out["notes"] = notes
    if real:
        out["real_transductive"] = copy.deepcopy(real[0])
    return out


def job_order(jobs: Sequence[Tuple[str, int]], sc: Scale) -> List[Tuple[str, int]]:
    """The (method, seed) runs in the order parallel workers take them: the semi-supervised ones (the slowest per
    iteration) first, the largest budget first among them, so that no long run starts last."""
    return sorted(jobs, key=lambda j: (not _semi_supervised(j[0]), -sc.iterations_of(j[0])))


def _semi_supervised(method: str) -> bool:
    settings, all_labeled = METHODS[method]
    return not all_labeled and bool(settings.get("use_pic") or settings.get("use_consistency"))


def _one_process_threads(n: int) -> None:
    torch.set_num_threads(n)


def _run_parallel(jobs: Sequence[Tuple[str, int]], workers: int, finished: Callable[[str, int, Dict[str, Any]], None],
                  **run: Any) -> None:
    """``run_method`` for every (method, seed) of ``jobs``, ``workers`` processes at a time; ``finished`` gets each
    result as it comes. A failed run stops the ones not started; those running finish and are kept, then the
    first error is raised."""
    import concurrent.futures as cf
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    _say(f"{len(jobs)} runs, {workers} at a time, {threads} thread(s) each")
    error: Optional[BaseException] = None
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_one_process_threads, initargs=(threads,)) as pool:
        futures = {}
        for m, seed in jobs:
            futures[pool.submit(run_method, m, seed, **run)] = (m, seed)
        for f in cf.as_completed(futures):
            m, seed = futures[f]
            if f.cancelled():
                continue
            try:
                finished(m, seed, f.result())
            except Exception as e:  # the other runs' results are still worth keeping
                _say(f"{m} seed {seed} failed: {e!r}; the runs already going finish and are kept")
                error = error or e
                for other in futures:
                    other.cancel()
    if error is not None:
        raise error


def _check_resumable(existing: Dict[str, Any], scale: str, teacher: str, overrides: Dict[str, Any]) -> None:
    """Raise ``ValueError`` unless the runs in ``existing`` were made with this run's scale, teacher, recipe,
    overrides and per-method budget (runs made otherwise must not be averaged with new ones)."""
    if "methods" not in existing:  # a file holding only the real-CT check: no phantom runs to keep
        return
    want = {"scale": scale, "teacher": teacher, "recipe": _jsonable(RECIPE), "overrides": _jsonable(overrides),
            "method_settings": (method_settings(SCALES[scale]) or None) if scale in SCALES else None}
    have = {"scale": existing.get("scale"), "teacher": existing.get("teacher"), "recipe": existing.get("recipe"),
            "overrides": dict(existing.get("overrides") or {}), "method_settings": existing.get("method_settings")}
    if "iterations" in existing and scale in SCALES:
        kept = sorted(existing["methods"])
        want["budget"] = {m: overrides.get("max_iterations", SCALES[scale].iterations_of(m)) for m in kept}
        have["budget"] = {m: (existing.get("iterations_by_method") or {}).get(m, existing["iterations"]) for m in kept}
    differ = [k for k in want if have[k] != want[k]]
    if differ:
        what = "; ".join(f"{k} {have[k]!r} there, {want[k]!r} now" for k in differ)
        raise ValueError(f"the results being resumed were made differently ({what}); use another --output.")


def method_settings(sc: Scale) -> Dict[str, Dict[str, Any]]:
    """``sc.method_settings`` as recorded in a results file: ``{method: {field: value}}``."""
    return {m: _jsonable(sc.settings_of(m)) for m, _ in sc.method_settings}


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def headroom(methods: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The benchmark's headroom from its aggregated rows: supervised on the labeled subset and on every volume."""
    return {"supervised_labeled": methods.get("supervised", {}).get("mean_dice"),
            "supervised_all": methods.get("supervised_all", {}).get("mean_dice")}


def results_dict(runs, sc: Scale, scale: str, seeds: Sequence[int], teacher: str,
                 overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    methods = aggregate(runs)
    iterations = (overrides or {}).get("max_iterations", sc.iterations)
    by_method = {} if "max_iterations" in (overrides or {}) else {
        m: sc.iterations_of(m) for m in runs if sc.iterations_of(m) != iterations}
    return {
        "benchmark": "ssl (SYNTHETIC phantoms, dinomix_core.benchmark_ssl)",
        "command": "dinomix " + " ".join(sys.argv[1:]),
        "scale": scale, "data": {"labeled": sc.n_labeled, "unlabeled": sc.n_unlabeled, "validation": sc.n_validation,
                                 "test": sc.n_test, "shape": list(sc.shape), "spacing_mm": list(sc.spacing),
                                 "labeled_protocol": "narrow (portal phase, noise 10-20 HU)",
                                 "other_protocol": "wide (portal/arterial/native, noise 10-40 HU, blur 0.4-1.5)",
                                 **({"fat_planes_mm": dict(sc.fat_planes)} if sc.fat_planes else {})},
        "iterations": iterations, **({"iterations_by_method": by_method} if by_method else {}),
        **({"method_settings": method_settings(sc)} if sc.method_settings else {}),
        "patch_size": list(sc.patch),
        "val_interval": sc.val_interval,
        "recipe": _jsonable(RECIPE), "overrides": _jsonable(overrides or {}), "teacher": teacher,
        # every seed with a run in the file (a --resume run adds its seeds to the earlier ones)
        "seeds": sorted({int(r["seed"]) for rs in runs.values() for r in rs} | set(seeds)),
        "small_organs": [ORGANS[c - 1] for c in SMALL_ORGANS],
        "headroom": headroom(methods),
        "methods": methods,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": torch.get_num_threads()},
    }


# ---------------------------------------------------------------------------------------------- real CT
def run_real_transductive(ct_dir: str, studies_dir: str, out: Path, seeds: Sequence[int], iterations: int,
                          methods: Sequence[str] = ("supervised", "dinomix"), device: Optional[str] = None,
                          overrides: Optional[Dict[str, Any]] = None,
                          on_update: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Labeled: the real CT of the sample studies; unlabeled: ``CT_DIR/ct.nii.gz`` with its labels held back;
    scored on those labels (mean Dice over the organs present). The app's ``cpu`` preset, same budget.

    Args:
        on_update: called with the results so far after every finished run (to save them as they come).
    """
    import nibabel as nib

    from .studies import list_studies
    from .trainer import run_training

    ct, ref_path = Path(ct_dir) / "ct.nii.gz", Path(ct_dir) / "label.nii.gz"
    if not (ct.is_file() and ref_path.is_file()):
        raise FileNotFoundError(f"no ct.nii.gz and label.nii.gz in {ct_dir}.")
    labeled = [(str(i), str(l)) for i, l in list_studies(studies_dir)[0] if "real" in Path(i).name]
    if not labeled:
        raise FileNotFoundError(f"no labeled real CT (a study named real*) in {studies_dir}.")
    ref = np.asarray(nib.load(str(ref_path)).dataobj)
    present = [c for c in range(1, len(ORGANS) + 1) if (ref == c).any()]
    res: Dict[str, Any] = {"labeled": [Path(i).name for i, _ in labeled], "unlabeled": ct.name,
                           "organs_present": [ORGANS[c - 1] for c in present], "iterations": iterations,
                           "recipe": _jsonable(RECIPE), "overrides": _jsonable(overrides or {})}
    for m in methods:
        if m not in METHODS or METHODS[m][1]:
            raise ValueError(f"{m!r} is not a method for the real-CT check (its reference labels stay held back); "
                             f"choose from {sorted(k for k, v in METHODS.items() if not v[1])}.")
    for m in methods:
        rows: List[Dict[str, Any]] = []
        for seed in seeds:
            cfg = _preset(m, overrides, seed=seed, max_iterations=iterations, val_interval=0)
            t0 = time.time()
            summary = run_training(cfg, labeled, [str(ct)], str(out / "real_runs" / f"{m}_seed{seed}"), device=device)
            rows.append({"seed": seed, **score_real_ct(summary["checkpoint"], str(ct), ref),
                         "train_seconds": round(time.time() - t0, 1)})
            print(f"[ssl real] {m} seed {seed}: mean Dice {rows[-1]['mean_dice']:.1f}", file=sys.stderr, flush=True)
            res[m] = real_summary(rows)
            if on_update is not None:
                on_update(res)
    return res


def score_real_ct(model_path: str, ct: str, ref: np.ndarray) -> Dict[str, Any]:
    """Dice in percent of the model's segmentation of ``ct`` against ``ref``: per organ and mean over the organs
    present in ``ref``."""
    from .inference import Predictor

    present = [c for c in range(1, len(ORGANS) + 1) if (ref == c).any()]
    pred, _ = Predictor(model_path, device="cpu").predict(ct)
    d = dice_per_organ(pred, ref)
    return {"mean_dice": round(100 * float(np.mean([d[c - 1] for c in present])), 2),
            "per_organ": {ORGANS[c - 1]: round(100 * d[c - 1], 1) for c in present}}


def real_summary(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """One method's real-CT runs (one per seed): mean and std of the mean Dice, per-organ means, the runs."""
    organs = list(rows[0]["per_organ"])
    return {"mean_dice": round(float(np.mean([r["mean_dice"] for r in rows])), 2),
            "mean_dice_std": round(float(np.std([r["mean_dice"] for r in rows])), 2),
            "per_organ": {o: round(float(np.mean([r["per_organ"][o] for r in rows])), 1) for o in organs},
            "runs": list(rows)}


# ---------------------------------------------------------------------------------------------- reports
def markdown(results: Dict[str, Any]) -> str:
    if "data" not in results:  # only the real-CT check so far
        return "# Semi-supervised benchmark\n\n" + _real_markdown(results)
    d = results["data"]
    over = results.get("overrides") or {}
    sets = "; `--set` " + ", ".join(f"{k}={json.dumps(v)}" for k, v in over.items()) if over else ""
    # a row trained to another budget than the rest (assembled from separate runs) says so
    by = results.get("iterations_by_method") or {}
    budgets = " (" + ", ".join(f"{m}: {n}" for m, n in by.items()) + ")" if by else ""
    settings = results.get("method_settings") or {}
    at_scale = "".join(f"; at this scale {m} " + ", ".join(f"{k}={json.dumps(v)}" for k, v in f.items())
                       for m, f in settings.items())
    lines = [
        "# Semi-supervised benchmark (SYNTHETIC phantoms)", "",
        f"{d['labeled']} labeled ({d['labeled_protocol']}), {d['unlabeled']} unlabeled, {d['validation']} validation, "
        f"{d['test']} test volumes ({d['other_protocol']}), {tuple(d['shape'])} at {tuple(d['spacing_mm'])} mm"
        + (f", fat planes (mm) {d['fat_planes_mm']}" if d.get("fat_planes_mm") else "") + "; "
        f"{results['iterations']} iterations{budgets}, model selected on validation; seeds {results['seeds']}; "
        f"teacher `{results['teacher']}`{sets}{at_scale}. Dice in percent, mean +- std over seeds.", "",
        "| method | mean Dice | small organs | " + " | ".join(ORGAN_ABBREVIATIONS) + " |",
        "|---|---|---|" + "---|" * len(ORGAN_ABBREVIATIONS),
    ]
    for m, r in results["methods"].items():
        # a row averaged over fewer seeds than the table's (a merged file) names its own
        seeds = r.get("seeds", results["seeds"])
        own = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}" if seeds != results["seeds"] else ""
        extra = ", ".join(x for x in (f"{by[m]} iterations" if m in by else "", own) if x)
        name = f"{m} ({extra})" if extra else m
        sd = (lambda k: f" +- {r[k]:.1f}") if len(seeds) > 1 else (lambda k: "")  # no spread from one seed
        lines.append(f"| {name} | {r['mean_dice']:.1f}{sd('mean_dice_std')} | {r['small_organ_dice']:.1f}"
                     f"{sd('small_organ_dice_std')} | " + " | ".join(f"{r['per_organ'][o]:.1f}" for o in ORGANS) + " |")
    # how a row was made where it differs from the rest (assembled results say so in ``notes``)
    notes = results.get("notes") or {}
    if notes:
        lines += ["", "Notes:"] + [f"- {k}: {v}" for k, v in notes.items()]
    return "\n".join(lines) + "\n" + _real_markdown(results)


def _real_markdown(results: Dict[str, Any]) -> str:
    real = results.get("real_transductive")
    if not real:
        return ""
    lines = ["", "## Real CT, transductive", "",
             f"Labeled: {', '.join(real['labeled'])}; unlabeled: the second real CT ({real['unlabeled']}), its labels "
             f"held back and used only to score; {real['iterations']} iterations, `cpu` preset. Mean Dice over the "
             f"{len(real['organs_present'])} organs present, mean +- std over seeds.", "",
             "| method | mean Dice | per seed | " + " | ".join(real["organs_present"]) + " |",
             "|---|---|---|" + "---|" * len(real["organs_present"])]
    for m, r in real.items():
        if isinstance(r, dict) and "runs" in r:
            organs = r.get("per_organ", {})
            lines.append(f"| {m} | {r['mean_dice']:.1f} +- {r.get('mean_dice_std', 0.0):.1f} | "
                         + ", ".join(f"{x['seed']}: {x['mean_dice']:.1f}" for x in r["runs"]) + " | "
                         + " | ".join(f"{organs[o]:.1f}" if o in organs else "" for o in real["organs_present"])
                         + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: Dict[str, Any]) -> None:
    atomic_write(out / "ssl_benchmark.json", json.dumps(results, indent=2))
    atomic_write(out / "ssl_benchmark.md", markdown(results))
    if results.get("methods"):
        _plots(results, out)


def _plots(results: Dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # pragma: no cover
        logger.warning("no charts: %s", e)
        return
    methods = list(results["methods"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16, 4), gridspec_kw={"width_ratios": [3, 1]})
    x, w = np.arange(len(ORGANS)), 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        r = results["methods"][m]
        ax.bar(x + k * w, [r["per_organ"][o] for o in ORGANS], w, label=m)
        for run in r["runs"]:
            c = run["validation_curve"]
            ax2.plot([p["iteration"] for p in c], [p["val_mean_dice"] for p in c], color=f"C{k}", alpha=0.6)
    ax.set_xticks(x + w * (len(methods) - 1) / 2)
    ax.set_xticklabels(ORGAN_ABBREVIATIONS)
    ax.set(ylabel="test Dice (%)", title="Per-organ Dice, SYNTHETIC phantoms (mean over seeds)")
    ax.legend(fontsize=7)
    ax2.set(xlabel="iteration", ylabel="validation mean Dice (%)", title="validation curves")
    fig.tight_layout()
    atomic_write(out / "ssl_benchmark_per_organ.png", lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


def ssl_main(args) -> int:
    out = Path(args.output or "benchmarks/results")
    if getattr(args, "merge", None):
        files = [Path(p) if Path(p).is_file() else Path(p) / "ssl_benchmark.json" for p in args.merge]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"--merge: no results file {missing}.")
        target = (out / "ssl_benchmark.json").resolve()
        if target.exists() and target not in {f.resolve() for f in files}:
            raise ValueError(f"--merge: {out / 'ssl_benchmark.json'} exists and is not one of the merged files; "
                             "choose another --output or merge it too.")
        res = merge_results([json.loads(f.read_text()) for f in files], sources=list(args.merge))
        write_results(out, res)
        print(markdown(res))
        return 0
    overrides = parse_overrides(getattr(args, "set", None))
    existing = None
    # the real-CT check is added to the results file in place; --resume keeps the finished phantom runs
    keep = getattr(args, "resume", False) or getattr(args, "real_ct_dir", None)
    if keep and (out / "ssl_benchmark.json").exists():
        existing = json.loads((out / "ssl_benchmark.json").read_text())
    scale = "quick" if args.quick else (
        "full" if getattr(args, "full", False) else getattr(args, "scale", DEFAULT_SCALE))
    if getattr(args, "real_ct_dir", None):
        res = dict(existing or {})

        def save(real: Dict[str, Any]) -> None:
            res["real_transductive"] = real
            write_results(out, res)

        save(run_real_transductive(
            args.real_ct_dir, args.studies or "sample_data/studies", out, args.seeds,
            args.max_iterations or 300, methods=args.methods or ("supervised", "dinomix"), device=args.device,
            overrides=overrides, on_update=save))
        print(json.dumps(res["real_transductive"], indent=2))
        return 0
    res = run_ssl_benchmark(str(out), seeds=args.seeds, methods=args.methods, scale=scale, teacher=args.teacher,
                            device=args.device, existing=existing, overrides=overrides,
                            workers=getattr(args, "workers", 1))
    print(markdown(res))
    return 0
