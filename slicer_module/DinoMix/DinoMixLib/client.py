"""A small MONAI Label REST client for the DINO-Mix app, using only the Python standard library.

3D Slicer's bundled Python has no ``requests`` guarantee and no MONAI Label package, so this client speaks
MONAI Label 0.8's HTTP API with ``urllib`` and ``json`` only. Endpoints used (see ``monailabel/endpoints``):

* ``GET /info/``: app name, labels, models (``models.dinomix.labels``), strategies, ``train_stats``;
* ``POST /activelearning/{strategy}`` (JSON body of params): next image to annotate (``{}`` when none left);
* ``GET /datastore/image?image=ID``: the image file;
* ``POST /infer/{model}?image=ID&output=image`` (multipart form field ``params``): the label file;
* ``PUT /datastore/label?image=ID&tag=final`` (multipart ``label`` file + ``params`` field): save a label;
* ``POST /train/{model}`` (JSON body of params; 429 while a run is going), ``DELETE /train/`` (stop),
  ``GET /train/?check_if_running=true`` (200 running, 404 not);
* ``GET /auth/`` (is authentication on?), ``POST /auth/token`` (form ``username``/``password``: a bearer token,
  then sent with every request as ``Authorization: Bearer ...``).

Every failure becomes :class:`DinoMixClientError` with a message a user can act on.

DINO-Mix: arXiv 2602.07819.
"""

from __future__ import annotations

import email.message
import json
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["DinoMixClient", "DinoMixClientError", "encode_multipart"]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL = "dinomix"
DEFAULT_STRATEGY = "dinomix_minority_uncertainty"
FALLBACK_STRATEGY = "random"
#: keys a DINO-Mix app may put in ``/info`` ``models.dinomix`` to say whether a trained model file exists
MODEL_PRESENT_KEYS = ("model_present", "has_model", "model_exists", "trained")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
#: seconds after train() during which the server's task record also decides whether training runs
SUBMIT_GRACE_S = 120.0


class DinoMixClientError(Exception):
    """A request to the DINO-Mix MONAI Label server failed.

    Attributes:
        message: human-readable explanation (the server's ``detail`` when it sent one).
        status: HTTP status code, or None when no HTTP answer came back (server down, timeout).
    """

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


def encode_multipart(
    fields: Mapping[str, str], files: Mapping[str, Tuple[str, bytes]], boundary: Optional[str] = None
) -> Tuple[str, bytes]:
    """Encode a ``multipart/form-data`` body.

    Args:
        fields: plain form fields name -> text.
        files: file fields name -> (filename, content bytes).
        boundary: the part boundary (a random uuid-based one when None).

    Returns:
        ``(content_type_header, body_bytes)``.
    """
    boundary = boundary or f"----DinoMixBoundary{uuid.uuid4().hex}"
    crlf = b"\r\n"
    out = bytearray()
    for name, value in fields.items():
        out += b"--" + boundary.encode("ascii") + crlf
        out += f'Content-Disposition: form-data; name="{_quote(name)}"'.encode("utf-8") + crlf + crlf
        out += str(value).encode("utf-8") + crlf
    for name, (filename, content) in files.items():
        out += b"--" + boundary.encode("ascii") + crlf
        out += (
            f'Content-Disposition: form-data; name="{_quote(name)}"; filename="{_quote(filename)}"'.encode("utf-8")
            + crlf
        )
        out += b"Content-Type: application/octet-stream" + crlf + crlf
        out += bytes(content) + crlf
    out += b"--" + boundary.encode("ascii") + b"--" + crlf
    return f"multipart/form-data; boundary={boundary}", bytes(out)


