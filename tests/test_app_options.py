"""The app options (apps/dinomix/lib/options.py): ``AppOptions.from_conf`` on valid and invalid ``--conf`` values.

No server: MONAI Label hands the app its ``--conf KEY VALUE`` pairs as a dict of strings.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", "dinomix"))

from lib.options import AppOptions  # noqa: E402

from dinomix_core.service import TrainRequest  # noqa: E402

APP = "/srv/app"
DEFAULTS = AppOptions(
    model_dir="/srv/app/model", starter_path="/srv/app/model/pretrained_dinomix.pt", train_defaults=TrainRequest(),
    max_voxels=512 * 512 * 2000, allow_empty_labels=False, max_upload_mb=4096,
)


@pytest.mark.parametrize(
    "conf, changed",
    [
        ({}, {}),
        (None, {}),
        ({"model_dir": "/data/models"}, {"model_dir": "/data/models"}),
        ({"model_dir": ""}, {}),
        # the starter: a path, or none (any case, or empty) for no starter; independent of model_dir
        ({"starter": "/m/s.pt"}, {"starter_path": "/m/s.pt"}),
        ({"starter": " /m/s.pt "}, {"starter_path": "/m/s.pt"}),
        ({"starter": "none"}, {"starter_path": None}),
        ({"starter": "None"}, {"starter_path": None}),
        ({"starter": ""}, {"starter_path": None}),
        # the training defaults
        ({"max_iterations": "50"}, {"train_defaults": TrainRequest(max_iterations=50)}),
        ({"preset": "paper", "device": "CUDA:1"}, {"train_defaults": TrainRequest(preset="paper", device="cuda:1")}),
        ({"teacher": "/models/dinov3", "device": "auto"}, {"train_defaults": TrainRequest(teacher="/models/dinov3")}),
        ({"max_iterations": ""}, {}),  # an empty value is the default
        # other MONAI Label options are not ours and are ignored
        ({"models": "dinomix", "val_fraction": "0.5", "use_fkd": "false"}, {}),
        ({"max_voxels": "1000"}, {"max_voxels": 1000}),
        ({"max_voxels": " 7 "}, {"max_voxels": 7}),
        ({"allow_empty_labels": "true"}, {"allow_empty_labels": True}),
        ({"allow_empty_labels": "yes"}, {"allow_empty_labels": True}),
        ({"allow_empty_labels": "0"}, {"allow_empty_labels": False}),
        ({"allow_empty_labels": "False"}, {"allow_empty_labels": False}),
        ({"max_upload_mb": "0"}, {"max_upload_mb": 0}),
        ({"max_upload_mb": " 12 "}, {"max_upload_mb": 12}),
        ({"max_upload_mb": 64}, {"max_upload_mb": 64}),
    ],
)
def test_valid_options(conf, changed):
    assert AppOptions.from_conf(conf, APP) == dataclasses.replace(DEFAULTS, **changed)


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"max_iterations": "0"}, "max_iterations must be between 1 and 1000000, got 0"),
        ({"max_iterations": "many"}, "max_iterations must be an integer, got 'many'"),
        ({"preset": "gpu"}, "preset must be one of 'cpu', 'paper', got 'gpu'"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ({"max_voxels": "0"}, "app option max_voxels must be >= 1, got 0."),
        ({"max_voxels": "1e9"}, "app option max_voxels must be a whole number of voxels, got '1e9'."),
        ({"max_voxels": "lots"}, "app option max_voxels must be a whole number of voxels, got 'lots'."),
        ({"allow_empty_labels": "maybe"}, "app option allow_empty_labels must be true or false, got 'maybe'."),
        ({"max_upload_mb": "-1"}, "app option max_upload_mb must be >= 0, got -1."),
        ({"max_upload_mb": "1.5"}, "app option max_upload_mb must be a whole number of megabytes (0: no limit), got '1.5'."),
        ({"max_upload_mb": "lots"}, "app option max_upload_mb must be a whole number of megabytes (0: no limit), got 'lots'."),
    ],
)
def test_invalid_options_name_the_option(conf, message):
    with pytest.raises(ValueError) as e:
        AppOptions.from_conf(conf, APP)
    assert message in str(e.value)


def test_options_are_frozen_and_the_defaults_follow_the_app_folder():
    opts = AppOptions.from_conf({}, "/other")
    assert (opts.model_dir, opts.starter_path) == ("/other/model", "/other/model/pretrained_dinomix.pt")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.max_voxels = 1  # type: ignore[misc]


def test_the_train_task_offers_the_training_defaults():
    """The train task's config (what 3D Slicer shows) is the defaults, and a request is checked over them."""
    from lib.trainers import DinoMixTrain

    opts = AppOptions.from_conf({"max_iterations": "30", "preset": "paper"}, APP)
    task = DinoMixTrain(registry=None, defaults=opts.train_defaults)
    assert task.config() == TrainRequest(max_iterations=30, preset="paper").to_dict()
    assert TrainRequest.from_request({"max_epochs": "5"}, opts.train_defaults) == TrainRequest(max_iterations=5,
                                                                                              preset="paper")
