"""TaskConfig of the ``dinomix`` model: the automatic infer task, click editing (``dinomix_edit``), two scribbles
tasks, one train task and the minority-uncertainty strategy. The infer tasks share one predictor, so an image's
automatic result is computed once and the edits correct it."""

import logging
import os
from typing import Any, Dict, Optional, Union

from lib.activelearning import MinorityUncertainty
from lib.infers import DinoMixEditInfer, DinoMixGMMGraphCut, DinoMixHistogramGraphCut, DinoMixInfer, shared_predictor
from lib.options import AppOptions
from lib.trainers import DinoMixTrain
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from dinomix_core.registry import ModelRegistry

logger = logging.getLogger(__name__)


class DinoMix(TaskConfig):
    """The ``dinomix`` model over the app options (lib/options.py).

    ``init(name, model_dir, conf, planner, options=AppOptions)``; without ``options`` they are parsed from ``conf``
    (``model_dir`` is ``APP/model``).
    """

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.options: AppOptions = kwargs.get("options") or AppOptions.from_conf(conf, os.path.dirname(model_dir))
        self.model_dir = self.options.model_dir
        starter = self.options.starter_path
        if starter and not os.path.isfile(starter):
            logger.warning("DINO-Mix: no starter model at %s", starter)
        self.label_set = self.options.label_set
        self.registry = ModelRegistry(self.model_dir, name="dinomix", starter_path=starter,
                                      label_names=self.label_set.organs)
        self.labels = self.label_set.ids_by_name
        self.predictor = shared_predictor(self.registry, self.label_set, self.options.max_voxels)
        for why in self.registry.unserved():
            logger.warning("DINO-Mix: %s; it is not served", why)
        logger.info("DINO-Mix: model dir %s; training defaults %s", self.model_dir, self.options.train_defaults)

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        args = (self.registry, self.label_set)
        return {
            self.name: DinoMixInfer(*args, max_voxels=self.options.max_voxels, predictor=self.predictor),
            f"{self.name}_edit": DinoMixEditInfer(*args, max_voxels=self.options.max_voxels, predictor=self.predictor),
            f"{self.name}_histogram_graphcut": DinoMixHistogramGraphCut(*args, predictor=self.predictor),
            f"{self.name}_gmm_graphcut": DinoMixGMMGraphCut(*args, predictor=self.predictor),
        }

    def trainer(self) -> Optional[TrainTask]:
        return DinoMixTrain(self.registry, self.options.train_defaults, self.label_set)

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        return {"dinomix_minority_uncertainty": MinorityUncertainty(self.registry, max_voxels=self.options.max_voxels,
                                                                    label_set=self.label_set)}
