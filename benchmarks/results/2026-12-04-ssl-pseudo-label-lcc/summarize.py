"""The pre-registered rule of ``../2026-12-04-ssl-pseudo-label-lcc.md`` on this folder's runs.

    python benchmarks/results/2026-12-04-ssl-pseudo-label-lcc/summarize.py

Reads ``seed{0,1,2}.json`` (each ``dinomix benchmark ssl --methods dinomix --seeds S --set pseudo_label_lcc=true``)
and the current DINO-Mix runs from ``../ssl_benchmark.json``; prints the best validation Dice per seed (the rule's
quantity), the test Dice of the model selected on validation (reported, not used) and the pseudo-label precision
and recall at the end of training. Writes ``summary.json``.
"""
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
current = json.loads((HERE.parent / "ssl_benchmark.json").read_text())
base = {r["seed"]: r for r in current["methods"]["dinomix"]["runs"]}
lcc = {}
for s in (0, 1, 2):
    f = HERE / f"seed{s}.json"
    if f.exists():
        res = json.loads(f.read_text())
        assert res["overrides"] == {"pseudo_label_lcc": True}, res["overrides"]
        lcc[s] = res["methods"]["dinomix"]["runs"][0]


def best_val(run):
    return max(c["val_mean_dice"] for c in run["validation_curve"])


def end_pl(run, organs=("liver", "right kidney", "pancreas", "right adrenal gland", "left adrenal gland")):
    last = run["pseudo_labels"][-1]
    return {o: (last["precision"].get(o), last["recall"].get(o)) for o in organs}


rows = {}
for s in sorted(lcc):
    b, l = base[s], lcc[s]
    rows[s] = {"val_recipe": best_val(b), "val_lcc": best_val(l), "test_recipe": round(b["mean_dice"], 2),
               "test_lcc": round(l["mean_dice"], 2), "small_recipe": round(b["small_organ_dice"], 2),
               "small_lcc": round(l["small_organ_dice"], 2), "selected_lcc": l["selected_iteration"],
               "train_seconds_lcc": l["train_seconds"], "pseudo_labels_end_recipe": end_pl(b),
               "pseudo_labels_end_lcc": end_pl(l)}
    print(s, {k: v for k, v in rows[s].items() if not k.startswith("pseudo")})
    print("   precision/recall at the end, recipe:", rows[s]["pseudo_labels_end_recipe"])
    print("   precision/recall at the end, lcc:   ", rows[s]["pseudo_labels_end_lcc"])
out = {"runs": rows}
if len(rows) == 3:
    vr, vl = [rows[s]["val_recipe"] for s in rows], [rows[s]["val_lcc"] for s in rows]
    above = sum(a > b for a, b in zip(vl, vr))
    out["rule"] = {"val_mean_recipe": round(float(np.mean(vr)), 2), "val_mean_lcc": round(float(np.mean(vl)), 2),
                   "seeds_above": above, "met": bool(np.mean(vl) > np.mean(vr) and above >= 2)}
    out["test"] = {k: (round(float(np.mean([rows[s][k] for s in rows])), 2),
                       round(float(np.std([rows[s][k] for s in rows])), 2))
                   for k in ("test_recipe", "test_lcc", "small_recipe", "small_lcc")}
    print(out["rule"], out["test"])
(HERE / "summary.json").write_text(json.dumps(out, indent=2))
