"""The app's datastore: MONAI Label's LocalDatastore plus checks and crash-safe writes.

- A submitted label is checked against its image (dinomix_core.labels.check_label) and refused with HTTP 422
  and the reason before anything is stored; unknown or path-escaping image ids get 404, bad tags 400.
- A new image is checked (readable NIfTI/NRRD, 3D) before it is stored; an image id that already exists is
  refused with 409 (replacing an image would silently invalidate its labels).
- Volumes whose header claims more than ``max_voxels`` voxels are refused with 413 from the header alone, before
  any voxel is read (a forged header must not make the server allocate gigabytes).
- Images, label files and the datastore index are written to a temporary file, fsynced and renamed into place,
  so a killed server never leaves a torn file, and every acknowledged label survives a restart.
- A replaced ``final`` label is first copied (atomically) to ``labels/history/<tag>/`` (a submitted label is
  never lost).
- :func:`image_path_allowed`: the only files inference may read besides datastore images (main.py's guard).
- :class:`DinoMixDICOMWebDatastore`: MONAI Label's DICOMweb datastore with the same label checks and renaming
  before anything is uploaded, and DICOM-SEG segments named after the organ of their voxels.
"""

import json
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

from fastapi import HTTPException
import numpy as np
from filelock import FileLock
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image, dicom_to_nifti
from monailabel.interfaces.datastore import DefaultLabelTag

from dinomix_core.artifacts import atomic_copy, atomic_write, pid_alive
from dinomix_core.errors import InvalidVolumeError
from dinomix_core.inference import DEFAULT_MAX_VOXELS, image_voxel_count
from dinomix_core.labels import ORGANS, check_image, check_label, label_info_mapping, relabel_file

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
#: file types accepted for images and labels (what check_image / check_label can read)
_VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd")
#: sub-folder of ``labels/`` holding every replaced label (not a label tag)
HISTORY_DIR = "history"


def _volume_ext(filename: str) -> str:
    low = filename.lower()
    for ext in _VOLUME_EXTS:
        if low.endswith(ext):
            return ext
    return os.path.splitext(filename)[1] or "(none)"


#: the temporary files of dinomix_core.artifacts.atomic_write (``.NAME.tmpPID.THREAD``, see its temp_path)
_TMP_FILE = re.compile(r"^\..+\.tmp(\d+)(\.\d+)?$")


def remove_stale_temp_files(studies: str) -> int:
    """Delete temporary files left by a killed writer (``.NAME.tmpPID.THREAD``) in the studies and label folders."""
    folders = [studies]
    labels = os.path.join(studies, "labels")
    for sub in (labels, os.path.join(labels, HISTORY_DIR)):
        if os.path.isdir(sub):
            folders += [os.path.join(sub, d) for d in os.listdir(sub) if os.path.isdir(os.path.join(sub, d))]
    removed = 0
    for folder in folders:
        for name in os.listdir(folder):
            m = _TMP_FILE.match(name)
            path = os.path.join(folder, name)
            if m and os.path.isfile(path) and (int(m.group(1)) == os.getpid() or not pid_alive(int(m.group(1)))):
                try:
                    os.remove(path)
                    removed += 1
                except OSError:
                    pass
    if removed:
        logger.info("removed %d temporary file(s) left by an interrupted write in %s", removed, studies)
    return removed


def _inside(path: str, root: str) -> bool:
    root = os.path.realpath(root)
    return path == root or path.startswith(root + os.sep)


def is_image_path(image: str) -> bool:
    """Whether the ``image`` of an inference request is a file path (an upload, or ``params``) rather than an id."""
    return os.path.isabs(image) or ".." in image or os.sep in image or os.path.exists(image)


def image_path_allowed(path: str, studies: str, sessions: Any = None) -> bool:
    """Whether inference may read the file ``path``: in the studies folder, an upload or a MONAI Label session
    (of ``sessions``, MONAI Label's session store)."""
    real = os.path.realpath(path)
    if _inside(real, studies):
        return True
    tmp = os.path.realpath(tempfile.gettempdir())
    if os.path.dirname(real) == tmp and os.path.basename(real).startswith("tmp"):
        return True  # an upload: MONAI Label's NamedTemporaryFile
    store = getattr(sessions, "store_path", None)
    return bool(store) and _inside(real, store)


