"""Score finished real-CT transductive runs and put them into ``benchmarks/results/ssl_benchmark.json``.

    python benchmarks/results/2026-12-03-real-ct-transductive/assemble.py [RUN_ROOT ...]

Each ``RUN_ROOT`` is the ``--output`` of a ``dinomix benchmark ssl --real-ct-dir ../shared/data/real_ct/ts_example
--methods M --seeds S --max-iterations 1000`` process; every ``RUN_ROOT/real_runs/M_seedS/model.pt`` found is scored
on ts_example with the benchmark's own scoring (``benchmark_ssl.score_real_ct``) and appended to this folder's
``results.jsonl`` unless that run is there already. The methods' summaries (``benchmark_ssl.real_summary``) are then
rebuilt from ``results.jsonl`` alone, so the checkpoints need not be kept. Train seconds are the span of the run's
TensorBoard log. These runs used ``RECIPE`` with the 20 % warm-up (``WARMUP``), which the output records; the rerun on
the recipe without it, ``2026-12-04-real-ct-no-warmup/assemble.py``, reuses these functions.
"""
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
REPO = RESULTS.parents[1]
sys.path.insert(0, str(REPO))
from dinomix_core import benchmark_ssl as b  # noqa: E402

CT_DIR = REPO.parent / "shared" / "data" / "real_ct" / "ts_example"
ITERATIONS = 1000
LINES = HERE / "results.jsonl"


def train_seconds(run_dir: Path) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times = []
    for f in (run_dir / "logs").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        times += [e.wall_time for e in acc.Scalars("train/lr")]
    return round(max(times) - min(times), 1) if times else float("nan")


def score_runs(roots, lines: Path):
    """Score every ``ROOT/real_runs/M_seedS/model.pt`` not yet in ``lines`` (appending it there); all rows of
    ``lines``."""
    import nibabel as nib
    import numpy as np

    ref = np.asarray(nib.load(str(CT_DIR / "label.nii.gz")).dataobj)
    rows = [json.loads(line) for line in lines.read_text().splitlines()] if lines.exists() else []
    done = {(r["method"], r["seed"]) for r in rows}
    for root in roots:
        for model in sorted(Path(root).glob("real_runs/*_seed*/model.pt")):
            method, seed = re.fullmatch(r"(.+)_seed(\d+)", model.parent.name).groups()
            if (method, int(seed)) in done:
                continue
            row = {"method": method, "seed": int(seed), **b.score_real_ct(str(model), str(CT_DIR / "ct.nii.gz"), ref),
                   "train_seconds": train_seconds(model.parent), "iterations": ITERATIONS}
            print(f"{method} seed {seed}: mean Dice {row['mean_dice']}", flush=True)
            rows.append(row)
            done.add((method, int(seed)))
            with lines.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def write_real(rows, command: str, recipe) -> None:
    """Put the methods' summaries of ``rows`` into ``ssl_benchmark.json`` as ``real_transductive`` (``recipe``: the
    DINO-Mix runs' recipe) and print its markdown."""
    import nibabel as nib
    import numpy as np

    ref = np.asarray(nib.load(str(CT_DIR / "label.nii.gz")).dataobj)
    present = [b.ORGANS[c - 1] for c in range(1, len(b.ORGANS) + 1) if (ref == c).any()]
    real = {"labeled": ["real_ct_001.nii.gz"], "unlabeled": "ct.nii.gz", "organs_present": present,
            "iterations": ITERATIONS, "recipe": b._jsonable(recipe), "overrides": {}, "command": command}
    for method in ("supervised", "dinomix"):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["seed"])
        if mine:
            real[method] = b.real_summary([{k: v for k, v in r.items() if k != "method"} for r in mine])
    results = json.loads((RESULTS / "ssl_benchmark.json").read_text())
    results["real_transductive"] = real
    b.write_results(RESULTS, results)
    print(b._real_markdown(results))


def main(roots) -> None:
    write_real(score_runs(roots, LINES),
               "dinomix benchmark ssl --real-ct-dir ../shared/data/real_ct/ts_example --seeds 0 1 2 "
               "--max-iterations 1000 (run as one process per method; assembled by "
               "benchmarks/results/2026-12-03-real-ct-transductive/assemble.py)",
               dict(b.RECIPE, warmup_fraction=b.WARMUP, pseudo_label_lcc=False))  # the recipe these runs used

if __name__ == "__main__":
    main(sys.argv[1:])
