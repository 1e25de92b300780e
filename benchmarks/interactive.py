#!/usr/bin/env python
"""Benchmark of interactive editing: Dice after 0, 1, 3, 5 and 10 simulated clicks per organ, and seconds per click.

For every organ present in a held-out volume's reference, starting from the automatic result each time, a simulated
user clicks where the current result of that organ is worst: at the centre (the point farthest from the boundary)
of its largest error region, on the image's own grid. The click is labelled with what the reference says there (the
organ, another organ, or background), as a user clicking on what they see, and the whole click history of that
organ is sent as one DeepEdit request (``Predictor.refine``, what ``/infer/dinomix_edit`` runs). Dice in percent,
per organ and the mean over the organs present (small organs included).

Volumes: ../shared/data/real_ct/ts_example (a real CT, read from there, never copied into the repository) and
``--phantoms`` held-out SYNTHETIC phantoms (generator seeds 1001...; the sample studies use 1-7). The model is the
one the app serves by default (the shipped starter) unless ``--model``.

``--server`` also times the clicks through a real ``monailabel start_server`` (``POST /infer/dinomix_edit``, the
stock plugin's request with ``result_extension=.nrrd``) on the real CT: what a Slicer user waits for per click.

Usage::

    python benchmarks/interactive.py                         # ts_example + 2 phantoms, clicks 0 1 3 5 10, --server
    python benchmarks/interactive.py --phantoms 0 --no-server --clicks 0 1 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.app_benchmark import Server, free_port  # noqa: E402
from dinomix_core.inference import Predictor  # noqa: E402
from dinomix_core.interactive import next_click  # noqa: E402
from dinomix_core.labels import ORGANS, SMALL_ORGAN_NAMES  # noqa: E402
from dinomix_core.phantoms import generate_phantom  # noqa: E402
from dinomix_core.artifacts import atomic_write  # noqa: E402

SHIPPED = REPO / "apps" / "dinomix" / "model" / "pretrained_dinomix.pt"
TS_EXAMPLE = REPO.parent / "shared" / "data" / "real_ct" / "ts_example"
CLICKS = (0, 1, 3, 5, 10)
PHANTOM_SEEDS = 1001


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 100.0 * 2 * int((a & b).sum()) / s if s else 100.0


def edit_organ(predictor: Predictor, image: str, ref: np.ndarray, auto: np.ndarray, organ: int,
               clicks: Sequence[int]) -> Dict[str, Any]:
    """Dice of ``organ`` after each number of ``clicks`` (from the automatic result), and each click's seconds."""
    result = auto
    points: Dict[int, List[List[int]]] = {}
    background: List[List[int]] = []
    out, seconds = {}, []
    for n in range(max(clicks) + 1):
        if n in clicks:
            out[str(n)] = round(dice(result == organ, ref == organ), 2)
        if n == max(clicks):
            break
        c = next_click(result == organ, ref == organ)
        if c is None:  # nothing left to fix: the remaining clicks change nothing
            for m in clicks:
                if m > n:
                    out[str(m)] = out.get(str(n), round(dice(result == organ, ref == organ), 2))
            break
        truth = int(ref[c.point])
        (background if truth == 0 else points.setdefault(truth, [])).append(list(c.point))
        t0 = time.perf_counter()
        result, _ = predictor.refine(image, points, background, organ)
        seconds.append(time.perf_counter() - t0)
    return {"dice": out, "seconds": seconds}


def run_volume(predictor: Predictor, name: str, image: str, ref: np.ndarray, clicks: Sequence[int]) -> Dict[str, Any]:
    auto, _ = predictor.predict(image)
    if auto.shape != ref.shape:
        raise SystemExit(f"{name}: result {auto.shape} and reference {ref.shape} differ")
    organs = [i for i in range(1, len(ORGANS) + 1) if (ref == i).any()]
    per, seconds = {}, []
    for organ in organs:
        r = edit_organ(predictor, image, ref, auto, organ, clicks)
        per[ORGANS[organ - 1]] = r["dice"]
        seconds += r["seconds"]
        print(f"  {name} {ORGANS[organ - 1]:<26} " + "  ".join(f"{k}:{v:5.1f}" for k, v in r["dice"].items()),
              flush=True)
    mean = {str(n): round(float(np.mean([per[o][str(n)] for o in per])), 2) for n in clicks}
    small = [o for o in per if o in SMALL_ORGAN_NAMES]
    return {
        "clicks": mean,
        "small_organs": {str(n): round(float(np.mean([per[o][str(n)] for o in small])), 2) for n in clicks} if small else None,
        "per_organ": per,
        "organs_present": list(per),
        "seconds_per_click": round(statistics.mean(seconds), 3) if seconds else None,
    }


