"""Shared fixtures: the sample studies and a real MONAI Label server running apps/dinomix.

``live_server`` starts ``monailabel start_server --app apps/dinomix`` in a subprocess on 127.0.0.1 (a free port)
over a temporary copy of the sample studies; ``app_client`` drives the same app in-process through FastAPI's
TestClient. Both are real servers: real HTTP, real NIfTI files, real (tiny) training.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
APP_DIR = REPO / "apps" / "dinomix"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

#: A small training configuration for server tests (kept tiny so a Retrain takes seconds on 2 cores).
FAST_TRAIN = {"max_iterations": 4, "val_fraction": 0.0}


def add_failing_identity_server_routes(api, refusal: bytes) -> None:
    """Routes of a FastAPI ``api`` that fail the way a call to the identity server does: ``POST /auth/token`` with
    the identity server's 401 (body ``refusal``), ``GET /info/`` with a refused connection."""
    import requests

    @api.post("/auth/token")
    def token():
        r = requests.Response()
        r.status_code, r._content = 401, refusal
        raise requests.HTTPError("401 Client Error", response=r)

    @api.get("/info/")
    def info():
        raise requests.ConnectionError("connection refused")


def scored_sample(ask, timeout_s: float = 180) -> dict:
    """Ask for a minority-uncertainty sample until its scores are ready (they are computed in the background
    after a publish); the answer that has a score."""
    deadline = time.monotonic() + timeout_s
    while True:
        res = ask()
        if "score" in res:
            return res
        assert res["selected_by"].startswith("pending"), res
        assert time.monotonic() < deadline, f"no scored sample within {timeout_s} s: {res}"
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_sample_studies(dest: Path) -> Path:
    from dinomix_core.studies import prepare_studies

    return Path(prepare_studies(str(dest)))


@pytest.fixture(scope="session")
def sample_studies_src(tmp_path_factory) -> Path:
    """A pristine copy of the sample studies (do not modify; copy it)."""
    return copy_sample_studies(tmp_path_factory.mktemp("pristine") / "studies")


@dataclass
class LiveServer:
    url: str
    studies: Path
    model_dir: Path
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, timeout: float = 60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text()[-n:]
        except OSError:
            return ""


def server_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "false")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    env.update(extra or {})
    return env


def start_server(
    studies: Path, model_dir: Path, log: Path, conf: Optional[dict] = None, env: Optional[dict] = None,
    ready_path: str = "/info/",
) -> LiveServer:
    port = free_port()
    monailabel = Path(sys.executable).parent / "monailabel"
    cmd = [str(monailabel), "start_server", "--app", str(APP_DIR), "--studies", str(studies), "--host", "127.0.0.1",
           "--port", str(port), "--conf", "model_dir", str(model_dir)]
    # no starter model unless a test asks for one: these servers start with nothing to serve, like a deployment
    # whose starter was removed (tests/test_day_one.py covers the shipped starter)
    for k, v in {"starter": "none", **(conf or {})}.items():
        cmd += ["--conf", k, str(v)]
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=server_env(env), start_new_session=True)
    srv = LiveServer(f"http://127.0.0.1:{port}", studies, model_dir, proc, log)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{srv.log_tail()}")
        try:
            status, _ = srv.get(ready_path, timeout=5)
            if status == 200:
                return srv
        except Exception:
            time.sleep(0.25)
    stop_server(srv)
    raise RuntimeError(f"server did not answer within 180 s:\n{srv.log_tail()}")


