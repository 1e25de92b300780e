"""Write ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart): the main table of ``dinomix benchmark ssl`` (its
default scale, ``fat_planes_fast``), its ablation rows and the real-CT check.

    python benchmarks/results/2026-12-07-ssl-fat-planes-fast/assemble.py

- main rows, seeds 0, 1, 2: this folder's ``ssl_benchmark.json`` (``dinomix benchmark ssl --scale fat_planes_fast
  --seeds 0 1 2 --workers 2``), except DINO-Mix's: ``../2026-12-07-ssl-consistency-weight-2/ssl_benchmark.json``
  (``--methods dinomix --set consistency_weight=2.0``, adopted as a setting of the scale by its rule; the script
  checks that it is the scale's DINO-Mix now);
- ablation rows, seed 0: ``../2026-12-08-ssl-ablations-adopted-row/ssl_benchmark.json`` (``--methods
  dinomix_no_pic dinomix_no_class_weights dinomix_no_augment dinomix_warmup --seeds 0 --workers 2``: the DINO-Mix
  row with one component changed; the script checks they ran with the scale's DINO-Mix settings of now), and
  ``dinomix_no_consistency`` from ``../2026-12-07-ssl-fat-planes-fast-ablations/no_consistency_seed0.json`` (``--methods
  dinomix --set use_consistency=false``, run when the weight was 1.0: the script checks that the weight is the only
  field by which it differs from ``dinomix_no_consistency`` now, a field no loss reads without the consistency term);
- the real-CT transductive check (independent of the phantom scale): ``real_transductive`` of
  ``../2026-12-06-ssl-plain-scale/ssl_benchmark.json``.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

#: the ablation rows run on the table's DINO-Mix row (``--methods dinomix_no_X``)
ABLATIONS = RESULTS / "2026-12-08-ssl-ablations-adopted-row" / "ssl_benchmark.json"
#: the one run before the weight 2.0 was adopted, with the --set of the DINO-Mix it changed: without the consistency
#: term the weight multiplies nothing (DinoMixTrainer.compute_loss), so it trained what dinomix_no_consistency does now
NO_CONSISTENCY = RESULTS / "2026-12-07-ssl-fat-planes-fast-ablations" / "no_consistency_seed0.json"
ABLATED = {"consistency_weight": 1.0}
SCALE = "fat_planes_fast"
#: the DINO-Mix row's runs
DINOMIX_RUNS = RESULTS / "2026-12-07-ssl-consistency-weight-2" / "ssl_benchmark.json"


def unlike(res, table, also_skip=()) -> list:
    """The header fields by which ``res`` was made otherwise than ``table`` (``--merge``'s, less ``--set`` and
    ``also_skip``: the runs' settings are compared as configurations instead)."""
    return [k for k in b._MADE_ALIKE if k not in ("overrides", *also_skip) and res.get(k) != table.get(k)]


def main() -> None:
    table = json.loads((HERE / "ssl_benchmark.json").read_text())
    sc = b.SCALES[SCALE]
    runs = {m: list(r["runs"]) for m, r in table["methods"].items()}
    dm = json.loads(DINOMIX_RUNS.read_text())
    if b.method_config("dinomix", sc, 0, overrides=dm["overrides"]) != b.method_config("dinomix", sc, 0) or unlike(
            dm, table):
        raise SystemExit(f"{DINOMIX_RUNS} is not the scale's DINO-Mix on the table's phantoms: {unlike(dm, table)}")
    runs["dinomix"] = dm["methods"]["dinomix"]["runs"]
    abl = json.loads(ABLATIONS.read_text())
    if unlike(abl, table, ("method_settings",)) or abl["overrides"] or abl["method_settings"] != b.method_settings(sc):
        raise SystemExit(f"{ABLATIONS} was not made like the table with the scale's settings of now")
    commands = [m for m in abl["methods"] if m.startswith("dinomix_")]
    runs.update({m: abl["methods"][m]["runs"] for m in commands})
    res = json.loads(NO_CONSISTENCY.read_text())
    as_run = b.method_config("dinomix", sc, 0, overrides={**ABLATED, **b.parse_overrides(
        [f"{k}={json.dumps(v)}" for k, v in res["overrides"].items()])})
    now = b.method_config("dinomix_no_consistency", sc, 0)
    if unlike(res, table) or as_run.use_consistency or replace(as_run, consistency_weight=now.consistency_weight) != now:
        raise SystemExit(f"{NO_CONSISTENCY} did not train dinomix_no_consistency on the table's phantoms")
    runs["dinomix_no_consistency"] = res["methods"]["dinomix"]["runs"]
    out = b.results_dict(runs, sc, SCALE, [0, 1, 2], "none")
    out["command"] = table["command"] + (f" (ablations, seed 0: --methods {' '.join(commands)} --seeds 0 --workers 2; "
                                         f"dinomix_no_consistency: --methods dinomix --set use_consistency=false)")
    out["machine"], out["wall_seconds"] = table["machine"], table["wall_seconds"]
    out["real_transductive"] = json.loads((RESULTS / "2026-12-06-ssl-plain-scale" / "ssl_benchmark.json")
                                          .read_text())["real_transductive"]
    out["assembled_by"] = "benchmarks/results/2026-12-07-ssl-fat-planes-fast/assemble.py"
    out["notes"] = {
        "wall_seconds": "the main rows (seeds 0-2, two runs at a time, phantoms generated and scored) on a 2-core "
                        "AMD EPYC with AVX-512",
        "dinomix": "consistency_weight 2.0, a setting of this scale adopted by its rule on validation (38.33 "
                   "against 37.71, above in 2 of 3 seeds); with the recipe's 1.0 the row was 41.6 +- 1.0 (small "
                   "organs 30.1 +- 3.5): 2026-12-07-ssl-consistency-weight-2.md",
        "ablations": "seed 0 each, the DINO-Mix row (seed 0: test 40.91, small organs 24.70) with one component "
                     "removed (added, for the warm-up): 2026-12-08-ssl-ablations-adopted-row.md; "
                     "dinomix_no_consistency was run when the row's pseudo-label weight was 1.0, a weight that "
                     "multiplies nothing without the consistency term: the same training",
        "real_transductive": "labeled: the sample real CT; unlabeled and scored: ts_example (its labels held back); "
                             "1000 iterations, cpu preset, the recipe without the largest-component pseudo-labels, "
                             "supervised without class weights (2026-12-04-real-ct-no-warmup/)",
    }
    b.write_results(RESULTS, out)
    print(b.markdown(out))


if __name__ == "__main__":
    main()
