"""Rebuild ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart) with the class-weighted supervised baseline.

    python benchmarks/results/2026-12-05-ssl-supervised-class-weights/assemble.py

The pre-registered rule (``../2026-12-05-ssl-supervised-class-weights.md``) was met, so the supervised row becomes
this folder's three runs (``seedS.json``: ``dinomix benchmark ssl --methods supervised --seeds S --set
class_weighting=distdw``) and supervised_all its three runs with the weights (``supervised_all_seedS.json``:
``dinomix benchmark ssl --methods supervised_all --seeds S``, whose default is the recipe's DistDW). Every other row
is kept from ``before.json`` (the results file before).
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

old = json.loads((HERE / "before.json").read_text())
runs = {m: v["runs"] for m, v in old["methods"].items()}
runs["supervised"], runs["supervised_all"] = [], []
for s in (0, 1, 2):
    res = json.loads((HERE / f"seed{s}.json").read_text())
    assert res["overrides"] == {"class_weighting": "distdw"} and res["scale"] == old["scale"]
    runs["supervised"] += res["methods"]["supervised"]["runs"]
    res = json.loads((HERE / f"supervised_all_seed{s}.json").read_text())
    assert res["overrides"] == {} and res["recipe"]["class_weighting"] == "distdw" and res["scale"] == old["scale"]
    runs["supervised_all"] += res["methods"]["supervised_all"]["runs"]
res = b.results_dict(runs, b.SCALES["default"], "default", [0, 1, 2], "none")
for k in ("command", "iterations_by_method", "machine", "real_transductive"):
    if k in old:
        res[k] = old[k]
res["assembled_by"] = "benchmarks/results/2026-12-05-ssl-supervised-class-weights/assemble.py"
res["notes"] = dict(old.get("notes", {}))
res["notes"]["supervised"] = ("with the recipe's class weights (DistDW), the stronger baseline on validation "
                              "(24.77 against 24.66; 2026-12-05-ssl-supervised-class-weights.md); without them "
                              f"{old['methods']['supervised']['mean_dice']} +- {old['methods']['supervised']['mean_dice_std']} "
                              f"(small organs {old['methods']['supervised']['small_organ_dice']})")
sa = old["methods"]["supervised_all"]
res["notes"]["supervised_all"] = ("with the recipe's class weights, as the rule asks of both supervised rows; without "
                                  f"them {sa['mean_dice']} +- {sa['mean_dice_std']} (small organs {sa['small_organ_dice']})")
if "real_transductive" in res:
    res["notes"]["real_transductive"] = "its supervised runs were trained without class weights"
b.write_results(RESULTS, res)
print(b.markdown(res))