class _LabelChecks:
    """What every datastore of the app checks in a submitted label, and its renaming by segment name."""

    def _init_checks(self, allow_empty_labels: bool, organs: Sequence[str], max_voxels: int) -> None:
        self.allow_empty_labels = allow_empty_labels
        self.organs = tuple(organs)
        self.num_classes = len(self.organs) + 1
        self.max_voxels = int(max_voxels)

    def _check_size(self, path: str, what: str) -> None:
        """Refuse (413) a volume whose header claims more than ``max_voxels`` voxels, before reading any voxel."""
        n = image_voxel_count(path)
        if n is not None and n > self.max_voxels:
            raise HTTPException(
                status_code=413,
                detail=f"{what} refused, nothing stored: its header claims {n} voxels, above this server's limit of "
                f"{self.max_voxels} (app option max_voxels); crop or downsample it.",
            )

    @staticmethod
    def _checked_tag(label_tag: str) -> str:
        tag = label_tag or DefaultLabelTag.FINAL.value
        if not _SAFE_ID.match(tag) or tag == HISTORY_DIR:
            raise HTTPException(status_code=400, detail=f"bad label tag {label_tag!r}")
        return tag

    def _checked_label(self, image_id: str, image_uri: str, label_filename: str, info: Dict[str, Any],
                       tmp: str) -> "tuple[str, Any]":
        """The label file in the app's ids, checked against its image, and its voxels (uint8).

        Raises HTTPException: 422 (not NIfTI/NRRD, unknown segment name, wrong grid or values), 413 (too big).
        ``info`` gets ``label_values`` (the renaming applied) when the values were renamed."""
        ext = _volume_ext(label_filename)
        if ext not in _VOLUME_EXTS:
            raise HTTPException(status_code=422, detail=f"label must be a NIfTI (.nii/.nii.gz) or NRRD file, got {ext!r}")
        self._check_size(label_filename, "label")
        self._check_size(image_uri, "image")
        try:
            label_filename, renamed = self._to_label_ids(label_filename, info, ext, tmp)
            voxels = check_label(image_uri, label_filename, num_classes=self.num_classes,
                                 allow_empty=self.allow_empty_labels)
        except InvalidVolumeError as e:
            logger.warning("refused label for %s: %s", image_id, e)
            raise HTTPException(status_code=422, detail=f"label refused, nothing stored: {e}")
        if renamed is not None:
            info["label_values"] = renamed  # {value in the submitted file: the app's id}
        return label_filename, voxels

    def _to_label_ids(self, label_filename: str, info: Dict[str, Any], ext: str,
                      tmp: str) -> "tuple[str, Optional[Dict[str, int]]]":
        """The label file with the app's ids, and the renaming applied (None without ``label_info``).

        A ``label_info`` whose every entry already gives its segment's app id describes the file and may list only
        some of its values (a script that names the organ it edited); otherwise values are renamed by segment name
        into a rewritten copy in ``tmp``, and every value of the file needs an entry."""
        mapping = label_info_mapping(info.get("label_info"), self.organs)
        if mapping is None:
            return label_filename, None
        if all(v == i for v, i in mapping.items()):
            return label_filename, {str(v): i for v, i in mapping.items()}
        out = os.path.join(tmp, "label" + ext)
        present = relabel_file(label_filename, out, mapping)
        applied = {str(v): i for v, i in present.items()}
        logger.info("label values renamed by their label_info names: %s", applied)
        return out, applied


