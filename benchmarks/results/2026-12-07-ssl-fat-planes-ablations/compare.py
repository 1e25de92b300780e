"""Each ablation run (one ``--set`` away from the fat-planes table's DINO-Mix row) against that row's run of the same
seed: best validation Dice, test mean Dice, test small-organ mean, and per organ where it moves by 5 or more.

    python benchmarks/results/2026-12-07-ssl-fat-planes-ablations/compare.py [--table TABLE.json] [RUN.json ...]

Without run files: every ``*_seed*.json`` beside this script. ``--table``: the table whose DINO-Mix row the runs
are compared with (default: the fat-planes table; the fat_planes_fast ablations use that scale's table).
"""

import json
import sys
from pathlib import Path

from dinomix_core.benchmark_ssl import best_validation

HERE = Path(__file__).parent
TABLE = HERE.parent / "2026-12-07-ssl-fat-planes" / "ssl_benchmark.json"


def main(files, table: Path = TABLE) -> None:
    row = {r["seed"]: r for r in json.loads(table.read_text())["methods"]["dinomix"]["runs"]}
    print("| change | seed | best validation | test mean Dice | test small organs | organs moving by 5 or more |")
    print("|---|---|---|---|---|---|")
    for f in files:
        res = json.loads(Path(f).read_text())
        change = ", ".join(f"{k}={v}" for k, v in res["overrides"].items() if k != "pseudo_label_alignment")
        for run in res["methods"]["dinomix"]["runs"]:
            base = row[run["seed"]]
            moved = ", ".join(f"{o} {base['per_organ'][o]:.1f} -> {d:.1f}" for o, d in run["per_organ"].items()
                              if abs(d - base["per_organ"][o]) >= 5)
            print(f"| {change} | {run['seed']} | {best_validation(base):.2f} -> {best_validation(run):.2f} | "
                  f"{base['mean_dice']:.2f} -> {run['mean_dice']:.2f} | "
                  f"{base['small_organ_dice']:.2f} -> {run['small_organ_dice']:.2f} | {moved} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    table = TABLE
    if args[:1] == ["--table"]:
        table, args = Path(args[1]), args[2:]
    main(args or sorted(str(p) for p in HERE.glob("*_seed*.json")), table)
