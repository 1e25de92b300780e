"""Training speed and memory of DINO-Mix (arXiv 2602.07819): supervised-only vs DINO-Mix with a live or cached teacher.

Measures, on SYNTHETIC abdominal phantoms (``dinomix_core.phantoms``; generated, not patient data — the timing
depends on the array sizes, not on the anatomy), the seconds per training iteration (median over ``--iterations``
timed iterations after ``--warmup`` untimed ones) of:

* ``supervised``        (a): supervised-only training as the trainer runs it: Dice+CE on
  ``batch_size_labeled + batch_size_unlabeled`` labeled patches (the student batch of a DINO-Mix step, as the
  baselines' supervised recipe has it: DHC's ``train_fully.py`` uses batch 4 against 2 labeled + 2 unlabeled), no
  teacher, no PIC, no consistency;
* ``dinomix_live``      (b): full DINO-Mix (PIC CutMix, EMA-teacher consistency, FKD) with DINOv3 run live on
  every mixed patch (``teacher_cache=False``);
* ``dinomix_cache``     (c): full DINO-Mix with the teacher's features computed once per volume and cropped/mixed
  (``teacher_cache=True``); the one-off cache build is timed separately;
* ``supervised_1patch`` (a1, reference): supervised on ``batch_size_labeled`` labeled patches only
  (``batch_size_unlabeled=0``), i.e. half the student batch.

Each mode runs ``--rounds`` times, the modes interleaved. On a shared machine the speed drifts between runs by
more than the difference measured, so the verdict on (c)/(a) comes from a paired run: one process holds both the
supervised and the DINO-Mix (cache) trainer and alternates their steps; the median of the per-pair ratios is
reported, and the separate-run ratio beside it.

The teacher path of one iteration (getting the DINOv3 targets of its mixed patches) is also timed apart in the two
DINO-Mix modes: the live teacher on the patches vs cropping the cached features and pasting a box.

Each mode runs in its own subprocess, so its peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
is its own. Settings: the ``cpu`` preset's patch (96x96x32) and batch (1 labeled + 1 unlabeled) on the CPU.

Teacher: ``--teacher PATH`` (a real DINOv3 folder), else a DINOv3ViTModel with RANDOM weights in the ViT-S/16 shape
(hidden 384, 12 layers, 6 heads, MLP 1536, patch 16, 4 register tokens) saved with ``save_pretrained`` to a temporary
folder and loaded through the same ``from_pretrained`` path: real weights are not available here, and the timing
depends on the architecture, not on the weights.

Targets (printed as pass / FAIL): (c)/(a) <= 1.3; teacher path live / cache >= 10; peak RSS of cpu-preset
training <= 6 GB. Printed for reference, without a verdict: (c)/(a1) (DINO-Mix against half its student batch: it
cannot go below about 2, the student's forward and backward pass alone doubles) and (b)/(c) per whole iteration.

Run: ``PYTHONPATH=. python benchmarks/train_speed.py --rounds 3 --iterations 10 --warmup 2``
Writes ``benchmarks/results/train_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

MODES = ("supervised", "supervised_1patch", "dinomix_live", "dinomix_cache")
LETTER = {"supervised": "a", "dinomix_live": "b", "dinomix_cache": "c", "supervised_1patch": "a1"}
#: random-init ViT-S/16 with the released DINOv3 ViT-S/16 shape
VITS16 = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=16,
    num_register_tokens=4,
)
TARGET_CACHE_OVER_SUP = 1.3
TARGET_LIVE_OVER_CACHE = 10.0
TARGET_RSS_GB = 6.0


# ---------------------------------------------------------------------------------------------- setup (parent)
def make_phantoms(folder: Path, n_labeled: int, n_unlabeled: int, shape, spacing) -> Dict[str, Any]:
    """Write SYNTHETIC phantoms as NIfTI; returns {"labeled": [(img, lab)], "unlabeled": [img]}."""
    from dinomix_core.phantoms import write_phantom_nifti

    labeled, unlabeled = [], []
    for i in range(n_labeled + n_unlabeled):
        lab = folder / f"phantom_{i:03d}_label.nii.gz" if i < n_labeled else None
        img, lab = write_phantom_nifti(folder / f"phantom_{i:03d}.nii.gz", lab, 1000 + i, shape, spacing)
        if lab is not None:
            labeled.append((str(img), str(lab)))
        else:
            unlabeled.append(str(img))
    return {"labeled": labeled, "unlabeled": unlabeled}


def make_random_teacher(folder: Path) -> str:
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    DINOv3ViTModel(DINOv3ViTConfig(**VITS16)).save_pretrained(str(folder))
    return str(folder)


def mode_config(mode: str, args: argparse.Namespace, teacher: str, iterations: Optional[int] = None):
    from dinomix_core.config import get_preset

    total = args.warmup + (args.iterations if iterations is None else iterations)
    base = get_preset(args.preset, max_iterations=total, val_interval=0, seed=0,
                      patch_size=tuple(args.patch) if args.patch else None)
    if mode == "supervised":
        return base.replace(teacher="none", use_fkd=False, use_pic=False, use_consistency=False)
    if mode == "supervised_1patch":
        return base.replace(teacher="none", use_fkd=False, use_pic=False, use_consistency=False, batch_size_unlabeled=0)
    return base.replace(teacher=teacher, teacher_cache=(mode == "dinomix_cache"))


def teacher_path_seconds(trainer, repeats: int) -> List[float]:
    """Seconds to get the teacher targets of one iteration's mixed patches, as ``train_step`` gets them.

    Live (no cache): the teacher on a batch of as many patches as the student takes. Cache: per patch, the cached
    features of two patches cropped and a PIC box pasted (``mix_features``).
    """
    import torch

    from dinomix_core.data import crop, random_patch_start
    from dinomix_core.teacher import mix_features

    cfg, s = trainer.config, trainer.stride
    volumes = trainer.labeled + trainer.unlabeled
    n = cfg.batch_size_labeled + cfg.batch_size_unlabeled
    out: List[float] = []
    for r in range(repeats):
        picks = [volumes[(r + i) % len(volumes)] for i in range(2 * n)]
        starts = [random_patch_start(v.shape, cfg.patch_size, trainer.gen, align=(s, s, 1)) for v in picks]
        if trainer.cache is None:
            images = torch.stack([crop(v.image, st, cfg.patch_size) for v, st in zip(picks[:n], starts)])
            images = images.to(trainer.device)
            _sync(trainer.device)
            t = time.perf_counter()
            trainer.teacher(images)
            _sync(trainer.device)
        else:
            t = time.perf_counter()
            for i in range(n):
                mix_features(
                    trainer.cache.crop(picks[i].case_id, starts[i], cfg.patch_size),
                    trainer.cache.crop(picks[n + i].case_id, starts[n + i], cfg.patch_size),
                    (0, 0, 0), trainer.mixer.box_size, s,
                ).to(trainer.device)
            _sync(trainer.device)
        out.append(time.perf_counter() - t)
    return out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- one mode (subprocess)
def build_trainer(mode: str, args: argparse.Namespace, data: Dict[str, Any], out: str, iterations=None):
    """The mode's trainer, its cache (if any) built for every volume; returns (trainer, setup s, cache build s)."""
    from dinomix_core.trainer import DinoMixTrainer

    config = mode_config(mode, args, data["teacher"], iterations)
    unlabeled = data["unlabeled"] if config.use_pic or config.use_consistency else []
    t0 = time.perf_counter()
    trainer = DinoMixTrainer(config, data["labeled"], unlabeled, out, device=args.device)
    setup_s = time.perf_counter() - t0
    cache_s = None
    if trainer.cache is not None:  # one-off: features of every training volume (else built lazily in warm-up)
        t = time.perf_counter()
        for v in trainer.labeled + trainer.unlabeled:
            trainer.cache.get(v.case_id, v.image)
        cache_s = time.perf_counter() - t
    return trainer, setup_s, cache_s


