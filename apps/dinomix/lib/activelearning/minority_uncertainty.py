"""Strategy ``dinomix_minority_uncertainty``: the unlabeled image whose small organs the model is least sure of.

Scores (:func:`dinomix_core.active.minority_uncertainty`) are computed in a background thread, never inside a
request: after the server starts and after every publish (the thread notices a new served model file within
``poll_s``), one image at a time, paused while a training runs, cached per model version in
``MODEL_DIR/minority_uncertainty.json``. A Next Sample request reads that cache, so it answers in constant time
however many images the studies folder holds.

Served timestamps are honoured as MONAI Label's strategies do (the ``strategy.<name>.ts`` its active-learning
endpoint stores on every image it serves): an image served in the last ``hold_s`` seconds goes to nobody else
while another candidate is left, so two annotators get different images. While scores are still pending, the
least recently served unlabeled image is given (``"selected_by": "pending ..."`` in the answer says so; not
``strategy``: MONAI Label's endpoint overwrites that key with the image's served timestamps).
"""

import json
import logging
import os
import threading
import time
from typing import Any, Dict, List, Optional

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from dinomix_core.active import minority_uncertainty, rank_by_minority_uncertainty
from dinomix_core.artifacts import atomic_write
from dinomix_core.inference import DEFAULT_MAX_VOXELS, Predictor
from dinomix_core.labels import SYNAPSE, LabelSet
from dinomix_core.registry import ModelRegistry
from dinomix_core.service import read_train_stats

logger = logging.getLogger(__name__)

NAME = "dinomix_minority_uncertainty"
#: an image served this recently is held for the annotator who got it (seconds)
HOLD_S = 3600
#: how often the background thread looks for a new model or new images (seconds)
POLL_S = 5.0


class MinorityUncertainty(Strategy):
    """Args:
        registry: the app's models.
        max_voxels: the app option: a larger image is not scored (never selected), as inference refuses it.
        hold_s: how long a served image is held back from other requests.
        poll_s: the background thread's polling period.
    """

    def __init__(self, registry: ModelRegistry, max_voxels: int = DEFAULT_MAX_VOXELS, hold_s: float = HOLD_S,
                 poll_s: float = POLL_S, label_set: LabelSet = SYNAPSE):
        small = ", ".join(label_set.small_organs) or "every organ: the label set names no small organ"
        super().__init__(f"Unlabeled image where the small organs ({small}) are most uncertain")
        self.registry, self.hold_s, self.poll_s = registry, float(hold_s), float(poll_s)
        self.organs = label_set.small_organ_ids or label_set.ids
        self.predictor = Predictor(str(registry.model_path), max_voxels=max_voxels, fallback_path=registry.starter_path,
                                   label_names=label_set.organs)
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ cache
    def _cache_path(self) -> str:
        return os.path.join(str(self.registry.model_dir), "minority_uncertainty.json")

    def _stamp(self) -> Optional[str]:
        served = self.registry.served_path()
        try:
            return None if served is None else f"{served.name}:{os.stat(served).st_mtime_ns}"
        except OSError:
            return None

    def scores(self) -> Dict[str, float]:
        """The cached scores of the model served now (empty while none is computed)."""
        try:
            with open(self._cache_path()) as f:
                return dict(json.load(f).get(self._stamp() or "", {}))
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ background scoring
    def start(self, datastore: Datastore) -> None:
        """Start the background scorer (idempotent)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, args=(datastore,), name=NAME, daemon=True)
                self._thread.start()

    def _loop(self, datastore: Datastore) -> None:
        while True:
            try:
                self.score_pending(datastore)
            except Exception:  # the scorer must outlive one bad round
                logger.exception("minority uncertainty: background scoring failed; retrying")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def score_pending(self, datastore: Datastore, limit: Optional[int] = None) -> int:
        """Score the unlabeled images the served model has no score for (all, or ``limit``); returns how many.
        Stops early when the served model changes or a training starts."""
        done = 0
        while limit is None or done < limit:
            stamp = self._stamp()
            if stamp is None or read_train_stats(str(self.registry.model_dir)).get("status") == "RUNNING":
                return done
            scores = self.scores()
            todo = sorted(set(datastore.get_unlabeled_images()) - set(scores))
            if not todo:
                return done
            image = todo[0]
            try:
                scores[image] = minority_uncertainty(self.predictor.predict_proba(datastore.get_image_uri(image)),
                                                    self.organs)
            except Exception as e:  # an unreadable image is scored -1: never selected
                logger.warning("minority uncertainty: skipping %s: %s", image, e)
                scores[image] = -1.0
            if self._stamp() != stamp:  # a new model was published meanwhile: this score is stale
                continue
            atomic_write(self._cache_path(), json.dumps({stamp: scores}))
            done += 1
        return done

    # ------------------------------------------------------------------ the request
    def __call__(self, request: Dict[str, Any], datastore: Datastore):
        images = sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        if not images:
            return None
        self.start(datastore)
        self._wake.set()  # new images or a new model are looked at now, not after poll_s
        now, strategy = time.time(), request.get("strategy") or NAME
        served_ago = {i: now - float(
            (datastore.get_image_info(i).get("strategy") or {}).get(strategy, {}).get("ts", 0)) for i in images}
        free: List[str] = [i for i in images if served_ago[i] >= self.hold_s] or images
        scores = self.scores()
        scored = {i: scores[i] for i in free if scores.get(i, -1.0) >= 0}
        if scored:
            best = rank_by_minority_uncertainty(scored)
            return {"id": best, "score": scored[best], "selected_by": NAME,
                    "scored": f"{sum(i in scores for i in images)}/{len(images)}"}
        best = min(free, key=lambda i: (-served_ago[i], i))  # least recently served, then by id
        why = "no model yet" if self._stamp() is None else "scores pending"
        return {"id": best, "selected_by": f"pending ({why}): least recently served"}
