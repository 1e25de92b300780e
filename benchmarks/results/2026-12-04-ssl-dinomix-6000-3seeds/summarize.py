"""The pre-registered rule of ``../2026-12-04-ssl-dinomix-6000-3seeds.md`` on this folder's runs.

    python benchmarks/results/2026-12-04-ssl-dinomix-6000-3seeds/summarize.py

Reads ``seed{0,1,2}.json`` (each ``dinomix benchmark ssl --methods dinomix --seeds S --set max_iterations=6000``)
and the 4000-iteration DINO-Mix runs from ``before.json`` (the results file before these runs); prints the best validation Dice per seed (the
rule's quantity) and the test Dice of the model selected on validation (reported, not used). Writes
``summary.json``.
"""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MARGIN = 0.3  # the rule: at least this much above the 4000-iteration runs' mean best validation Dice
current = json.loads((HERE / "before.json").read_text())
base = {r["seed"]: r for r in current["methods"]["dinomix"]["runs"]}
longer = {}
for s in (0, 1, 2):
    f = HERE / f"seed{s}.json"
    if f.exists():
        res = json.loads(f.read_text())
        assert res["overrides"] == {"max_iterations": 6000}, res["overrides"]
        longer[s] = res["methods"]["dinomix"]["runs"][0]


def best_val(run):
    return max(c["val_mean_dice"] for c in run["validation_curve"])


rows = {}
for s in sorted(longer):
    b, l = base[s], longer[s]
    rows[s] = {"val_4000": best_val(b), "val_6000": best_val(l), "test_4000": round(b["mean_dice"], 2),
               "test_6000": round(l["mean_dice"], 2), "small_4000": round(b["small_organ_dice"], 2),
               "small_6000": round(l["small_organ_dice"], 2), "selected_6000": l["selected_iteration"],
               "train_seconds_6000": l["train_seconds"],
               "curve_6000": {c["iteration"]: c["val_mean_dice"] for c in l["validation_curve"]}}
    print(s, rows[s])
out = {"runs": rows}
if len(rows) == 3:
    v4, v6 = [rows[s]["val_4000"] for s in rows], [rows[s]["val_6000"] for s in rows]
    above = sum(a > b for a, b in zip(v6, v4))
    out["rule"] = {"val_mean_4000": round(float(np.mean(v4)), 2), "val_mean_6000": round(float(np.mean(v6)), 2),
                   "threshold": round(float(np.mean(v4)) + MARGIN, 2), "seeds_above": above,
                   "met": bool(np.mean(v6) >= np.mean(v4) + MARGIN and above >= 2)}
    out["test"] = {k: (round(float(np.mean([rows[s][k] for s in rows])), 2),
                       round(float(np.std([rows[s][k] for s in rows])), 2))
                   for k in ("test_4000", "test_6000", "small_4000", "small_6000")}
    print(out["rule"], out["test"])
(HERE / "summary.json").write_text(json.dumps(out, indent=2))
