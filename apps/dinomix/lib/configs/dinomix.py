"""TaskConfig of the ``dinomix`` model: one infer task, one train task and the minority-uncertainty strategy."""

import logging
import os
from typing import Any, Dict, Optional, Union

from lib.activelearning import MinorityUncertainty
from lib.infers import DinoMixInfer
from lib.limits import DEFAULT_MAX_UPLOAD_MB, parse_max_upload_mb
from lib.trainers import DinoMixTrain
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

from dinomix_core.config import ORGANS
from dinomix_core.registry import ModelRegistry
from dinomix_core.service import parse_train_options

logger = logging.getLogger(__name__)


class DinoMix(TaskConfig):
    """App options (``--conf KEY VALUE``):

    - ``teacher``: DINOv3 local folder or hub id, or ``none`` (default ``none``: FKD off until a teacher is given).
    - ``preset``: ``cpu`` (default) or ``paper``.
    - ``max_iterations``: default training iterations per Retrain (default 200).
    - ``device``: ``auto`` (default), ``cpu``, ``cuda``, ``cuda:N`` for training.
    - ``model_dir``: where published models live (default ``APP/model``).
    - ``starter``: the model served until the first Retrain publishes one, and that Retrain's warm start (default
      ``APP/model/pretrained_dinomix.pt``, shipped with the app; ``none``: no starter).
    - ``max_voxels``: refuse larger images at inference (default 524288000).
    - ``allow_empty_labels``: accept all-background corrections (default false).
    - ``max_upload_mb``: refuse request bodies larger than this with 413 (default 4096; 0: no limit).
    """

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.model_dir = conf.get("model_dir", model_dir)
        # MONAI Label's radiology convention: pretrained_<name>.pt beside the published model, served until the
        # first Retrain publishes one (and the first Retrain's warm start)
        starter = str(conf.get("starter", os.path.join(model_dir, f"pretrained_{name}.pt"))).strip()
        self.starter_path = None if starter.lower() in ("", "none") else starter
        if self.starter_path and not os.path.isfile(self.starter_path):
            logger.warning("DINO-Mix: no starter model at %s", self.starter_path)
        self.registry = ModelRegistry(self.model_dir, name="dinomix", starter_path=self.starter_path)
        self.labels = {n: i + 1 for i, n in enumerate(ORGANS)}
        # validate app options once, at start-up: a typo fails loudly here rather than at the first Retrain
        self.train_defaults = parse_train_options(
            {k: conf[k] for k in ("teacher", "preset", "max_iterations", "device") if k in conf}
        )
        self.max_voxels = int(conf.get("max_voxels", 512 * 512 * 2000))
        self.allow_empty_labels = strtobool(conf.get("allow_empty_labels", "false"))
        self.max_upload_mb = parse_max_upload_mb(conf.get("max_upload_mb", DEFAULT_MAX_UPLOAD_MB))
        logger.info("DINO-Mix: model dir %s; training defaults %s", self.model_dir, self.train_defaults)

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        return {self.name: DinoMixInfer(self.registry, self.labels, max_voxels=self.max_voxels)}

    def trainer(self) -> Optional[TrainTask]:
        return DinoMixTrain(self.registry, self.train_defaults)

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        return {"dinomix_minority_uncertainty": MinorityUncertainty(self.registry)}
