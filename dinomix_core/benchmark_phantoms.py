"""``dinomix benchmark phantoms``: a class-imbalanced semi-supervised benchmark that runs on a CPU.

All data here is SYNTHETIC (:mod:`dinomix_core.phantoms`): 13 organs at realistic relative sizes (liver about
200 times an adrenal gland). 20 training volumes (20% = 4 labeled, 16 unlabeled) and a held-out test set;
supervised-only, mean-teacher consistency and DINO-Mix (PIC + consistency, plus FKD when a teacher is given)
trained with the same seeds and iterations; per-organ Dice on the test set (dinomix_core.evaluation).
Writes ``phantoms.json``, ``phantoms.md`` and ``phantoms_per_organ.png`` in the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .config import get_preset
from .labels import ORGAN_ABBREVIATIONS, ORGANS, SMALL_ORGANS

__all__ = ["METHODS", "run_phantoms_benchmark", "phantoms_main"]

logger = logging.getLogger(__name__)

#: method name -> config switches
METHODS: Dict[str, Dict[str, Any]] = {
    "supervised": dict(use_pic=False, use_consistency=False, use_fkd=False),
    "mean_teacher": dict(use_pic=False, use_consistency=True, use_fkd=False),
    "dinomix": dict(use_pic=True, use_consistency=True, use_fkd=True),
    # ablation (only with --methods): PIC mixing, pseudo-labelled voxels weighted 0 (no consistency term)
    "pic_only": dict(use_pic=True, use_consistency=False, use_fkd=True),
}
#: methods run when none are named
DEFAULT_METHODS = ("supervised", "mean_teacher", "dinomix")

#: Benchmark scale (default and --quick)
SCALES = {
    "default": dict(n_train=20, n_labeled=4, n_test=10, shape=(96, 96, 48), iterations=300),
    "quick": dict(n_train=6, n_labeled=2, n_test=2, shape=(64, 64, 32), iterations=6),
}


def _num(v) -> float:
    """Dice of an organ absent from both prediction and reference in every case is NaN; count it as 0 here."""
    v = float(v)
    return 0.0 if np.isnan(v) else v


def _write_dataset(root: Path, n_train: int, n_labeled: int, n_test: int, shape, spacing=(3.0, 3.0, 4.0)):
    import nibabel as nib

    from .phantoms import generate_phantom

    root.mkdir(parents=True, exist_ok=True)
    labeled, unlabeled, test = [], [], []
    for i in range(n_train + n_test):
        seed = 1000 + i  # the data seeds are fixed; the method seeds vary
        img_p, lab_p = root / f"synthetic_{i:03d}.nii.gz", root / f"synthetic_{i:03d}_label.nii.gz"
        if not (img_p.exists() and lab_p.exists()):
            img, lab, aff = generate_phantom(seed, shape=shape, spacing=spacing)
            nib.save(nib.Nifti1Image(img.astype(np.int16), aff), str(img_p))
            nib.save(nib.Nifti1Image(lab.astype(np.uint8), aff), str(lab_p))
        if i < n_labeled:
            labeled.append((str(img_p), str(lab_p)))
        elif i < n_train:
            unlabeled.append(str(img_p))
        else:
            test.append((str(img_p), str(lab_p)))
    return labeled, unlabeled, test


def _evaluate(model_path: str, test) -> Dict[str, Any]:
    """Predict every test case with the model and summarize its per-organ scores."""
    import nibabel as nib

    from .evaluation import evaluate_case, summarize
    from .inference import Predictor

    predictor = Predictor(model_path, device="cpu")
    results = {}
    for img_p, lab_p in test:
        pred, _ = predictor.predict(img_p)
        ref = np.asarray(nib.load(lab_p).dataobj).astype(np.uint8)
        results[Path(img_p).name] = evaluate_case(pred, ref)
    return summarize(results)


def run_phantoms_benchmark(
    output_dir: str,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Optional[Sequence[str]] = None,
    teacher: str = "none",
    max_iterations: Optional[int] = None,
    quick: bool = False,
    device: Optional[str] = None,
) -> Dict[str, Any]:
    """Run the benchmark; returns (and writes) the results dictionary."""
    from .trainer import run_training

    scale = dict(SCALES["quick" if quick else "default"])
    methods = list(methods or DEFAULT_METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    iters = int(max_iterations or scale["iterations"])
    out = Path(output_dir)
    data_dir = out / "data"
    t_data = time.time()
    labeled, unlabeled, test = _write_dataset(data_dir, scale["n_train"], scale["n_labeled"], scale["n_test"], scale["shape"])
    logger.info("synthetic data ready in %.1fs: %d labeled, %d unlabeled, %d test", time.time() - t_data, len(labeled), len(unlabeled), len(test))
    # trained at 4.5 x 4.5 x 6 mm (volumes become 64 x 64 x 32) so 9 runs fit in well under an hour on 2 cores
    patch = (48, 48, 24) if not quick else (48, 48, 16)
    spacing = (4.5, 4.5, 6.0)
    runs: Dict[str, List[Dict[str, Any]]] = {m: [] for m in methods}
    for seed in seeds:
        for m in methods:
            cfg = get_preset(
                "cpu", seed=seed, max_iterations=iters, patch_size=patch, target_spacing=spacing,
                teacher=teacher, batch_size_labeled=1, batch_size_unlabeled=1, val_interval=0, **METHODS[m],
            )
            run_dir = out / "runs" / f"{m}_seed{seed}"
            t0 = time.time()
            print(f"[phantoms] {m} seed {seed}: training {iters} iterations", file=sys.stderr, flush=True)
            summary = run_training(cfg, labeled, unlabeled, str(run_dir), device=device)
            train_s = time.time() - t0
            ev = _evaluate(summary["checkpoint"], test)
            per_organ = {o: _num(ev["per_organ"][o]["dice"]["mean"]) for o in ORGANS}
            small = float(np.mean([per_organ[ORGANS[c - 1]] for c in SMALL_ORGANS]))
            rec = {"seed": seed, "mean_dice": ev["mean_dice"], "small_organ_dice": small, "per_organ": per_organ, "train_seconds": round(train_s, 1)}
            runs[m].append(rec)
            print(f"[phantoms] {m} seed {seed}: mean Dice {rec['mean_dice']:.4f}, small organs {small:.4f}, {train_s:.0f}s", file=sys.stderr, flush=True)
            _write_results(out, _aggregate(runs, scale, iters, patch, spacing, teacher, seeds))
            for f in ("checkpoint.pt",):
                try:
                    (run_dir / f).unlink()
                except OSError:
                    pass
    results = _aggregate(runs, scale, iters, patch, spacing, teacher, seeds)
    _write_results(out, results)
    return results


def _write_results(out: Path, results: Dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "phantoms.json").write_text(json.dumps(results, indent=2))
    (out / "phantoms.md").write_text(markdown(results))
    _bar_chart(results, out / "phantoms_per_organ.png")


def _aggregate(runs, scale, iters, patch, spacing, teacher, seeds) -> Dict[str, Any]:
    results = {
        "benchmark": "phantoms (SYNTHETIC data, dinomix_core.phantoms)",
        "command": "dinomix " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("dinomix") else None,
        "data": {"train": scale["n_train"], "labeled": scale["n_labeled"], "test": scale["n_test"], "shape": scale["shape"], "spacing_mm": [3.0, 3.0, 4.0], "data_seeds": "1000 + index"},
        "iterations": iters, "patch_size": list(patch), "train_spacing_mm": list(spacing),
        "batch": "1 labeled + 1 unlabeled (supervised only: 2 labeled, the same student batch)", "teacher": teacher,
        "seeds": list(seeds),
        "seconds_per_run_note": "train_seconds per run are wall time on a shared 2-core CPU",
        "small_organs": [ORGANS[c - 1] for c in SMALL_ORGANS],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "methods": {},
    }
    for m, rs in runs.items():
        if not rs:
            continue
        results["methods"][m] = {
            "mean_dice": float(np.mean([r["mean_dice"] for r in rs])),
            "mean_dice_std": float(np.std([r["mean_dice"] for r in rs])),
            "small_organ_dice": float(np.mean([r["small_organ_dice"] for r in rs])),
            "small_organ_dice_std": float(np.std([r["small_organ_dice"] for r in rs])),
            "per_organ": {o: float(np.mean([r["per_organ"][o] for r in rs])) for o in ORGANS},
            "runs": rs,
        }
    results["complete"] = all(len(rs) == len(seeds) for rs in runs.values())
    return results


def markdown(results: Dict[str, Any]) -> str:
    lines = [
        "# Phantom benchmark (SYNTHETIC data)",
        "",
        f"{results['data']['train']} training volumes ({results['data']['labeled']} labeled), {results['data']['test']} test volumes, "
        f"{results['iterations']} iterations, seeds {results['seeds']}, teacher `{results['teacher']}`. Dice x100, mean +- std over seeds.",
        "",
        "| method | mean Dice | small organs | " + " | ".join(ORGAN_ABBREVIATIONS) + " |",
        "|---|---|---|" + "---|" * len(ORGAN_ABBREVIATIONS),
    ]
    for m, r in results["methods"].items():
        lines.append(
            f"| {m} | {100 * r['mean_dice']:.2f} +- {100 * r['mean_dice_std']:.2f} | {100 * r['small_organ_dice']:.2f} +- {100 * r['small_organ_dice_std']:.2f} | "
            + " | ".join(f"{100 * r['per_organ'][o]:.1f}" for o in ORGANS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _bar_chart(results: Dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # pragma: no cover
        logger.warning("no chart: %s", e)
        return
    methods = list(results["methods"])
    x = np.arange(len(ORGANS))
    w = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(12, 4))
    for k, m in enumerate(methods):
        ax.bar(x + k * w, [100 * results["methods"][m]["per_organ"][o] for o in ORGANS], w, label=m)
    ax.set_xticks(x + w * (len(methods) - 1) / 2)
    ax.set_xticklabels(ORGAN_ABBREVIATIONS)
    ax.set_ylabel("Dice (x100)")
    ax.set_title("Per-organ Dice on SYNTHETIC phantoms (mean over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def phantoms_main(args) -> int:
    out = args.output or "benchmarks/results"
    res = run_phantoms_benchmark(
        out, seeds=args.seeds, methods=args.methods, teacher=args.teacher, max_iterations=args.max_iterations,
        quick=args.quick, device=args.device,
    )
    print(markdown(res))
    return 0
