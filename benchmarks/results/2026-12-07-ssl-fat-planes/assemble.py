"""Assemble the fat-planes runs (two processes, two output folders A and B) into one results file here.

Run from the repository root: ``python benchmarks/results/2026-12-07-ssl-fat-planes/assemble.py A B``, where A holds
``--methods supervised supervised_all mean_teacher`` and B ``--methods dinomix`` of ``--scale fat_planes``; only the
seeds with a run of every method in both files are kept.
"""

import json
import sys
from pathlib import Path

from dinomix_core.benchmark_ssl import SCALES, results_dict, write_results

a, b = (json.loads((Path(p) / "ssl_benchmark.json").read_text()) for p in sys.argv[1:3])
runs = {m: list(r["runs"]) for m, r in a["methods"].items()}
runs["dinomix"] = list(b["methods"]["dinomix"]["runs"])
seeds = sorted(set.intersection(*({r["seed"] for r in rs} for rs in runs.values())))
runs = {m: [r for r in rs if r["seed"] in seeds] for m, rs in runs.items()}
res = results_dict(runs, SCALES["fat_planes"], "fat_planes", seeds, "none")
res["machine"] = a["machine"]  # the runs' machine and threads, not this script's
res["command"] = ("OMP_NUM_THREADS=1 dinomix benchmark ssl --scale fat_planes --methods supervised supervised_all "
                  "mean_teacher --seeds 0 1 2 [--resume] --output A  beside  OMP_NUM_THREADS=1 dinomix benchmark ssl "
                  "--scale fat_planes --methods dinomix --seeds 0 --output B; then this script")
res["notes"] = {"wall_seconds": "A and B ran side by side on the 2-core machine; train_seconds per run in runs"}
write_results(Path(__file__).parent, res)
print((Path(__file__).parent / "ssl_benchmark.md").read_text())
