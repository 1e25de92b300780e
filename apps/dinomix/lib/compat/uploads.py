"""MONAI Label 0.8.5 bug fixed: a refused upload leaves its temporary copy on the server's disk.

MONAI Label 0.8.5's upload endpoints (``PUT /datastore/image``, ``PUT /datastore/label``, ``POST /infer/{model}``
with a file) copy the upload to a temporary file and schedule its removal as a FastAPI *background task*.
Background tasks run only after a successful response: when the request is refused (an unreadable or mismatched
label, a bad image id, an image that cannot be read, ...) the copy stays in the temporary folder, so every
refused upload leaves up to ``max_upload_mb`` behind and a client retrying a bad file fills the disk.

:func:`install` wraps those three endpoint functions (the async route handlers look them up by module attribute at
each call): when one raises, the ``remove_file`` tasks it had scheduled run at once, then the error goes on to the
usual handlers. Only removals MONAI Label itself scheduled are run, so no caller's file is ever touched.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Callable

logger = logging.getLogger(__name__)

#: (module, function) of MONAI Label's endpoints that take ``background_tasks`` first and save uploads
ENDPOINTS = (
    ("monailabel.endpoints.datastore", "add_image"),
    ("monailabel.endpoints.datastore", "save_label"),
    ("monailabel.endpoints.infer", "run_inference"),
)


def run_file_removals(background_tasks) -> int:
    """Run the ``remove_file`` tasks scheduled on ``background_tasks`` now; returns how many ran."""
    from monailabel.utils.others.generic import remove_file

    ran = 0
    for task in list(getattr(background_tasks, "tasks", ())):
        if task.func is remove_file:
            try:
                task.func(*task.args, **task.kwargs)
                ran += 1
            except OSError as e:  # never hide the request's own error behind a cleanup error
                logger.warning("could not remove the upload %s: %s", task.args, e)
    return ran


def cleanup_on_error(fn: Callable) -> Callable:
    """``fn(background_tasks, ...)`` that removes its scheduled upload copies when it raises."""
    if getattr(fn, "_dinomix_cleanup_on_error", False):
        return fn

    @functools.wraps(fn)
    def wrapper(background_tasks, *args, **kwargs):
        try:
            return fn(background_tasks, *args, **kwargs)
        except BaseException:
            run_file_removals(background_tasks)
            raise

    wrapper._dinomix_cleanup_on_error = True
    return wrapper


def install() -> None:
    """Wrap MONAI Label's upload endpoints (idempotent)."""
    for module, name in ENDPOINTS:
        mod = importlib.import_module(module)
        setattr(mod, name, cleanup_on_error(getattr(mod, name)))
