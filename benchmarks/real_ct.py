"""The day-one model on a real CT it never saw: the starter model, then one default Retrain.

    python benchmarks/real_ct.py --ts-dir PATH/TO/ts_example [--seeds 0 1 2]

For each seed of the starter recipe (``dinomix_core.starter``, trained from ``sample_data/studies`` only):

1. train the starter (or, with ``--shipped``, take ``apps/dinomix/model/pretrained_dinomix.pt`` for seed 0);
2. score it on the ts_example CT: per-organ Dice (percent) and HD95 (mm), the mean over the organs present in the
   reference, and the warm inference time (the second ``Predictor.predict`` of the same process);
3. run the app's default Retrain (``TrainingJob`` with the app's default options, warm start from that starter) on
   a copy of the sample studies plus one more submitted label (``synthetic_phantom_003``, its generator's label map);
4. score the retrained model the same way.

ts_example's labels are TotalSegmentator model output (see its README), read from the folder given and never copied.
Results: ``benchmarks/results/real_ct.json`` (written after every step) and ``real_ct.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dinomix_core.config import ORGANS, RECIPE  # noqa: E402
from dinomix_core.data import case_id_from_path  # noqa: E402
from dinomix_core.evaluation import evaluate_case  # noqa: E402
from dinomix_core.inference import Predictor  # noqa: E402
from dinomix_core.phantoms import generate_phantom  # noqa: E402
from dinomix_core.artifacts import atomic_copy, atomic_write  # noqa: E402
from dinomix_core.service import TrainingJob, TrainRequest  # noqa: E402
from dinomix_core.starter import STARTER_ITERATIONS, STARTER_PHANTOM_SHARE, STARTER_PHANTOMS, train_starter  # noqa: E402
from dinomix_core.studies import prepare_studies  # noqa: E402

SHIPPED = REPO / "apps" / "dinomix" / "model" / "pretrained_dinomix.pt"
#: the study whose label the benchmark submits before the Retrain, and its generator seed (sample_data/PROVENANCE.md)
SUBMITTED_STUDY, SUBMITTED_SEED = "synthetic_phantom_003", 3
TARGETS = {"liver": 90.0, "spleen": 80.0, "right kidney": 80.0, "left kidney": 80.0, "mean_present": 50.0}


def score(model: Path, ct: Path, ref: np.ndarray, spacing) -> Dict[str, Any]:
    """Dice (percent) and HD95 (mm) per organ of ``model`` on ``ct``; mean over the organs in ``ref``."""
    predictor = Predictor(str(model), device="cpu")
    predictor.cached_results = 0  # time the second run's computation, not the cache of automatic results
    t0 = time.time()
    predictor.predict(str(ct))
    cold = time.time() - t0
    t0 = time.time()
    pred, _ = predictor.predict(str(ct))
    warm = time.time() - t0
    per = evaluate_case(pred, ref, spacing=spacing)
    present = [n for n, r in per.items() if (ref == r["label"]).any()]
    dice = {n: round(100 * r["dice"], 2) for n, r in per.items() if n in present}
    hd95 = {n: round(r["hd95"], 1) for n, r in per.items() if n in present}
    return {
        "mean_dice": round(float(np.mean(list(dice.values()))), 2),
        "dice": dice,
        "hd95_mm": hd95,
        "organs_present": present,
        "infer_seconds_cold": round(cold, 2),
        "infer_seconds_warm": round(warm, 2),
    }


def submit_phantom_label(studies: Path) -> None:
    """Write the generator's label of ``SUBMITTED_STUDY`` as its final label (what a submitted correction is)."""
    img = nib.load(str(studies / f"{SUBMITTED_STUDY}.nii.gz"))
    _, label, affine = generate_phantom(SUBMITTED_SEED, img.shape, [float(z) for z in img.header.get_zooms()])
    if not np.allclose(affine, img.affine, atol=1e-4):
        raise SystemExit(f"{SUBMITTED_STUDY}: the regenerated phantom does not match the study's grid")
    out = nib.Nifti1Image(label.astype(np.uint8), img.affine)
    out.set_data_dtype(np.uint8)
    nib.save(out, str(studies / "labels" / "final" / f"{SUBMITTED_STUDY}.nii.gz"))


