"""Per seed, each method's test Dice minus supervised-only's (mean and small-organ mean), from the merged table.

    python benchmarks/results/2026-12-07-ssl-fat-planes/paired.py [ssl_benchmark.json]
"""

import json
import sys
from pathlib import Path

path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "ssl_benchmark.json"
methods = json.loads(path.read_text())["methods"]
base = {r["seed"]: r for r in methods["supervised"]["runs"]}
for m, row in methods.items():
    runs = [r for r in row["runs"] if r["seed"] in base]
    if m == "supervised" or not runs:
        continue
    d = [(r["seed"], r["mean_dice"] - base[r["seed"]]["mean_dice"],
          r["small_organ_dice"] - base[r["seed"]]["small_organ_dice"]) for r in runs]
    per_seed = ", ".join(f"seed {s}: {a:+.1f} ({b:+.1f})" for s, a, b in d)
    print(f"{m:16s} mean over {len(d)} paired seeds {sum(a for _, a, _ in d) / len(d):+.2f} "
          f"(small organs {sum(b for _, _, b in d) / len(d):+.2f}); {per_seed}")
