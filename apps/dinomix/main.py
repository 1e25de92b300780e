"""DINO-Mix MONAI Label app: ``monailabel start_server --app apps/dinomix --studies DIR``.

Registers the ``dinomix`` infer task, the ``dinomix`` train task and the ``dinomix_minority_uncertainty``
strategy (plus MONAI Label's random/first) over ``dinomix_core``. App options: see lib/configs/dinomix.py.
"""

import logging
import os
import tempfile
from typing import Dict

from fastapi import HTTPException
from lib.configs import DinoMix
from lib.datastore import DinoMixDatastore
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

import dinomix_core

logger = logging.getLogger(__name__)


class DinoMixApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.task = DinoMix()
        self.task.init("dinomix", os.path.join(app_dir, "model"), conf, None)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="DINO-Mix",
            description="DINO-Mix (arXiv 2602.07819): few-label, class-imbalance-aware abdominal CT organ segmentation",
            version=dinomix_core.__version__,
            labels=self.task.labels,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return DinoMixDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            allow_empty_labels=strtobool(self.conf.get("allow_empty_labels", "false")),
        )

    def init_infers(self) -> Dict[str, InferTask]:
        return self.task.infer()

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {self.task.name: self.task.trainer()}

    def init_strategies(self) -> Dict[str, Strategy]:
        strategies = dict(self.task.strategy())
        strategies.update({"random": Random(), "first": First()})
        return strategies

    def infer(self, request, datastore=None):
        # A path given instead of a datastore id must lie in the studies folder or be an uploaded temp file.
        image = request.get("image")
        if isinstance(image, str) and os.path.isabs(image) or (isinstance(image, str) and ".." in image):
            real = os.path.realpath(image)
            roots = [os.path.realpath(self.studies), os.path.realpath(tempfile.gettempdir())]
            if not any(real == r or real.startswith(r + os.sep) for r in roots):
                raise HTTPException(status_code=404, detail=f"unknown image {image!r}")
        return super().infer(request, datastore)
