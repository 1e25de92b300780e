"""Train task ``dinomix``: semi-supervised DINO-Mix from the datastore (thin wrapper over dinomix_core.service).

Labeled = images with a ``final`` label; unlabeled = every other image. Starts from the published model.
"""

import logging
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from dinomix_core.config import PRESETS
from dinomix_core.labels import SYNAPSE, LabelSet
from dinomix_core.registry import ModelRegistry
from dinomix_core.service import TrainingJob, TrainRequest, read_train_stats

logger = logging.getLogger(__name__)

NOT_STARTED: Dict[str, Any] = {"status": "NOT_STARTED", "epoch": 0, "total_epochs": 1, "best_metric": 0.0}


class DinoMixTrain(TrainTask):
    """Args: registry: the app's models; defaults: the app's training defaults (a request overrides them);
    label_set: the labels the app annotates (the model learns them)."""

    def __init__(self, registry: ModelRegistry, defaults: TrainRequest, label_set: LabelSet = SYNAPSE):
        super().__init__("DINO-Mix semi-supervised training (FKD + PIC + EMA consistency) on the datastore")
        self.registry = registry
        self.defaults = defaults
        self.label_set = label_set

    def config(self) -> Dict[str, Any]:
        return self.defaults.to_dict()

    def info(self) -> Dict[str, Any]:
        # the preset choices beside (not inside) ``config``: the stock plugin shows every config key as an option
        return {**super().info(), "presets": sorted(PRESETS)}

    def stats(self) -> Dict[str, Any]:
        # before a run has written any stats: 0 epochs done (the stock Slicer plugin reads a missing ``epoch`` and
        # ``total_epochs`` as 1 of 1, a full progress bar, during the seconds before the subprocess starts)
        return read_train_stats(str(self.registry.model_dir)) or dict(NOT_STARTED)

    def __call__(self, request, datastore: Datastore):
        options = TrainRequest.from_request(request, self.defaults)
        tag = DefaultLabelTag.FINAL.value
        labeled = [
            (i, datastore.get_image_uri(i), datastore.get_label_uri(i, tag)) for i in datastore.get_labeled_images(tag)
        ]
        unlabeled = [(i, datastore.get_image_uri(i)) for i in datastore.get_unlabeled_images(tag)]
        logger.info("DINO-Mix training: %d labeled, %d unlabeled; options %s", len(labeled), len(unlabeled), options)
        job = TrainingJob(str(self.registry.model_dir), options, starter_path=self.registry.starter_path,
                          label_names=self.label_set.organs)
        return job.run(labeled, unlabeled)
