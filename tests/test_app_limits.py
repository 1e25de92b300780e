"""The upload-size middleware of the app (apps/dinomix/lib/compat/limits.py) on a small FastAPI app with real multipart.

The live-server cases (MONAI Label's own upload endpoints) are in test_reliability.py.
"""

from __future__ import annotations

import os
import sys

import pytest
from fastapi import FastAPI, File, UploadFile
from fastapi.testclient import TestClient

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", "dinomix"))

from lib.compat.limits import UploadLimit, install  # noqa: E402

LIMIT = 1000


@pytest.fixture()
def client():
    api = FastAPI()
    seen = []

    @api.put("/upload")
    async def upload(file: UploadFile = File(...)):
        data = await file.read()
        seen.append(len(data))
        return {"size": len(data)}

    @api.get("/big")
    def big():
        return {"x": "y" * 5000}  # answers are not limited

    api.add_middleware(UploadLimit, max_bytes=LIMIT)
    tc = TestClient(api)
    tc.seen = seen
    return tc


def test_a_body_within_the_limit_passes(client):
    r = client.put("/upload", files={"file": ("a.bin", b"x" * 500)})
    assert r.status_code == 200 and r.json() == {"size": 500} and client.seen == [500]
    assert client.get("/big").status_code == 200


def test_content_length_over_the_limit_is_413_before_the_app_runs(client):
    r = client.put("/upload", files={"file": ("a.bin", b"x" * 2000)})
    assert r.status_code == 413
    assert r.json()["detail"].startswith("request body of ") and "exceeds the upload limit of 1000 bytes" in r.text
    assert client.seen == []


def test_a_chunked_body_over_the_limit_is_413_and_the_app_never_gets_it(client):
    def gen():
        for _ in range(5):
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + b"x" * 400

    r = client.put("/upload", content=gen(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413 and "of more than that exceeds the upload limit" in r.json()["detail"]
    assert client.seen == []


def test_a_non_numeric_content_length_is_400(client):
    r = client.put("/upload", content=b"abc", headers={"Content-Length": "lots", "Content-Type": "text/plain"})
    assert r.status_code == 400 and "is not a number" in r.json()["detail"]


def test_a_limit_must_be_positive():
    with pytest.raises(ValueError):
        UploadLimit(lambda *a: None, max_bytes=0)


def test_install_adds_the_middleware_once_and_0_adds_none():
    """(``max_upload_mb`` itself is parsed and checked by lib/options.py: tests/test_app_options.py.)"""
    api = FastAPI()
    assert install(api, 0) is False and api.user_middleware == []
    assert install(api, 2) is True and install(api, 2) is True
    assert [(m.cls, m.kwargs) for m in api.user_middleware] == [(UploadLimit, {"max_bytes": 2 * 2**20})]
    r = TestClient(api).put("/x", content=b"x" * (2 * 2**20 + 1))
    assert r.status_code == 413