def timed_step(trainer, iteration: int):
    """(seconds, logs) of one ``train_step``."""
    _sync(trainer.device)
    t = time.perf_counter()
    logs = trainer.train_step(iteration)
    _sync(trainer.device)
    return time.perf_counter() - t, logs


def paired_worker(args: argparse.Namespace) -> Dict[str, Any]:
    """Supervised and DINO-Mix (cache) in one process, steps alternating: both see the same machine at each pair."""
    data = json.loads(Path(args.data).read_text())
    n = args.iterations * args.rounds
    with tempfile.TemporaryDirectory() as out:
        a, _, _ = build_trainer("supervised", args, data, os.path.join(out, "a"), n)
        c, _, _ = build_trainer("dinomix_cache", args, data, os.path.join(out, "c"), n)
        ta: List[float] = []
        tc: List[float] = []
        for it in range(args.warmup + n):
            sa, _ = timed_step(a, it)
            sc, _ = timed_step(c, it)
            if it >= args.warmup:
                ta.append(sa)
                tc.append(sc)
    ratios = [y / x for x, y in zip(ta, tc)]
    return {
        "pairs": n, "supervised_s": [round(x, 4) for x in ta], "dinomix_cache_s": [round(x, 4) for x in tc],
        "median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
        "ratio_of_medians": statistics.median(tc) / statistics.median(ta),
    }


