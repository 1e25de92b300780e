"""STAND-IN for a DICOMweb server (a PACS such as Orthanc or dcm4chee), for the DICOMweb datastore tests.

No PACS can be installed on the build machines, so the tests run this small stand-in. It holds DICOM instances in
memory and answers the four DICOMweb requests MONAI Label 0.8.5 makes through ``dicomweb_client``
(``monailabel/datastore/dicom.py`` and ``datastore/utils/dicom.py``), in the standard's formats:

* QIDO-RS ``GET {root}/series?Key=Value...``: the series whose attributes equal every given keyword
  (``Modality``, ``SeriesInstanceUID``, ``StudyInstanceUID``; other parameters such as ``limit`` are ignored),
  as ``application/dicom+json``;
* WADO-RS ``GET {root}/studies/S/series/R``: the series' instances as ``multipart/related; type="application/dicom"``;
* WADO-RS ``GET {root}/studies/S/series/R/metadata``: the instances' attributes without pixel data, JSON;
* STOW-RS ``POST {root}/studies``: stores the posted ``multipart/related`` instances and answers with the
  stored instances' ``RetrieveURL`` (which MONAI Label reads the new series UID from); with ``refuse_stores``
  a 409 with a ``FailedSOPSequence``, as a PACS that refuses them.

Everything else in the tests is real: the MONAI Label server, ``dicomweb_client``, dcmqi's DICOM-SEG conversion.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Sequence

import pydicom

#: the path of the DICOMweb service on the stand-in's host
ROOT = "/dicomweb"
_SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "PatientID", "StudyDate", "StudyTime")


def _encode(ds: pydicom.Dataset) -> bytes:
    with io.BytesIO() as b:
        pydicom.dcmwrite(b, ds, write_like_original=False)
        return b.getvalue()


def _multipart_parts(body: bytes, content_type: str) -> List[bytes]:
    """The parts of a ``multipart/related`` body (each part's own headers removed)."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"').encode()
    if not boundary:
        raise ValueError("multipart body without a boundary")
    parts = []
    for chunk in body.split(b"--" + boundary):
        chunk = chunk.strip(b"\r\n")
        if not chunk or chunk == b"--":
            continue
        _, _, content = chunk.partition(b"\r\n\r\n")
        parts.append(content)
    return parts


class StandInDICOMweb:
    """A running stand-in DICOMweb server on 127.0.0.1 holding ``instances``. Use as a context manager.

    Attributes:
        url: the DICOMweb root to give MONAI Label as ``--studies``.
        stored: every instance posted with STOW-RS, in order.
    """

    def __init__(self, instances: Sequence[pydicom.Dataset] = ()):
        self.instances: List[pydicom.Dataset] = list(instances)
        self.stored: List[pydicom.Dataset] = []
        #: answer every STOW-RS request with 409 and a FailedSOPSequence (a PACS that refuses the instances)
        self.refuse_stores = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{ROOT}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "StandInDICOMweb":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------- the data
    def _series(self) -> Dict[str, List[pydicom.Dataset]]:
        out: Dict[str, List[pydicom.Dataset]] = {}
        with self._lock:
            for ds in self.instances:
                out.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
        return out

    def _series_json(self, first: pydicom.Dataset) -> dict:
        meta = pydicom.Dataset()
        for key in _SERIES_KEYS:
            if key in first:
                setattr(meta, key, first.data_element(key).value)
        out = meta.to_json_dict()
        out["00081190"] = {"vr": "UR", "Value": [
            f"{self.url}/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"]}
        return out

    def _store(self, parts: List[bytes]) -> dict:
        refs = []
        for part in parts:
            ds = pydicom.dcmread(io.BytesIO(part))
            with self._lock:
                self.instances.append(ds)
                self.stored.append(ds)
            refs.append({
                "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
                "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
                "00081190": {"vr": "UR", "Value": [f"{self.url}/studies/{ds.StudyInstanceUID}/series/"
                                                   f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"]},
            })
        study = str(pydicom.dcmread(io.BytesIO(parts[0])).StudyInstanceUID) if parts else ""
        return {"00081190": {"vr": "UR", "Value": [f"{self.url}/studies/{study}"]},
                "00081199": {"vr": "SQ", "Value": refs}}

    # ---------------------------------------------------------------- HTTP
    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, obj) -> None:
                self._send(200, json.dumps(obj).encode(), "application/dicom+json")

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if not url.path.startswith(ROOT + "/"):
                    return self._send(404, b"not found", "text/plain")
                parts = url.path[len(ROOT) + 1:].strip("/").split("/")
                series = standin._series()
                if parts == ["series"]:
                    query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                    wanted = {k: v for k, v in query.items() if k in _SERIES_KEYS}
                    found = [standin._series_json(instances[0]) for instances in series.values()
                             if all(str(instances[0].get(k, "")) == v for k, v in wanted.items())]
                    return self._json(found)
                if len(parts) in (4, 5) and parts[0] == "studies" and parts[2] == "series":
                    instances = [ds for ds in series.get(parts[3], []) if str(ds.StudyInstanceUID) == parts[1]]
                    if not instances:
                        return self._send(404, b"no such series", "text/plain")
                    if len(parts) == 5 and parts[4] == "metadata":
                        meta = []
                        for ds in instances:
                            copy = pydicom.Dataset(ds)
                            if "PixelData" in copy:
                                del copy.PixelData
                            meta.append(copy.to_json_dict())
                        return self._json(meta)
                    if len(parts) == 4:
                        boundary = "dinomix-standin-boundary"
                        body = b"".join(b"\r\n--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                                        + _encode(ds) for ds in instances) + b"\r\n--" + boundary.encode() + b"--"
                        return self._send(
                            200, body, f'multipart/related; type="application/dicom"; boundary={boundary}')
                return self._send(404, b"not found", "text/plain")

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                out = b""  # dicomweb_client stores with chunked transfer encoding
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            def do_POST(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path.rstrip("/") != ROOT + "/studies":
                    return self._send(404, b"not found", "text/plain")
                body = self._body()
                try:
                    parts = _multipart_parts(body, self.headers.get("Content-Type", ""))
                    if not parts:
                        raise ValueError("no instance in the request")
                    if standin.refuse_stores:
                        failed = [{"00081155": {"vr": "UI", "Value": [str(pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID)]},
                                   "00081197": {"vr": "US", "Value": [0xA700]}} for p in parts]  # out of resources
                        body = json.dumps({"00081198": {"vr": "SQ", "Value": failed}}).encode()
                        return self._send(409, body, "application/dicom+json")
                    self._json(standin._store(parts))
                except Exception as e:  # a malformed request: 400, as a PACS would answer
                    self._send(400, str(e).encode(), "text/plain")

        return Handler
