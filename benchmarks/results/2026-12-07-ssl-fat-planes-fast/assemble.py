"""Write ``benchmarks/results/ssl_benchmark.json`` (+ .md, chart): the main table of ``dinomix benchmark ssl`` (its
default scale, ``fat_planes_fast``), its ablation rows and the real-CT check.

    python benchmarks/results/2026-12-07-ssl-fat-planes-fast/assemble.py

- main rows, seeds 0, 1, 2: this folder's ``ssl_benchmark.json`` (``dinomix benchmark ssl --scale fat_planes_fast
  --seeds 0 1 2 --workers 2``), except DINO-Mix's: ``../2026-12-07-ssl-consistency-weight-2/ssl_benchmark.json``
  (``--methods dinomix --set consistency_weight=2.0``, adopted as a setting of the scale by its rule; the script
  checks that it is the scale's DINO-Mix now);
- ablation rows, seed 0: ``../2026-12-07-ssl-fat-planes-fast-ablations/NAME_seed0.json``, each a run of
  ``--methods dinomix --set FIELD=VALUE``. A run becomes the row of the ablation method whose configuration it had:
  the script checks that DINO-Mix with the run's ``--set`` is exactly ``dinomix_NAME`` (``--methods dinomix_NAME``
  reproduces the row, with ``--set consistency_weight=1.0``: these ran before the weight 2.0 was adopted) and that
  it trained the table's phantoms, recipe and budget;
- the real-CT transductive check (independent of the phantom scale): ``real_transductive`` of
  ``../2026-12-06-ssl-plain-scale/ssl_benchmark.json``.
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent
sys.path.insert(0, str(RESULTS.parents[1]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

ABLATIONS = RESULTS / "2026-12-07-ssl-fat-planes-fast-ablations"
#: run file -> the ablation method it is a run of
ROWS = {"no_consistency": "dinomix_no_consistency", "no_pic": "dinomix_no_pic",
        "no_class_weights": "dinomix_no_class_weights", "warmup": "dinomix_warmup", "no_augment": "dinomix_no_augment"}
SCALE = "fat_planes_fast"
#: the DINO-Mix row's runs, and the --set of the DINO-Mix the ablation runs changed one component of
DINOMIX_RUNS = RESULTS / "2026-12-07-ssl-consistency-weight-2" / "ssl_benchmark.json"
ABLATED = {"consistency_weight": 1.0}


def unlike(res, table) -> list:
    """The header fields by which ``res`` was made otherwise than ``table`` (``--merge``'s, less ``--set``: the
    runs' settings are compared as configurations instead)."""
    return [k for k in b._MADE_ALIKE if k != "overrides" and res.get(k) != table.get(k)]


def main() -> None:
    table = json.loads((HERE / "ssl_benchmark.json").read_text())
    sc = b.SCALES[SCALE]
    runs = {m: list(r["runs"]) for m, r in table["methods"].items()}
    dm = json.loads(DINOMIX_RUNS.read_text())
    if b.method_config("dinomix", sc, 0, overrides=dm["overrides"]) != b.method_config("dinomix", sc, 0) or unlike(
            dm, table):
        raise SystemExit(f"{DINOMIX_RUNS} is not the scale's DINO-Mix on the table's phantoms: {unlike(dm, table)}")
    runs["dinomix"] = dm["methods"]["dinomix"]["runs"]
    commands = []
    for name, method in ROWS.items():
        f = ABLATIONS / f"{name}_seed0.json"
        if not f.is_file():
            print(f"(no {f.name} yet: no {method} row)")
            continue
        res = json.loads(f.read_text())
        if unlike(res, table):
            raise SystemExit(f"{f} was not made like the table: {unlike(res, table)}")
        # what the run trained: the scale's DINO-Mix of its day (ABLATED) with its --set
        as_run = b.method_config("dinomix", sc, 0, overrides={**ABLATED, **b.parse_overrides(
            [f"{k}={json.dumps(v)}" for k, v in res["overrides"].items()])})
        if as_run != b.method_config(method, sc, 0, overrides=ABLATED):
            raise SystemExit(f"{f}: DINO-Mix with --set {res['overrides']} is not {method} with --set {ABLATED}")
        runs[method] = res["methods"]["dinomix"]["runs"]
        commands.append(method)
    out = b.results_dict(runs, sc, SCALE, [0, 1, 2], "none")
    out["command"] = table["command"] + (f" (ablations, seed 0: --methods {' '.join(commands)} --seeds 0 "
                                         f"--set consistency_weight=1.0)" if commands else "")
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
        "ablations": "seed 0 each, DINO-Mix with the recipe's consistency_weight 1.0 (test 40.77, small organs 28.53) "
                     "with one component removed (added, for the warm-up), run as --methods dinomix --set FIELD=VALUE "
                     "before the weight 2.0 was adopted: 2026-12-07-ssl-fat-planes-fast-ablations.md",
        "real_transductive": "labeled: the sample real CT; unlabeled and scored: ts_example (its labels held back); "
                             "1000 iterations, cpu preset, the recipe without the largest-component pseudo-labels, "
                             "supervised without class weights (2026-12-04-real-ct-no-warmup/)",
    }
    b.write_results(RESULTS, out)
    print(b.markdown(out))


if __name__ == "__main__":
    main()