def worker(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.worker == "paired":
        return paired_worker(args)
    data = json.loads(Path(args.data).read_text())
    with tempfile.TemporaryDirectory() as out:
        trainer, setup_s, cache_s = build_trainer(args.worker, args, data, out)
        config = trainer.config
        times: List[float] = []
        logs: Dict[str, float] = {}
        for it in range(args.warmup + args.iterations):
            dt, logs = timed_step(trainer, it)
            if it >= args.warmup:
                times.append(dt)
        tp = teacher_path_seconds(trainer, args.iterations) if trainer.teacher is not None else None
        student_patches = trainer.labeled_batch + (config.batch_size_unlabeled if trainer.semi_supervised else 0)
        result = {
            "mode": args.worker,
            "median_s_per_it": statistics.median(times),
            "min_s_per_it": min(times),
            "max_s_per_it": max(times),
            "iteration_s": [round(x, 4) for x in times],
            "setup_s": round(setup_s, 3),
            "cache_build_s": None if cache_s is None else round(cache_s, 3),
            "cache_mb": None if trainer.cache is None else round(trainer.cache.nbytes / 2**20, 2),
            "student_patches_per_it": student_patches,
            "teacher_path_median_s": None if tp is None else statistics.median(tp),
            "loss_terms": sorted(logs),
            "teacher": None if trainer.teacher is None else {
                "hidden": trainer.teacher.hidden_size, "feature_stride": trainer.teacher.feature_stride,
            },
            "volume_shapes": [list(v.shape) for v in trainer.labeled + trainer.unlabeled],
            "config": {k: config.to_dict()[k] for k in (
                "preset", "patch_size", "target_spacing", "channels", "batch_size_labeled", "batch_size_unlabeled",
                "teacher_cache", "use_fkd", "use_pic", "use_consistency", "teacher_batch_size", "teacher_upsample",
            )},
            "torch_threads": torch.get_num_threads(),
            "device": str(trainer.device),
        }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: KiB
    return result


def run_mode(mode: str, args: argparse.Namespace, data_json: Path) -> Dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--data", str(data_json),
        "--iterations", str(args.iterations), "--warmup", str(args.warmup), "--threads", str(args.threads),
        "--rounds", str(args.rounds),
        "--preset", args.preset, "--device", args.device, *(["--patch", *map(str, args.patch)] if args.patch else []),
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"mode {mode} failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = round(time.time() - t, 1)
    return res


def merge_rounds(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One mode's result over several rounds: medians over all timed iterations, the largest peak RSS."""
    merged = dict(runs[0])
    times = [t for r in runs for t in r["iteration_s"]]
    merged.update(
        median_s_per_it=statistics.median(times), min_s_per_it=min(times), max_s_per_it=max(times),
        iteration_s=times, round_median_s_per_it=[round(r["median_s_per_it"], 4) for r in runs],
        peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
    )
    if runs[0]["teacher_path_median_s"] is not None:
        merged["teacher_path_median_s"] = statistics.median(r["teacher_path_median_s"] for r in runs)
    return merged


# ---------------------------------------------------------------------------------------------- report
def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def summarise(results: Dict[str, Dict[str, Any]], paired: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    med = {m: r["median_s_per_it"] for m, r in results.items()}
    s: Dict[str, Any] = {}
    if "supervised" in med and "dinomix_cache" in med:
        a, c = med["supervised"], med["dinomix_cache"]
        s["cache_over_supervised_separate_runs"] = c / a
        s["cache_over_supervised_per_round"] = [
            round(rc / ra, 3) for ra, rc in zip(results["supervised"]["round_median_s_per_it"],
                                                results["dinomix_cache"]["round_median_s_per_it"])
        ]
        # the verdict: the paired measurement (steps alternating in one process) when there is one
        s["cache_over_supervised"] = paired["median_ratio"] if paired else c / a
        s["cache_over_supervised_measured_by"] = "paired steps, median of per-pair ratios" if paired else "separate runs"
        s["target_cache_over_supervised"] = TARGET_CACHE_OVER_SUP
        s["pass_cache_over_supervised"] = s["cache_over_supervised"] <= TARGET_CACHE_OVER_SUP
    if "supervised_1patch" in med and "dinomix_cache" in med:
        s["cache_over_supervised_1patch"] = med["dinomix_cache"] / med["supervised_1patch"]
    if "dinomix_live" in med and "dinomix_cache" in med:
        s["live_over_cache_iteration"] = med["dinomix_live"] / med["dinomix_cache"]
        live, cache = results["dinomix_live"]["teacher_path_median_s"], results["dinomix_cache"]["teacher_path_median_s"]
        s["teacher_path_live_s"], s["teacher_path_cache_s"] = live, cache
        s["live_over_cache_teacher_path"] = live / max(cache, 1e-12)
        s["target_live_over_cache"] = TARGET_LIVE_OVER_CACHE
        s["pass_live_over_cache"] = s["live_over_cache_teacher_path"] >= TARGET_LIVE_OVER_CACHE
    peak = max(r["peak_rss_mb"] for r in results.values())
    s["max_peak_rss_mb"] = peak
    s["target_peak_rss_gb"] = TARGET_RSS_GB
    s["pass_peak_rss"] = peak * 2**20 <= TARGET_RSS_GB * 1e9
    return s


def print_report(
    results: Dict[str, Dict[str, Any]], summary: Dict[str, Any], meta: Dict[str, Any],
    paired: Optional[Dict[str, Any]] = None,
) -> None:
    print(f"\nDINO-Mix training speed on SYNTHETIC phantoms ({meta['n_labeled']} labeled + {meta['n_unlabeled']} "
          f"unlabeled, {meta['phantom_shape']} voxels at {meta['phantom_spacing']} mm, preset {meta['preset']}, "
          f"device {meta['device']}, torch threads {meta['threads']})")
    print(f"teacher: {meta['teacher_desc']}")
    print(f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']} on {meta['cpu_count']} CPUs")
    print(f"{meta['rounds']} rounds x {meta['iterations']} timed iterations after {meta['warmup']} warm-up per mode\n")
    head = f"{'mode':<16}{'':>4}{'median s/it':>12}{'min':>8}{'max':>8}{'patches/it':>11}{'s/patch':>9}" \
           f"{'setup s':>9}{'cache s':>9}{'peak RSS MB':>13}"
    print(head)
    print("-" * len(head))
    for m in MODES:
        if m not in results:
            continue
        r = results[m]
        cache = "-" if r["cache_build_s"] is None else f"{r['cache_build_s']:.1f}"
        print(f"{m:<16}{'(' + LETTER[m] + ')':>4}{r['median_s_per_it']:>12.3f}{r['min_s_per_it']:>8.3f}"
              f"{r['max_s_per_it']:>8.3f}{r['student_patches_per_it']:>11d}"
              f"{r['median_s_per_it'] / r['student_patches_per_it']:>9.3f}{r['setup_s']:>9.1f}{cache:>9}"
              f"{r['peak_rss_mb']:>13.0f}")
    print()
    if "cache_over_supervised" in summary:
        print(f"(c)/(a)   per iteration      = {summary['cache_over_supervised']:6.2f}   target <= "
              f"{TARGET_CACHE_OVER_SUP}: {_verdict(summary['pass_cache_over_supervised'])}   (same student batch; "
              f"{summary['cache_over_supervised_measured_by']})")
        if paired:
            print(f"          paired steps       : {paired['pairs']} pairs, per-pair ratio median "
                  f"{paired['median_ratio']:.2f} (min {paired['min_ratio']:.2f}, max {paired['max_ratio']:.2f}), "
                  f"ratio of medians {paired['ratio_of_medians']:.2f}")
        print(f"          separate runs      : {summary['cache_over_supervised_separate_runs']:.2f} "
              f"(per round {', '.join(f'{v:.2f}' for v in summary['cache_over_supervised_per_round'])})")
    if "cache_over_supervised_1patch" in summary:
        print(f"(c)/(a1)  per iteration      = {summary['cache_over_supervised_1patch']:6.2f}   (reference: "
              "supervised on half the student batch, the labeled patches only)")
    if "live_over_cache_teacher_path" in summary:
        print(f"teacher path live / cache    = {summary['live_over_cache_teacher_path']:6.0f}x  target >= "
              f"{TARGET_LIVE_OVER_CACHE:.0f}x: {_verdict(summary['pass_live_over_cache'])}   "
              f"({1000 * summary['teacher_path_live_s']:.1f} ms vs {1000 * summary['teacher_path_cache_s']:.2f} ms "
              "per iteration)")
        print(f"(b)/(c)   per iteration      = {summary['live_over_cache_iteration']:6.2f}   (reference: the whole "
              "step, student included)")
    print(f"peak RSS (max over modes)    = {summary['max_peak_rss_mb'] / 1024:6.2f} GiB   target <= {TARGET_RSS_GB} GB: "
          f"{_verdict(summary['pass_peak_rss'])}")
    print("\nThe data are SYNTHETIC phantoms; timings depend on array sizes and the teacher architecture only. "
          "Peak RSS grows with the number and size of the training volumes (all are held in memory).")


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iterations", type=int, default=10, help="timed iterations per mode and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds over all modes (median over every timed iteration)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--teacher", default=None, help="DINOv3 folder (default: random-init ViT-S/16 in a temp folder)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--patch", type=int, nargs=3, default=None, help="patch (x, y, z) instead of the preset's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    p.add_argument("--labeled", type=int, default=2, help="SYNTHETIC labeled phantoms")
    p.add_argument("--unlabeled", type=int, default=2, help="SYNTHETIC unlabeled phantoms")
    p.add_argument("--shape", type=int, nargs=3, default=[96, 96, 48], help="phantom voxels (x, y, z)")
    p.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 4.0], help="phantom spacing mm (x, y, z)")
    p.add_argument("--output", default=str(HERE / "results" / "train_speed.json"))
    p.add_argument("--worker", choices=MODES + ("paired",), default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--iterations and --rounds must be >= 1 and --warmup >= 0")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="dinomix_train_speed_") as tmp:
        tmp_p = Path(tmp)
        data = make_phantoms(tmp_p / "data", args.labeled, args.unlabeled, tuple(args.shape), tuple(args.spacing))
        if args.teacher:
            teacher, desc = args.teacher, f"{args.teacher} (given)"
        else:
            teacher = make_random_teacher(tmp_p / "teacher_vits16_random")
            desc = "RANDOM-init DINOv3ViTModel, ViT-S/16 shape " + json.dumps(VITS16)
        data["teacher"] = teacher
        data_json = tmp_p / "data.json"
        data_json.write_text(json.dumps(data))
        results: Dict[str, Dict[str, Any]] = {}
        rounds: Dict[str, List[Dict[str, Any]]] = {m: [] for m in args.modes}
        for r in range(args.rounds):  # modes interleaved, so a change of machine load hits every mode alike
            for mode in args.modes:
                print(f"round {r + 1}/{args.rounds}: running {mode} ...", file=sys.stderr, flush=True)
                rounds[mode].append(run_mode(mode, args, data_json))
                print(f"  {mode}: median {rounds[mode][-1]['median_s_per_it']:.3f} s/it, peak RSS "
                      f"{rounds[mode][-1]['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        results = {m: merge_rounds(rs) for m, rs in rounds.items()}
        paired = None
        if {"supervised", "dinomix_cache"} <= set(args.modes):
            print(f"paired: supervised and dinomix_cache alternating, {args.rounds * args.iterations} pairs ...",
                  file=sys.stderr, flush=True)
            paired = run_mode("paired", args, data_json)
    import torch

    meta = {
        "data": "SYNTHETIC phantoms (dinomix_core.phantoms), not patient data",
        "n_labeled": args.labeled, "n_unlabeled": args.unlabeled, "phantom_shape": args.shape,
        "phantom_spacing": args.spacing, "preset": args.preset, "device": args.device,
        "threads": args.threads or torch.get_num_threads(), "teacher_desc": desc, "iterations": args.iterations,
        "rounds": args.rounds, "warmup": args.warmup, "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "wall_s": round(time.time() - t_start, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary = summarise(results, paired)
    print_report(results, summary, meta, paired)
    out = {"meta": meta, "summary": summary, "modes": results, "paired": paired}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.output}")
    return out


if __name__ == "__main__":
    main()