class DinoMixDatastore(_LabelChecks, LocalDatastore):
    def __init__(
        self, *args, allow_empty_labels: bool = False, organs: Sequence[str] = ORGANS,
        max_voxels: int = DEFAULT_MAX_VOXELS, **kwargs,
    ):
        self._init_checks(allow_empty_labels, organs, max_voxels)
        studies = args[0] if args else kwargs.get("datastore_path")
        if studies and os.path.isdir(studies) and not kwargs.get("read_only"):
            remove_stale_temp_files(studies)
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
        tag = self._checked_tag(label_tag)
        info = dict(label_info or {})
        with tempfile.TemporaryDirectory(prefix="dinomix-label-") as tmp:
            label_filename, _ = self._checked_label(image_id, image_uri, label_filename, info, tmp)
            return self._store_label(image_id, label_filename, tag, _volume_ext(label_filename), info)

    def _store_label(self, image_id: str, label_filename: str, tag: str, ext: str, info: Dict[str, Any]) -> str:
        label_dir = self._datastore.label_path(tag)
        name = self._filename(image_id, ext)
        dest = os.path.join(label_dir, name)
        with FileLock(self._lock_file):
            obj = self._datastore.objects.get(image_id)
            if obj is None:  # removed while the label was being checked
                raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}")
            os.makedirs(label_dir, exist_ok=True)
            # keep every earlier label of this image: a submitted label is never lost
            old = obj.labels.get(tag)
            if old is not None:
                old_path = os.path.join(label_dir, self._filename(image_id, old.ext))
                if os.path.exists(old_path):
                    hist = os.path.join(self._datastore.label_path(HISTORY_DIR), tag)
                    os.makedirs(hist, exist_ok=True)
                    stamp = int(time.time() * 1000)
                    while os.path.exists(os.path.join(hist, f"{image_id}.{stamp}{old.ext}")):
                        stamp += 1
                    atomic_copy(old_path, os.path.join(hist, f"{image_id}.{stamp}{old.ext}"))
            atomic_copy(label_filename, dest)
            if old is not None and old.ext != ext:
                old_path = os.path.join(label_dir, self._filename(image_id, old.ext))
                if os.path.exists(old_path):
                    os.remove(old_path)
            info["ts"] = int(time.time())
            info["name"] = name
            obj.labels[tag] = DataModel(info=info, ext=ext)
            self._update_datastore_file(lock=False)
        logger.info("stored %s label for %s (%s)", tag, image_id, dest)
        return image_id

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        ext = _volume_ext(image_filename)
        if ext not in _VOLUME_EXTS:
            raise HTTPException(status_code=422, detail=f"image must be a NIfTI (.nii/.nii.gz) or NRRD file, got {ext!r}")
        if not image_id:
            image_id = os.path.basename(image_filename)[: -len(ext)]
        if not _SAFE_ID.match(image_id) or ".." in image_id:
            raise HTTPException(status_code=400, detail=f"bad image id {image_id!r}: use letters, digits, '.', '_' and '-'")
        if image_id in self._datastore.objects:
            raise HTTPException(
                status_code=409, detail=f"image id {image_id!r} already exists; nothing stored (choose another id)"
            )
        self._check_size(image_filename, "image")
        try:
            check_image(image_filename)
        except InvalidVolumeError as e:
            raise HTTPException(status_code=422, detail=f"image refused, nothing stored: {e}")

        name = self._filename(image_id, ext)
        dest = os.path.realpath(os.path.join(self._datastore.image_path(), name))
        with FileLock(self._lock_file):
            if image_id in self._datastore.objects or os.path.exists(dest):
                raise HTTPException(
                    status_code=409, detail=f"image id {image_id!r} already exists; nothing stored (choose another id)"
                )
            atomic_copy(image_filename, dest)
            info = dict(image_info or {})
            info["ts"] = int(time.time())
            info["name"] = name
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))
            self._update_datastore_file(lock=False)
        logger.info("added image %s (%s)", image_id, dest)
        return image_id

    # ---------------------------------------------------------------- unknown ids: 404, not 500
    def remove_image(self, image_id: str) -> None:
        self._known_image(image_id)
        super().remove_image(image_id)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}")
        return super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"no {label_tag!r} label for image id {label_id!r}")
        return super().update_label_info(label_id, label_tag, info)

    # ---------------------------------------------------------------- crash-safe index
    def _update_datastore_file(self, lock=True):
        def _write():
            self._ignore_event_config = True
            atomic_write(
                self._datastore_config_path,
                json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str),
            )
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                _write()
        else:
            _write()


