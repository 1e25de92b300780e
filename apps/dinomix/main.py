"""DINO-Mix MONAI Label app: ``monailabel start_server --app apps/dinomix --studies DIR``.

Registers the ``dinomix`` infer task, the ``dinomix`` train task and the ``dinomix_minority_uncertainty``
strategy (plus MONAI Label's random/first) over ``dinomix_core``. App options: see lib/configs/dinomix.py.

Bad input never crashes the server and never changes what is stored: the datastore (lib/datastore.py) checks
every image and label before writing anything, inference only reads images of the studies folder or uploaded
files, training problems come back as HTTP 4xx with the reason, and a malformed ``params`` JSON or an unknown
model/image id is a 4xx with a message rather than MONAI Label's bare 500. See docs/security.md.
"""

import json
import logging
import os
import sys
import tempfile
from typing import Dict

import requests

from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from lib.configs import DinoMix
from lib import auth as server_auth
from lib import dicom_seg
from lib import tasks as background_tasks
from lib import uploads
from lib.datastore import DinoMixDatastore
from lib.limits import UploadLimit
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

import dinomix_core
import dinomix_core.config
from dinomix_core.data import InvalidVolumeError
from dinomix_core.service import parse_train_options
from dinomix_core.trainer import TrainingError

logger = logging.getLogger(__name__)

# Count a just-submitted training as running (a double click gets 429) and let Stop reach it: lib/tasks.py.
background_tasks.install()
# MONAI Label's token check calls PyJWT 2 without `algorithms`, so every token got 401: lib/auth.py.
server_auth.install()
# DICOM-SEG segment names paired with present ids, not organ ids; conversion failures unreported: lib/dicom_seg.py.
dicom_seg.install(dinomix_core.config.ORGANS)


def _inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return path == root or path.startswith(root + os.sep)


def _install_error_handlers() -> None:
    """Answer errors that MONAI Label's endpoints leave as a bare ``500 Internal Server Error`` with a 4xx + reason.

    - malformed JSON in a ``params``/``info`` form field -> 400;
    - MONAI Label's own "invalid input" errors (unknown model, unknown image/label id) -> 400/404;
    - an unusable volume reaching an endpoint -> 422;
    - ``/infer`` with no image at all (MONAI Label: 500) -> 400;
    - the identity server refusing a login -> 401, or unreachable -> 503 (lib/auth.py).

    The FastAPI app has already built its middleware stack when the app is created (inside the lifespan), so the
    handlers are added and the stack is rebuilt on the next request (Starlette builds it lazily).
    """
    mod = sys.modules.get("monailabel.app")
    api = getattr(mod, "app", None)
    if api is None:
        return

    async def bad_json(request, exc):
        return JSONResponse(status_code=400, content={"detail": f"request parameters are not valid JSON: {exc}"})

    async def monailabel_error(request, exc):
        msg = getattr(exc, "msg", None) or str(exc)
        status = 404 if "not found" in msg.lower() or "no model" in msg.lower() else 400
        return JSONResponse(status_code=status, content={"detail": msg})

    async def invalid_volume(request, exc):
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    async def http_error(request, exc):
        # MONAI Label answers an /infer request with neither image, file nor session as a 500: it is a 400.
        status, detail = exc.status_code, exc.detail
        if status == 500 and isinstance(detail, str) and detail.startswith("Neither Image nor File"):
            status, detail = 400, "no image given: pass ?image=<datastore id> or upload a file"
        return await http_exception_handler(request, HTTPException(status_code=status, detail=detail,
                                                                   headers=getattr(exc, "headers", None)))

    api.add_exception_handler(json.JSONDecodeError, bad_json)
    api.add_exception_handler(MONAILabelException, monailabel_error)
    api.add_exception_handler(InvalidVolumeError, invalid_volume)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(requests.RequestException, server_auth.identity_server_error)
    api.middleware_stack = None
    logger.info("DINO-Mix: 4xx error handlers installed")


