"""MONAI Label 0.8.5 bug fixed: no limit on request bodies, so one huge or endless upload fills the disk.

MONAI Label 0.8.5 sets no limit on request bodies and streams uploads (``PUT /datastore/image``,
``PUT /datastore/label``, ``POST /infer`` with a file) to temporary files, so one huge or endless upload can fill
the server's disk. :class:`UploadLimit` is an ASGI middleware that refuses a ``POST``/``PUT``/``PATCH`` body
larger than ``max_bytes`` with 413 and a message: from the ``Content-Length`` header before anything is read, or,
for a chunked body without one, as soon as the bytes received pass the limit (the app then sees a client that
went away, and its answer is replaced by the 413; nothing is stored).

App option ``--conf max_upload_mb N`` (default 4096; 0 turns the limit off; parsed in lib/options.py). :func:`install`
adds the middleware to MONAI Label's FastAPI app.
"""

import json
import logging
from typing import Any, Callable, Dict

from starlette.middleware import Middleware

logger = logging.getLogger(__name__)

_METHODS = {"POST", "PUT", "PATCH"}


class UploadLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413 (see the module docstring).

    Args:
        app: the wrapped ASGI app.
        max_bytes: the largest accepted body, in bytes (> 0).
    """

    def __init__(self, app: Callable, max_bytes: int) -> None:
        if int(max_bytes) <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}.")
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self, size: str) -> str:
        return (
            f"request body {size} exceeds the upload limit of {self.max_bytes} bytes "
            f"({self.max_bytes / 2**20:.0f} MB; app option max_upload_mb); nothing was stored."
        )

    @staticmethod
    async def _answer(send: Callable, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http" or scope.get("method") not in _METHODS:
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await self._answer(send, 400, f"Content-Length {length!r} is not a number.")
                return
            if n > self.max_bytes:
                logger.warning("refused %s %s: %d bytes > %d", scope["method"], scope.get("path"), n, self.max_bytes)
                await self._answer(send, 413, self._message(f"of {n} bytes"))
                return

        received = 0
        exceeded = False
        answered = False
        started = False

        async def counted_receive():
            # past the limit the app is told the client went away; its answer is replaced by the 413 below
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def refuse():
            nonlocal answered
            if not answered and not started:  # an answer already under way cannot be replaced
                answered = True
                logger.warning("refused %s %s: body passed %d bytes", scope["method"], scope.get("path"), self.max_bytes)
                await self._answer(send, 413, self._message("of more than that"))

        async def guarded_send(message):
            nonlocal started
            if exceeded:
                await refuse()
                return
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await refuse()


def install(api: Any, max_upload_mb: int) -> bool:
    """Refuse request bodies over ``max_upload_mb`` on the FastAPI app ``api`` (idempotent); 0: no limit.

    Returns whether the limit is in place.
    """
    if max_upload_mb <= 0:
        logger.warning("DINO-Mix: no upload size limit (max_upload_mb=%s)", max_upload_mb)
        return False
    if not any(m.cls is UploadLimit for m in api.user_middleware):
        # innermost user middleware: inside CORS, so a 413 carries the CORS headers a browser client needs
        api.user_middleware.append(Middleware(UploadLimit, max_bytes=max_upload_mb * 2**20))
        api.middleware_stack = None  # Starlette rebuilds the stack on the next request
        logger.info("DINO-Mix: uploads limited to %d MB", max_upload_mb)
    return True
