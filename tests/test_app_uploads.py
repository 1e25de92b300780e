"""apps/dinomix/lib/compat/uploads.py: a failing upload endpoint removes the temporary copy MONAI Label scheduled for
removal (MONAI Label runs that removal as a background task, i.e. only after a successful response). The live
server cases are in tests/test_reliability.py (every refusal there checks the server's TMPDIR)."""

from __future__ import annotations

import os
import sys

import pytest
from fastapi import BackgroundTasks
from monailabel.utils.others.generic import remove_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", "dinomix"))

from lib.compat import uploads  # noqa: E402


def _endpoint(path, fail: bool, calls: list):
    def endpoint(background_tasks: BackgroundTasks, name: str):
        path.write_bytes(b"upload")
        background_tasks.add_task(remove_file, str(path))
        background_tasks.add_task(calls.append, "other task")
        if fail:
            raise ValueError(f"bad {name}")
        return name

    return endpoint


def test_a_failing_endpoint_removes_its_upload_copy_and_reraises(tmp_path):
    calls = []
    wrapped = uploads.cleanup_on_error(_endpoint(tmp_path / "tmpupload.nii.gz", True, calls))
    tasks = BackgroundTasks()
    with pytest.raises(ValueError, match="bad label"):
        wrapped(tasks, "label")
    assert not (tmp_path / "tmpupload.nii.gz").exists()
    assert calls == []  # only MONAI Label's remove_file tasks run early


def test_a_succeeding_endpoint_leaves_removal_to_the_background(tmp_path):
    calls = []
    wrapped = uploads.cleanup_on_error(_endpoint(tmp_path / "tmpupload.nii.gz", False, calls))
    tasks = BackgroundTasks()
    assert wrapped(tasks, "label") == "label"
    assert (tmp_path / "tmpupload.nii.gz").exists() and len(tasks.tasks) == 2


def test_install_wraps_monai_labels_upload_endpoints_once():
    import importlib

    uploads.install()
    first = [getattr(importlib.import_module(m), n) for m, n in uploads.ENDPOINTS]
    uploads.install()
    again = [getattr(importlib.import_module(m), n) for m, n in uploads.ENDPOINTS]
    assert all(getattr(f, "_dinomix_cleanup_on_error", False) for f in first)
    assert [id(f) for f in first] == [id(f) for f in again]
    assert all(f.__wrapped__.__name__ == n for f, (_, n) in zip(first, uploads.ENDPOINTS))
