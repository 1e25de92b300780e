"""Rebuild ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart) after the recipe switch, from finished runs.

    python benchmarks/results/2026-12-03-ssl-recipe-switch/assemble.py

The switch (pseudo-label weight 1.0, threshold 0.8) changes only the semi-supervised methods, so the supervised
and supervised_all runs are kept from the results file. The DINO-Mix runs are those of
``../2026-12-02-ssl-pseudo-label-weight/results.jsonl`` made with exactly the new recipe; the mean-teacher and
ablation runs are this folder's ``results.jsonl`` (``run_variant.py`` with each method unchanged, two one-thread
processes side by side). Every run is what ``dinomix benchmark ssl --seeds S --methods M`` would make: same data
seeds, same configuration, model selected on validation.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

RUN_KEYS = ("seed", "per_organ", "mean_dice", "small_organ_dice", "train_seconds", "selected_iteration",
            "validation_curve", "pseudo_labels")


def jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


old = json.loads((RESULTS / "ssl_benchmark.json").read_text())
runs = {m: old["methods"][m]["runs"] for m in ("supervised", "supervised_all")}
new_recipe = dict(consistency_weight=1.0, confidence_threshold=0.8)
assert all(b.RECIPE[k] == v for k, v in new_recipe.items()), "RECIPE is not the switched one"
for r in jsonl(RESULTS / "2026-12-02-ssl-pseudo-label-weight" / "results.jsonl"):
    if r.get("base") == "dinomix" and r.get("overrides") == new_recipe:
        runs.setdefault("dinomix", []).append(r)
for r in jsonl(HERE / "results.jsonl"):
    assert r["name"] == r["base"] and not r["overrides"], r["name"]
    runs.setdefault(r["name"], []).append(r)
if "mean_teacher" in runs:  # teacher none: the same training (tests/test_benchmark_ssl.py)
    runs["dinomix_no_pic"] = [r for r in runs["mean_teacher"] if r["seed"] == 0]
runs = {m: sorted(({k: r[k] for k in RUN_KEYS if k in r} for r in rs), key=lambda r: r["seed"])
        for m, rs in runs.items()}
order = [m for m in b.METHODS if m in runs]
res = b.results_dict({m: runs[m] for m in order}, b.SCALES["default"], "default", [0, 1, 2], "none")
res["command"] = "dinomix benchmark ssl --seeds 0 1 2 (ablations: --seeds 0 --methods dinomix_no_...)"
res["assembled_by"] = "benchmarks/results/2026-12-03-ssl-recipe-switch/assemble.py"
res["machine"]["torch_threads"] = 1
res["notes"] = {"dinomix_no_pic": "the mean_teacher run of seed 0: without a DINOv3 teacher, DINO-Mix without PIC "
                                  "trains exactly as the mean teacher (tests/test_benchmark_ssl.py)",
                "ablations": "seed 0 only"}
if "real_transductive" in old:
    res["real_transductive"] = old["real_transductive"]
b.write_results(RESULTS, res)
print(b.markdown(res))