def _install_upload_limit(max_upload_mb: int) -> None:
    """Refuse request bodies over ``max_upload_mb`` with 413 (lib/limits.py); 0 leaves MONAI Label's no-limit."""
    api = getattr(sys.modules.get("monailabel.app"), "app", None)
    if api is None or max_upload_mb <= 0:
        logger.warning("DINO-Mix: no upload size limit (max_upload_mb=%s)", max_upload_mb)
        return
    if any(m.cls is UploadLimit for m in api.user_middleware):
        return
    # innermost user middleware: inside CORS, so a 413 carries the CORS headers a browser client needs
    api.user_middleware.append(Middleware(UploadLimit, max_bytes=max_upload_mb * 2**20))
    api.middleware_stack = None  # rebuilt on the next request (see _install_error_handlers)
    logger.info("DINO-Mix: uploads limited to %d MB", max_upload_mb)


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
            max_voxels=self.task.max_voxels,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        return self.task.infer()

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {self.task.name: self.task.trainer()}

    def init_strategies(self) -> Dict[str, Strategy]:
        strategies = dict(self.task.strategy())
        strategies.update({"random": Random(), "first": First()})
        return strategies

    def on_init_complete(self):
        super().on_init_complete()
        background_tasks.install({"train": self.check_train_request})  # background POST /train: 400 at once
        try:
            _install_error_handlers()
        except Exception as e:  # never keep the server from starting over error formatting
            logger.warning("could not install the DINO-Mix error handlers: %s", e)
        _install_upload_limit(self.task.max_upload_mb)
        try:
            uploads.install()  # a refused upload's temporary copy is removed (lib/uploads.py)
        except Exception as e:  # a MONAI Label without these endpoints: keep serving
            logger.warning("could not install the upload clean-up: %s", e)

    def _allowed_image_path(self, image: str) -> bool:
        """A file path given as ``image`` must be in the studies folder, an upload or a MONAI Label session."""
        real = os.path.realpath(image)
        if _inside(real, self.studies):
            return True
        tmp = os.path.realpath(tempfile.gettempdir())
        if os.path.dirname(real) == tmp and os.path.basename(real).startswith("tmp"):
            return True  # an upload: MONAI Label's NamedTemporaryFile
        sessions = getattr(self, "_sessions", None)
        store = getattr(sessions, "store_path", None)
        return bool(store) and _inside(real, store)

    def infer(self, request, datastore=None):
        # ``image`` is a datastore id, or (an upload, or ``params``) a file path: a path must not reach outside.
        image = request.get("image")
        if isinstance(image, str) and image:
            looks_like_path = os.path.isabs(image) or ".." in image or os.sep in image or os.path.exists(image)
            if looks_like_path and not self._allowed_image_path(image):
                raise HTTPException(status_code=404, detail=f"unknown image {image!r}: not in the datastore")
            ds = datastore if datastore is not None else self.datastore()
            if not looks_like_path and isinstance(ds, DinoMixDatastore) and not ds.get_image_uri(image):
                raise HTTPException(status_code=404, detail=f"unknown image id {image!r}: not in the datastore")
        elif image is not None and not isinstance(image, str):
            raise HTTPException(status_code=400, detail="image must be a datastore image id")
        else:
            raise HTTPException(status_code=400, detail="no image given: pass ?image=<datastore id> or upload a file")
        return super().infer(request, datastore)

    def check_train_request(self, request) -> None:
        """Bad training options are the client's to fix: 400 with the reason, before anything is queued."""
        if request.get("model") in self._trainers:
            try:
                parse_train_options(request, self.task.train_defaults)
            except ValueError as e:
                raise HTTPException(status_code=400, detail=f"bad training option: {e}")

    def train(self, request):
        # Bad options and a datastore that cannot be trained on are the client's to fix: 4xx with the reason.
        self.check_train_request(request)
        try:
            return super().train(request)
        except TrainingError as e:
            logger.warning("training not possible: %s", e)
            raise HTTPException(status_code=422, detail=f"training not possible: {e}")
