"""``dinomix benchmark ssl`` end to end at its smoke scale (SYNTHETIC data), and its Dice scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dinomix_core.benchmark_ssl import dice_per_organ


@pytest.mark.parametrize("pred, ref, expected", [
    ([1, 1, 0, 0], [1, 0, 0, 0], [2 / 3, math.nan]),  # organ 2 absent from both: not scored
    ([2, 0, 0, 0], [0, 0, 0, 0], [math.nan, 0.0]),  # a false positive scores 0
    ([1, 2, 2, 0], [1, 2, 2, 0], [1.0, 1.0]),
])
def test_dice_per_organ(pred, ref, expected):
    got = dice_per_organ(np.array(pred), np.array(ref), num_classes=3)
    assert got == pytest.approx(expected, nan_ok=True)


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
    # --resume keeps finished runs
    again = run_ssl_benchmark(str(tmp_path), seeds=[0], methods=["supervised"], scale="quick", existing=saved)
    assert again["methods"]["supervised"]["runs"] == saved["methods"]["supervised"]["runs"]


def test_real_ct_transductive_check_smoke(tmp_path, one_thread):
    """The transductive real-CT check with 1 iteration: the second real CT is unlabeled, its labels only score."""
    from pathlib import Path

    from dinomix_core.benchmark_ssl import run_real_transductive

    repo = Path(__file__).resolve().parents[1]
    ts = repo.parent / "shared" / "data" / "real_ct" / "ts_example"
    res = run_real_transductive(str(ts), str(repo / "sample_data" / "studies"), tmp_path, seeds=[0], iterations=1,
                                methods=["supervised"], device="cpu")
    assert res["labeled"] == ["real_ct_001.nii.gz"] and res["unlabeled"] == "ct.nii.gz"
    assert len(res["organs_present"]) == 12 and "esophagus" not in res["organs_present"]
    run = res["supervised"]["runs"][0]
    assert set(run["per_organ"]) == set(res["organs_present"]) and 0.0 <= run["mean_dice"] <= 100.0
    with pytest.raises(FileNotFoundError, match="no ct.nii.gz"):
        run_real_transductive(str(tmp_path), str(repo / "sample_data" / "studies"), tmp_path, [0], 1)
