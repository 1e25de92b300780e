"""The MONAI Label 0.8.5 workarounds package (apps/dinomix/lib/compat): the exception -> HTTP status table of
lib/compat/errors.py on a tiny FastAPI app, and the version check of ``compat.install``.

The same answers from MONAI Label's real endpoints are in test_reliability.py and test_app_server.py.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from monailabel.interfaces.exception import (
    ImageNotFoundException,
    LabelNotFoundException,
    MONAILabelError,
    MONAILabelException,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", "dinomix"))

from lib import compat  # noqa: E402
from lib.compat import errors, uploads  # noqa: E402
from lib.options import AppOptions  # noqa: E402
from conftest import add_failing_identity_server_routes  # noqa: E402

from dinomix_core.errors import InvalidVolumeError, ModelFileError, ModelNotFoundError, TrainingError  # noqa: E402

#: (exception raised by an endpoint, expected status, expected detail)
CASES = [
    (json.JSONDecodeError("Expecting value", "{not json", 1), 400,
     "request parameters are not valid JSON: Expecting value: line 1 column 2 (char 1)"),
    (InvalidVolumeError("image must be a 3D volume"), 422, "image must be a 3D volume"),
    (ModelFileError("'x.pt' is not a DINO-Mix model file"), 422, "'x.pt' is not a DINO-Mix model file"),
    (ModelNotFoundError("the dinomix model is not ready"), 409, "the dinomix model is not ready"),
    (TrainingError("no usable labeled volume"), 422, "training not possible: no usable labeled volume"),
    (ImageNotFoundException("Image abc not found"), 404, "Image abc not found"),
    (LabelNotFoundException("Label: abc Tag: final not found"), 404, "Label: abc Tag: final not found"),
    (MONAILabelException(MONAILabelError.INVALID_INPUT, "There is no model 'x' available"), 404,
     "There is no model 'x' available"),
    (MONAILabelException(MONAILabelError.APP_INIT_ERROR, "There is no such strategy 'x' available"), 404,
     "There is no such strategy 'x' available"),
    (MONAILabelException(MONAILabelError.TRANSFORM_ERROR, "Failed to run transform"), 400, "Failed to run transform"),
    (HTTPException(status_code=500, detail="Neither Image nor File not Session ID input is provided"), 400,
     errors.NO_IMAGE),
    (HTTPException(status_code=418, detail="a teapot", headers={"X-Why": "tea"}), 418, "a teapot"),
]


@pytest.fixture(scope="module")
def client():
    api = FastAPI()

    @api.get("/raise/{i}")
    def raise_case(i: int):
        raise CASES[i][0]

    add_failing_identity_server_routes(api, b'{"error": "invalid_grant"}')

    @api.get("/bug")
    def bug():
        raise ZeroDivisionError("a bug")

    errors.install(api)
    errors.install(api)  # idempotent
    return TestClient(api, raise_server_exceptions=False)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[type(c[0]).__name__ for c in CASES])
def test_each_exception_type_gets_its_status_and_its_message(client, i):
    _, status, detail = CASES[i]
    r = client.get(f"/raise/{i}")
    assert (r.status_code, r.json()) == (status, {"detail": detail})
    if status == 418:
        assert r.headers["X-Why"] == "tea"


def test_identity_server_errors_are_answered_by_the_auth_handler(client):
    r = client.post("/auth/token")
    assert r.status_code == 401 and r.json()["detail"] == "login refused by the identity server: invalid_grant"
    r = client.get("/info/")
    assert r.status_code == 503 and "cannot reach the identity server" in r.json()["detail"]


def test_an_exception_not_in_the_table_stays_a_500(client):
    assert client.get("/bug").status_code == 500
    with pytest.raises(KeyError):
        errors.status_and_detail(ZeroDivisionError("a bug"))


def test_the_table_covers_every_type_the_app_raises():
    types = {k for k in errors.STATUS if isinstance(k, type)}
    assert {json.JSONDecodeError, InvalidVolumeError, ModelFileError, ModelNotFoundError, TrainingError,
            MONAILabelException} <= types
    assert all(isinstance(s, int) and 400 <= s < 500 for s, _ in errors.STATUS.values())


class _App:
    def __init__(self):
        self.checked = []

    def check_train_request(self, request):
        self.checked.append(request)


def test_install_on_the_target_version_installs_every_fix(caplog):
    from lib.compat import tasks

    app, api = _App(), FastAPI()
    with caplog.at_level(logging.WARNING, logger="lib.compat"):
        assert compat.install() == ["tasks", "auth", "dicom_seg"]
        installed = compat.install(app, AppOptions.from_conf({"max_upload_mb": "1"}, "/app"), api=api)
    assert installed == ["tasks", "auth", "dicom_seg", "errors", "limits", "uploads"]
    assert compat.written_for() and compat.TARGET_VERSION == "0.8.5"
    assert not [r for r in caplog.records if "written for" in r.getMessage()]
    assert tasks._checks == {"train": app.check_train_request}
    assert api.user_middleware and json.JSONDecodeError in api.exception_handlers
    tasks.install()  # leave no check of this fake app behind


def test_another_version_warns_and_skips_a_fix_whose_target_is_missing(monkeypatch, caplog):
    import monailabel

    monkeypatch.setattr(monailabel, "__version__", "0.9.1")
    monkeypatch.setattr(uploads, "ENDPOINTS", (("monailabel.endpoints.no_such_module", "add_image"),))
    with caplog.at_level(logging.WARNING, logger="lib.compat"):
        installed = compat.install(_App(), AppOptions.from_conf({}, "/app"), api=FastAPI())
    assert installed == ["tasks", "auth", "dicom_seg", "errors", "limits"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("written for MONAI Label 0.8.5, this is 0.9.1" in m for m in messages)
    assert any("lacks what the uploads fix patches" in m for m in messages)
    assert not compat.written_for("0.9.1") and compat.written_for("0.8.5")
    from lib.compat import tasks

    tasks.install()
