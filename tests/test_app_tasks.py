"""apps/dinomix/lib/compat/tasks.py on MONAI Label's real background-task module, with its real worker threads.

A worker kept busy by another job holds a submitted task back, which makes the "Stop before the subprocess
exists" race of MONAI Label 0.8.5 deterministic. The end-to-end version (Train then Stop at once over HTTP) is
``test_stop_right_after_start_stops_the_training`` in test_app_client.py.
"""

import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", "dinomix"))

from lib.compat import tasks  # noqa: E402
from monailabel.utils.async_tasks import task as task_module  # noqa: E402
from monailabel.utils.async_tasks import utils  # noqa: E402


@pytest.fixture
def held_worker():
    """A fresh task method whose single worker is busy until the test lets it go."""
    tasks.install()
    method = f"dinomix_test_{uuid.uuid4().hex[:8]}"
    gate = threading.Event()
    executor = ThreadPoolExecutor(max_workers=1)
    utils.background_executors[method] = executor
    utils.background_processes[method] = {}
    executor.submit(gate.wait, 30)
    yield method, gate
    gate.set()
    executor.shutdown(wait=True)
    for registry in (utils.background_executors, utils.background_processes, utils.background_tasks):
        registry.pop(method, None)


def test_a_submitted_task_counts_as_running(held_worker):
    method, _ = held_worker
    assert task_module.processes(method) == {}
    task = utils.run_background_task({"model": "dinomix"}, method)
    assert task["status"] == "SUBMITTED"
    assert list(task_module.processes(method)) == [task["id"]]
    assert task_module.AsyncTask.status(method, check_if_running=True)[0] is task


def test_a_task_stopped_before_it_starts_never_starts(held_worker):
    method, gate = held_worker
    task = utils.run_background_task({"model": "dinomix"}, method)
    stopped = task_module.AsyncTask.stop(method)
    assert stopped is task
    assert task["status"] == "STOPPED" and "end_ts" in task
    assert task_module.processes(method) == {}

    gate.set()
    utils.background_executors[method].shutdown(wait=True)  # the worker reaches the task and must skip it
    assert task["status"] == "STOPPED"
    # the stock plugin's Stop reads details[-1]; one line, ours: starting the subprocess would have reset it
    assert list(task["details"])[-1].endswith("stopped by request before it started")
    assert len(task["details"]) == 1
    assert utils.processes(method) == {}


def test_stop_with_nothing_submitted_is_none(held_worker):
    method, _ = held_worker
    assert task_module.AsyncTask.stop(method) is None


def test_install_is_idempotent():
    tasks.install()
    tasks.install()
    assert task_module.processes is tasks.running_or_submitted
    assert task_module.stop_background_task is tasks.stop_background_task
    assert utils._task_func is tasks._guarded_task_func
    assert tasks._original_task_func is not tasks._guarded_task_func
