"""Authentication: MONAI Label's OpenID Connect token checks with the DINO-Mix app, and logging in from our clients.

MONAI Label 0.8.5 checks tokens with ``jwt.decode`` and no ``algorithms``, which the PyJWT it requires refuses,
so every token got 401; ``apps/dinomix/lib/compat/auth.py`` fixes that. These tests run the real server
(``monailabel start_server`` subprocess on 127.0.0.1, ``MONAI_LABEL_AUTH_ENABLE=true``) against a STAND-IN
Keycloak realm (tests/oidc_standin.py: Keycloak cannot be installed here), with real HTTP, real tokens (RS256,
2048-bit RSA) and real NIfTI files, through our standard-library client and MONAI Label's official client.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "slicer_module", "DinoMix"))
sys.path.insert(0, os.path.join(ROOT, "apps", "dinomix"))

import jwt  # noqa: E402
from conftest import AUTH_USERS, add_failing_identity_server_routes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from DinoMixLib.client import DinoMixClient, DinoMixClientError  # noqa: E402
from DinoMixLib.labelmap import read_nifti, write_nifti_label  # noqa: E402

ADMIN_ROLES = AUTH_USERS["adm"][1]


def login(srv, user):
    c = DinoMixClient(srv.url)
    c.login(user, AUTH_USERS[user][0])
    return c


# ------------------------------------------------------------------------------------------ the live server
def test_without_a_login_the_server_answers_401_and_says_so(auth_server):
    c = DinoMixClient(auth_server.url)
    assert c.auth_enabled()
    with pytest.raises(DinoMixClientError) as e:
        c.info()
    assert e.value.status == 401
    assert "requires a login" in str(e.value) and "user name and password" in str(e.value)


@pytest.mark.parametrize("user, password", [("ann", "wrong"), ("nobody", "x")])
def test_a_refused_login_gives_the_identity_servers_reason(auth_server, user, password):
    c = DinoMixClient(auth_server.url)
    with pytest.raises(DinoMixClientError) as e:
        c.login(user, password)
    assert e.value.status == 401  # MONAI Label alone answers 500 here
    assert f"login failed for {user!r}" in str(e.value) and "Invalid user credentials" in str(e.value)
    assert c.token is None
    with pytest.raises(DinoMixClientError, match="enter a user name"):
        c.login("  ", "x")


def test_an_annotator_reads_infers_and_saves_labels_but_cannot_train(auth_server, tmp_path):
    """Roles as MONAI Label assigns them: /info, /infer and downloads for users, labels for annotators."""
    c = login(auth_server, "ann")
    assert c.token and "dinomix" in c.info()["trainers"]
    assert c.training_running() is False  # GET /train/ needs the user role
    image_id = sorted(c.datastore("all")["objects"])[0]
    with pytest.raises(DinoMixClientError) as e:
        c.infer(image_id, output_path=str(tmp_path / "pred.nii.gz"))
    assert e.value.status == 409 and "no trained DINO-Mix model" in str(e.value)  # past the token check
    data, affine = read_nifti(c.download_image(image_id, str(tmp_path)))
    lab = np.zeros(data.shape, np.uint8)
    lab[tuple(slice(s // 2 - 3, s // 2 + 3) for s in data.shape)] = 6
    c.submit_label(image_id, write_nifti_label(str(tmp_path / "label.nii.gz"), lab, affine))
    stored, _ = read_nifti(c.download_label(image_id, str(tmp_path / "back")))
    assert np.array_equal(stored, lab)
    with pytest.raises(DinoMixClientError) as e:
        c.train("dinomix", {"max_iterations": 2})
    assert e.value.status == 403 and 'Role "monailabel-admin" is required' in str(e.value)
    assert c.training_running() is False  # nothing was started


def test_a_user_without_the_annotator_role_cannot_save_a_label(auth_server, tmp_path):
    c = login(auth_server, "viewer")
    image_id = sorted(c.datastore("all")["objects"])[-1]
    before = c.datastore("all")["objects"][image_id].get("labels", {})
    data, affine = read_nifti(c.download_image(image_id, str(tmp_path)))
    lab = np.zeros(data.shape, np.uint8)
    lab[:4, :4, :4] = 1
    with pytest.raises(DinoMixClientError) as e:
        c.submit_label(image_id, write_nifti_label(str(tmp_path / "label.nii.gz"), lab, affine))
    assert e.value.status == 403 and "monailabel-annotator" in str(e.value)
    assert c.datastore("all")["objects"][image_id].get("labels", {}) == before


def test_an_admin_may_stop_training(auth_server):
    c = login(auth_server, "adm")
    c.stop_training()  # nothing runs: answered, not refused
    assert c.training_running() is False


def test_an_expired_token_is_renewed_with_the_same_login(auth_server, oidc_realm):
    oidc_realm.token_lifetime_s = 2
    try:
        c = login(auth_server, "ann")
        first = c.token
        time.sleep(3)  # the token has expired
        n = sum(r.endswith("/openid-connect/token") for r in oidc_realm.requests)
        assert "dinomix" in c.info()["trainers"]  # 401, a new login, the request again
        assert sum(r.endswith("/openid-connect/token") for r in oidc_realm.requests) == n + 1
        assert c.token != first
    finally:
        oidc_realm.token_lifetime_s = 300.0
    c.logout()
    assert c.token is None
    with pytest.raises(DinoMixClientError) as e:
        c.info()
    assert e.value.status == 401


def test_expired_foreign_and_symmetric_tokens_are_refused(auth_server, oidc_realm):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = {
        "expired": oidc_realm.token("adm", ADMIN_ROLES, lifetime_s=-60),
        "signed by another key": oidc_realm.token("adm", ADMIN_ROLES, key=other_key),
        "HS256": oidc_realm.token("adm", ADMIN_ROLES, algorithm="HS256", key="a shared secret of at least 32 bytes"),
        "not a JWT": "abc.def.ghi",
    }
    for what, token in tokens.items():
        c = DinoMixClient(auth_server.url, token=token)
        with pytest.raises(DinoMixClientError) as e:
            c.info()
        assert e.value.status == 401, what
        assert "expired or was refused" in str(e.value), what
    good = DinoMixClient(auth_server.url, token=oidc_realm.token("adm", ADMIN_ROLES))
    assert "dinomix" in good.info()["trainers"]


def test_the_official_monailabel_client_logs_in_too(auth_server):
    """The stock MONAI Label Slicer plugin logs in through these calls."""
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(auth_server.url)
    assert client.auth_enabled()
    token = client.auth_token("ann", AUTH_USERS["ann"][0])
    client.update_auth(token)
    assert client.auth_valid_token()
    assert "dinomix" in client.info()["trainers"]


# ------------------------------------------------------------------------------------------ lib/compat/auth.py alone
@pytest.fixture()
def auth_on(monkeypatch, oidc_realm):
    """MONAI Label's settings with authentication on, in this process, and the stand-in realm's public key."""
    from monailabel.config import settings
    from monailabel.endpoints.user import auth as ml_auth

    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", True)
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", oidc_realm.realm_uri)
    ml_auth.get_public_key.cache_clear() if hasattr(ml_auth.get_public_key, "cache_clear") else None
    return ml_auth


def test_monai_labels_own_check_refuses_a_valid_token_and_ours_accepts_it(auth_on, oidc_realm):
    from lib.compat import auth

    token = oidc_realm.token("ann", AUTH_USERS["ann"][1])
    with pytest.raises(jwt.InvalidTokenError, match="algorithms"):
        auth_on._dinomix_original_from_token(token)  # MONAI Label 0.8.5 + PyJWT 2: every token is refused
    user = auth.from_token(token)
    assert user.username == "ann" and user.email == "ann@example.org" and user.name == "Ann"
    assert user.roles == ["monailabel-user", "monailabel-annotator"]
    with pytest.raises(jwt.InvalidAlgorithmError):
        auth.from_token(oidc_realm.token("ann", ADMIN_ROLES, algorithm="HS256", key="x" * 32))


@pytest.mark.parametrize(
    "value, expected",
    [(None, ["RS256"]), ("RS256, ES256", ["RS256", "ES256"]), ("HS256", ValueError), ("", ValueError),
     ("RS256,none", ValueError)],
)
def test_accepted_algorithms(monkeypatch, value, expected):
    from lib.compat import auth

    monkeypatch.delenv(auth.ALGORITHMS_ENV, raising=False)
    if expected is ValueError:
        with pytest.raises(ValueError, match="asymmetric"):
            auth.accepted_algorithms(value)
    else:
        assert auth.accepted_algorithms(value) == expected


def test_identity_server_errors_become_401_and_503():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from lib.compat import auth

    api = FastAPI()
    add_failing_identity_server_routes(api, b'{"error": "invalid_grant", "error_description": "Account disabled"}')
    api.add_exception_handler(requests.RequestException, auth.identity_server_error)
    tc = TestClient(api)
    r = tc.post("/auth/token")
    assert r.status_code == 401 and r.json()["detail"] == "login refused by the identity server: Account disabled"
    r = tc.get("/info/")
    assert r.status_code == 503 and "cannot reach the identity server" in r.json()["detail"]
