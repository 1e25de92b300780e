"""CPU speed of the student's convolutions: PyTorch's own backend choice against ``dinomix_core.cpu_conv``.

PyTorch runs batch-1 float32 3D convolutions with small leading sizes on its reference ``slow_conv3d`` kernel
(see ``dinomix_core/cpu_conv.py``); the trainer and the predictor send them to oneDNN instead, and the trainer keeps
the student channels-last on the CPU. This script measures both ways in ONE process, alternating (the speed of
this machine drifts between processes by more than some of the differences):

* training: seconds per iteration of the SSL benchmark's runs (``dinomix_core.benchmark_ssl``, the ``plain`` scale:
  SYNTHETIC 64 x 64 x 32 phantoms, patch 48 x 48 x 24, one thread) for ``--methods``, ``--rounds`` blocks of
  ``--iterations`` steps each way after ``--warmup`` steps; the median over blocks;
* the app's Retrain: seconds per iteration of the ``cpu`` preset on the sample studies (``--iterations`` / 3 steps
  per block: one step takes several seconds);
* prediction: seconds of ``Predictor.predict`` (sliding window, the model's own patch) on one test phantom of that
  benchmark and on the real CT in ``sample_data`` with the ``cpu`` preset's network (RANDOM weights: the time does
  not depend on them), median of ``--rounds`` each way.

"plain" is PyTorch's choice (``nn.Conv3d``, contiguous weights); "onednn" is what the project runs.

Run: ``PYTHONPATH=. python benchmarks/cpu_conv_speed.py`` (about 15 minutes on 2 cores; ``--quick`` for a smoke run).
Writes ``benchmarks/results/cpu_conv_speed.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from dinomix_core.cpu_conv import OneDNNConv3d  # noqa: E402


def set_mode(net: nn.Module, mode: str, channels_last: bool) -> None:
    """Switch a built student between PyTorch's backend choice ("plain") and the project's ("onednn")."""
    for m in net.modules():
        if isinstance(m, nn.Conv3d) and not isinstance(m, nn.ConvTranspose3d):
            m.__class__ = OneDNNConv3d if mode == "onednn" else nn.Conv3d
    fmt = torch.channels_last_3d if (mode == "onednn" and channels_last) else torch.contiguous_format
    net.to(memory_format=fmt)


def alternate(fn: Callable[[], float], switch: Callable[[str], None], rounds: int) -> Dict[str, float]:
    """Median of ``fn()`` over ``rounds`` alternating calls per mode."""
    times: Dict[str, List[float]] = {"plain": [], "onednn": []}
    for r in range(rounds):
        for mode in (("plain", "onednn") if r % 2 == 0 else ("onednn", "plain")):
            switch(mode)
            times[mode].append(fn())
    switch("onednn")
    med = {m: statistics.median(v) for m, v in times.items()}
    return {"plain": round(med["plain"], 4), "onednn": round(med["onednn"], 4),
            "speed_up": round(med["plain"] / med["onednn"], 2)}


def step_seconds(tr, rounds: int, iterations: int, warmup: int) -> Dict[str, float]:
    """Seconds per ``train_step`` of the trainer ``tr``, both ways alternating (``alternate``), past any warm-up stage."""
    it = [int(0.6 * tr.config.max_iterations)]

    def steps(n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            tr.train_step(it[0])
            it[0] += 1
        return (time.perf_counter() - t) / n

    def switch(mode: str) -> None:
        set_mode(tr.model, mode, channels_last=True)
        set_mode(tr.ema, mode, channels_last=True)

    steps(warmup)
    return alternate(lambda: steps(iterations), switch, rounds)


def training(methods: List[str], data_dir: Path, out_dir: Path, rounds: int, iterations: int, warmup: int):
    from dinomix_core.benchmark_ssl import SCALES, method_config, training_sets, write_dataset
    from dinomix_core.trainer import DinoMixTrainer

    scale = SCALES["plain"]
    data = write_dataset(data_dir, scale)
    out = {}
    for method in methods:
        labeled, unlabeled = training_sets(method, data)
        tr = DinoMixTrainer(method_config(method, scale, seed=0), labeled, unlabeled, str(out_dir / method),
                            validation=data["validation"])
        out[method] = step_seconds(tr, rounds, iterations, warmup)
        print(f"training {method}: s/it {out[method]}", flush=True)
    return out


def app_training(rounds: int, iterations: int, warmup: int) -> Dict[str, float]:
    """Seconds per iteration of the app's Retrain: the ``cpu`` preset on the sample studies (3 labeled, 5 unlabeled)."""
    from dinomix_core.config import get_preset
    from dinomix_core.studies import list_studies
    from dinomix_core.trainer import DinoMixTrainer

    pairs, images = list_studies(REPO / "sample_data" / "studies")
    labeled, unlabeled = [(str(i), str(l)) for i, l in pairs], [str(i) for i in images]
    with tempfile.TemporaryDirectory() as tmp:
        out = step_seconds(DinoMixTrainer(get_preset("cpu"), labeled, unlabeled, tmp), rounds, iterations, warmup)
    print(f"training app_retrain ({len(labeled)} labeled, {len(unlabeled)} unlabeled): s/it {out}", flush=True)
    return out