def stop_server(srv: LiveServer, sig=signal.SIGTERM) -> None:
    if srv.proc.poll() is None:
        try:
            os.killpg(srv.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(30)


def sample_server(tmp_path_factory, sample_studies_src: Path, name: str, conf: Optional[dict] = None):
    """A generator for a module fixture: a real server over a fresh copy of the sample studies, stopped after."""
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(sample_studies_src, root / "studies")
    srv = start_server(root / "studies", root / "model", root / "server.log", conf=conf)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, sample_studies_src):
    """A real ``monailabel start_server`` subprocess on 127.0.0.1 over a copy of the sample studies."""
    root = tmp_path_factory.mktemp("live")
    studies = root / "studies"
    shutil.copytree(sample_studies_src, studies)
    srv = start_server(studies, root / "model", root / "server.log")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def app_client(tmp_path_factory, sample_studies_src):
    """The app in-process behind FastAPI's TestClient (one per test session: MONAI Label's app is global)."""
    root = tmp_path_factory.mktemp("inproc")
    studies = root / "studies"
    shutil.copytree(sample_studies_src, studies)
    from monailabel.config import settings

    conf = {"model_dir": str(root / "model"), "starter": "none"}
    values = {
        "MONAI_LABEL_APP_DIR": str(APP_DIR),
        "MONAI_LABEL_STUDIES": str(studies),
        "MONAI_LABEL_APP_CONF": json.dumps(conf),
        "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    }
    for k, v in values.items():
        os.environ[k] = v
    settings.MONAI_LABEL_APP_DIR = str(APP_DIR)
    settings.MONAI_LABEL_STUDIES = str(studies)
    settings.MONAI_LABEL_APP_CONF = conf
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    from fastapi.testclient import TestClient
    from monailabel.app import app

    with TestClient(app) as client:
        client.studies = studies  # type: ignore[attr-defined]
        client.model_dir = root / "model"  # type: ignore[attr-defined]
        yield client


#: users of the stand-in Keycloak realm (tests/oidc_standin.py): name -> (password, roles)
AUTH_USERS = {
    "ann": ("ann-pw", ["monailabel-user", "monailabel-annotator"]),
    "adm": ("adm-pw", ["monailabel-user", "monailabel-annotator", "monailabel-reviewer", "monailabel-admin"]),
    "viewer": ("viewer-pw", ["monailabel-user"]),
}


@pytest.fixture(scope="session")
def oidc_realm():
    """A STAND-IN Keycloak realm on 127.0.0.1 (Keycloak itself cannot be installed here); see oidc_standin.py."""
    from oidc_standin import StandInRealm

    with StandInRealm(AUTH_USERS) as realm:
        yield realm


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory, sample_studies_src, oidc_realm):
    """A real ``monailabel start_server`` subprocess with MONAI Label authentication on, over the stand-in realm."""
    root = tmp_path_factory.mktemp("auth")
    studies = root / "studies"
    shutil.copytree(sample_studies_src, studies)
    env = {"MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": oidc_realm.realm_uri}
    srv = start_server(studies, root / "model", root / "server.log", env=env, ready_path="/auth/")
    yield srv
    stop_server(srv)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny trainings: less contention with a server running beside them)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: grid of the tiny SYNTHETIC phantoms shared by the trainer and CUDA tests
TINY_SHAPE, TINY_SPACING = (48, 48, 24), (4.0, 4.0, 6.0)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Three tiny SYNTHETIC phantoms: two labeled (seeds 0, 1) and one unlabeled (seed 2)."""
    from dinomix_core.phantoms import write_phantom_nifti

    d = tmp_path_factory.mktemp("phantoms")
    labeled = []
    for s in (0, 1):
        img, lab = write_phantom_nifti(d / f"case{s}.nii.gz", d / "labels" / f"case{s}.nii.gz", s, TINY_SHAPE,
                                       TINY_SPACING)
        labeled.append((str(img), str(lab)))
    img, _ = write_phantom_nifti(d / "case2.nii.gz", None, 2, TINY_SHAPE, TINY_SPACING)
    return {"labeled": labeled, "unlabeled": [str(img)], "dir": d}


#: hidden size of the tiny random DINOv3 of the `tiny_teacher` fixture
TINY_TEACHER_HIDDEN = 32


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> str:
    """A tiny random DINOv3ViTModel (hidden 32, 2 layers, patch 4, 4 registers) saved as a local folder."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(
        hidden_size=TINY_TEACHER_HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=4, num_register_tokens=4, image_size=32,
    )
    path = tmp_path_factory.mktemp("tiny_dinov3")
    DINOv3ViTModel(cfg).save_pretrained(str(path))
    return str(path)
