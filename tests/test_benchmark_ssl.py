"""``dinomix benchmark ssl`` end to end at its smoke scale (SYNTHETIC data), and its Dice scoring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dinomix_core.benchmark_ssl import (NARROW, RECIPE, SCALES, _check_resumable, compare_on_validation, dice_per_organ,
                                        markdown, merge_results, method_config, parse_overrides, results_dict,
                                        with_method_runs)


@pytest.mark.parametrize("pred, ref, expected", [
    ([1, 1, 0, 0], [1, 0, 0, 0], [2 / 3, math.nan]),  # organ 2 absent from both: not scored
    ([2, 0, 0, 0], [0, 0, 0, 0], [math.nan, 0.0]),  # a false positive scores 0
    ([1, 2, 2, 0], [1, 2, 2, 0], [1.0, 1.0]),
])
def test_dice_per_organ(pred, ref, expected):
    got = dice_per_organ(np.array(pred), np.array(ref), num_classes=3)
    assert got == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize("items, expected", [
    (["consistency_weight=1.0"], {"consistency_weight": 1.0}),
    (["confidence_threshold=0.8", "use_pic=false"], {"confidence_threshold": 0.8, "use_pic": False}),
    (["class_weighting=none"], {"class_weighting": "none"}),  # not JSON: kept as a string
    (["pic_box_fraction=[0.5, 0.5, 0.5]"], {"pic_box_fraction": (0.5, 0.5, 0.5)}),
    ([], {}),
])
def test_parse_overrides(items, expected):
    assert parse_overrides(items) == expected


@pytest.mark.parametrize("items, message", [
    (["consistency_weight"], "expects FIELD=VALUE"),
    (["=1"], "expects FIELD=VALUE"),
    (["consistency_wieght=1"], "not a DinoMixConfig field"),
])
def test_parse_overrides_rejects(items, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(items)


@pytest.mark.parametrize("method, warmup", [("dinomix", 0.0), ("dinomix_warmup", 0.2), ("mean_teacher", 0.2),
                                            ("dinomix_no_pic", 0.0), ("supervised", 0.0)])
def test_only_the_mean_teacher_and_the_warmup_ablation_have_a_supervised_warmup(method, warmup):
    assert method_config(method, SCALES["quick"], 0).warmup_fraction == warmup


@pytest.mark.parametrize("method, lcc", [("dinomix", True), ("dinomix_no_lcc", False), ("mean_teacher", False),
                                         ("dinomix_no_pic", True), ("dinomix_warmup", True)])
def test_only_the_mean_teacher_and_the_lcc_ablation_keep_every_component_of_a_pseudo_label(method, lcc):
    """The recipe has pseudo_label_lcc; the mean teacher baseline stays as it was measured."""
    assert method_config(method, SCALES["quick"], 0).pseudo_label_lcc is lcc


@pytest.mark.parametrize("ablation, change", [
    ("dinomix_no_lcc", {"pseudo_label_lcc": False}),
    ("dinomix_no_pic", {"use_pic": False}),
    ("dinomix_no_consistency", {"use_consistency": False}),
    ("dinomix_no_class_weights", {"class_weighting": "none"}),
    ("dinomix_warmup", {"warmup_fraction": 0.2}),
    ("dinomix_no_augment", {"augment": False}),
])
@pytest.mark.parametrize("scale", ["fat_planes_fast", "plain", "full"])
def test_each_ablation_is_the_dinomix_row_with_one_component_changed(ablation, change, scale):
    """Budget and scale settings included: at ``fat_planes_fast`` an ablation trains DINO-Mix's 6000 iterations
    with its aligned pseudo-labels and weight 2.0, as ``--methods dinomix --set FIELD=VALUE`` would."""
    base, abl = (method_config(m, SCALES[scale], 0).to_dict() for m in ("dinomix", ablation))
    assert {k: abl[k] for k in abl if abl[k] != base[k]} == change


@pytest.mark.parametrize("method", ["supervised", "supervised_all", "supervised_no_augment"])
def test_supervised_rows_train_with_the_recipes_class_weights(method):
    """The class weights need no unlabeled data: the supervised baseline has them (the stronger one on validation)."""
    cfg = method_config(method, SCALES["plain"], 0)
    assert (cfg.class_weighting, cfg.use_pic, cfg.use_consistency) == ("distdw", False, False)


def test_overrides_come_last_in_a_method_config():
    """``--set`` wins over the method's own settings and over the scale's budget."""
    sc = SCALES["quick"]
    assert method_config("dinomix", sc, 0).confidence_threshold == 0.8  # the recipe
    cfg = method_config("dinomix", sc, 0, overrides={"confidence_threshold": 0.7, "max_iterations": 6})
    assert (cfg.confidence_threshold, cfg.max_iterations, cfg.use_pic) == (0.7, 6, True)
    assert method_config("supervised", sc, 0, overrides={"use_pic": True}).use_pic
    # the results file states the budget that was run
    assert results_dict({}, sc, "quick", [0], "none", {"max_iterations": 6})["iterations"] == 6
    assert results_dict({}, sc, "quick", [0], "none")["iterations"] == sc.iterations


@pytest.mark.parametrize("method, ramp", [("dinomix", 0.5), ("dinomix_no_lcc", 0.5), ("dinomix_no_pic", 0.5),
                                          ("mean_teacher", 1.0)])
def test_only_the_benchmarks_dinomix_and_its_ablations_ramp_over_half_the_run(method, ramp):
    """The ramp over half the run was measured for the benchmark's DINO-Mix row; the mean teacher and the app's
    ``cpu`` preset keep the whole-run ramp they were measured with."""
    assert method_config(method, SCALES["plain"], 0).rampup_fraction == ramp
    assert RECIPE["rampup_fraction"] == 1.0


def test_dinomix_and_its_ablations_train_longer_at_the_plain_scale():
    """DINO-Mix's own budget at the plain scale, recorded per method; ``--set max_iterations`` sets every run's."""
    sc = SCALES["plain"]
    assert [method_config(m, sc, 0).max_iterations for m in ("supervised", "mean_teacher", "dinomix",
                                                              "dinomix_no_pic")] == [4000, 4000, 9000, 9000]
    assert method_config("dinomix", sc, 0, overrides={"max_iterations": 10}).max_iterations == 10
    assert method_config("dinomix", SCALES["quick"], 0).max_iterations == SCALES["quick"].iterations
    runs = {"supervised": [], "dinomix": []}
    res = results_dict(runs, sc, "plain", [0], "none")
    assert (res["iterations"], res["iterations_by_method"]) == (4000, {"dinomix": 9000})
    assert "iterations_by_method" not in results_dict(runs, sc, "plain", [0], "none", {"max_iterations": 10})
    assert "iterations_by_method" not in results_dict({"supervised": []}, sc, "plain", [0], "none")


def test_the_fast_scale_keeps_the_plain_phantoms_with_a_smaller_patch_and_budget():
    d, f = SCALES["plain"], SCALES["fast"]
    keep = ("n_labeled", "n_unlabeled", "n_validation", "n_test", "shape", "spacing")
    assert [getattr(f, k) for k in keep] == [getattr(d, k) for k in keep]
    assert (f.patch, f.val_interval) == ((32, 32, 16), 250)
    assert [method_config(m, f, 0).max_iterations for m in ("supervised", "supervised_all", "mean_teacher",
                                                             "dinomix")] == [3000, 3000, 3000, 6000]
    assert method_config("dinomix", f, 0).patch_size == (32, 32, 16)


@pytest.mark.parametrize("method, labeled, unlabeled", [
    ("supervised", [("l.nii", "l_lab.nii")], ["u.nii"]),
    ("supervised_all", [("l.nii", "l_lab.nii"), ("u.nii", "u_lab.nii")], []),
    ("dinomix", [("l.nii", "l_lab.nii")], ["u.nii"]),
])
def test_training_sets_give_only_supervised_all_the_hidden_labels(method, labeled, unlabeled):
    from dinomix_core.benchmark_ssl import training_sets

    data = {"labeled": [("l.nii", "l_lab.nii")], "unlabeled": [("u.nii", "u_lab.nii")]}
    assert training_sets(method, data) == (labeled, unlabeled)
    assert data == {"labeled": [("l.nii", "l_lab.nii")], "unlabeled": [("u.nii", "u_lab.nii")]}  # not changed


def test_the_coarse_scale_renders_the_plain_field_of_view_at_coarser_voxels():
    d, c = SCALES["plain"], SCALES["coarse"]
    keep = ("n_labeled", "n_unlabeled", "n_validation", "n_test")
    assert [getattr(c, k) for k in keep] == [getattr(d, k) for k in keep]
    fov = lambda s: [n * mm for n, mm in zip(s.shape, s.spacing)]  # noqa: E731
    assert fov(c) == fov(d) == [288.0, 288.0, 192.0]
    assert (c.shape, c.patch, c.val_interval) == ((48, 48, 24), (32, 32, 16), 500)
    assert [method_config(m, c, 0).max_iterations for m in ("supervised", "supervised_all", "mean_teacher",
                                                             "dinomix")] == [4000, 4000, 4000, 6000]
    cfg = method_config("supervised", c, 0)
    assert (cfg.target_spacing, cfg.val_interval) == ((6.0, 6.0, 8.0), 500)


def test_ssl_set_errors_exit_2_and_write_nothing(tmp_path, capsys):
    from dinomix_core import cli

    out = tmp_path / "out"
    rc = cli.main(["benchmark", "ssl", "--quick", "--output", str(out), "--set", "nope=1"])
    assert rc == 2 and "--set nope: not a DinoMixConfig field" in capsys.readouterr().err
    rc = cli.main(["benchmark", "ssl", "--quick", "--output", str(out), "--set", "confidence_threshold=7"])
    assert rc == 2 and "confidence_threshold" in capsys.readouterr().err
    rc = cli.main(["benchmark", "ssl", "--quick", "--output", str(out), "--workers", "0"])
    assert rc == 2 and "workers must be at least 1" in capsys.readouterr().err
    rc = cli.main(["benchmark", "ssl", "--scale", "fast", "--output", str(out), "--methods", "nope"])
    assert rc == 2 and "unknown method(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["benchmark", "ssl", "--scale", "huge", "--output", str(out)])
    assert not out.exists()


_MADE = {"methods": {}, "scale": "plain", "teacher": "none", "recipe": {k: list(v) if isinstance(v, tuple) else v
                                                                          for k, v in RECIPE.items()}, "overrides": {}}


def test_the_fat_planes_fast_scale_keeps_the_fat_plane_phantoms_and_patch_with_smaller_budgets():
    import dataclasses

    f, q = SCALES["fat_planes"], SCALES["fat_planes_fast"]
    assert dataclasses.replace(q, iterations=f.iterations, method_iterations=f.method_iterations,
                               method_settings=f.method_settings) == f
    # the pseudo-label weight adopted at this scale by its rule, the alignment at both
    assert q.settings_of("dinomix") == {"pseudo_label_alignment": True, "consistency_weight": 2.0}
    assert f.settings_of("dinomix") == {"pseudo_label_alignment": True}
    assert [method_config(m, q, 0).max_iterations for m in ("supervised", "supervised_all", "mean_teacher",
                                                             "dinomix")] == [3000, 3000, 3000, 6000]


@pytest.mark.parametrize("scale, method, overrides, aligned", [
    ("fat_planes", "dinomix", None, True),  # adopted at the fat-plane scales
    ("fat_planes_fast", "dinomix", None, True),
    ("fat_planes", "mean_teacher", None, False),  # the scale's settings are DINO-Mix's only
    ("fat_planes", "dinomix_no_pic", None, True),  # and DINO-Mix's ablations
    ("plain", "dinomix", None, False),
    ("fat_planes", "dinomix", {"pseudo_label_alignment": False}, False),  # --set wins
    ("plain", "mean_teacher", {"pseudo_label_alignment": True}, True),
])
def test_a_scale_s_method_settings_apply_to_that_method_under_the_overrides(scale, method, overrides, aligned):
    assert method_config(method, SCALES[scale], 0, overrides=overrides).pseudo_label_alignment is aligned


def test_results_record_the_scale_s_method_settings_and_resume_checks_them():
    existing = results_dict({"dinomix": [_scored(0, 30.0)]}, SCALES["fat_planes_fast"], "fat_planes_fast", [0], "none")
    assert existing["method_settings"] == {"dinomix": {"pseudo_label_alignment": True, "consistency_weight": 2.0}}
    assert "at this scale dinomix pseudo_label_alignment=true, consistency_weight=2.0" in markdown(existing)
    assert "method_settings" not in results_dict({}, SCALES["plain"], "plain", [0], "none")
    _check_resumable(existing, "fat_planes_fast", "none", {})
    with pytest.raises(ValueError, match=r"made differently \(method_settings "):
        _check_resumable({k: v for k, v in existing.items() if k != "method_settings"}, "fat_planes_fast", "none", {})


def test_table_rows_follow_the_methods_order_whatever_order_the_runs_finished_in():
    from dinomix_core.benchmark_ssl import aggregate

    runs = {"zzz_extra": [_scored(0, 1.0)], "dinomix": [_scored(0, 30.0)], "supervised_all": [_scored(0, 40.0)],
            "supervised": [_scored(0, 20.0)], "aaa_extra": [_scored(0, 2.0)], "mean_teacher": []}
    assert list(aggregate(runs)) == ["supervised", "supervised_all", "dinomix", "aaa_extra", "zzz_extra"]


@pytest.mark.parametrize("jobs, order", [
    # the semi-supervised runs first, DINO-Mix's larger budget before the mean teacher's; seeds keep their order
    ([("supervised", 0), ("mean_teacher", 0), ("dinomix", 0), ("supervised_all", 0), ("dinomix", 1)],
     [("dinomix", 0), ("dinomix", 1), ("mean_teacher", 0), ("supervised", 0), ("supervised_all", 0)]),
    ([("supervised_all", 1), ("supervised", 1)], [("supervised_all", 1), ("supervised", 1)]),
])
def test_parallel_runs_start_longest_first(jobs, order):
    from dinomix_core.benchmark_ssl import job_order

    assert job_order(jobs, SCALES["fat_planes_fast"]) == order


@pytest.mark.parametrize("changed, differs", [
    ({}, None),
    ({"scale": "quick"}, "scale"),
    ({"teacher": "dinov3"}, "teacher"),
    ({"recipe": dict(_MADE["recipe"], confidence_threshold=0.9)}, "recipe"),
    ({"overrides": {"warmup_fraction": 0.0}}, "overrides"),
    ({"methods": None, "scale": "quick"}, None),  # only a real-CT check in the file: nothing to average with
    # each method's budget: DINO-Mix trains 9000 iterations at the plain scale, the baselines 4000
    ({"iterations": 4000, "methods": {"supervised": {}}}, None),
    ({"iterations": 4000, "iterations_by_method": {"dinomix": 9000}, "methods": {"dinomix": {}}}, None),
    ({"iterations": 4000, "iterations_by_method": {"dinomix": 6000}, "methods": {"dinomix": {}}}, "budget"),
    ({"iterations": 4000, "methods": {"dinomix": {}}}, "budget"),  # a file from before the per-method budget
    ({"iterations": 6000, "methods": {"supervised": {}}}, "budget"),
])
def test_resume_refuses_runs_made_differently(changed, differs):
    existing = {k: v for k, v in {**_MADE, **changed}.items() if v is not None}
    if differs is None:
        _check_resumable(existing, "plain", "none", {})
    else:
        with pytest.raises(ValueError, match=f"made differently \\({differs} "):
            _check_resumable(existing, "plain", "none", {})


def test_ssl_benchmark_quick_run_writes_every_result(tmp_path, one_thread):
    """``dinomix benchmark ssl --quick`` end to end on tiny SYNTHETIC data: real training, selection, scoring."""
    import json

    from dinomix_core.benchmark_ssl import run_ssl_benchmark

    with pytest.raises(ValueError, match="unknown method"):
        run_ssl_benchmark(str(tmp_path / "bad"), seeds=[0], methods=["nope"], scale="quick")
    res = run_ssl_benchmark(str(tmp_path), seeds=[0], methods=["supervised", "supervised_all", "dinomix"],
                            scale="quick", device="cpu")
    saved = json.loads((tmp_path / "ssl_benchmark.json").read_text())
    assert saved["methods"].keys() == res["methods"].keys() == {"supervised", "supervised_all", "dinomix"}
    for m in saved["methods"].values():
        assert 0.0 <= m["mean_dice"] <= 100.0 and len(m["per_organ"]) == 13 and m["seeds"] == [0]
        run = m["runs"][0]
        assert [p["iteration"] for p in run["validation_curve"]] == [2, 4] and run["selected_iteration"] in (2, 4)
    assert saved["headroom"] == {"supervised_labeled": res["methods"]["supervised"]["mean_dice"],
                                 "supervised_all": res["methods"]["supervised_all"]["mean_dice"]}
    # pseudo-label precision and recall only for the semi-supervised method, at every validation
    assert saved["methods"]["supervised"]["runs"][0]["pseudo_labels"] == []
    curve = saved["methods"]["dinomix"]["runs"][0]["pseudo_labels"]
    assert [c["iteration"] for c in curve] == [2, 4] and set(curve[0]["precision"]) == set(curve[0]["recall"])
    assert "SYNTHETIC" in (tmp_path / "ssl_benchmark.md").read_text()
    assert (tmp_path / "ssl_benchmark_per_organ.png").stat().st_size > 1000
    assert saved["overrides"] == {} and saved["recipe"]["confidence_threshold"] == 0.8
    assert saved["wall_seconds"] >= sum(m["runs"][0]["train_seconds"] for m in saved["methods"].values()) - 3
    # --resume keeps finished runs, and only those made the same way (here: another --set)
    again = run_ssl_benchmark(str(tmp_path), seeds=[0], methods=["supervised"], scale="quick", existing=saved)
    assert again["methods"]["supervised"]["runs"] == saved["methods"]["supervised"]["runs"]
    with pytest.raises(ValueError, match=r"made differently \(overrides "):
        run_ssl_benchmark(str(tmp_path), seeds=[0], methods=["supervised"], scale="quick", existing=saved,
                          overrides={"confidence_threshold": 0.7})
    assert json.loads((tmp_path / "ssl_benchmark.json").read_text()) == json.loads(json.dumps(again))


def test_ssl_benchmark_records_its_overrides(tmp_path, one_thread, capsys):
    import json

    from dinomix_core.benchmark_ssl import run_ssl_benchmark

    run_ssl_benchmark(str(tmp_path), seeds=[0], methods=["supervised"], scale="quick", device="cpu",
                      overrides={"max_iterations": 2, "pic_box_fraction": (0.5, 0.5, 0.5)})
    # progress on stderr: the start, each validation, the test score
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[ssl] supervised seed 0")]
    assert lines[0] == "[ssl] supervised seed 0: starts, 2 iterations"
    assert lines[1].startswith("[ssl] supervised seed 0: iteration 2/2, validation Dice ") and "(best " in lines[1]
    assert lines[2].startswith("[ssl] supervised seed 0: test mean Dice ") and len(lines) == 3
    saved = json.loads((tmp_path / "ssl_benchmark.json").read_text())
    assert saved["overrides"] == {"max_iterations": 2, "pic_box_fraction": [0.5, 0.5, 0.5]}
    assert [p["iteration"] for p in saved["methods"]["supervised"]["runs"][0]["validation_curve"]] == [2]
    assert "`--set` max_iterations=2, pic_box_fraction=[0.5, 0.5, 0.5]" in (tmp_path / "ssl_benchmark.md").read_text()
    # a row assembled from runs at another budget names it, in the heading and in its row
    from dinomix_core.benchmark_ssl import markdown

    md = markdown(dict(saved, iterations_by_method={"supervised": 6}))
    assert "2 iterations (supervised: 6), model selected" in md and "| supervised (6 iterations) | " in md
    # notes on how a row was made reach the markdown; none, no section
    assert "Notes:" not in md
    md = markdown(dict(saved, notes={"supervised_all": "without class weights"}))
    assert md.split("\n| supervised | ")[1].split("\n")[2:4] == ["Notes:", "- supervised_all: without class weights"]


def test_real_ct_transductive_check_smoke(tmp_path, one_thread):
    """The transductive real-CT check with 1 iteration: the second real CT is unlabeled, its labels only score."""
    from pathlib import Path

    from dinomix_core.benchmark_ssl import _real_markdown, run_real_transductive

    repo = Path(__file__).resolve().parents[1]
    ts = repo.parent / "shared" / "data" / "real_ct" / "ts_example"
    updates = []
    res = run_real_transductive(str(ts), str(repo / "sample_data" / "studies"), tmp_path, seeds=[0], iterations=1,
                                methods=["supervised"], device="cpu", on_update=lambda r: updates.append(dict(r)))
    assert len(updates) == 1 and updates[0]["supervised"]["runs"] == res["supervised"]["runs"]
    assert res["labeled"] == ["real_ct_001.nii.gz"] and res["unlabeled"] == "ct.nii.gz"
    assert len(res["organs_present"]) == 12 and "esophagus" not in res["organs_present"]
    run = res["supervised"]["runs"][0]
    assert set(run["per_organ"]) == set(res["organs_present"]) and 0.0 <= run["mean_dice"] <= 100.0
    assert set(res["supervised"]["per_organ"]) == set(res["organs_present"])
    assert "| supervised | " in _real_markdown({"real_transductive": res})
    with pytest.raises(FileNotFoundError, match="no ct.nii.gz"):
        run_real_transductive(str(tmp_path), str(repo / "sample_data" / "studies"), tmp_path, [0], 1)
    for bad in ("supervised_all", "nope"):  # refused before any training
        with pytest.raises(ValueError, match="not a method for the real-CT check"):
            run_real_transductive(str(ts), str(repo / "sample_data" / "studies"), tmp_path / "x", [0], 1, [bad])
    assert not (tmp_path / "x").exists()


def test_without_a_teacher_dinomix_without_pic_is_the_mean_teacher_on_dinomixs_recipe(tmp_path, one_thread):
    """With teacher ``none`` the ``dinomix_no_pic`` ablation trains exactly as ``mean_teacher`` without its
    supervised warm-up and with DINO-Mix's largest-component pseudo-labels and half-run ramp (FKD has nothing to
    distil): the two differ in nothing else."""
    from dinomix_core import benchmark_ssl as b

    sc = b.SCALES["quick"]
    data = b.write_dataset(tmp_path / "data", sc)
    mt = b.run_method("mean_teacher", 0, data, sc, tmp_path, device="cpu",
                      overrides={"warmup_fraction": 0.0, "pseudo_label_lcc": True, "rampup_fraction": 0.5})
    no_pic = b.run_method("dinomix_no_pic", 0, data, sc, tmp_path, device="cpu")
    assert mt["per_organ"] == no_pic["per_organ"] and mt["validation_curve"] == no_pic["validation_curve"]
    assert mt["pseudo_labels"] == no_pic["pseudo_labels"] != []


def test_real_summary_averages_over_seeds():
    from dinomix_core.benchmark_ssl import real_summary

    rows = [{"seed": 0, "mean_dice": 25.0, "per_organ": {"liver": 50.0, "spleen": 0.0}},
            {"seed": 1, "mean_dice": 40.0, "per_organ": {"liver": 70.0, "spleen": 10.0}}]
    assert real_summary(rows) == {"mean_dice": 32.5, "mean_dice_std": 7.5, "per_organ": {"liver": 60.0, "spleen": 5.0},
                                  "runs": rows}


def test_workers_train_runs_in_parallel_processes_with_the_serial_results(tmp_path, one_thread):
    """``--workers 2``: each run in its own process gives exactly the run trained in this process on as many
    threads; the results file holds every run in seed order; a failed run raises after the others are kept."""
    import json
    import os

    import torch

    from dinomix_core.benchmark_ssl import run_ssl_benchmark

    par = run_ssl_benchmark(str(tmp_path / "par"), seeds=[1, 0], methods=["supervised", "dinomix"], scale="quick",
                            device="cpu", workers=2)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # the workers' threads
    ser = run_ssl_benchmark(str(tmp_path / "ser"), seeds=[1, 0], methods=["supervised", "dinomix"], scale="quick",
                            device="cpu")
    saved = json.loads((tmp_path / "par" / "ssl_benchmark.json").read_text())
    for m in ("supervised", "dinomix"):
        assert saved["methods"][m]["seeds"] == [0, 1]
        for p, s in zip(par["methods"][m]["runs"], ser["methods"][m]["runs"]):
            assert (p["seed"], p["per_organ"], p["validation_curve"], p["pseudo_labels"]) == \
                (s["seed"], s["per_organ"], s["validation_curve"], s["pseudo_labels"])
    with pytest.raises(RuntimeError):  # every run fails in its worker: no device "nope"
        run_ssl_benchmark(str(tmp_path / "bad"), seeds=[0], methods=["supervised", "dinomix"], scale="quick",
                          device="nope", workers=2)


def _run(seed, val, test=30.0, small=5.0):
    """A benchmark run with validation curve ``val`` (its best is the rule's quantity)."""
    return {"seed": seed, "mean_dice": test, "small_organ_dice": small,
            "selected_iteration": 500 * (1 + val.index(max(val))),
            "validation_curve": [{"iteration": 500 * (i + 1), "val_mean_dice": v} for i, v in enumerate(val)]}


@pytest.mark.parametrize("base, cand, met, threshold, above", [
    # best validation per seed 30/31/32 (mean 31): the candidate needs >= 31.3 and 2 seeds above
    ([[30.0], [31.0], [32.0]], [[30.5], [31.5], [32.0]], True, 31.3, 2),  # mean 31.33
    ([[30.0], [31.0], [32.0]], [[29.0], [31.2], [33.7]], True, 31.3, 2),  # mean 31.3: exactly at the threshold
    ([[30.0], [31.0], [32.0]], [[29.0], [30.0], [35.0]], False, 31.3, 1),  # mean 31.33 but one seed above
    ([[30.0], [31.0], [32.0]], [[30.2], [31.2], [32.2]], False, 31.3, 3),  # every seed above, mean 0.2 higher
    ([[30.0, 25.0], [31.0], [32.0]], [[29.5], [31.1], [32.5]], False, 31.3, 2),  # the best point counts, not the last
])
def test_compare_on_validation_applies_the_pre_registered_rule(base, cand, met, threshold, above):
    out = compare_on_validation([_run(s, v) for s, v in enumerate(base)], [_run(s, v) for s, v in enumerate(cand)])
    assert out["rule"]["met"] is met
    assert out["rule"]["threshold"] == pytest.approx(threshold)
    assert out["rule"]["seeds_above"] == above
    assert out["seeds"] == [0, 1, 2]


def test_compare_on_validation_reports_test_numbers_beside_the_rule():
    base = [_run(0, [30.0], test=34.0, small=7.0), _run(1, [31.0], test=36.0, small=9.0)]
    cand = [_run(1, [20.0, 33.0], test=30.0, small=3.0), _run(0, [32.0], test=32.0, small=5.0)]  # any order
    out = compare_on_validation(base, cand, margin=1.0, min_seeds_above=2)
    assert out["rule"] == {"val_mean_baseline": 30.5, "val_mean_candidate": 32.5, "threshold": 31.5,
                           "seeds_above": 2, "min_seeds_above": 2, "met": True}
    assert out["test"] == {"test_baseline": [35.0, 1.0], "test_candidate": [31.0, 1.0],
                           "small_baseline": [8.0, 1.0], "small_candidate": [4.0, 1.0]}
    assert out["runs"][1]["selected_candidate"] == 1000


@pytest.mark.parametrize("base_seeds, cand_seeds, kwargs, message", [
    ([0, 1, 2], [0, 1], {}, "pairs runs by seed"),  # never judged on part of its runs
    ([0, 1], [0, 0], {}, "appears twice"),
    ([0, 1], [0, 1], {"min_seeds_above": 3}, "min_seeds_above"),
    ([], [], {}, "pairs runs by seed"),
])
def test_compare_on_validation_rejects(base_seeds, cand_seeds, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_on_validation([_run(s, [30.0]) for s in base_seeds], [_run(s, [30.0]) for s in cand_seeds], **kwargs)


def test_ssl_rule_script_exit_status_and_summary(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ssl_rule

    def results(runs, overrides):
        return {"overrides": overrides, "methods": {"dinomix": {"runs": runs}}}

    base = tmp_path / "base.json"
    base.write_text(json.dumps(results([_run(0, [30.0]), _run(1, [31.0])], {})))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(results([_run(0, [31.0]), _run(1, [32.0])], {"rampup_fraction": 0.5})))
    bad.write_text(json.dumps(results([_run(0, [31.0]), _run(1, [32.0])], {"rampup_fraction": 0.4})))
    out = tmp_path / "summary.json"
    common = ["--baseline", str(base), "--expect-overrides", '{"rampup_fraction": 0.5}']
    assert ssl_rule.main(common + ["--runs", str(good), "--output", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["rule"]["met"] is True and summary["run_files"] == [str(good)]
    assert "MET" in capsys.readouterr().out
    assert ssl_rule.main(common + ["--method", "mean_teacher", "--runs", str(good)]) == 2
    assert "has no 'mean_teacher'" in capsys.readouterr().err
    assert ssl_rule.main(common + ["--runs", str(good), "--margin", "2"]) == 1  # mean +1.0 < 2
    assert ssl_rule.main(common + ["--runs", str(bad), "--output", str(tmp_path / "no.json")]) == 2
    assert "not {'rampup_fraction': 0.5}" in capsys.readouterr().err
    assert not (tmp_path / "no.json").exists()


def _scored(seed, test, small=5.0):
    from dinomix_core.labels import ORGANS

    return {**_run(seed, [30.0], test=test, small=small), "per_organ": {o: test for o in ORGANS}}


def test_with_method_runs_replaces_one_row_and_keeps_the_rest():
    res = results_dict({"supervised": [_scored(0, 20.0), _scored(1, 22.0)],
                        "dinomix": [_scored(0, 30.0), _scored(1, 32.0)]}, SCALES["plain"], "plain", [0, 1], "none")
    out = with_method_runs(res, "dinomix", [_scored(1, 35.0, small=9.0), _scored(0, 33.0, small=7.0)], "ramp 0.5",
                           iterations=9000)
    assert out["methods"]["dinomix"]["mean_dice"] == 34.0 and out["methods"]["dinomix"]["mean_dice_std"] == 1.0
    assert out["methods"]["dinomix"]["small_organ_dice"] == 8.0
    assert out["methods"]["supervised"] == res["methods"]["supervised"]
    assert out["notes"] == {"dinomix": "ramp 0.5"} and out["iterations_by_method"] == {"dinomix": 9000}
    assert res["methods"]["dinomix"]["mean_dice"] == 31.0  # the input is not modified
    sup = with_method_runs(res, "supervised", [_scored(0, 24.0), _scored(1, 26.0)], "again")
    assert sup["headroom"]["supervised_labeled"] == 25.0


@pytest.mark.parametrize("method, seeds, message", [
    ("mean_teacher", [0, 1], "no row 'mean_teacher'"),
    ("dinomix", [0], "has seeds"),
])
def test_with_method_runs_rejects(method, seeds, message):
    res = results_dict({"dinomix": [_scored(0, 30.0), _scored(1, 32.0)]}, SCALES["plain"], "plain", [0, 1], "none")
    with pytest.raises(ValueError, match=message):
        with_method_runs(res, method, [_scored(s, 33.0) for s in seeds], "note")


def test_ssl_rule_adopt_rewrites_the_results_only_when_the_rule_is_met(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    from dinomix_core.benchmark_ssl import write_results

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import ssl_rule

    res = results_dict({"supervised": [_scored(0, 20.0), _scored(1, 22.0)],
                        "dinomix": [_scored(0, 30.0), _scored(1, 32.0)]}, SCALES["plain"], "plain", [0, 1], "none")
    write_results(tmp_path, res)
    before = (tmp_path / "ssl_benchmark.json").read_text()
    cand = tmp_path / "cand.json"
    better = [{**_scored(0, 33.0), "validation_curve": [{"iteration": 500, "val_mean_dice": 31.0}]},
              {**_scored(1, 35.0), "validation_curve": [{"iteration": 500, "val_mean_dice": 31.0}]}]
    cand.write_text(json.dumps({"overrides": {}, "methods": {"dinomix": {"runs": better}}}))
    args = ["--baseline", str(tmp_path / "ssl_benchmark.json"), "--runs", str(cand), "--adopt", str(tmp_path)]
    assert ssl_rule.main(args) == 2 and "--adopt needs --note" in capsys.readouterr().err
    assert ssl_rule.main(args + ["--note", "n", "--margin", "2"]) == 1  # +1.0 < 2: nothing changes
    assert (tmp_path / "ssl_benchmark.json").read_text() == before
    assert ssl_rule.main(args + ["--note", "ramp 0.5"]) == 0
    out = json.loads((tmp_path / "ssl_benchmark.json").read_text())
    assert out["methods"]["dinomix"]["mean_dice"] == 34.0 and out["notes"] == {"dinomix": "ramp 0.5"}
    assert "dinomix: ramp 0.5" in (tmp_path / "ssl_benchmark.md").read_text()


def test_the_fat_planes_scale_is_the_plain_one_on_phantoms_with_fat_planes(tmp_path):
    import dataclasses

    from dinomix_core.phantoms import FAT_PLANES

    d, f = SCALES["plain"], SCALES["fat_planes"]
    assert dataclasses.replace(f, fat_planes=(), method_settings=()) == d and f.fat_planes == FAT_PLANES
    assert d.variations()["labeled"].fat_planes == () and f.variations()["other"].fat_planes == FAT_PLANES
    assert f.variations()["labeled"] == dataclasses.replace(NARROW, fat_planes=FAT_PLANES)
    res = results_dict({}, f, "fat_planes", [0], "none")
    assert res["data"]["fat_planes_mm"] == {"esophagus": 4.0, "right adrenal gland": 6.0, "left adrenal gland": 6.0}
    assert "fat_planes_mm" not in results_dict({}, d, "plain", [0], "none")["data"]


def _fat_planes(runs):
    return results_dict(runs, SCALES["fat_planes"], "fat_planes", [], "none")


def test_merge_results_averages_each_row_over_the_seeds_it_has():
    from dinomix_core.benchmark_ssl import markdown

    a = _fat_planes({"supervised": [_scored(0, 20.0), _scored(1, 22.0)], "dinomix": [_scored(0, 30.0, small=6.0)]})
    b = _fat_planes({"dinomix": [_scored(1, 34.0, small=10.0)], "mean_teacher": [_scored(1, 25.0)],
                     "supervised_all": [_scored(1, 40.0)]})
    before = json.loads(json.dumps(a))
    out = merge_results([a, b], sources=["A", "B"])
    assert a == before  # the parts are not modified
    assert list(out["methods"]) == ["supervised", "supervised_all", "mean_teacher", "dinomix"]  # METHODS order
    d = out["methods"]["dinomix"]
    assert (d["mean_dice"], d["mean_dice_std"], d["small_organ_dice"], d["seeds"]) == (32.0, 2.0, 8.0, [0, 1])
    assert out["methods"]["mean_teacher"]["seeds"] == [1] and out["seeds"] == [0, 1]
    assert out["headroom"] == {"supervised_labeled": 21.0, "supervised_all": 40.0}
    assert out["iterations"] == 4000 and out["iterations_by_method"] == {"dinomix": 9000}
    assert out["data"]["fat_planes_mm"] == a["data"]["fat_planes_mm"] and out["command"].endswith("--merge A B")
    assert [p["source"] for p in out["merged_from"]] == ["A", "B"]
    assert out["merged_from"][0]["runs"] == ["dinomix 0", "supervised 0", "supervised 1"]
    md = markdown(out)
    assert "| dinomix (9000 iterations) | 32.0 +- 2.0 | 8.0 +- 2.0 |" in md
    assert "| mean_teacher (seed 1) | 25.0 | " in md and "| supervised | 21.0 +- 1.0 |" in md  # no spread of one seed


@pytest.mark.parametrize("change, message", [
    (lambda a, b: [a], "two or more results files"),
    (lambda a, b: [a, _fat_planes({"dinomix": [_scored(0, 31.0)]})], "dinomix seed 0: different runs in part 1 and"),
    (lambda a, b: [a, results_dict({"mean_teacher": [_scored(1, 25.0)]}, SCALES["plain"], "plain", [],
                                   "none")], r"part 2 was made differently from part 1 \(scale, data, "
                                             r"method_settings\)"),
    (lambda a, b: [a, dict(b, recipe=dict(b["recipe"], confidence_threshold=0.9))], r"differently .*\(recipe\)"),
    (lambda a, b: [a, dict(b, overrides={"warmup_fraction": 0.1})], r"differently .*\(overrides\)"),
    # DINO-Mix without the scale's settings (e.g. a part run before they joined it) is another row
    (lambda a, b: [a, {k: v for k, v in b.items() if k != "method_settings"}], r"differently .*\(method_settings\)"),
    (lambda a, b: [a, dict(b, iterations_by_method={"dinomix": 6000})],
     "dinomix trained 6000 iterations in part 2, 9000 elsewhere"),
    (lambda a, b: [dict(a, real_transductive={"x": 1}), dict(b, real_transductive={"x": 2})], "more than one"),
    (lambda a, b: [a, {"real_transductive": {"x": 1}}], r"no phantom runs to merge in \['part 2'\]"),
])
def test_merge_results_rejects(change, message):
    a = _fat_planes({"dinomix": [_scored(0, 30.0)]})
    b = _fat_planes({"dinomix": [_scored(1, 34.0)], "mean_teacher": [_scored(1, 25.0)]})
    with pytest.raises(ValueError, match=message):
        merge_results(change(a, b))


def test_ssl_merge_command_writes_the_merged_file_and_never_overwrites_another(tmp_path, capsys):
    from dinomix_core import cli
    from dinomix_core.benchmark_ssl import write_results

    a = _fat_planes({"supervised": [_scored(0, 20.0)], "dinomix": [_scored(0, 30.0)]})
    b = _fat_planes({"supervised": [_scored(1, 22.0)], "dinomix": [_scored(1, 34.0)]})
    write_results(tmp_path / "A", a)
    write_results(tmp_path / "B", b)
    A, B, C = (str(tmp_path / x) for x in "ABC")
    assert cli.main(["benchmark", "ssl", "--merge", A, B, "--output", C]) == 0
    merged = json.loads((tmp_path / "C" / "ssl_benchmark.json").read_text())
    assert merged == json.loads(json.dumps(merge_results([a, b], sources=[A, B])))
    assert "| dinomix (9000 iterations) | 32.0 +- 2.0 |" in (tmp_path / "C" / "ssl_benchmark.md").read_text()
    capsys.readouterr()
    # an existing results file that is not one of the merged ones is refused and left as it is
    write_results(tmp_path / "D", b)
    kept = (tmp_path / "D" / "ssl_benchmark.json").read_text()
    assert cli.main(["benchmark", "ssl", "--merge", A, C, "--output", str(tmp_path / "D")]) == 2
    assert "is not one of the merged files" in capsys.readouterr().err
    assert (tmp_path / "D" / "ssl_benchmark.json").read_text() == kept
    assert cli.main(["benchmark", "ssl", "--merge", A, str(tmp_path / "nope"), "--output", C]) == 2
    assert "no results file" in capsys.readouterr().err
    # a run kept in two files (C holds A's) counts once; merging into one of the parts is allowed
    assert cli.main(["benchmark", "ssl", "--merge", A, C, "--output", C]) == 0
    assert json.loads((tmp_path / "C" / "ssl_benchmark.json").read_text())["methods"] == merged["methods"]
    assert cli.main(["benchmark", "ssl", "--merge", A, str(tmp_path / "B" / "ssl_benchmark.json"), "--output", A]) == 0
    assert json.loads((tmp_path / "A" / "ssl_benchmark.json").read_text())["methods"]["dinomix"]["seeds"] == [0, 1]
    # two different runs of one method and seed are refused
    write_results(tmp_path / "E", _fat_planes({"dinomix": [_scored(1, 35.0)]}))
    assert cli.main(["benchmark", "ssl", "--merge", B, str(tmp_path / "E"), "--output", str(tmp_path / "F")]) == 2
    assert "dinomix seed 1: different runs in" in capsys.readouterr().err and not (tmp_path / "F").exists()


def test_the_cli_offers_every_scale_and_runs_the_fat_plane_table_by_default(capsys):
    from dinomix_core import cli
    from dinomix_core.benchmark_ssl import DEFAULT_SCALE

    parser = cli.build_parser()
    assert parser.parse_args(["benchmark", "ssl"]).scale == DEFAULT_SCALE == "fat_planes_fast"
    assert [parser.parse_args(["benchmark", "ssl", "--scale", name]).scale for name in SCALES] == list(SCALES)
    with pytest.raises(SystemExit):  # the plain scale's old name
        parser.parse_args(["benchmark", "ssl", "--scale", "default"])
    assert "invalid choice: 'default'" in capsys.readouterr().err


def test_the_gpu_scale_is_the_fat_plane_table_on_finer_phantoms():
    """``--full`` keeps the fat-plane scales' phantoms, protocols, splits and pseudo-label alignment."""
    d, f = SCALES["fat_planes"], SCALES["full"]
    keep = ("n_labeled", "n_unlabeled", "n_validation", "n_test", "fat_planes", "method_settings")
    assert [getattr(f, k) for k in keep] == [getattr(d, k) for k in keep]
    assert (f.shape, f.spacing, f.patch) == ((96, 96, 48), (3.0, 3.0, 4.0), (96, 96, 48))
    assert method_config("dinomix", f, 0).pseudo_label_alignment is True
