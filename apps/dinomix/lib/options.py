"""The app options (``monailabel start_server --conf KEY VALUE``), parsed and checked once, at start-up.

- ``teacher``: DINOv3 local folder or hub id, or ``none`` (default ``none``: FKD off until a teacher is given).
- ``preset``: ``cpu`` (default) or ``paper``.
- ``max_iterations``: default training iterations per Retrain (default 200).
- ``device``: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:N`` for training.
- ``model_dir``: where published models live (default ``APP/model``).
- ``starter``: the model served until the first Retrain publishes one, and that Retrain's warm start (default
  ``APP/model/pretrained_dinomix.pt``, shipped with the app; ``none``: no starter). MONAI Label's radiology
  convention: ``pretrained_<name>.pt`` beside the published model.
- ``max_voxels``: larger images are refused by the datastore (413), inference (422) and skipped by the
  minority-uncertainty strategy (default 524288000).
- ``allow_empty_labels``: accept all-background corrections (default false).
- ``max_upload_mb``: refuse request bodies larger than this with 413 (default 4096; 0: no limit).
- ``labels``: the label set the team annotates: ``synapse`` (default, the 13 Synapse organs), ``amos``, organ
  names in id order (``liver,spleen,tumour``) or a JSON file (a list of names, or ``{name: id}`` with ids 1..N).
  Datastore checks, training, inference, Next Sample and the Slicer module all follow it; a model trained for
  other labels is not served.

The first four are the defaults of every Retrain (a request may override them); the train task shows them, with
the other training options, in 3D Slicer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from monailabel.utils.others.generic import strtobool

from dinomix_core.inference import DEFAULT_MAX_VOXELS
from dinomix_core.labels import SYNAPSE, LabelSet, parse_label_set
from dinomix_core.service import TrainRequest

#: the app options that are training defaults
TRAIN_KEYS = ("teacher", "preset", "max_iterations", "device")
DEFAULT_MAX_UPLOAD_MB = 4096
#: the starter model's file name in ``APP/model``
STARTER_NAME = "pretrained_dinomix.pt"


def _whole_number(name: str, value: Any, minimum: int, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ValueError(f"app option {name} must be a whole number of {what}, got {value!r}.") from None
    if n < minimum:
        raise ValueError(f"app option {name} must be >= {minimum}, got {n}.")
    return n


def _flag(name: str, value: Any) -> bool:
    try:
        return strtobool(str(value).strip()) if not isinstance(value, bool) else value
    except ValueError:
        raise ValueError(f"app option {name} must be true or false, got {value!r}.") from None


@dataclass(frozen=True)
class AppOptions:
    """The app's options, typed (see the module docstring); built with :meth:`from_conf`."""

    model_dir: str
    starter_path: Optional[str]
    train_defaults: TrainRequest = field(default_factory=TrainRequest)
    max_voxels: int = DEFAULT_MAX_VOXELS
    allow_empty_labels: bool = False
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    label_set: LabelSet = SYNAPSE

    @classmethod
    def from_conf(cls, conf: Optional[Mapping[str, Any]], app_dir: str) -> "AppOptions":
        """Parse MONAI Label's ``conf`` (string values) of the app in ``app_dir``.

        Raises:
            ValueError: an invalid value, naming the option.
        """
        conf = dict(conf or {})
        default_model_dir = os.path.join(app_dir, "model")
        starter = str(conf.get("starter", os.path.join(default_model_dir, STARTER_NAME))).strip()
        return cls(
            model_dir=str(conf.get("model_dir") or default_model_dir),
            starter_path=None if starter.lower() in ("", "none") else starter,
            train_defaults=TrainRequest.from_request({k: conf[k] for k in TRAIN_KEYS if k in conf}),
            max_voxels=_whole_number("max_voxels", conf.get("max_voxels", DEFAULT_MAX_VOXELS), 1, "voxels"),
            allow_empty_labels=_flag("allow_empty_labels", conf.get("allow_empty_labels", False)),
            max_upload_mb=_whole_number(
                "max_upload_mb", conf.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB), 0, "megabytes (0: no limit)"
            ),
            label_set=_label_set(conf.get("labels", "synapse")),
        )


def _label_set(value: Any) -> LabelSet:
    try:
        return parse_label_set(value)
    except ValueError as e:
        raise ValueError(f"app option labels: {e}") from None
