"""Rebuild ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart) after the recipe dropped the warm-up.

    python benchmarks/results/2026-12-04-ssl-no-warmup/assemble.py

The recipe now has ``warmup_fraction=0.0`` (``../2026-12-04-ssl-no-warmup.md``). Runs are kept from ``before.json``
(the results file before the switch) where their configuration is unchanged: supervised and supervised_all (no
warm-up to drop) and mean_teacher (it keeps the warm-up, ``WARMUP``). The DINO-Mix row is the three no-warm-up runs
(seed 0: the earlier ``dinomix_no_warmup`` ablation run; seeds 1 and 2: this folder's ``seed1.json`` and
``seed2.json``, made by ``dinomix benchmark ssl --methods dinomix_no_warmup --seeds S``, the same configuration);
the earlier DINO-Mix runs, with the warm-up, are the ``dinomix_warmup`` ablation. The other ablations were rerun
under the new recipe: ``abl_<method>.json`` here (seed 0), and ``abl_<method>_seed<S>.json`` for further seeds.
The real-CT check (``real_transductive``) is kept from the current results file.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

assert b.RECIPE["warmup_fraction"] == 0.0, "RECIPE still has the warm-up"
assert not b.RECIPE.get("pseudo_label_lcc"), (
    "superseded: the recipe has pseudo_label_lcc; see ../2026-12-04-ssl-pseudo-label-lcc/assemble.py, which starts "
    "from this script's output (its before.json)")
old = json.loads((HERE / "before.json").read_text())  # the results file before the switch
assert old["recipe"]["warmup_fraction"] == 0.2
om = old["methods"]
runs = {m: om[m]["runs"] for m in ("supervised", "supervised_all", "mean_teacher")}
runs["dinomix"] = list(om["dinomix_no_warmup"]["runs"])
for s in (1, 2):
    runs["dinomix"] += json.loads((HERE / f"seed{s}.json").read_text())["methods"]["dinomix_no_warmup"]["runs"]
runs["dinomix"].sort(key=lambda r: r["seed"])
runs["dinomix_warmup"] = om["dinomix"]["runs"]
for m in ("dinomix_no_pic", "dinomix_no_consistency", "dinomix_no_class_weights", "dinomix_no_augment"):
    runs[m] = json.loads((HERE / f"abl_{m}.json").read_text())["methods"][m]["runs"]
    for more in sorted(HERE.glob(f"abl_{m}_seed*.json")):  # further seeds of an ablation, one file per seed
        runs[m] += json.loads(more.read_text())["methods"][m]["runs"]
    runs[m].sort(key=lambda r: r["seed"])
order = [m for m in b.METHODS if m in runs]
res = b.results_dict({m: runs[m] for m in order}, b.SCALES["default"], "default", [0, 1, 2], "none")
res["command"] = ("dinomix benchmark ssl --seeds 0 1 2 (ablations: --methods dinomix_warmup dinomix_no_pic "
                  "dinomix_no_consistency dinomix_no_class_weights --seeds 0 1 2; dinomix_no_augment --seeds 0)")
res["assembled_by"] = "benchmarks/results/2026-12-04-ssl-no-warmup/assemble.py"
res["machine"]["torch_threads"] = 1
res["notes"] = {"mean_teacher": f"keeps the supervised warm-up (warmup_fraction {b.WARMUP})",
                "dinomix_warmup": "the DINO-Mix runs of the recipe with the warm-up, seeds 0-2",
                "ablations": "seeds: each row's 'seeds'"}
current = json.loads((RESULTS / "ssl_benchmark.json").read_text())
if "real_transductive" in current:
    res["real_transductive"] = current["real_transductive"]  # assembled on its own; it records its own recipe
b.write_results(RESULTS, res)
print(b.markdown(res))
