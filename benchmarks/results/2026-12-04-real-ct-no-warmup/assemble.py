"""The real-CT transductive check with DINO-Mix rerun on the recipe without the warm-up (README.md here).

    python benchmarks/results/2026-12-04-real-ct-no-warmup/assemble.py RUN_ROOT [RUN_ROOT ...]

Each ``RUN_ROOT`` is the ``--output`` of one ``dinomix benchmark ssl --real-ct-dir ... --methods dinomix --seeds S
--max-iterations 1000`` process. Its models are scored into this folder's ``results.jsonl``; the supervised-only rows
(not rerun, see README.md) come from ``../2026-12-03-real-ct-transductive/results.jsonl``. Both go into
``real_transductive`` of ``benchmarks/results/ssl_benchmark.json``.
"""
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEFORE = HERE.parent / "2026-12-03-real-ct-transductive"
spec = importlib.util.spec_from_file_location("assemble_before", BEFORE / "assemble.py")
before = importlib.util.module_from_spec(spec)
spec.loader.exec_module(before)


def main(roots) -> None:
    dinomix = [r for r in before.score_runs(roots, HERE / "results.jsonl") if r["method"] == "dinomix"]
    supervised = [json.loads(line) for line in (BEFORE / "results.jsonl").read_text().splitlines()]
    supervised = [r for r in supervised if r["method"] == "supervised"]
    before.write_real(supervised + dinomix,
                      "dinomix benchmark ssl --real-ct-dir ../shared/data/real_ct/ts_example --methods dinomix "
                      "--seeds S --max-iterations 1000, one process per seed; supervised-only runs from "
                      "2026-12-03-real-ct-transductive (unchanged by the recipe); assembled by "
                      "benchmarks/results/2026-12-04-real-ct-no-warmup/assemble.py",
                      dict(before.b.RECIPE, pseudo_label_lcc=False))  # the recipe these runs used


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
