#!/usr/bin/env python
"""Benchmark of the DINO-Mix MONAI Label app (apps/dinomix) through a real server.

Starts ``monailabel start_server --app apps/dinomix`` in a subprocess on 127.0.0.1 over a fresh copy of the sample
studies (``dinomix_core.studies.prepare_studies``), then measures what a 3D Slicer user waits for:

* training: from ``POST /train/dinomix`` (background, as the Slicer plugin starts it) until ``/info`` shows a new
  published ``model_version`` (data loading, iterations, publishing), plus seconds per iteration from the
  ``train_stats`` the plugin polls;
* inference: ``POST /infer/dinomix?image=ID`` on the real sample CT, the first (cold: the model is loaded) call
  separately, then ``--infer-runs`` warm calls (median, min, max; the image file touched before each, so the
  server recomputes rather than answering from its result cache), client wall time and the server's own figure;
  with the shipped starter model before the training, and with the retrained model after it;
* next sample: one ``dinomix_minority_uncertainty`` call with a model (scores every unlabeled image) and a second
  one (cached scores).

Prints the numbers and writes them as JSON (default ``benchmarks/results/app_benchmark.json``) with the machine's
CPU count and load average, which matter: CPU timings on a shared machine vary with the other work on it.

Usage::

    python benchmarks/app_benchmark.py                      # cpu preset, 200 iterations, 5 inference runs
    python benchmarks/app_benchmark.py --iterations 20 --infer-runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import requests

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "dinomix"
MODEL = "dinomix"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


class Server:
    """A ``monailabel start_server`` subprocess (its own process group, so stopping it also ends its trainings)."""

    def __init__(self, studies: Path, model_dir: Path, log: Path, port: int, threads: int, conf: Dict[str, str]):
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        exe = Path(sys.executable).parent / "monailabel"
        cmd = [str(exe) if exe.exists() else "monailabel", "start_server", "--app", str(APP_DIR), "--studies",
               str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "model_dir", str(model_dir)]
        for k, v in conf.items():
            cmd += ["--conf", k, str(v)]
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "false")
        env.setdefault("MONAI_LABEL_TRACKING_ENABLED", "false")
        if threads > 0:
            env["OMP_NUM_THREADS"] = str(threads)
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/info/", timeout=5).status_code == 200:
                    return time.monotonic() - t0
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server did not answer within {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            except ProcessLookupError:
                pass
        self._fh.close()


def info(url: str) -> Dict[str, Any]:
    r = requests.get(url + "/info/", timeout=60)
    r.raise_for_status()
    return r.json()


def summarize(xs: List[float]) -> Dict[str, Any]:
    return {
        "runs": len(xs), "median_s": round(statistics.median(xs), 3), "min_s": round(min(xs), 3),
        "max_s": round(max(xs), 3), "all_s": [round(x, 3) for x in xs],
    }


def benchmark_training(url: str, params: Dict[str, Any], timeout_s: float) -> Dict[str, Any]:
    before = (info(url)["models"].get(MODEL) or {}).get("model_version")
    progress = []  # (seconds since POST, epoch) whenever the epoch changes
    t0 = time.monotonic()
    r = requests.post(f"{url}/train/{MODEL}", json=params, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"POST /train/{MODEL} answered {r.status_code}: {r.text}")
    task_id = r.json()["id"]
    version = before
    stats: Dict[str, Any] = {}
    while True:
        now = time.monotonic() - t0
        i = info(url)
        version = (i["models"].get(MODEL) or {}).get("model_version")
        stats = i["train_stats"].get(MODEL) or {}
        if stats.get("status") == "RUNNING" and (not progress or progress[-1][1] != stats.get("epoch")):
            progress.append((round(now, 2), stats.get("epoch")))
        if version is not None and version != before:
            published = time.monotonic() - t0
            break
        task = requests.get(url + "/train/", timeout=60).json()
        if task.get("id") == task_id and task.get("status") not in ("SUBMITTED", "RUNNING"):
            raise RuntimeError(f"training ended as {task.get('status')} without publishing: {stats}\n{task.get('details')}")
        if now > timeout_s:
            requests.delete(url + "/train/", timeout=60)
            raise RuntimeError(f"no model published within {timeout_s} s (last stats: {stats})")
        time.sleep(1.0)
    iters = [(t, e) for t, e in progress if e and e >= 1]
    per_iter = None
    if len(iters) >= 2 and iters[-1][1] > iters[0][1]:
        per_iter = (iters[-1][0] - iters[0][0]) / (iters[-1][1] - iters[0][1])
    return {
        "request": params,
        "post_to_published_s": round(published, 2),
        "first_iteration_seen_s": iters[0][0] if iters else None,  # data loading and set-up, roughly (1 s polls)
        "seconds_per_iteration": round(per_iter, 3) if per_iter else None,
        "server_total_time_s": stats.get("total_time"),
        "iterations": stats.get("epoch"),
        "published_version": version,
        "labeled": stats.get("labeled"),
        "unlabeled": stats.get("unlabeled"),
        "validation": stats.get("validation"),
        "best_metric": stats.get("best_metric"),
        "progress_samples": len(progress),
    }


def one_infer(url: str, image: str) -> Dict[str, Any]:
    t0 = time.monotonic()
    r = requests.post(f"{url}/infer/{MODEL}", params={"image": image}, timeout=3600)
    wall = time.monotonic() - t0
    if r.status_code != 200:
        raise RuntimeError(f"/infer answered {r.status_code}: {r.text[:500]}")
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    params, size = {}, 0
    for p in MultipartDecoder(r.content, r.headers["content-type"]).parts:
        disp = p.headers[b"Content-Disposition"].decode()
        if 'name="params"' in disp:
            params = json.loads(p.content)
        elif 'name="image"' in disp:
            size = len(p.content)
    return {"wall_s": wall, "server_s": (params.get("latencies") or {}).get("total"), "bytes": size, "params": params}


def benchmark_infer(url: str, image: str, runs: int, studies: Path, out_dir: Path) -> Dict[str, Any]:
    cold = one_infer(url, image)
    warm = []
    for _ in range(runs):
        # a new modification time: the server recomputes instead of answering from its cache of automatic results
        # (kept for click editing), so a warm call times the inference itself with the model loaded
        os.utime(studies / f"{image}.nii.gz")
        warm.append(one_infer(url, image))
    res = {
        "image": image,
        "cold_first_call_s": round(cold["wall_s"], 3),
        "cold_server_s": cold["server_s"],
        "warm_wall": summarize([w["wall_s"] for w in warm]) if warm else None,
        "warm_server": summarize([w["server_s"] for w in warm if w["server_s"] is not None]) if warm else None,
        "response_bytes": cold["bytes"],
        "model": cold["params"].get("model"),
    }
    try:  # describe the image that was segmented
        import nibabel as nib

        img = nib.load(str(studies / f"{image}.nii.gz"))
        res["image_shape"] = list(img.shape)
        res["image_spacing_mm"] = [round(float(z), 3) for z in img.header.get_zooms()[:3]]
    except Exception:
        pass
    return res


def benchmark_strategy(url: str) -> Dict[str, Any]:
    out = {}
    for name in ("first_call_s", "cached_call_s"):
        t0 = time.monotonic()
        r = requests.post(f"{url}/activelearning/dinomix_minority_uncertainty", json={}, timeout=3600)
        out[name] = round(time.monotonic() - t0, 3)
        if r.status_code != 200:
            raise RuntimeError(f"/activelearning answered {r.status_code}: {r.text[:500]}")
        out["picked"] = r.json().get("id")
        out["strategy"] = r.json().get("strategy")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=200, help="training iterations (default 200)")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"], help="training preset (default cpu)")
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--teacher", default="none", help="DINOv3 teacher folder or none (default none)")
    p.add_argument("--infer-runs", type=int, default=5, help="warm /infer calls after the cold one (default 5)")
    p.add_argument("--image", default="real_ct_001", help="datastore id of the image to segment (default real_ct_001)")
    p.add_argument("--no-strategy", action="store_true", help="skip the next-sample (active learning) timing")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the server (default: leave as is)")
    p.add_argument("--work-dir", default=None, help="folder for studies, model and server log (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="training timeout in seconds")
    p.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "app_benchmark.json"))
    args = p.parse_args(argv)
    if args.iterations < 1 or args.infer_runs < 0:
        p.error("--iterations must be >= 1 and --infer-runs >= 0")

    from dinomix_core.studies import prepare_studies

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="dinomix_app_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    studies = prepare_studies(str(work / "studies"))
    model_dir = work / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)  # a fresh model folder: the training starts from scratch
    import torch

    result: Dict[str, Any] = {
        "benchmark": "apps/dinomix through monailabel start_server (127.0.0.1)",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "omp_num_threads": str(args.threads) if args.threads > 0 else os.environ.get("OMP_NUM_THREADS"),
            "loadavg_start": loadavg(),
        },
        "studies": str(studies),
    }
    print(f"work folder: {work}; load average {loadavg()} on {os.cpu_count()} CPUs", flush=True)
    server = Server(studies, model_dir, work / "server.log", free_port(), args.threads, {})
    try:
        result["server_start_s"] = round(server.wait_ready(300), 2)
        print(f"server up in {result['server_start_s']} s at {server.url}", flush=True)
        if MODEL in info(server.url)["models"]:  # the starter model is served before any training
            print(f"inference with the starter model on {args.image}: 1 cold + {args.infer_runs} warm ...", flush=True)
            result["starter_inference"] = benchmark_infer(server.url, args.image, args.infer_runs, studies, work)
        params = {"max_iterations": args.iterations, "preset": args.preset, "device": args.device,
                  "teacher": args.teacher}
        print(f"training {params} ...", flush=True)
        result["training"] = benchmark_training(server.url, params, args.timeout)
        result["machine"]["loadavg_after_training"] = loadavg()
        t = result["training"]
        print(f"  POST -> published model: {t['post_to_published_s']} s; {t['seconds_per_iteration']} s/iteration; "
              f"{t['labeled']} labeled + {t['unlabeled']} unlabeled volumes", flush=True)
        print(f"inference on {args.image}: 1 cold + {args.infer_runs} warm ...", flush=True)
        result["inference"] = benchmark_infer(server.url, args.image, args.infer_runs, studies, work)
        inf = result["inference"]
        warm = inf["warm_wall"]
        print(f"  cold first call {inf['cold_first_call_s']} s" + (
            f"; warm median {warm['median_s']} s (min {warm['min_s']}, max {warm['max_s']})" if warm else ""), flush=True)
        if not args.no_strategy:
            result["next_sample"] = benchmark_strategy(server.url)
            ns = result["next_sample"]
            print(f"next sample (minority uncertainty): first {ns['first_call_s']} s, cached {ns['cached_call_s']} s",
                  flush=True)
        result["machine"]["loadavg_end"] = loadavg()
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
        print(f"benchmark failed: {result['error']}\n--- server log tail ---\n{server.log_tail()}", file=sys.stderr)
    finally:
        server.stop()
        if not args.keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
