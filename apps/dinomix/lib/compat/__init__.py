"""Workarounds for MONAI Label 0.8.5 bugs, one module per bug (each docstring says which), behind one :func:`install`.

- :mod:`.tasks`: a training submitted but not started yet counts as running (429 for a double click), and a Stop
  reaches it; a background train request is checked before it is queued.
- :mod:`.auth`: bearer tokens checked with the signature algorithms named (PyJWT 2 refused every token).
- :mod:`.dicom_seg`: DICOM-SEG segments named after the right organs; failed conversions reported.
- :mod:`.errors`: exceptions answered with a 4xx and the reason by one type -> status table, not a bare 500.
- :mod:`.limits`: request bodies over ``max_upload_mb`` refused with 413.
- :mod:`.uploads`: a refused upload's temporary copy removed.

Version policy: these fixes patch MONAI Label 0.8.5 internals (:data:`TARGET_VERSION`). On another version
:func:`install` logs a warning naming the version they were written for and still installs each fix; a fix whose
target code is missing there (an ``ImportError`` or ``AttributeError`` while installing it) is skipped with a
warning, so the server starts with MONAI Label's own behaviour for that part.
"""

import importlib
import logging
import sys
from typing import Any, Callable, List, Optional

import monailabel

logger = logging.getLogger(__name__)

#: the MONAI Label version these workarounds were written for
TARGET_VERSION = "0.8.5"


def written_for(version: Optional[str] = None) -> bool:
    """Whether ``version`` (default: the running MONAI Label) is the one these fixes were written for; logs a
    warning when it is not."""
    version = str(monailabel.__version__ if version is None else version)
    if version == TARGET_VERSION:
        return True
    logger.warning(
        "DINO-Mix: the MONAI Label workarounds in lib/compat were written for MONAI Label %s, this is %s; "
        "installing those whose target code exists", TARGET_VERSION, version,
    )
    return False


def fastapi_app() -> Any:
    """MONAI Label's FastAPI app when this process serves it (``None`` in a training subprocess)."""
    return getattr(sys.modules.get("monailabel.app"), "app", None)


def _install_fix(name: str, call: Callable[[Any], Any]) -> bool:
    try:
        call(importlib.import_module(f"{__name__}.{name}"))
    except (ImportError, AttributeError) as e:
        logger.warning("DINO-Mix: MONAI Label %s lacks what the %s fix patches (%s); not installed",
                       monailabel.__version__, name, e)
        return False
    return True


def install(app: Any = None, options: Any = None, api: Any = None) -> List[str]:
    """Install the workarounds (idempotent); returns the names of those installed.

    Args:
        app: the MONAI Label app (its ``check_train_request`` checks background train requests). Without it (as
            main.py does at import, before MONAI Label creates the app) only the patches of MONAI Label's modules
            that must be in place before the first request: tasks, auth, dicom_seg.
        options: the app's :class:`~lib.options.AppOptions` (``max_upload_mb``, the label set's organ names for
            DICOM-SEG segments), with ``app``.
        api: the FastAPI app to add the error handlers and the upload limit to (default: MONAI Label's, when this
            process serves it).
    """
    from dinomix_core.config import ORGANS

    organs = options.label_set.organs if options is not None else ORGANS
    written_for()
    check = getattr(app, "check_train_request", None)
    fixes = {
        "tasks": lambda m: m.install({"train": check} if check else None),
        "auth": lambda m: m.install(),
        "dicom_seg": lambda m: m.install(organs),
    }
    api = api if api is not None else fastapi_app()
    if app is not None and api is not None:
        fixes.update({
            "errors": lambda m: m.install(api),
            "limits": lambda m: m.install(api, options.max_upload_mb),
            "uploads": lambda m: m.install(),
        })
    return [name for name, call in fixes.items() if _install_fix(name, call)]