class DinoMixDICOMWebDatastore(_LabelChecks, DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore (``--studies http(s)://...``) with the app's label checks.

    MONAI Label 0.8.5 (``monailabel/datastore/dicom.py``, ``save_label``) converts a submitted ``final`` label to
    DICOM-SEG and uploads it as it comes: no check against the image, values taken as the plugin numbered its
    segments, and segment names paired with the values present by position. Here a label is first checked and
    renamed to the app's ids exactly as in :class:`DinoMixDatastore` (a refusal uploads and stores nothing), and
    the converter gets one ``label_info`` entry per organ present, named after that organ.

    Args:
        args, kwargs: as :class:`monailabel.datastore.dicom.DICOMWebDatastore`.
        allow_empty_labels, organs, max_voxels: as :class:`DinoMixDatastore`.
    """

    def __init__(self, *args, allow_empty_labels: bool = False, organs: Sequence[str] = ORGANS,
                 max_voxels: int = DEFAULT_MAX_VOXELS, **kwargs):
        self._init_checks(allow_empty_labels, organs, max_voxels)
        super().__init__(*args, **kwargs)

    @classmethod
    def like(cls, datastore: DICOMWebDatastore, **checks: Any) -> "DinoMixDICOMWebDatastore":
        """This datastore over the same DICOMweb server, cache and settings as MONAI Label's ``datastore``, which
        is then stopped watching its cache (this one watches it)."""
        observer = getattr(datastore, "_observer", None)
        if observer is not None:
            observer.stop()
        return cls(
            client=datastore._client, search_filter=datastore._search_filter,
            cache_path=os.path.dirname(datastore._datastore_path), fetch_by_frame=datastore._fetch_by_frame,
            convert_to_nifti=datastore._convert_to_nifti, **checks,
        )

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any],
                   label_id: str = "") -> str:
        if image_id not in self.list_images():
            raise HTTPException(status_code=404, detail=f"unknown image id {image_id!r}: no such series on the "
                                                        "DICOMweb server")
        tag = self._checked_tag(label_tag)
        info = dict(label_info or {})
        image_uri = self.get_image_uri(image_id)  # the series, downloaded (and converted to NIfTI by default)
        with tempfile.TemporaryDirectory(prefix="dinomix-label-") as tmp:
            # MONAI Label's converters write to their own temporary files: moved into ``tmp``, removed with it
            reference = image_uri if os.path.isfile(image_uri) else shutil.move(
                dicom_to_nifti(image_uri), os.path.join(tmp, "image.nii.gz"))
            if _volume_ext(label_filename) == ".bin":  # OHIF's raw mask on the image grid, MONAI Label's reader
                label_filename = shutil.move(binary_to_image(reference, label_filename),
                                             os.path.join(tmp, "label_from_bin.nii.gz"))
            label_filename, voxels = self._checked_label(image_id, reference, label_filename, info, tmp)
            present = sorted(int(i) for i in np.unique(voxels) if i != 0)
            info["label_info"] = [{"name": self.organs[i - 1], "idx": i} for i in present]
            try:
                saved = super().save_label(image_id, label_filename, tag, info)
            except HTTPException:
                raise
            except Exception as e:  # the PACS refused the upload: keep the label in the cache, say so
                logger.warning("DICOMweb upload of the label of %s failed: %s", image_id, e)
                LocalDatastore.save_label(self, image_id, label_filename, tag, info)
                raise HTTPException(status_code=502, detail=self._not_uploaded(image_id, f"it answered: {e}"))
        if tag == DefaultLabelTag.FINAL and not info.get("SeriesInstanceUID"):  # MONAI Label logs it and goes on
            raise HTTPException(status_code=502, detail=self._not_uploaded(image_id, "its answer named no series"))
        return saved

    @staticmethod
    def _not_uploaded(image_id: str, why: str) -> str:
        return (f"the DICOMweb server did not store the DICOM-SEG of {image_id!r} ({why}); the label is kept in this "
                "server's cache only: submit it again")
