"""Unit tests of dinomix_core.service: the typed training request, the validation split, the stats reader."""

from __future__ import annotations

import json

import pytest

from dinomix_core.service import TrainRequest, read_train_stats, split_validation


@pytest.mark.parametrize("request_, expected", [
    ({}, {}),
    ({"max_epochs": "12"}, {"max_iterations": 12}),  # the stock plugin's name
    ({"max_epochs": 3, "max_iterations": 9}, {"max_iterations": 9}),
    ({"use_pic": "false", "use_fkd": 0, "warm_start": "Yes"}, {"use_pic": False, "use_fkd": False, "warm_start": True}),
    ({"device": " CUDA:1 "}, {"device": "cuda:1"}),
    ({"device": "default"}, {"device": "auto"}),
    ({"teacher": ""}, {}),  # empty values keep the default
    ({"teacher": None, "model": "dinomix", "tracking": "mlflow"}, {}),  # not training options
    ({"val_fraction": "0.5", "seed": "4"}, {"val_fraction": 0.5, "seed": 4}),
    ({"preset": "paper"}, {"preset": "paper"}),
])
def test_from_request(request_, expected):
    want = dict(TrainRequest().to_dict(), **expected)
    assert TrainRequest.from_request(request_).to_dict() == want


@pytest.mark.parametrize("request_, message", [
    ({"max_iterations": "ten"}, "max_iterations must be an integer, got 'ten'"),
    ({"max_iterations": 0}, "max_iterations must be between 1 and 1000000"),
    ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ({"val_fraction": "x"}, "val_fraction must be a number"),
    ({"use_pic": "maybe"}, "option 'use_pic' must be true or false"),
    ({"use_pic": 2}, "option 'use_pic' must be true or false"),
    ({"preset": "gpu"}, "preset must be one of 'cpu', 'paper'"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
])
def test_bad_requests_name_the_option(request_, message):
    with pytest.raises(ValueError, match=message):
        TrainRequest.from_request(request_)


def test_defaults_are_refined_not_replaced():
    app = TrainRequest.from_request({"max_iterations": 50, "teacher": "/models/dinov3"})
    req = TrainRequest.from_request({"use_pic": False}, defaults=app)
    assert (req.max_iterations, req.teacher, req.use_pic) == (50, "/models/dinov3", False)


@pytest.mark.parametrize("request_, fields", [
    ({}, dict(preset="cpu", max_iterations=200, val_interval=50, use_pic=True, teacher="none", seed=0)),
    # the app's Retrain trains DINO-Mix's recipe (the cpu preset's)
    ({}, dict(class_weighting="distdw", pic_shared_box=True, clean_labeled_loss=True, confidence_threshold=0.8)),
    ({"max_iterations": 20, "seed": 3}, dict(max_iterations=20, val_interval=20, seed=3)),
    ({"preset": "paper", "max_iterations": 400}, dict(preset="paper", max_iterations=400, val_interval=200,
                                                      optimizer="sgd")),
])
def test_to_config(request_, fields):
    cfg = TrainRequest.from_request(request_).to_config()
    assert {k: getattr(cfg, k) for k in fields} == fields


def _cases(n):
    return [(f"c{i:02d}", f"img{i}", f"lab{i}") for i in range(n)]


@pytest.mark.parametrize("n, fraction, minimum, val_ids, note", [
    (10, 0.2, 5, ["c00", "c05"], "validation on 2 held-back labeled volume(s)"),
    (5, 0.2, 5, ["c00"], "validation on 1 held-back labeled volume(s)"),
    (4, 0.2, 5, [], "no validation: 4 labeled volume(s), at least 5 needed"),
    (3, 0.5, 1, ["c00", "c01"], "validation on 2 held-back labeled volume(s)"),
    (10, 0.0, 5, [], "no validation: val_fraction is 0"),
    (1, 0.5, 0, [], "no validation: 1 labeled volume(s), at least 2 needed"),
])
def test_split_validation(n, fraction, minimum, val_ids, note):
    train, val, got_note = split_validation(list(reversed(_cases(n))), fraction, minimum)
    assert [c[0] for c in val] == val_ids and got_note == note
    assert sorted(c[0] for c in train + val) == [c[0] for c in _cases(n)]


@pytest.mark.parametrize("stats, status", [
    ({"status": "RUNNING", "pid": None}, "INTERRUPTED"),
    ({"status": "RUNNING", "pid": 2**22 + 12345}, "INTERRUPTED"),
    ({"status": "DONE", "pid": None}, "DONE"),
])
def test_read_train_stats(tmp_path, stats, status):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train_stats.json").write_text(json.dumps(stats))
    assert read_train_stats(str(tmp_path))["status"] == status


def test_read_train_stats_running_and_missing(tmp_path):
    import os

    assert read_train_stats(str(tmp_path)) == {}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train_stats.json").write_text("{torn")
    assert read_train_stats(str(tmp_path)) == {}
    (tmp_path / "train" / "train_stats.json").write_text(json.dumps({"status": "RUNNING", "pid": os.getpid()}))
    assert read_train_stats(str(tmp_path))["status"] == "RUNNING"


@pytest.mark.parametrize("request_, env, expected", [
    ({}, None, 1),
    ({"multi_gpu": True, "gpus": "0,1", "device": "cpu"}, None, 2),
    ({"multi_gpu": True, "gpus": "0, 2,3"}, None, 3),
    ({"multi_gpu": False, "gpus": "0,1"}, None, 1),
    ({"multi_gpu": True, "device": "cpu"}, "", 1),  # "all" on the CPU: one process
    ({"multi_gpu": True, "device": "cpu"}, "4,5", 2),  # MONAI Label's task: gpus "all", ids in the environment
])
def test_train_request_world_size(monkeypatch, request_, env, expected):
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert TrainRequest.from_request(request_).world_size == expected


@pytest.mark.parametrize("gpus", ["zero", "0;1", "", "-1"])
def test_train_request_refuses_bad_gpus(gpus):
    with pytest.raises(ValueError, match="gpus must be 'all' or GPU ids"):
        TrainRequest(multi_gpu=True, gpus=gpus)
