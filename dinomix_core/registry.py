"""Published models: atomic publishing, a history of every published model, and restore.

Layout of a model folder::

    MODEL_DIR/dinomix.pt            the published model (what inference loads)
    MODEL_DIR/history/NNNN.pt       every model ever published, never overwritten
    MODEL_DIR/history.json          one entry per published model: version, time, labels trained on, metric

Publishing copies the new model into ``history/`` first, then replaces ``dinomix.pt`` with ``os.replace`` (atomic
on POSIX), then rewrites ``history.json`` atomically: a crash at any point leaves the previous model or the new
one in place, never a torn file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .artifacts import ModelFile, ModelFileError, atomic_copy, atomic_write

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """The published DINO-Mix model of one model folder and its history.

    Args:
        model_dir: the folder (created when missing).
        name: file name stem of the published model.
    """

    def __init__(self, model_dir: str, name: str = "dinomix", starter_path: Optional[str] = None,
                 label_names: Optional[Sequence[str]] = None) -> None:
        if not name or "/" in name:
            raise ValueError("name must be a plain file name stem.")
        self.model_dir = Path(model_dir)
        self.name = name
        self.starter_path = Path(starter_path) if starter_path else None
        self.label_names = tuple(label_names) if label_names is not None else None
        self._summaries: Dict[Tuple[str, int], Dict[str, Any]] = {}

    @property
    def model_path(self) -> Path:
        return self.model_dir / f"{self.name}.pt"

    @property
    def history_dir(self) -> Path:
        return self.model_dir / "history"

    @property
    def history_file(self) -> Path:
        return self.model_dir / "history.json"

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def has_starter(self) -> bool:
        return self.starter_path is not None and self.starter_path.is_file()

    def served_path(self) -> Optional[Path]:
        """The model inference uses: the published one, else the starter model shipped with the app, else None;
        a model trained for other labels than ``label_names`` is never served (see :meth:`unserved`)."""
        if self.has_model() and self.serves(self.model_path):
            return self.model_path
        return self.starter_path if self.has_starter() and self.serves(self.starter_path) else None

    def serves(self, path: Path) -> bool:
        """Whether the model file ``path`` was trained for this registry's ``label_names`` (any, without them)."""
        if self.label_names is None:
            return True
        names = self.model_summary(path).get("label_names")
        return names is not None and tuple(names) == self.label_names

    def unserved(self) -> List[str]:
        """Why the model files present are not served (another label set), one sentence each."""
        out = []
        for what, path, present in (("published", self.model_path, self.has_model()),
                                    ("starter", self.starter_path, self.has_starter())):
            if present and not self.serves(path):
                names = self.model_summary(path).get("label_names") or []
                out.append(f"the {what} model was trained for other labels ({', '.join(names) or 'unknown'}), not "
                           f"this server's ({', '.join(self.label_names or ())})")
        return out

    def served(self) -> Optional[Dict[str, Any]]:
        """What inference serves: ``source`` ("retrained" or "starter"), ``version``, ``file`` and the
        ``label_ids`` the model was trained on (None when nothing can be served)."""
        path = self.served_path()
        if path is None:
            return None
        entry = dict(self.current() or {}) if path == self.model_path else {"version": "starter", "file": str(path)}
        entry["source"] = "retrained" if path == self.model_path else "starter"
        entry.update({k: v for k, v in self.model_summary(path).items() if k not in entry or entry[k] is None})
        return entry

    def model_summary(self, path: Path) -> Dict[str, Any]:
        """``label_ids``, ``iteration`` and ``saved_at`` of a model file, read once per file version."""
        try:
            key = (str(path), os.stat(path).st_mtime_ns)
        except OSError:
            return {}
        if key not in self._summaries:
            try:
                self._summaries = {key: ModelFile.load(path).summary()}
            except (OSError, ModelFileError):
                return {}
        return dict(self._summaries[key])

    def history(self) -> List[Dict[str, Any]]:
        if not self.history_file.exists():
            return []
        try:
            return list(json.loads(self.history_file.read_text()))
        except (ValueError, OSError):
            return []

    def current(self) -> Optional[Dict[str, Any]]:
        """The history entry of the published model (None when nothing is published)."""
        if not self.has_model():
            return None
        hist = self.history()
        cur = [h for h in hist if h.get("current")]
        return cur[-1] if cur else {"version": None, "file": str(self.model_path)}

    def publish(self, trained_model: str, labeled_ids: List[str], extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Publish ``trained_model`` (a model file written by the trainer); returns its history entry."""
        src = Path(trained_model)
        try:
            summary = ModelFile.load(src).summary()
        except ModelFileError as e:
            raise ModelFileError(f"{e} Nothing published.") from e
        hist = self.history()
        version = 1 + max([int(h.get("version") or 0) for h in hist] + [0])
        dest = self.history_dir / f"{version:04d}.pt"
        atomic_copy(src, dest)
        entry = {
            "version": version,
            "file": str(dest),
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "published_ts": time.time(),
            "labeled_ids": sorted(labeled_ids),
            **{k: summary[k] for k in ("iteration", "metric", "label_ids", "preset")},
        }
        entry.update(extra or {})
        atomic_copy(dest, self.model_path)
        for h in hist:
            h["current"] = False
        entry["current"] = True
        atomic_write(self.history_file, json.dumps(hist + [entry], indent=2, default=str))
        return entry

    def restore(self, version: int) -> Dict[str, Any]:
        """Make an earlier published model the current one again (the history itself is kept)."""
        hist = self.history()
        match = [h for h in hist if int(h.get("version") or -1) == int(version)]
        if not match:
            have = ", ".join(str(h.get("version")) for h in hist) or "none"
            raise ValueError(f"no published model version {version} (have: {have}).")
        src = Path(match[0]["file"])
        if not src.is_file():
            raise FileNotFoundError(f"history file {src} of version {version} is missing.")
        atomic_copy(src, self.model_path)
        for h in hist:
            h["current"] = int(h.get("version") or -1) == int(version)
        atomic_write(self.history_file, json.dumps(hist, indent=2, default=str))
        return match[0]
