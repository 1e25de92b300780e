"""MONAI Label 0.8.5 bug fixed: a client's mistake is answered with a bare ``500 Internal Server Error``.

MONAI Label's endpoints let every exception through to Starlette, which answers 500 with no reason: a malformed
``params``/``info`` JSON form field, an unknown model or image id (``MONAILabelException``), an unusable volume, a
datastore that cannot be trained on. ``POST /infer`` with neither image, file nor session is an explicit 500 too.

:data:`STATUS` is the one table of what each is answered with: an HTTP status and the exception's own message
(after a prefix for some). An exception is looked up by its ``MONAILabelError`` first (a plain
``MONAILabelException``), then along its class's MRO, most specific first. Errors talking to the identity server
(``requests.RequestException``) are answered by :func:`lib.compat.auth.identity_server_error` (401 or 503).

:func:`install` adds the handlers to MONAI Label's FastAPI app. The app has already built its middleware stack
when MONAI Label creates our app (inside the lifespan), so the stack is dropped and Starlette rebuilds it, with the
handlers, on the next request.
"""

import json
import logging
from typing import Any, Dict, Tuple, Union

import requests
from fastapi import HTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from dinomix_core.errors import InvalidVolumeError, ModelFileError, ModelNotFoundError, TrainingError

from .auth import identity_server_error

logger = logging.getLogger(__name__)

#: the detail of a 400 for an inference request without any image
NO_IMAGE = "no image given: pass ?image=<datastore id> or upload a file"

#: exception type (or MONAILabelError of a MONAILabelException) -> (HTTP status, prefix of the message)
STATUS: Dict[Union[type, MONAILabelError], Tuple[int, str]] = {
    json.JSONDecodeError: (400, "request parameters are not valid JSON"),  # a params/info form field
    InvalidVolumeError: (422, ""),  # an unusable image or label reaching an endpoint
    ModelFileError: (422, ""),  # a model file that is not one
    ModelNotFoundError: (409, ""),  # nothing to serve yet: Retrain first
    TrainingError: (422, "training not possible"),  # no usable labeled volume, incompatible checkpoint...
    ImageNotFoundException: (404, ""),
    LabelNotFoundException: (404, ""),
    # the endpoints carry the model / scoring method / strategy in their path, so these two only ever say that
    # the one named there does not exist ("Model is not provided" cannot happen over HTTP)
    MONAILabelError.INVALID_INPUT: (404, ""),
    MONAILabelError.APP_INIT_ERROR: (404, ""),
    MONAILabelException: (400, ""),  # any other MONAI Label error
}


def status_and_detail(exc: BaseException) -> Tuple[int, str]:
    """What ``exc`` is answered with, from :data:`STATUS`; ``KeyError`` for an exception it does not list."""
    keys: list = [exc.error] if isinstance(exc, MONAILabelException) else []
    for key in keys + list(type(exc).__mro__):
        if key in STATUS:
            status, prefix = STATUS[key]
            msg = getattr(exc, "msg", None) if isinstance(exc, MONAILabelException) else None
            msg = msg or str(exc)
            return status, f"{prefix}: {msg}" if prefix else msg
    raise KeyError(type(exc).__name__)


async def table_error(request: Any, exc: Exception) -> JSONResponse:
    """Exception handler answering every type of :data:`STATUS`."""
    status, detail = status_and_detail(exc)
    logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, detail)
    return JSONResponse(status_code=status, content={"detail": detail})


async def http_error(request: Any, exc: StarletteHTTPException):
    """FastAPI's own answer, except MONAI Label's 500 for an ``/infer`` request without any image: a 400."""
    status, detail = exc.status_code, exc.detail
    if status == 500 and isinstance(detail, str) and detail.startswith("Neither Image nor File"):
        status, detail = 400, NO_IMAGE
    return await http_exception_handler(
        request, HTTPException(status_code=status, detail=detail, headers=getattr(exc, "headers", None))
    )


def install(api: Any) -> None:
    """Add the handlers to the FastAPI app ``api`` (idempotent)."""
    for key in STATUS:
        if isinstance(key, type):
            api.add_exception_handler(key, table_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(requests.RequestException, identity_server_error)
    api.middleware_stack = None
    logger.info("DINO-Mix: 4xx error handlers installed")