def prediction(data_dir: Path, rounds: int) -> Dict[str, Dict[str, float]]:
    from dinomix_core.artifacts import ModelFile
    from dinomix_core.benchmark_ssl import SCALES, method_config, write_dataset
    from dinomix_core.config import get_preset
    from dinomix_core.inference import Predictor
    from dinomix_core.networks import build_student

    scale = SCALES["plain"]
    phantom = write_dataset(data_dir, scale)["test"][0][0]
    ct = REPO / "sample_data" / "studies" / "real_ct_001.nii.gz"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg, image in (("phantom", method_config("supervised", scale, 0), phantom),
                                 ("sample_ct", get_preset("cpu"), str(ct))):
            torch.manual_seed(0)
            path = Path(tmp) / f"{name}.pt"
            ModelFile(model=build_student(cfg).state_dict(), config=cfg.to_dict()).save(path)
            predictor = Predictor(str(path), device="cpu")
            predictor.cached_results = 0  # every call computes (reading and preprocessing included)
            predictor.predict(image)  # loads the model once

            def run() -> float:
                t = time.perf_counter()
                predictor.predict(image)
                return time.perf_counter() - t

            out[name] = alternate(run, lambda mode: set_mode(predictor._net, mode, channels_last=False), rounds)
            print(f"prediction {name} ({Path(image).name}): s {out[name]}", flush=True)
    return out


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["supervised", "mean_teacher", "dinomix"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the SSL benchmark's runs use 1)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 2 iterations, one method")
    ap.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "cpu_conv_speed.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.methods, args.rounds, args.iterations, args.warmup = args.methods[:1], 2, 2, 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "what": "seconds per training iteration and per prediction, PyTorch's convolution backend choice (plain) "
                    "against dinomix_core.cpu_conv + channels-last training weights (onednn), alternating in one process",
            "data": "SYNTHETIC phantoms of `dinomix benchmark ssl --scale plain`; the app's Retrain on the sample "
                    "studies (the real CT and SYNTHETIC phantoms); prediction on a phantom and the real CT in sample_data",
            "command": " ".join(["python benchmarks/cpu_conv_speed.py", *(sys.argv[1:] if argv is None else argv)]),
            "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            "training_seconds_per_iteration": training(args.methods, Path(tmp) / "data", Path(tmp) / "runs",
                                                       args.rounds, args.iterations, args.warmup),
            "app_retrain_seconds_per_iteration": app_training(args.rounds, max(1, args.iterations // 3), args.warmup),
            "prediction_seconds": prediction(Path(tmp) / "data", args.rounds),
        }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