def server_seconds(model: Path, ct: Path, ref: np.ndarray, n_clicks: int, work: Path) -> Dict[str, Any]:
    """Seconds per click through a real server: one automatic run (as the plugin does after Next Sample), then
    ``n_clicks`` DeepEdit requests on the worst organ of the real CT, each with the whole click history."""
    studies = work / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    shutil.copy(ct, studies / "ts_example.nii.gz")  # a temporary folder, removed at the end
    model_dir = work / "model"
    model_dir.mkdir()
    shutil.copy(model, model_dir / "pretrained_dinomix.pt")
    srv = Server(studies, model_dir, work / "server.log", free_port(), 0, {})
    try:
        srv.wait_ready(300)
        from monailabel.client import MONAILabelClient

        client = MONAILabelClient(srv.url, tmpdir=str(work))  # what the stock Slicer plugin sends requests with
        fmt = {"result_extension": ".nrrd", "result_dtype": "uint8"}
        t0 = time.perf_counter()
        result_file, _ = client.infer("dinomix", "ts_example", dict(fmt))
        auto_s = time.perf_counter() - t0
        auto = _read_result(result_file, ref.shape)
        worst = min((i for i in range(1, len(ORGANS) + 1) if (ref == i).any()),
                    key=lambda i: dice(auto == i, ref == i))
        points: Dict[str, List[List[int]]] = {o: [] for o in ORGANS}
        result, times = auto, []
        for _ in range(n_clicks):
            c = next_click(result == worst, ref == worst)
            if c is None:
                break
            truth = int(ref[c.point])
            points["background" if truth == 0 else ORGANS[truth - 1]].append([int(v) for v in c.point])
            t0 = time.perf_counter()
            result_file, _ = client.infer("dinomix_edit", "ts_example", {**points, "label": ORGANS[worst - 1], **fmt})
            times.append(time.perf_counter() - t0)
            result = _read_result(result_file, ref.shape)
        return {"organ": ORGANS[worst - 1], "automatic_s": round(auto_s, 3), "clicks": len(times),
                "seconds_per_click": round(statistics.mean(times), 3) if times else None,
                "max_s": round(max(times), 3) if times else None}
    finally:
        srv.stop()


def _read_result(path: str, shape) -> np.ndarray:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
    Path(path).unlink(missing_ok=True)
    if arr.shape != tuple(shape):
        raise SystemExit(f"server result {arr.shape} is not on the image grid {shape}")
    return arr.astype(np.int64)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=SHIPPED, help="model file (default: the shipped starter)")
    ap.add_argument("--ts-dir", type=Path, default=TS_EXAMPLE, help="folder with ct.nii.gz and label.nii.gz")
    ap.add_argument("--phantoms", type=int, default=2, help="held-out SYNTHETIC phantoms (0: none)")
    ap.add_argument("--clicks", type=int, nargs="+", default=list(CLICKS))
    ap.add_argument("--no-server", action="store_true", help="skip timing through a real server")
    ap.add_argument("--server-clicks", type=int, default=5)
    ap.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "interactive.json")
    args = ap.parse_args(argv)
    clicks = sorted(set(args.clicks) | {0})
    import torch

    torch.set_num_threads(2)
    predictor = Predictor(str(args.model), device="cpu")
    results: Dict[str, Any] = {
        "command": "python benchmarks/interactive.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": str(args.model.resolve().relative_to(REPO)) if args.model.resolve().is_relative_to(REPO) else str(args.model),
        "protocol": "per organ from the automatic result; each click at the centre of the largest error region of "
                    "that organ, labelled with the reference class there; Dice in percent",
        "volumes": {},
    }
    ct, lab = args.ts_dir / "ct.nii.gz", args.ts_dir / "label.nii.gz"
    ref = np.asarray(nib.load(str(lab)).dataobj).astype(np.int64)
    print(f"ts_example (real CT, {ref.shape})", flush=True)
    results["volumes"]["ts_example"] = dict(run_volume(predictor, "ts_example", str(ct), ref, clicks),
                                            data="real abdominal CT (../shared/data/real_ct/ts_example), "
                                                 "TotalSegmentator reference")
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.phantoms):
            seed = PHANTOM_SEEDS + k
            image, label, affine = generate_phantom(seed)
            path = Path(tmp) / f"phantom_{seed}.nii.gz"
            nib.save(nib.Nifti1Image(image, affine), str(path))
            name = f"synthetic_phantom_{seed}"
            print(f"{name} (SYNTHETIC)", flush=True)
            results["volumes"][name] = dict(run_volume(predictor, name, str(path), label.astype(np.int64), clicks),
                                            data=f"SYNTHETIC phantom, generator seed {seed}")
        if not args.no_server:
            print(f"server: {args.server_clicks} clicks through /infer/dinomix_edit", flush=True)
            results["server"] = server_seconds(args.model, ct, ref, args.server_clicks, Path(tmp))
    ts = results["volumes"]["ts_example"]
    results["clicks"] = ts["clicks"]  # the headline: the real CT
    results["seconds_per_click"] = (results.get("server") or {}).get("seconds_per_click") or ts["seconds_per_click"]
    results["gain_after_5_clicks"] = round(ts["clicks"]["5"] - ts["clicks"]["0"], 2) if "5" in ts["clicks"] else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.output, json.dumps(results, indent=2))
    print(json.dumps({k: results[k] for k in ("clicks", "seconds_per_click", "gain_after_5_clicks")}, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
