"""The app's datastore: MONAI Label's LocalDatastore plus checks and crash-safe writes.

- A submitted label is checked against its image (dinomix_core.labels.check_label) and refused with HTTP 422
  and the reason before anything is stored; unknown or path-escaping image ids get 404, bad tags 400.
- Label files and the datastore index are written to a temporary file, fsynced and renamed into place, so a
  killed server never leaves a torn label or index, and every acknowledged label survives a restart.
- A replaced ``final`` label is first copied to ``labels/history/`` (a submitted label is never lost).
"""

import logging
import os
import re
import shutil
import time
from typing import Any, Dict

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from dinomix_core.data import InvalidVolumeError
from dinomix_core.labels import check_image, check_label
from dinomix_core.registry import atomic_write_text

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class DinoMixDatastore(LocalDatastore):
    def __init__(self, *args, allow_empty_labels: bool = False, num_classes: int = 14, **kwargs):
        self.allow_empty_labels = allow_empty_labels
        self.num_classes = num_classes
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------------- checks
    def _known_image(self, image_id: str) -> str:
        if not isinstance(image_id, str) or not _SAFE_ID.match(image_id or "") or ".." in image_id:
            raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}")
        uri = self.get_image_uri(image_id)
        if not uri or not os.path.isfile(uri):
            raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}")
        return uri

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        image_uri = self._known_image(image_id)
        tag = label_tag or DefaultLabelTag.FINAL.value
        if not _SAFE_ID.match(tag):
            raise HTTPException(status_code=400, detail=f"bad label tag {label_tag!r}")
        ext = ".nii.gz" if label_filename.endswith(".nii.gz") else os.path.splitext(label_filename)[1]
        if ext not in (".nii.gz", ".nii", ".nrrd"):
            raise HTTPException(status_code=422, detail=f"label must be a NIfTI (.nii/.nii.gz) or NRRD file, got {ext!r}")
        try:
            check_label(image_uri, label_filename, num_classes=self.num_classes, allow_empty=self.allow_empty_labels)
        except InvalidVolumeError as e:
            logger.warning("refused label for %s: %s", image_id, e)
            raise HTTPException(status_code=422, detail=f"label refused, nothing stored: {e}")

        obj = self._datastore.objects.get(image_id)
        label_dir = self._datastore.label_path(tag)
        name = self._filename(image_id, ext)
        dest = os.path.join(label_dir, name)
        with FileLock(self._lock_file):
            os.makedirs(label_dir, exist_ok=True)
            # keep every earlier label of this image: a submitted label is never lost
            old = obj.labels.get(tag)
            if old is not None:
                old_path = os.path.join(label_dir, self._filename(image_id, old.ext))
                if os.path.exists(old_path):
                    hist = os.path.join(self._datastore.label_path("history"), tag)
                    os.makedirs(hist, exist_ok=True)
                    shutil.copy2(old_path, os.path.join(hist, f"{image_id}.{int(time.time() * 1000)}{old.ext}"))
                if old.ext != ext and os.path.exists(old_path):
                    os.remove(old_path)
            tmp = os.path.join(label_dir, f".{name}.tmp{os.getpid()}")
            with open(label_filename, "rb") as fi, open(tmp, "wb") as fo:
                shutil.copyfileobj(fi, fo)
                fo.flush()
                os.fsync(fo.fileno())
            os.replace(tmp, dest)
            _fsync_dir(label_dir)
            info = dict(label_info or {})
            info["ts"] = int(time.time())
            info["name"] = name
            from monailabel.datastore.local import DataModel

            obj.labels[tag] = DataModel(info=info, ext=ext)
            self._update_datastore_file(lock=False)
        logger.info("stored %s label for %s (%s)", tag, image_id, dest)
        return image_id

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        if image_id and (not _SAFE_ID.match(image_id) or ".." in image_id):
            raise HTTPException(status_code=400, detail=f"bad image id {image_id!r}")
        try:
            check_image(image_filename)
        except InvalidVolumeError as e:
            raise HTTPException(status_code=422, detail=f"image refused, nothing stored: {e}")
        return super().add_image(image_id, image_filename, image_info)

    # ---------------------------------------------------------------- crash-safe index
    def _update_datastore_file(self, lock=True):
        def _write():
            self._ignore_event_config = True
            import json

            atomic_write_text(
                self._datastore_config_path,
                json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str),
            )
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                _write()
        else:
            _write()
