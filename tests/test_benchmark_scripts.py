"""End-to-end runs of the benchmark scripts at toy size (their numbers are not checked here, only that they run
and report every measurement the issues ask for): ``benchmarks/train_speed.py`` spawns one real training
subprocess per mode plus the paired run, on SYNTHETIC phantoms, with the tiny random DINOv3 of conftest;
``benchmarks/real_ct.py`` trains a one-iteration starter from sample_data/ and scores the real ts_example CT;
``benchmarks/cpu_conv_speed.py`` times training and prediction with PyTorch's convolution backends and ours."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import train_speed  # noqa: E402


def test_train_speed_reports_every_mode_ratio_and_target(tiny_teacher, tmp_path, capsys):
    out = tmp_path / "train_speed.json"
    train_speed.main([
        "--rounds", "1", "--iterations", "2", "--warmup", "0", "--labeled", "1", "--unlabeled", "1",
        "--shape", "48", "48", "24", "--patch", "32", "32", "16", "--teacher", tiny_teacher, "--threads", "1",
        "--modes", "supervised", "dinomix_live", "dinomix_cache", "--output", str(out),
    ])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    modes = res["modes"]
    assert set(modes) == {"supervised", "dinomix_live", "dinomix_cache"}  # --modes (supervised_1patch left out)
    # student patches per iteration: supervised takes the DINO-Mix student batch
    assert {m: r["student_patches_per_it"] for m, r in modes.items()} == {
        "supervised": 2, "dinomix_live": 2, "dinomix_cache": 2,
    }
    assert all(len(r["iteration_s"]) == 2 and r["median_s_per_it"] > 0 and r["peak_rss_mb"] > 0 for r in modes.values())
    assert modes["dinomix_cache"]["cache_build_s"] > 0 and modes["dinomix_live"]["cache_build_s"] is None
    assert {"fkd", "unsup", "gt_box", "sup"} <= set(modes["dinomix_cache"]["loss_terms"])
    paired = res["paired"]
    assert paired["pairs"] == 2 and len(paired["supervised_s"]) == len(paired["dinomix_cache_s"]) == 2
    s = res["summary"]
    assert s["cache_over_supervised"] == paired["median_ratio"]
    assert s["pass_cache_over_supervised"] == (s["cache_over_supervised"] <= 1.3)
    assert s["teacher_path_live_s"] > 0 and s["teacher_path_cache_s"] > 0
    assert s["pass_live_over_cache"] == (s["live_over_cache_teacher_path"] >= 10)
    for line in ("(c)/(a)   per iteration", "paired steps", "teacher path live / cache", "peak RSS"):
        assert line in printed
    # the reference mode left out above: half the student batch, supervised
    import argparse

    args = argparse.Namespace(warmup=0, iterations=2, preset="cpu", patch=None)
    ref = train_speed.mode_config("supervised_1patch", args, "none")
    assert (ref.batch_size_unlabeled, ref.use_pic, ref.use_consistency, ref.max_iterations) == (0, False, False, 2)


TS_EXAMPLE = REPO.parent / "shared" / "data" / "real_ct" / "ts_example"


def test_real_ct_scores_a_one_iteration_starter_on_ts_example_and_keeps_it(tmp_path):
    """benchmarks/real_ct.py end to end on the real ts_example CT: the starter recipe (1 iteration, one generated
    phantom at its share) trained from sample_data/, scored per organ, its model file kept."""
    import real_ct

    assert (TS_EXAMPLE / "ct.nii.gz").is_file(), f"the second real CT is missing: {TS_EXAMPLE} (see the README)"
    out = tmp_path / "real_ct.json"
    rc = real_ct.main(["--ts-dir", str(TS_EXAMPLE), "--seeds", "3", "--starter-iterations", "1", "--no-retrain",
                       "--phantoms", "1", "--phantom-share", "0.25", "--threads", "1", "--output", str(out),
                       "--keep-models", str(tmp_path / "models")])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["starter_phantoms"] == 1 and res["starter_phantom_share"] == 0.25
    starter = res["runs"]["3"]["starter"]
    assert len(starter["organs_present"]) == 12 and set(starter["dice"]) == set(starter["organs_present"])
    assert all(0.0 <= d <= 100.0 for d in starter["dice"].values())
    assert abs(starter["mean_dice"] - sum(starter["dice"].values()) / 12) < 0.01
    assert res["summary"]["starter"]["seeds"] == 1
    assert (tmp_path / "models" / "seed3_starter.pt").is_file()
    assert out.with_suffix(".md").read_text().startswith("# Real-CT check of the day-one model")


def test_cpu_conv_speed_times_every_measurement_both_ways(tmp_path):
    import cpu_conv_speed
    import torch

    out = tmp_path / "cpu_conv_speed.json"
    threads = torch.get_num_threads()
    try:
        cpu_conv_speed.main(["--quick", "--output", str(out)])
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    timed = [*res["training_seconds_per_iteration"].values(), res["app_retrain_seconds_per_iteration"],
             *res["prediction_seconds"].values()]
    assert set(res["training_seconds_per_iteration"]) == {"supervised"}  # --quick: one method
    assert set(res["prediction_seconds"]) == {"phantom", "sample_ct"}
    for t in timed:
        assert t["plain"] > 0 and t["onednn"] > 0
        assert abs(t["speed_up"] - t["plain"] / t["onednn"]) < 0.006  # medians stored to 4 decimals
    assert res["command"] == f"python benchmarks/cpu_conv_speed.py --quick --output {out}"