def default_retrain(starter: Path, work: Path, iterations: Optional[int] = None) -> Dict[str, Any]:
    """The app's default Retrain over the sample studies + one submitted label, warm-started from ``starter``."""
    studies = prepare_studies(work / "studies")
    submit_phantom_label(studies)
    from dinomix_core.studies import list_studies

    labeled, unlabeled = list_studies(studies)
    request = {} if iterations is None else {"max_iterations": iterations}
    job = TrainingJob(str(work / "model"), TrainRequest.from_request(request), starter_path=str(starter))
    stats = job.run([(case_id_from_path(i), str(i), str(l)) for i, l in labeled],
                    [(case_id_from_path(i), str(i)) for i in unlabeled])
    if stats.get("status") != "DONE":
        raise SystemExit(f"the Retrain did not publish: {stats}")
    return {"model": job.registry.model_path, "train_seconds": stats["total_time"], "labeled": len(labeled),
            "unlabeled": len(unlabeled), "iterations": stats["total_epochs"], "warm_start_from": stats["warm_start_from"]}


def markdown(results: Dict[str, Any]) -> str:
    lines = [
        "# Real-CT check of the day-one model",
        "",
        f"Command: `{results['command']}`. Scored on `ts_example` (real CT, 3 mm; reference = TotalSegmentator model "
        "output). Dice in percent; mean over the organs present in the reference.",
        "",
        "| seed | model | " + " | ".join(TARGETS) + " | warm infer s | train s |",
        "|---|---|" + "---|" * (len(TARGETS) + 2),
    ]
    for seed, run in results["runs"].items():
        for which in ("starter", "retrained"):
            r = run.get(which)
            if not r:
                continue
            cells = [str(r["dice"].get(k, "-")) for k in TARGETS if k != "mean_present"] + [str(r["mean_dice"])]
            lines.append(f"| {seed} | {which} | " + " | ".join(cells) + f" | {r['infer_seconds_warm']} | "
                         f"{r.get('train_seconds', '-')} |")
    lines += ["", "Targets: " + ", ".join(f"{k} >= {v}" for k, v in TARGETS.items()), ""]
    return "\n".join(lines)


def summary(results: Dict[str, Any]) -> Dict[str, Any]:
    """Mean and range over the seeds of each model's mean Dice and target organs."""
    out: Dict[str, Any] = {}
    for which in ("starter", "retrained"):
        runs = [r[which] for r in results["runs"].values() if r.get(which)]
        if not runs:
            continue
        keys = ["mean_dice"] + [k for k in TARGETS if k != "mean_present"]
        vals = {k: [r["mean_dice"] if k == "mean_dice" else r["dice"].get(k, 0.0) for r in runs] for k in keys}
        out[which] = {k: {"mean": round(float(np.mean(v)), 2), "min": min(v), "max": max(v)} for k, v in vals.items()}
        out[which]["seeds"] = len(runs)
    return out


