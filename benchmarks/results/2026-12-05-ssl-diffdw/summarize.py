"""Check the pre-registered DiffDW rule (``../2026-12-05-ssl-diffdw.md``) on this folder's runs -> summary.json.

    python benchmarks/results/2026-12-05-ssl-diffdw/summarize.py

``seedS.json``: ``dinomix benchmark ssl --methods dinomix --seeds S --set class_weighting=distdw_diffdw`` (6000
iterations). The comparison: the recipe's 6000-iteration runs (``../2026-12-04-ssl-dinomix-6000-3seeds/summary.json``).
"""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
base = json.loads((HERE.parent / "2026-12-04-ssl-dinomix-6000-3seeds" / "summary.json").read_text())["runs"]
runs, rows = {}, []
for s in (0, 1, 2):
    res = json.loads((HERE / f"seed{s}.json").read_text())
    assert res["overrides"] == {"class_weighting": "distdw_diffdw"} and res["iterations_by_method"] == {"dinomix": 6000}
    r = res["methods"]["dinomix"]["runs"][0]
    best = max(r["validation_curve"], key=lambda c: c["val_mean_dice"])
    runs[str(s)] = {"val": best["val_mean_dice"], "selected": best["iteration"], "test": round(r["mean_dice"], 2),
                    "small": round(r["small_organ_dice"], 2), "train_seconds": r["train_seconds"],
                    "curve": {c["iteration"]: c["val_mean_dice"] for c in r["validation_curve"]},
                    "base_val": base[str(s)]["val_6000"], "base_test": base[str(s)]["test_6000"],
                    "base_small": base[str(s)]["small_6000"]}
val = float(np.mean([r["val"] for r in runs.values()]))
above = sum(r["val"] > r["base_val"] for r in runs.values())
threshold = round(float(np.mean([r["base_val"] for r in runs.values()])) + 0.3, 2)
summary = {"runs": runs, "rule": {"mean_best_val": round(val, 2), "threshold": threshold, "seeds_above": above,
                                  "met": bool(round(val, 2) >= threshold and above >= 2)},
           "test": {"mean": round(float(np.mean([r["test"] for r in runs.values()])), 2),
                    "std": round(float(np.std([r["test"] for r in runs.values()])), 2),
                    "small": round(float(np.mean([r["small"] for r in runs.values()])), 2),
                    "base_mean": round(float(np.mean([r["base_test"] for r in runs.values()])), 2),
                    "base_small": round(float(np.mean([r["base_small"] for r in runs.values()])), 2)}}
(HERE / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary["rule"]), json.dumps(summary["test"]))
