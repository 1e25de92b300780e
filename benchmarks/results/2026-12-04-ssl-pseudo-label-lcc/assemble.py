"""Rebuild ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart) after the recipe took ``pseudo_label_lcc``.

    python benchmarks/results/2026-12-04-ssl-pseudo-label-lcc/assemble.py

The pre-registered rule (``../2026-12-04-ssl-pseudo-label-lcc.md``) was met, so the DINO-Mix row is this folder's
three runs (``seedS.json``: ``dinomix benchmark ssl --methods dinomix --seeds S --set pseudo_label_lcc=true``, the
configuration ``dinomix`` now has) and the earlier DINO-Mix runs become ``dinomix_no_lcc``. Every other row is
kept from ``before.json`` (the results file before the switch): the mean teacher and the ablations were measured
without ``pseudo_label_lcc`` and their methods say so (``benchmark_ssl._MEASURED``). The real-CT check is kept as
it was (measured without it; it records its own recipe).
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

assert b.RECIPE["pseudo_label_lcc"] is True, "RECIPE does not have pseudo_label_lcc"
old = json.loads((HERE / "before.json").read_text())
assert not old["recipe"].get("pseudo_label_lcc")
runs = {m: v["runs"] for m, v in old["methods"].items()}
runs["dinomix_no_lcc"] = runs.pop("dinomix")
runs["dinomix"] = []
for s in (0, 1, 2):
    res = json.loads((HERE / f"seed{s}.json").read_text())
    assert res["overrides"] == {"pseudo_label_lcc": True} and res["scale"] == old["scale"]
    runs["dinomix"] += res["methods"]["dinomix"]["runs"]
order = [m for m in b.METHODS if m in runs]
res = b.results_dict({m: runs[m] for m in order}, b.SCALES["default"], "default", [0, 1, 2], "none")
res["command"] = ("dinomix benchmark ssl --seeds 0 1 2 (ablations: --methods dinomix_no_lcc dinomix_warmup "
                  "dinomix_no_pic dinomix_no_consistency dinomix_no_class_weights --seeds 0 1 2; "
                  "dinomix_no_augment --seeds 0)")
res["assembled_by"] = "benchmarks/results/2026-12-04-ssl-pseudo-label-lcc/assemble.py"
res["machine"]["torch_threads"] = 1
res["notes"] = dict(old.get("notes", {}))
res["notes"]["ablations"] = ("seeds: each row's 'seeds'; measured on the recipe without pseudo_label_lcc, so each "
                             "compares with dinomix_no_lcc")
res["notes"]["mean_teacher"] = res["notes"].get("mean_teacher", "") + "; without pseudo_label_lcc"
if "real_transductive" in old:
    res["real_transductive"] = old["real_transductive"]
b.write_results(RESULTS, res)
print(b.markdown(res))
