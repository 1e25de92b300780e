"""Rebuild ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart) with the 9000-iteration DINO-Mix runs.

    python benchmarks/results/2026-12-05-ssl-dinomix-9000/assemble.py

Only when the pre-registered rule (``../2026-12-05-ssl-dinomix-9000.md``, checked by ``summarize.py`` into
``summary.json``) is met: the DINO-Mix row becomes this folder's three runs (``seedS.json``: ``dinomix benchmark ssl
--methods dinomix --seeds S --set max_iterations=9000``); every other row is kept from ``before.json`` (the
results file before), at 4000 iterations.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

summary = json.loads((HERE / "summary.json").read_text())
if not summary.get("rule", {}).get("met"):
    sys.exit("the rule is not met: the results file stays as it is")
old = json.loads((HERE / "before.json").read_text())
runs = {m: v["runs"] for m, v in old["methods"].items()}
runs["dinomix"] = []
for s in (0, 1, 2):
    res = json.loads((HERE / f"seed{s}.json").read_text())
    assert res["overrides"] == {"max_iterations": 9000} and res["scale"] == old["scale"]
    runs["dinomix"] += res["methods"]["dinomix"]["runs"]
res = b.results_dict(runs, b.SCALES["default"], "default", [0, 1, 2], "none")
for k in ("machine", "real_transductive"):
    if k in old:
        res[k] = old[k]
res["command"] = old["command"].replace("max_iterations=6000", "max_iterations=9000")
res["iterations_by_method"] = {"dinomix": 9000}
res["assembled_by"] = "benchmarks/results/2026-12-05-ssl-dinomix-9000/assemble.py"
res["notes"] = dict(old.get("notes", {}))
res["notes"]["dinomix"] = ("9000 iterations (at 4000 and at 6000 its best checkpoint was the last one in every seed; "
                           "pre-registered rules met on validation, 2026-12-05-ssl-dinomix-9000.md); every other row 4000")
b.write_results(RESULTS, res)
print(b.markdown(res))
