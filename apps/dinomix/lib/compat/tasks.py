"""MONAI Label 0.8.5 bug fixed: a training request or a Stop that arrives before the subprocess exists is
mishandled (``monailabel.utils.async_tasks``): a double click queues a second training, a Stop is lost.

MONAI Label runs a background training in a subprocess that a worker thread starts some time after the
``POST /train/{model}`` answered. Two races follow from that gap:

* a second POST arriving in the gap sees no subprocess yet, so it is queued (200) instead of refused (429);
* a ``DELETE /train/`` arriving in the gap finds no subprocess to kill, answers with nothing, and the training
  starts anyway and runs to its end (with a large ``max_iterations``, for hours);
* a stopped task whose subprocess printed nothing yet has no (or empty) ``details``, and the stock Slicer plugin's
  Stop reads ``status.get("result", status.get("details", [])[-1])`` (``onStopTraining``): an IndexError there.

:func:`install` closes them: a task that is submitted but not started yet counts as running, stopping it marks
it ``STOPPED`` so that it never starts, every stopped task's ``details`` ends with a line saying so, and a stop
that lands while the subprocess is being created waits for it and kills it. A background request can also be checked before it is queued (``install(check=...)``), so
that bad options are a 4xx at once rather than a task that fails in its subprocess a minute later. Everything
else is MONAI Label's own code.
"""

import logging
import threading
import time
from collections import deque
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Optional, Set

from monailabel.utils.async_tasks import task as _task_module
from monailabel.utils.async_tasks import utils as _utils

logger = logging.getLogger(__name__)

#: A task still ``SUBMITTED`` after this long is taken to be queued behind another, not about to start.
SUBMITTED_COUNTS_AS_RUNNING_S = 120
#: How long a stop waits for a subprocess that is being started before it gives up.
STOP_WAIT_S = 30.0

_lock = threading.Lock()
_started: Set[str] = set()  # task ids whose worker has begun to start the subprocess
_stopped: Set[str] = set()  # task ids a stop request killed
# MONAI Label's own functions, kept on its module so that a second import of this one never wraps a wrapper.
_original_task_func = _utils.__dict__.setdefault("_dinomix_original_task_func", _utils._task_func)
_original_stop = _utils.__dict__.setdefault("_dinomix_original_stop", _utils.stop_background_task)
_original_run = _utils.__dict__.setdefault("_dinomix_original_run", _utils.run_background_task)
_checks: Dict[str, Callable[[Dict[str, Any]], None]] = {}


def _now() -> str:
    return datetime.today().strftime("%Y-%m-%d %H:%M:%S")


def running_or_submitted(method: str) -> Dict[str, Any]:
    """MONAI Label's ``processes(method)`` plus tasks submitted in the last two minutes that have not started."""
    active = dict(_utils.processes(method))
    recent = (datetime.today() - timedelta(seconds=SUBMITTED_COUNTS_AS_RUNNING_S)).strftime("%Y-%m-%d %H:%M:%S")
    for t in _utils.tasks(method):
        if t.get("status") == "SUBMITTED" and t.get("start_ts", "") >= recent:
            active.setdefault(t["id"], None)
    return active


def _guarded_task_func(task, method, callback=None):
    """The worker's entry point: a task stopped before it started is skipped."""
    with _lock:
        if task.get("status") == "STOPPED":
            logger.info("%s task %s was stopped before it started; not starting it", method, task["id"])
            return None
        _started.add(task["id"])
    try:
        return _original_task_func(task, method, callback)
    finally:
        with _lock:
            _started.discard(task["id"])
            if task["id"] in _stopped:  # killed: not the ERROR MONAI Label would record for a non-zero exit
                _stopped.discard(task["id"])
                task["status"] = "STOPPED"


def stop_background_task(method: str) -> Optional[Dict[str, Any]]:
    """Stop the running task of ``method``, or the one about to start; ``None`` when there is none."""
    deadline = time.monotonic() + STOP_WAIT_S
    while True:
        with _lock:
            if _utils.processes(method):
                task = _original_stop(method)
                if task is not None:
                    _stopped.add(task["id"])
                    _say_stopped(task, "stopped by request")
                return task
            pending = [t for t in _utils.tasks(method) if t.get("status") == "SUBMITTED"]
            if not pending:
                return None
            task = pending[0]
            if task["id"] not in _started:
                task["status"] = "STOPPED"
                task["end_ts"] = _now()
                _say_stopped(task, "stopped by request before it started")
                logger.info("stopped %s task %s before it started", method, task["id"])
                return task
        # Its worker is creating the subprocess right now: wait for it to exist, then kill it.
        if time.monotonic() > deadline:
            logger.warning("%s task %s did not start within %.0f s; cannot stop it", method, task["id"], STOP_WAIT_S)
            return None
        time.sleep(0.05)


def _say_stopped(task: Dict[str, Any], line: str) -> None:
    """End the task's ``details`` (MONAI Label's deque of its last output lines) with ``line``."""
    details = task.get("details")
    if details is None:
        details = task["details"] = deque(maxlen=20)
    details.append(f"{_now()} {line}")


def run_background_task(request, method, callback=None, debug=False):
    """MONAI Label's ``run_background_task`` after the check installed for ``method`` (which raises to refuse)."""
    check = _checks.get(method)
    if check is not None:
        check(request)
    return _original_run(request, method, callback=callback, debug=debug)


def install(checks: Optional[Dict[str, Callable[[Dict[str, Any]], None]]] = None) -> None:
    """Patch MONAI Label's background-task module (idempotent).

    Args:
        checks: per method (``"train"``...), a function given the request of a background task before it is
            queued; it raises (for example ``HTTPException(400)``) to refuse the request.
    """
    _checks.clear()
    _checks.update(checks or {})
    _task_module.processes = running_or_submitted
    _task_module.stop_background_task = stop_background_task
    _task_module.run_background_task = run_background_task
    _utils._task_func = _guarded_task_func