def _quote(s: str) -> str:
    return str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _detail(body: bytes) -> str:
    """The server's error text: FastAPI's ``detail`` (string or validation list) or the raw body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(obj, dict) and "detail" in obj:
        d = obj["detail"]
        if isinstance(d, list):  # FastAPI 422: [{"loc": [...], "msg": "...", ...}]
            parts = []
            for e in d:
                if isinstance(e, dict):
                    loc = ".".join(str(x) for x in e.get("loc", []) if x != "body")
                    parts.append(f"{loc}: {e.get('msg', e)}" if loc else str(e.get("msg", e)))
                else:
                    parts.append(str(e))
            return "; ".join(parts)
        return str(d)
    return text[:500]


def _filename_from_headers(headers: Any) -> Optional[str]:
    cd = headers.get("Content-Disposition") if headers is not None else None
    if not cd:
        return None
    msg = email.message.Message()
    msg["Content-Disposition"] = cd
    name = msg.get_filename()
    if not name:
        m = re.search(r'filename="?([^";]+)"?', cd)
        name = m.group(1) if m else None
    return os.path.basename(urllib.parse.unquote(name)) if name else None


class DinoMixClient:
    """Talk to a MONAI Label server running the DINO-Mix app (``make serve``).

    Args:
        server_url: base address, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds to wait for ordinary requests.
        infer_timeout: seconds to wait for inference (CPU sliding-window inference can take minutes).
        client_id: sent with active-learning, label and training requests (MONAI Label records it).
        token: a bearer token for a server with authentication on (or call :meth:`login`).

    Example:
        >>> client = DinoMixClient("http://127.0.0.1:8000")
        >>> image_id = client.next_sample()["id"]
        >>> client.infer(image_id, output_path="/tmp/pred.nii.gz")
    """

    def __init__(
        self,
        server_url: str = DEFAULT_URL,
        timeout: float = 30.0,
        infer_timeout: float = 900.0,
        client_id: str = "dinomix-slicer",
        token: Optional[str] = None,
    ):
        if timeout <= 0 or infer_timeout <= 0:
            raise ValueError("timeout and infer_timeout must be positive.")
        self.server_url = server_url
        self.token = token or None
        self._credentials: Optional[Tuple[str, str]] = None  # kept in memory after login(), to renew the token
        self.timeout = float(timeout)
        self.infer_timeout = float(infer_timeout)
        self.client_id = client_id
        self._submitted: Optional[Tuple[str, float]] = None  # (task id, time) of this client's last train()

    # ------------------------------------------------------------------ plumbing
    @property
    def server_url(self) -> str:
        return self._server_url

    @server_url.setter
    def server_url(self, url: str) -> None:
        url = str(url or "").strip()
        if not url:
            raise ValueError("server_url is empty.")
        if "://" not in url:
            url = "http://" + url
        url = url.rstrip("/")
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"server_url must look like http://HOST:PORT, got {url!r}.")
        self._server_url = url
        # never send loopback traffic through an HTTP proxy from the environment
        handlers: List[Any] = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def _url(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        url = self._server_url + "/" + path.lstrip("/")
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def _request(
        self,
        method: str,
        path: str,
        query: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        multipart: Optional[Tuple[Mapping[str, str], Mapping[str, Tuple[str, bytes]]]] = None,
        timeout: Optional[float] = None,
        ok_statuses: Sequence[int] = (200,),
        form: Optional[Mapping[str, str]] = None,
        _renewed: bool = False,
    ) -> Tuple[int, Any, bytes]:
        """Send one request; return ``(status, headers, body)`` or raise :class:`DinoMixClientError`.

        After :meth:`login`, a 401 (the token expired: Keycloak's last 5 minutes by default) logs in again once
        with the same credentials and repeats the request.
        """
        url = self._url(path, query)
        headers = {"Accept": "application/json, application/octet-stream, */*"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if multipart is not None:
            ctype, data = encode_multipart(*multipart)
            headers["Content-Type"] = ctype
        elif form is not None:
            data = urllib.parse.urlencode(dict(form)).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        t = self.timeout if timeout is None else timeout
        try:
            with self._opener.open(req, timeout=t) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            body = e.read() if e.fp is not None else b""
            if e.code in ok_statuses:
                return e.code, e.headers, body
            if e.code == 401 and self._credentials and not _renewed and path != "/auth/token":
                self.login(*self._credentials)
                return self._request(method, path, query, json_body, multipart, timeout, ok_statuses, form, True)
            raise self._http_error(method, path, e.code, body) from None
        except urllib.error.URLError as e:
            raise self._connection_error(e.reason) from None
        except (socket.timeout, TimeoutError):
            raise DinoMixClientError(
                f"the server at {self._server_url} did not answer {method} {path} within {t:g} s."
            ) from None
        except (ConnectionError, OSError) as e:  # reset / remote closed mid-answer
            raise self._connection_error(e) from None

    def _connection_error(self, reason: Any) -> DinoMixClientError:
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return DinoMixClientError(f"the server at {self._server_url} did not answer in time.")
        if isinstance(reason, ConnectionRefusedError) or "refused" in str(reason).lower():
            return DinoMixClientError(f"cannot reach server at {self._server_url}: is `make serve` running?")
        if isinstance(reason, socket.gaierror):
            return DinoMixClientError(f"cannot resolve the server address {self._server_url}: {reason}")
        return DinoMixClientError(f"cannot reach server at {self._server_url} ({reason}): is `make serve` running?")

    def _http_error(self, method: str, path: str, status: int, body: bytes) -> DinoMixClientError:
        detail = _detail(body)
        if status == 429:
            return DinoMixClientError(f"training already running ({detail or 'server answered 429'}).", status)
        if status == 401:
            what = "the login has expired or was refused" if self.token else "the server requires a login"
            return DinoMixClientError(
                f"{what} (401) for {method} {path}: {detail or 'not authenticated'}; enter your user name and "
                "password and connect again.",
                status,
            )
        if status == 403:
            return DinoMixClientError(f"not allowed (403) for {method} {path}: {detail or 'forbidden'}.", status)
        if status == 404 and not detail:
            detail = "not found"
        kind = "server error" if status >= 500 else "request refused"
        return DinoMixClientError(f"{kind} ({status}) for {method} {path}: {detail}", status)

    def _json(self, body: bytes) -> Any:
        if not body:
            return {}
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            msg = f"the server at {self._server_url} sent a non-JSON answer: {body[:200]!r}"
            raise DinoMixClientError(msg) from None

    # ------------------------------------------------------------------ authentication
    def auth_enabled(self) -> bool:
        """``GET /auth/``: whether the server checks tokens (``MONAI_LABEL_AUTH_ENABLE``)."""
        status, _, body = self._request("GET", "/auth/", ok_statuses=(200, 404))
        return status == 200 and bool(self._json(body).get("enabled"))

    def login(self, username: str, password: str) -> str:
        """``POST /auth/token``: log in; the token is kept and sent with every later request.

        The user name and password stay in this object's memory (never on disk) so that an expired token is
        renewed without asking again; :meth:`logout` forgets them.

        Raises:
            DinoMixClientError: empty user name, refused login (the server's reason), or no token in the answer.
        """
        if not str(username or "").strip():
            raise DinoMixClientError("enter a user name to log in.")
        form = {"grant_type": "password", "username": str(username).strip(), "password": str(password or "")}
        self.logout()
        status, _, body = self._request("POST", "/auth/token", form=form, ok_statuses=(200, 400, 401, 403))
        if status != 200:
            reason = _detail(body) or "wrong user name or password"
            raise DinoMixClientError(f"login failed for {form['username']!r} ({status}): {reason}", status)
        token = self._json(body).get("access_token")
        if not token:
            raise DinoMixClientError(f"the server at {self._server_url} did not return a login token.")
        self.token = str(token)
        self._credentials = (form["username"], form["password"])
        return self.token

    def logout(self) -> None:
        """Forget the token and the credentials."""
        self.token = None
        self._credentials = None

    # ------------------------------------------------------------------ info
    def info(self) -> Dict[str, Any]:
        """``GET /info/``: the app's description (name, labels, models, trainers, strategies, train_stats)."""
        info = self._json(self._request("GET", "/info/")[2])
        if not isinstance(info, dict):
            raise DinoMixClientError(f"unexpected /info answer from {self._server_url}: {info!r}")
        return info

    def models(self, info: Optional[Dict[str, Any]] = None) -> List[str]:
        """Names of the inference models the server offers (only models with a usable model file are listed
        by MONAI Label when the app says so)."""
        info = self.info() if info is None else info
        return list((info.get("models") or {}).keys())

    def organs(self, model: str = DEFAULT_MODEL, info: Optional[Dict[str, Any]] = None) -> List[str]:
        """Organ names of ``model`` ordered by label id (background excluded).

        Read from ``models.<model>.labels`` (MONAI Label gives a dict name -> id or a list); falls back to the
        trainer's labels, then to the app's top-level ``labels``.
        """
        info = self.info() if info is None else info
        for section in (info.get("models") or {}, info.get("trainers") or {}):
            labels = (section.get(model) or {}).get("labels")
            if labels:
                return _ordered_names(labels)
        if info.get("labels"):
            return _ordered_names(info["labels"])
        raise DinoMixClientError(f"the server does not list labels for model {model!r}.")

    def label_ids(self, model: str = DEFAULT_MODEL, info: Optional[Dict[str, Any]] = None) -> Dict[str, int]:
        """Organ name -> label id of ``model`` (a list of names counts from 1)."""
        info = self.info() if info is None else info
        for section in (info.get("models") or {}, info.get("trainers") or {}):
            labels = (section.get(model) or {}).get("labels")
            if labels:
                return _label_dict(labels)
        if info.get("labels"):
            return _label_dict(info["labels"])
        raise DinoMixClientError(f"the server does not list labels for model {model!r}.")

    def model_status(self, model: str = DEFAULT_MODEL, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Whether a trained model is present.

        Returns:
            dict with ``listed`` (model appears in ``/info`` ``models``), ``model_present`` (True/False when the
            server says so with one of :data:`MODEL_PRESENT_KEYS` in ``models.<model>``, else None = unknown),
            and ``details`` (the server's ``models.<model>`` entry).
        """
        info = self.info() if info is None else info
        entry = (info.get("models") or {}).get(model)
        present: Optional[bool] = None
        if isinstance(entry, dict):
            for key in MODEL_PRESENT_KEYS:
                if key in entry:
                    present = bool(entry[key])
                    break
        return {"listed": entry is not None, "model_present": present, "details": entry or {}}

    def strategies(self, info: Optional[Dict[str, Any]] = None) -> List[str]:
        """Active-learning strategy names the server offers."""
        info = self.info() if info is None else info
        return list((info.get("strategies") or {}).keys())

    def train_stats(self, model: str = DEFAULT_MODEL, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Training statistics of ``model`` from ``/info`` ``train_stats`` (epoch, total_epochs, best_metric, ...);
        ``{}`` before any training."""
        info = self.info() if info is None else info
        stats = info.get("train_stats") or {}
        if isinstance(stats, dict) and isinstance(stats.get(model), dict):
            return stats[model]
        if isinstance(stats, dict) and len(stats) == 1 and isinstance(next(iter(stats.values())), dict):
            return next(iter(stats.values()))
        return {}

    # ------------------------------------------------------------------ images and labels
    def next_sample(
        self, strategy: str = DEFAULT_STRATEGY, fallback: Optional[str] = FALLBACK_STRATEGY
    ) -> Dict[str, Any]:
        """``POST /activelearning/{strategy}``: the next image to annotate.

        If the server does not offer ``strategy`` (or running it fails with a server error), ``fallback`` is
        tried once. The answer carries ``strategy_used``. Waits up to ``infer_timeout``: a model-based strategy
        may run the model on every unlabeled image.

        Returns:
            the server's answer (``id`` plus datastore info) with ``strategy_used``; ``{}`` when no image is left.
        """
        offered = self.strategies()
        chosen = strategy
        if offered and strategy not in offered:
            if fallback and fallback in offered:
                chosen = fallback
            else:
                raise DinoMixClientError(f"the server offers no strategy {strategy!r} (it has {offered}).", 404)
        try:
            res = self._json(self._post_strategy(chosen))
        except DinoMixClientError as e:
            if fallback and chosen != fallback and (e.status or 0) >= 500:
                chosen = fallback
                res = self._json(self._post_strategy(chosen))
            else:
                raise
        if not res:
            return {}
        res = dict(res)
        res["strategy_used"] = chosen
        return res

    def _post_strategy(self, strategy: str) -> bytes:
        # a model-based strategy may run the model on every unlabeled image: allow inference time
        return self._request(
            "POST", f"/activelearning/{_q(strategy)}", json_body=self._params({}), timeout=self.infer_timeout
        )[2]

    def download_image(self, image_id: str, path: Optional[str] = None) -> str:
        """``GET /datastore/image?image=ID`` into ``path``.

        Args:
            image_id: datastore image id.
            path: output file, or a directory, or None (a temporary directory). In a directory the server's file
                name is kept (its extension tells Slicer the format).

        Returns:
            the written file path.
        """
        _, headers, body = self._request(
            "GET", "/datastore/image", query={"image": image_id}, timeout=self.infer_timeout
        )
        return _write(body, path, _filename_from_headers(headers) or f"{image_id}.nii.gz")

    def infer(
        self,
        image_id: str,
        model: str = DEFAULT_MODEL,
        output_path: Optional[str] = None,
        params: Optional[Dict[str, Any]] = None,
        label_path: Optional[str] = None,
    ) -> str:
        """``POST /infer/{model}?image=ID&output=image``: run the model on a datastore image, save the label.

        Args:
            image_id: datastore image id.
            model: inference model name.
            output_path: output file, directory or None (temporary directory).
            params: inference parameters sent as the ``params`` form field (JSON).
            label_path: a label file sent with the request (the scribbles of a scribbles model).

        Returns:
            the written label file path.
        """
        files = {}
        if label_path:
            if not os.path.isfile(label_path):
                raise DinoMixClientError(f"label file not found: {label_path}")
            with open(label_path, "rb") as f:
                files["label"] = (os.path.basename(label_path), f.read())
        _, headers, body = self._request(
            "POST",
            f"/infer/{_q(model)}",
            query={"image": image_id, "output": "image"},
            multipart=({"params": json.dumps(params or {})}, files),
            timeout=self.infer_timeout,
        )
        if body[:1] in (b"{", b"[") and b"\x00" not in body[:512]:
            raise DinoMixClientError(f"the server returned no label image for {image_id!r}: {_detail(body)}")
        return _write(body, output_path, _filename_from_headers(headers) or f"{image_id}_{model}.nii.gz")

    def submit_label(
        self, image_id: str, label_path: str, tag: str = "final", params: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        """``PUT /datastore/label?image=ID&tag=TAG``: upload a label file (``final`` = use it for training).

        Returns:
            the server's answer (``image``, ``label`` and whatever the app adds).
        """
        if not os.path.isfile(label_path):
            raise DinoMixClientError(f"label file not found: {label_path}")
        with open(label_path, "rb") as f:
            content = f.read()
        fields = {"params": json.dumps(self._params(params or {}))}
        files = {"label": (os.path.basename(label_path), content)}
        body = self._request(
            "PUT", "/datastore/label", query={"image": image_id, "tag": tag}, multipart=(fields, files)
        )[2]
        return self._json(body)

    def download_label(self, image_id: str, path: Optional[str] = None, tag: str = "final") -> str:
        """``GET /datastore/label?label=ID&tag=TAG`` into ``path`` (file, directory or None); returns the path."""
        _, headers, body = self._request(
            "GET", "/datastore/label", query={"label": image_id, "tag": tag}, timeout=self.infer_timeout
        )
        return _write(body, path, _filename_from_headers(headers) or f"{image_id}_{tag}.nii.gz")

    def remove_label(self, image_id: str, tag: str = "final") -> Dict[str, Any]:
        """``DELETE /datastore/label?id=ID&tag=TAG``: withdraw a submitted label."""
        return self._json(self._request("DELETE", "/datastore/label", query={"id": image_id, "tag": tag})[2])

    def datastore(self, output: str = "all") -> Dict[str, Any]:
        """``GET /datastore/?output=OUTPUT`` (``stats``, ``all`` or ``train``)."""
        return self._json(self._request("GET", "/datastore/", query={"output": output})[2])

    # ------------------------------------------------------------------ training
    def train(self, model: str = DEFAULT_MODEL, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """``POST /train/{model}``: start a background training run (``DinoMixClientError`` 429 while one runs).

        Returns:
            the server's task record (``id``, ``status`` ``SUBMITTED``, ``request``, ``start_ts``).
        """
        task = self._json(self._request("POST", f"/train/{_q(model)}", json_body=self._params(params or {}))[2])
        if isinstance(task, dict) and task.get("id"):
            self._submitted = (str(task["id"]), time.monotonic())
        return task

    def stop_training(self) -> Dict[str, Any]:
        """``DELETE /train/``: stop the running training."""
        return self._json(self._request("DELETE", "/train/")[2])

    def training_status(self) -> Dict[str, Any]:
        """``GET /train/``: the server's latest training task (``id``, ``status`` SUBMITTED/RUNNING/DONE/ERROR,
        ``start_ts``, ...), ``{}`` when there is none."""
        status, _, body = self._request("GET", "/train/", ok_statuses=(200, 404))
        task = self._json(body) if status == 200 else {}
        return task if isinstance(task, dict) else {}

    def training_running(self) -> bool:
        """True while a training run is going.

        ``GET /train/?check_if_running=true`` answers 200 while the training process runs, 404 otherwise. MONAI
        Label registers the process a moment after ``POST /train`` has answered, so a run this client has just
        submitted also counts as running while the server's task record still says ``SUBMITTED`` or ``RUNNING``
        (checked for at most :data:`SUBMIT_GRACE_S` seconds after submitting).
        """
        status, _, _ = self._request("GET", "/train/", query={"check_if_running": "true"}, ok_statuses=(200, 404))
        if status == 200:
            return True
        if self._submitted is not None and time.monotonic() - self._submitted[1] < SUBMIT_GRACE_S:
            task = self.training_status()
            if task.get("id") == self._submitted[0] and task.get("status") in ("SUBMITTED", "RUNNING"):
                return True
        return False

    def wait_for_training(
        self,
        poll_s: float = 5.0,
        callback: Optional[Callable[[Dict[str, Any]], Any]] = None,
        timeout_s: Optional[float] = None,
        model: str = DEFAULT_MODEL,
    ) -> Dict[str, Any]:
        """Block until training stops, calling ``callback(train_stats)`` after every poll.

        A callback returning ``False`` (exactly) stops waiting early. Meant for scripts; the Slicer widget polls
        with a QTimer instead so the GUI stays responsive.

        Returns:
            the last ``train_stats``.

        Raises:
            DinoMixClientError: when ``timeout_s`` passes first.
        """
        if poll_s <= 0:
            raise ValueError("poll_s must be positive.")
        start = time.monotonic()
        while True:
            running = self.training_running()
            stats = self.train_stats(model)
            if callback is not None and callback(stats) is False:
                return stats
            if not running:
                return stats
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise DinoMixClientError(f"training still running after {timeout_s:g} s.")
            time.sleep(poll_s)

    def _params(self, params: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(params)
        if self.client_id and "client_id" not in out:
            out["client_id"] = self.client_id
        return out


def _q(s: str) -> str:
    return urllib.parse.quote(str(s), safe="")


def _label_dict(labels: Union[Sequence[str], Mapping[str, Any]]) -> Dict[str, int]:
    if isinstance(labels, Mapping):
        pairs = sorted(((str(k), int(v)) for k, v in labels.items()), key=lambda p: p[1])
        return {k: v for k, v in pairs if not (v == 0 and k.lower() == "background")}
    names = [str(n) for n in labels if str(n).lower() != "background"]
    return {n: i + 1 for i, n in enumerate(names)}


def _ordered_names(labels: Union[Sequence[str], Mapping[str, Any]]) -> List[str]:
    return list(_label_dict(labels).keys())


def _write(content: bytes, path: Optional[str], default_name: str) -> str:
    if path is None:
        path = tempfile.mkdtemp(prefix="dinomix_")
    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path
