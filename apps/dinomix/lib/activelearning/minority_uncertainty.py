"""Strategy ``dinomix_minority_uncertainty``: the unlabeled image whose small organs the model is least sure of."""

import json
import logging
import os
import random

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from dinomix_core.active import minority_uncertainty, rank_by_minority_uncertainty
from dinomix_core.artifacts import atomic_write
from dinomix_core.inference import DEFAULT_MAX_VOXELS, Predictor
from dinomix_core.registry import ModelRegistry

logger = logging.getLogger(__name__)


class MinorityUncertainty(Strategy):
    """Scores every unlabeled image with :func:`dinomix_core.active.minority_uncertainty` (cached per model
    version, the starter model's too); falls back to a random unlabeled image while no model can be served.

    Args:
        registry: the app's models.
        max_voxels: the app option: a larger image is not scored (never selected), as inference refuses it.
    """

    def __init__(self, registry: ModelRegistry, max_voxels: int = DEFAULT_MAX_VOXELS):
        super().__init__("Unlabeled image where the small organs (esophagus, veins, adrenals) are most uncertain")
        self.registry = registry
        self.predictor = Predictor(str(registry.model_path), max_voxels=max_voxels, fallback_path=registry.starter_path)

    def _cache_path(self):
        return os.path.join(str(self.registry.model_dir), "minority_uncertainty.json")

    def __call__(self, request, datastore: Datastore):
        images = sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        if not images:
            return None
        served = self.registry.served_path()
        if served is None:
            image = random.choice(images)
            logger.info("no model yet: random unlabeled image %s", image)
            return {"id": image, "strategy": "random (no model yet)"}
        stamp = f"{served.name}:{os.stat(served).st_mtime_ns}"
        cache = {}
        try:
            with open(self._cache_path()) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            pass
        scores = cache.get(stamp, {})
        for i in images:
            if i not in scores:
                try:
                    scores[i] = minority_uncertainty(self.predictor.predict_proba(datastore.get_image_uri(i)))
                except Exception as e:  # an unreadable image is skipped, never selected
                    logger.warning("minority uncertainty: skipping %s: %s", i, e)
                    scores[i] = -1.0
        atomic_write(self._cache_path(), json.dumps({stamp: scores}))
        best = rank_by_minority_uncertainty({i: scores[i] for i in images})
        return {"id": best, "score": scores[best], "strategy": "dinomix_minority_uncertainty"}
