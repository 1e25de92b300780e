"""DINO-Mix MONAI Label app: ``monailabel start_server --app apps/dinomix --studies DIR``.

Registers the ``dinomix`` infer task, the ``dinomix`` train task and the ``dinomix_minority_uncertainty``
strategy (plus MONAI Label's random/first) over ``dinomix_core``. App options: lib/options.py. Workarounds for
MONAI Label 0.8.5 bugs (auth, background tasks, uploads, DICOM-SEG, error answers): lib/compat/.

Bad input never crashes the server and never changes what is stored: the datastore (lib/datastore.py) checks
every image and label before writing anything, inference only reads images of the studies folder or uploaded
files, and problems come back as HTTP 4xx with the reason (lib/compat/errors.py). See docs/security.md.
"""

import logging
import os
from typing import Dict

from fastapi import HTTPException
from lib import compat
from lib.compat.errors import NO_IMAGE
from lib.configs import DinoMix
from lib.datastore import DinoMixDatastore, DinoMixDICOMWebDatastore, image_path_allowed, is_image_path
from lib.options import AppOptions
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import dinomix_core
from dinomix_core.service import TrainRequest

logger = logging.getLogger(__name__)

compat.install()  # the patches of MONAI Label's modules that must be in place before the app exists


class DinoMixApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.options = AppOptions.from_conf(conf, app_dir)  # a bad option stops the start-up, naming it
        self.task = DinoMix()
        self.task.init("dinomix", os.path.join(app_dir, "model"), conf, None, options=self.options)
        super().__init__(
            app_dir=app_dir, studies=studies, conf=conf, name="DINO-Mix", version=dinomix_core.__version__,
            description="DINO-Mix (arXiv 2602.07819): few-label, class-imbalance-aware abdominal CT organ segmentation",
            labels=self.task.labels,
        )

    def init_datastore(self) -> Datastore:
        checks = dict(allow_empty_labels=self.options.allow_empty_labels, max_voxels=self.options.max_voxels,
                      organs=self.options.label_set.organs)
        if self.studies.startswith(("http://", "https://")):
            datastore = super().init_datastore()
            return DinoMixDICOMWebDatastore.like(datastore, **checks) if isinstance(
                datastore, DICOMWebDatastore) else datastore
        return DinoMixDatastore(
            self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD, read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            **checks,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        return self.task.infer()

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {self.task.name: self.task.trainer()}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {**self.task.strategy(), "random": Random(), "first": First()}

    def on_init_complete(self):
        super().on_init_complete()
        for strategy in self._strategies.values():
            if hasattr(strategy, "start"):  # the minority-uncertainty scores are computed in the background
                strategy.start(self.datastore())
        compat.install(self, self.options)  # error answers, upload limit and clean-up, train-request check

    def infer(self, request, datastore=None):
        # ``image`` is a datastore id, or (an upload, or ``params``) a file path: a path must not reach outside.
        image = request.get("image")
        if not isinstance(image, str) or not image:
            raise HTTPException(400, NO_IMAGE if image in (None, "") else "image must be a datastore image id")
        ds = datastore if datastore is not None else self.datastore()
        if is_image_path(image):
            if not image_path_allowed(image, self.studies, getattr(self, "_sessions", None)):
                raise HTTPException(status_code=404, detail=f"unknown image {image!r}: not in the datastore")
        elif isinstance(ds, DinoMixDatastore) and not ds.get_image_uri(image):
            raise HTTPException(status_code=404, detail=f"unknown image id {image!r}: not in the datastore")
        return super().infer(request, datastore)

    def check_train_request(self, request) -> None:
        """Bad training options are the client's to fix: 400 with the reason, before anything is queued."""
        if request.get("model") in self._trainers:
            try:
                TrainRequest.from_request(request, self.options.train_defaults)
            except ValueError as e:
                raise HTTPException(status_code=400, detail=f"bad training option: {e}")

    def train(self, request):
        self.check_train_request(request)  # a datastore that cannot be trained on: 422 (lib/compat/errors.py)
        return super().train(request)
