"""The confident pseudo-labels' precision / recall (%) against the hidden labels of the unlabeled phantoms, at the last
measurement, for the fat-planes DINO-Mix row and the alignment runs, seed by seed (training data, not the test split).

    python benchmarks/results/2026-12-07-ssl-distribution-alignment/pseudo_labels.py BASELINE.json RUN.json ...
"""

import json
import sys
from pathlib import Path

ORGANS = ["esophagus", "portal and splenic veins", "right adrenal gland", "left adrenal gland", "gallbladder",
          "pancreas"]


def last(run):
    """The last pseudo-label measurement of a run: (iteration, precision, recall)."""
    m = run["pseudo_labels"][-1]
    return m["iteration"], m["precision"], m["recall"]


def cell(p, r):
    return ("-" if p is None else f"{p:.0f}") + " / " + ("-" if r is None else f"{r:.0f}")


def main(baseline: Path, runs) -> None:
    base = {r["seed"]: r for r in json.loads(baseline.read_text())["methods"]["dinomix"]["runs"]}
    cand = {r["seed"]: r for f in runs for r in json.loads(Path(f).read_text())["methods"]["dinomix"]["runs"]}
    print("| seed | run | iteration | " + " | ".join(ORGANS) + " |")
    print("|---" * (len(ORGANS) + 3) + "|")
    for seed in sorted(cand):
        for name, run in (("DINO-Mix", base.get(seed)), ("with alignment", cand[seed])):
            if run is None:
                continue
            it, p, r = last(run)
            print(f"| {seed} | {name} | {it} | " + " | ".join(cell(p[o], r[o]) for o in ORGANS) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