def merge(files: list, output: Path) -> int:
    parts = [json.loads(Path(f).read_text()) for f in files]
    results = dict(parts[0])
    results["runs"] = {seed: run for part in parts for seed, run in part["runs"].items()}
    results["runs"] = dict(sorted(results["runs"].items(), key=lambda kv: int(kv[0])))
    results["command"] = "; ".join(part["command"] for part in parts)
    results["summary"] = summary(results)
    atomic_write(output, json.dumps(results, indent=2))
    atomic_write(output.with_suffix(".md"), markdown(results))
    print(markdown(results))
    return 0


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ts-dir", required=True, help="folder with the real CT ct.nii.gz and its label.nii.gz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--starter-iterations", type=int, default=STARTER_ITERATIONS)
    p.add_argument("--retrain-iterations", type=int, default=None,
                   help="override the app's default Retrain length (smoke tests only; results then say so)")
    p.add_argument("--phantoms", type=int, default=STARTER_PHANTOMS,
                   help="labeled SYNTHETIC phantoms the starter generates beside the sample studies")
    p.add_argument("--phantom-share", type=float, default=STARTER_PHANTOM_SHARE,
                   help="share of labeled patches drawn from those phantoms (0: every volume equally often)")
    p.add_argument("--shipped", action="store_true", help="seed 0: score the shipped starter instead of training it")
    p.add_argument("--no-retrain", action="store_true", help="score starters only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-models", default=None, metavar="DIR",
                   help="copy each trained starter (and retrained model) to DIR/seed<N>_<which>.pt")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "real_ct.json"))
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="combine the runs of several result files (e.g. one process per seed) into --output")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.output))
    torch.set_num_threads(args.threads)
    ts = Path(args.ts_dir)
    ct, ref_path = ts / "ct.nii.gz", ts / "label.nii.gz"
    if not ct.is_file() or not ref_path.is_file():
        raise SystemExit(f"ts_example not found in {ts} (ct.nii.gz, label.nii.gz): pass --ts-dir")
    ref_img = nib.load(str(ref_path))
    ref = np.asarray(ref_img.dataobj).astype(np.uint8)
    spacing = tuple(float(z) for z in ref_img.header.get_zooms()[:3])
    out = Path(args.output)
    request = TrainRequest.from_request({} if args.retrain_iterations is None else {"max_iterations": args.retrain_iterations})
    results: Dict[str, Any] = {
        "command": "python benchmarks/real_ct.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": "ts_example: real abdominal CT 122x101x112 at 3 mm, labels TotalSegmentator output",
        "trained_on": "sample_data/studies only (1 real CT + SYNTHETIC phantoms)",
        "starter_iterations": args.starter_iterations,
        "starter_phantoms": args.phantoms,
        "starter_phantom_share": args.phantom_share if args.phantoms else None,
        "retrain_options": request.to_dict(),
        # the semi-supervised recipe the Retrain's preset carries (dinomix_core.config.RECIPE)
        "retrain_recipe": {k: getattr(request.to_config(), k) for k in RECIPE},
        "targets": TARGETS,
        "organs": list(ORGANS),
        "runs": {},
    }
    save = lambda: (results.update(summary=summary(results)),  # noqa: E731
                    atomic_write(out, json.dumps(results, indent=2)),
                    atomic_write(out.with_suffix(".md"), markdown(results)))
    def keep(model: Path, seed: int, which: str) -> None:
        if args.keep_models and model != SHIPPED:
            atomic_copy(model, Path(args.keep_models) / f"seed{seed}_{which}.pt")

    with tempfile.TemporaryDirectory(prefix="dinomix_real_ct_") as tmp:
        for seed in args.seeds:
            run: Dict[str, Any] = {}
            results["runs"][str(seed)] = run
            work = Path(tmp) / f"seed{seed}"
            if args.shipped and seed == 0:
                starter, run["starter_source"] = SHIPPED, "shipped file"
            else:
                t0 = time.time()
                starter = work / "starter.pt"
                train_starter(str(REPO / "sample_data" / "studies"), str(starter), seed=seed,
                              iterations=args.starter_iterations, phantoms=args.phantoms,
                              phantom_share=args.phantom_share or None, device="cpu")
                run["starter_source"], run["starter_train_seconds"] = "trained", round(time.time() - t0, 1)
            keep(starter, seed, "starter")
            run["starter"] = score(starter, ct, ref, spacing)
            print(f"seed {seed} starter: {json.dumps(run['starter']['dice'])} mean {run['starter']['mean_dice']}",
                  flush=True)
            save()
            if args.no_retrain:
                continue
            rt = default_retrain(starter, work / "retrain", args.retrain_iterations)
            keep(Path(rt["model"]), seed, "retrained")
            run["retrained"] = score(rt.pop("model"), ct, ref, spacing)
            run["retrained"].update(rt)
            print(f"seed {seed} retrained: {json.dumps(run['retrained']['dice'])} mean "
                  f"{run['retrained']['mean_dice']} ({rt['train_seconds']} s)", flush=True)
            save()
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
