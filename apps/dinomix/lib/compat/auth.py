"""MONAI Label 0.8.5 bug fixed: with authentication on, every bearer token is refused (401), valid or not.

MONAI Label checks bearer tokens in ``monailabel.endpoints.user.auth.from_token`` with
``jwt.decode(token, key, options=...)`` and no ``algorithms``. The PyJWT it requires (``pyjwt>=2.8``) refuses
that call ("It is required that you pass in a value for the algorithms argument"), so with
``MONAI_LABEL_AUTH_ENABLE=true`` every token, valid or not, gets 401 and nobody can use the server.

:func:`install` replaces ``from_token`` with the same function that names the accepted algorithms:
``DINOMIX_AUTH_ALGORITHMS`` (comma-separated, default ``RS256``, Keycloak's default). Only asymmetric
algorithms are accepted: the realm's *public* key must never serve as an HMAC secret (that would let anyone
who can read the public key forge tokens). The claims are read as MONAI Label reads them.

It also turns two failures that MONAI Label leaves as a bare 500 into answers a client can act on:

* ``POST /auth/token`` refused by the identity server (wrong user name or password) -> 401 with the reason;
* the identity server unreachable (fetching its key or its token endpoint) -> 503 naming the realm.
"""

import logging
import os
from typing import List

import jwt
import requests
from fastapi.responses import JSONResponse
from monailabel.config import settings
from monailabel.endpoints.user import auth as _auth

logger = logging.getLogger(__name__)

ALGORITHMS_ENV = "DINOMIX_AUTH_ALGORITHMS"
DEFAULT_ALGORITHMS = ("RS256",)
_ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")

_original_from_token = _auth.__dict__.setdefault("_dinomix_original_from_token", _auth.from_token)


def accepted_algorithms(value: str = None) -> List[str]:
    """The token signature algorithms to accept, from ``value`` or ``$DINOMIX_AUTH_ALGORITHMS``.

    Raises:
        ValueError: on an empty list or a symmetric / unknown algorithm (e.g. ``HS256``).
    """
    raw = os.environ.get(ALGORITHMS_ENV, ",".join(DEFAULT_ALGORITHMS)) if value is None else value
    algs = [a.strip() for a in str(raw).split(",") if a.strip()]
    bad = [a for a in algs if a not in _ASYMMETRIC]
    if not algs or bad:
        raise ValueError(
            f"{ALGORITHMS_ENV} must list asymmetric JWT algorithms from {', '.join(_ASYMMETRIC)}; got {raw!r}."
        )
    return algs


def from_token(token: str) -> _auth.User:
    """MONAI Label's ``from_token`` with the accepted algorithms named (see the module docstring)."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return _auth.DEFAULT_USER
    key = _auth.get_public_key(settings.MONAI_LABEL_AUTH_REALM_URI)
    payload = jwt.decode(
        token,
        key,
        algorithms=accepted_algorithms(),
        options={"verify_signature": True, "verify_aud": False, "verify_exp": True},
    )
    roles = payload
    for part in settings.MONAI_LABEL_AUTH_TOKEN_ROLES.split("#"):
        roles = roles.get(part) if isinstance(roles, dict) else None
    return _auth.User(
        username=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME),
        email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
        name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
        roles=list(roles or []),
    )


def install() -> None:
    """Replace MONAI Label's token check (idempotent); a bad ``DINOMIX_AUTH_ALGORITHMS`` stops the start-up."""
    if settings.MONAI_LABEL_AUTH_ENABLE:
        algs = accepted_algorithms()  # fail at start-up, not at the first request
        logger.info("authentication on: realm %s, token algorithms %s", settings.MONAI_LABEL_AUTH_REALM_URI, algs)
    _auth.from_token = from_token


async def identity_server_error(request, exc: requests.RequestException) -> JSONResponse:
    """Exception handler for ``requests`` errors raised while talking to the identity server."""
    realm = settings.MONAI_LABEL_AUTH_REALM_URI
    response = getattr(exc, "response", None)
    if request.url.path.rstrip("/").endswith("/auth/token") and response is not None and response.status_code < 500:
        reason = ""
        try:
            body = response.json()
            reason = body.get("error_description") or body.get("error") or ""
        except ValueError:
            reason = response.text[:200]
        detail = f"login refused by the identity server: {reason or 'wrong user name or password'}"
        return JSONResponse(status_code=401, content={"detail": detail}, headers={"WWW-Authenticate": "Bearer"})
    logger.error("identity server %s: %s", realm, exc)
    return JSONResponse(
        status_code=503, content={"detail": f"cannot reach the identity server at {realm}: {type(exc).__name__}"}
    )
