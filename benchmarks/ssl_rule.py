"""The decision rule of a pre-registered change to the semi-supervised benchmark, on the validation split only.

A change (a recipe field, a budget) is written up in a dated ``benchmarks/results/DATE-NAME.md`` with its rule
before its runs; the runs are ``dinomix benchmark ssl --methods M --seeds S --set ... --output DIR_S``, one per
seed. This script pairs them by seed with the current row of ``M`` and applies the rule
(:func:`dinomix_core.benchmark_ssl.compare_on_validation`): the mean best validation Dice must be at least
``--margin`` above the current row's, and above it in at least ``--min-seeds-above`` seeds. It prints the rule and,
beside it, the test Dice of the selected models, which decides nothing. A run made with other settings than
``--expect-overrides`` is refused.

    python benchmarks/ssl_rule.py --baseline benchmarks/results/ssl_benchmark.json --method dinomix \\
        --runs DIR_0/ssl_benchmark.json DIR_1/ssl_benchmark.json DIR_2/ssl_benchmark.json \\
        --expect-overrides '{"rampup_fraction": 0.5}' --output benchmarks/results/DATE-NAME/summary.json

With ``--adopt RESULTS_DIR --note TEXT``, a met rule also rewrites ``RESULTS_DIR/ssl_benchmark.json`` (+ .md, chart)
with the row of ``M`` made of the change's runs and the note saying how
(:func:`dinomix_core.benchmark_ssl.with_method_runs`); a rule not met changes nothing.

Exit status 0 when the rule is met, 1 when it is not, 2 on bad input.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dinomix_core.artifacts import atomic_write  # noqa: E402
from dinomix_core.benchmark_ssl import compare_on_validation, with_method_runs, write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="the results file holding the current row")
    ap.add_argument("--method", default="dinomix", help="the row the change is for")
    ap.add_argument("--runs", nargs="+", required=True, help="the change's results files, one per seed")
    ap.add_argument("--expect-overrides", default="{}", help="the --set fields every run must have been made with")
    ap.add_argument("--margin", type=float, default=0.3)
    ap.add_argument("--min-seeds-above", type=int, default=2)
    ap.add_argument("--output", help="write the rule, per-seed rows and test numbers here (JSON)")
    ap.add_argument("--adopt", metavar="RESULTS_DIR", help="if the rule is met, put the runs in this results file")
    ap.add_argument("--note", help="with --adopt: how the new row was made (required)")
    ap.add_argument("--iterations", type=int, help="with --adopt: the row's budget, where it differs from the file's")
    args = ap.parse_args(argv)
    if args.adopt and not args.note:
        print("error: --adopt needs --note (how the new row was made, shown under the table)", file=sys.stderr)
        return 2
    try:
        expected = json.loads(args.expect_overrides)
        base = json.loads(Path(args.baseline).read_text())["methods"][args.method]["runs"]
        cand = []
        for f in args.runs:
            res = json.loads(Path(f).read_text())
            if res.get("overrides", {}) != expected:
                raise ValueError(f"{f} was made with --set {res.get('overrides')}, not {expected}.")
            cand += res["methods"][args.method]["runs"]
        out = compare_on_validation(base, cand, args.margin, args.min_seeds_above)
        if args.adopt:
            target = Path(args.adopt) / "ssl_benchmark.json"
            adopted = with_method_runs(json.loads(target.read_text()), args.method, cand, args.note, args.iterations)
    except (OSError, KeyError, ValueError) as e:
        why = f"a results file has no {e} (not a `dinomix benchmark ssl` result of --method?)" if isinstance(
            e, KeyError) else str(e)
        print(f"error: {why}", file=sys.stderr)
        return 2
    out = {"baseline": args.baseline, "method": args.method, "run_files": args.runs, "overrides": expected, **out}
    for s, r in out["runs"].items():
        print(f"seed {s}: validation {r['val_baseline']:.2f} -> {r['val_candidate']:.2f} "
              f"(selected {r['selected_candidate']}); test {r['test_baseline']:.2f} -> {r['test_candidate']:.2f}; "
              f"small organs {r['small_baseline']:.2f} -> {r['small_candidate']:.2f}")
    rule = out["rule"]
    print(f"rule: validation mean {rule['val_mean_candidate']:.2f} against a threshold of {rule['threshold']:.2f}, "
          f"above in {rule['seeds_above']} of {len(out['seeds'])} seeds: {'MET' if rule['met'] else 'not met'}")
    print("test (decides nothing): " + ", ".join(f"{k} {m:.2f} +- {s:.2f}" for k, (m, s) in out["test"].items()))
    if args.output:
        atomic_write(args.output, json.dumps(out, indent=2))
    if args.adopt and rule["met"]:
        write_results(Path(args.adopt), adopted)
        print(f"{args.method} row of {target} replaced by these runs")
    return 0 if rule["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
