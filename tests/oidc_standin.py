"""STAND-IN for a Keycloak realm (an OpenID Connect identity server), for the authentication tests.

Keycloak is a Java server that cannot be installed on the build machines, so the tests run this small stand-in
instead. It answers the three requests MONAI Label 0.8.5 makes of a realm (``monailabel/endpoints/user/auth.py``
and ``endpoints/login.py``), in Keycloak's formats:

* ``GET  /realms/NAME``: ``{"realm": NAME, "public_key": <base64 DER of the RSA public key>}``;
* ``GET  /realms/NAME/.well-known/openid-configuration``: ``{"issuer": ..., "token_endpoint": ...}``;
* ``POST /realms/NAME/protocol/openid-connect/token`` (password grant, form-encoded): an RS256 JWT with
  ``preferred_username``, ``email``, ``name``, ``realm_access.roles`` and ``exp``; wrong credentials get
  Keycloak's ``401 {"error": "invalid_grant", "error_description": "Invalid user credentials"}``.

Everything else about the tests is real: the MONAI Label server, its token checks, the clients and HTTP.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Sequence

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROLES = {
    "user": "monailabel-user",
    "annotator": "monailabel-annotator",
    "reviewer": "monailabel-reviewer",
    "admin": "monailabel-admin",
}


class StandInRealm:
    """A running stand-in realm on 127.0.0.1 (see the module docstring). Use as a context manager.

    Args:
        users: user name -> (password, roles).
        client_id: the only client id accepted for the password grant (MONAI Label's default).
        realm: realm name in the URL.
    """

    def __init__(
        self, users: Dict[str, tuple], client_id: str = "monailabel-app", realm: str = "monailabel"
    ) -> None:
        self.users = dict(users)
        self.client_id = client_id
        self.realm = realm
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode("ascii")
        self.requests: List[str] = []
        self.token_lifetime_s = 300.0  # of the tokens the token endpoint issues
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.realm_uri = f"{self.base}/realms/{realm}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "StandInRealm":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, username: str, roles: Sequence[str], lifetime_s: float = 300.0, algorithm: str = "RS256",
              key=None) -> str:
        """A token signed like the realm signs them (or with ``key``/``algorithm`` to forge one)."""
        now = int(time.time())
        claims = {
            "preferred_username": username,
            "email": f"{username}@example.org",
            "name": username.title(),
            "realm_access": {"roles": list(roles)},
            "iss": self.realm_uri,
            "iat": now,
            "exp": now + int(lifetime_s),
        }
        return jwt.encode(claims, self.key if key is None else key, algorithm=algorithm)

    def _handler(self):
        realm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, obj) -> None:
                body = json.dumps(obj).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                realm.requests.append(f"GET {self.path}")
                path = self.path.rstrip("/")
                if path == f"/realms/{realm.realm}":
                    self._send(200, {"realm": realm.realm, "public_key": realm.public_key_b64})
                elif path == f"/realms/{realm.realm}/.well-known/openid-configuration":
                    self._send(200, {
                        "issuer": realm.realm_uri,
                        "token_endpoint": f"{realm.realm_uri}/protocol/openid-connect/token",
                    })
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                realm.requests.append(f"POST {self.path}")
                if self.path.rstrip("/") != f"/realms/{realm.realm}/protocol/openid-connect/token":
                    self._send(404, {"error": "not found"})
                    return
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode("utf-8")))
                if form.get("grant_type") != "password" or form.get("client_id") != realm.client_id:
                    self._send(400, {"error": "unauthorized_client", "error_description": "Invalid client"})
                    return
                user = realm.users.get(form.get("username", ""))
                if user is None or user[0] != form.get("password"):
                    self._send(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
                    return
                token = realm.token(form["username"], user[1], lifetime_s=realm.token_lifetime_s)
                self._send(200, {"access_token": token, "token_type": "Bearer",
                                 "expires_in": int(realm.token_lifetime_s)})

        return Handler
