"""Scribbles infer tasks over the DINO-Mix probabilities: MONAI Label's Histogram+GraphCut and GMM+GraphCut.

MONAI Label's scribbles tasks (``monailabel.scribbles.infer``) build an organ likelihood from the painted strokes
alone (a histogram or a Gaussian mixture of the scribbled intensities) and let GraphCut fix the result, the strokes
as hard constraints (ISeg, Wang et al., TMI 2018). Here the likelihood is the DINO-Mix probability of the selected
organ, averaged with the strokes' own likelihood within a few centimetres of the strokes (``SCRIBBLE_REACH_MM``):
the model decides far away, the strokes near where the user painted. Everything else is MONAI Label's: the
request (the stock plugin's scribbles panel: a label file with ``background_scribbles`` and
``foreground_scribbles``, ``label_info``, ``selected_label_name``, an optional ``roi``), the unary term, GraphCut
(numpymaxflow) and the result, a binary mask of the selected organ on the image's grid.
"""

import logging
from typing import Any, Dict

import numpy as np
import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged, Spacingd
from monailabel.scribbles.infer import GMMBasedGraphCut, HistogramBasedGraphCut
from monailabel.scribbles.transforms import AddBackgroundScribblesFromROId
from scipy import ndimage

from dinomix_core.errors import ModelNotFoundError
from dinomix_core.inference import Predictor
from dinomix_core.labels import LabelSet
from dinomix_core.registry import ModelRegistry

logger = logging.getLogger(__name__)

#: how far (mm) from the strokes their own likelihood is blended into the model's
SCRIBBLE_REACH_MM = 30.0
#: the request key of the model's probability on the scribbles grid
PROB_KEY = "dinomix_prob"
#: the request key of the strokes on the image's own grid
STROKES_KEY = "dinomix_strokes"


def scribble_ids(d: Dict[str, Any], bg: int, fg: int):
    """The background and foreground scribble values, from ``label_info`` when it names them (MONAI Label's rule)."""
    for entry in d.get("label_info") or []:
        if isinstance(entry, dict) and entry.get("name") == "background_scribbles":
            bg = int(entry.get("id", bg))
        if isinstance(entry, dict) and entry.get("name") == "foreground_scribbles":
            fg = int(entry.get("id", fg))
    return bg, fg


class AddDinoMixProbability:
    """Adds the model's probability of ``selected_label_name`` ([1, ...], on the loaded image's grid) as ``PROB_KEY``."""

    def __init__(self, predictor: Predictor, ids: Dict[str, int]):
        self.predictor, self.ids = predictor, ids

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        d = dict(data)
        name = d.get("selected_label_name")
        if name not in self.ids:
            raise HTTPException(status_code=422, detail=f"selected_label_name {name!r} is not one of this app's labels: "
                                f"{', '.join(self.ids)}.")
        prob, _ = self.predictor.organ_probability(d["image_path"], self.ids[name])
        image = d["image"]
        if tuple(prob.shape) != tuple(image.shape[1:]):
            raise HTTPException(status_code=422, detail=f"the image's grid {tuple(image.shape[1:])} is not the model's "
                                f"result grid {prob.shape}.")
        d[PROB_KEY] = MetaTensor(torch.as_tensor(prob[None]), meta=dict(image.meta))
        d[STROKES_KEY] = np.asarray(d["label"])[0].copy()
        return d


class KeepStrokes:
    """On the image's own grid, every foreground stroke voxel is the organ and every background one is not (the
    GraphCut runs on the model's coarser grid, where a thin stroke can vanish)."""

    def __init__(self, bg: int, fg: int):
        self.bg, self.fg = bg, fg

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        d = dict(data)
        bg, fg = scribble_ids(d, self.bg, self.fg)
        strokes = d.pop(STROKES_KEY)
        pred = d["pred"]
        arr = np.asarray(pred)
        target = arr[0] if arr.ndim == strokes.ndim + 1 else arr
        if target.shape != strokes.shape:
            return d  # MONAI Label's restore changed the grid: nothing to pair the strokes with
        target = target.copy()
        target[strokes == fg], target[strokes == bg] = 1, 0
        d["pred"] = target[None] if arr.ndim == strokes.ndim + 1 else target
        return d


class BlendWithDinoMix:
    """``prob`` [2, ...] (background, organ) becomes the model's probability, averaged with the strokes'
    likelihood within ``reach`` voxels of a stroke; 422 when no stroke was painted."""

    def __init__(self, bg: int, fg: int, reach_voxels: np.ndarray):
        self.bg, self.fg, self.reach = bg, fg, reach_voxels

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        d = dict(data)
        bg, fg = scribble_ids(d, self.bg, self.fg)
        scribbles = np.asarray(d["label"])[0]
        painted = (scribbles == bg) | (scribbles == fg)
        if not painted.any():
            raise HTTPException(status_code=422, detail="no scribble in the label: paint foreground or background "
                                "strokes first.")
        model = np.asarray(d[PROB_KEY])[0].astype(np.float32)
        own = np.asarray(d["prob"], dtype=np.float32)
        own = own[1] / np.maximum(own[0] + own[1], 1e-6)
        dist = ndimage.distance_transform_edt(~painted, sampling=1.0 / self.reach)
        p = np.where(dist <= 1.0, 0.5 * (model + own), model).clip(1e-4, 1 - 1e-4)
        d["prob"] = np.stack([1 - p, p]).astype(np.float32)
        return d


class GMMLikelihoodCPU:
    """The strokes' GMM likelihood ``prob`` [2, ...] (background, organ) on the CPU, with scikit-learn's
    ``GaussianMixture`` on the stroked intensities of each class. MONAI Label 0.8.5's ``GMMBasedGraphCut`` uses
    MONAI's GMM extension, which exists for CUDA only (``learn_and_apply_gmm_monai`` raises without a GPU)."""

    def __init__(self, bg: int, fg: int, num_mixtures: int, seed: int = 0):
        self.bg, self.fg, self.num_mixtures, self.seed = bg, fg, num_mixtures, seed

    def __call__(self, data: Dict[str, Any]) -> Dict[str, Any]:
        from sklearn.mixture import GaussianMixture

        d = dict(data)
        bg, fg = scribble_ids(d, self.bg, self.fg)
        image = np.asarray(d["image"], dtype=np.float64)[0]
        scribbles = np.asarray(d["label"])[0]
        values = image.reshape(-1, 1)
        prob = []
        for cls in (bg, fg):
            x = image[scribbles == cls].reshape(-1, 1)
            if len(x) < 2:  # no stroke of this class: it says nothing
                prob.append(np.full(image.shape, 0.5, np.float32))
                continue
            gmm = GaussianMixture(min(self.num_mixtures, len(x) // 2), random_state=self.seed, reg_covar=1e-4).fit(x)
            prob.append(np.exp(gmm.score_samples(values)).reshape(image.shape).astype(np.float32))
        d["prob"] = np.stack(prob)
        return d


class _DinoMixScribbles:
    """What both scribbles tasks add to MONAI Label's: the model's grid and HU window, and its probabilities."""

    def setup(self, registry: ModelRegistry, label_set: LabelSet, predictor: Predictor, name: str) -> None:
        self.registry, self.predictor, self.ids = registry, predictor, label_set.ids_by_name
        self.description = f"{name} over the DINO-Mix probabilities: painted strokes fix the selected organ"

    def is_valid(self) -> bool:
        return self.registry.served_path() is not None

    def _model_grid(self):
        try:
            return self.predictor.served_config()
        except ModelNotFoundError:
            raise ModelNotFoundError("scribbles need the DINO-Mix model: none is served yet; Retrain first.") from None

    def pre_transforms(self, data=None):
        config = self._model_grid()
        low, high = config.hu_range
        return [
            LoadImaged(keys=["image", "label"]),
            EnsureChannelFirstd(keys=["image", "label"]),
            AddDinoMixProbability(self.predictor, self.ids),
            AddBackgroundScribblesFromROId(scribbles="label", scribbles_bg_label=self.scribbles_bg_label,
                                           scribbles_fg_label=self.scribbles_fg_label),
            Spacingd(keys=["image", "label", PROB_KEY], pixdim=config.target_spacing,
                     mode=["bilinear", "nearest", "bilinear"]),
            ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        ]

    def post_transforms(self, data=None):
        post = super().post_transforms(data)
        at = next((i + 1 for i, t in enumerate(post) if type(t).__name__ == "Restored"), len(post))
        return post[:at] + [KeepStrokes(self.scribbles_bg_label, self.scribbles_fg_label)] + post[at:]

    def strokes_likelihood(self, data=None):
        """The strokes' own likelihood (MONAI Label's inferer of the scribbles task)."""
        return super().inferer(data)

    def inferer(self, data=None):
        spacing = np.asarray(self._model_grid().target_spacing, dtype=np.float64)
        return Compose([self.strokes_likelihood(data),
                        BlendWithDinoMix(self.scribbles_bg_label, self.scribbles_fg_label, SCRIBBLE_REACH_MM / spacing)])


class DinoMixHistogramGraphCut(_DinoMixScribbles, HistogramBasedGraphCut):
    """MONAI Label's Histogram+GraphCut with the DINO-Mix probability as the organ likelihood."""

    def __init__(self, registry: ModelRegistry, label_set: LabelSet, predictor: Predictor):
        super().__init__(labels=label_set.ids_by_name)
        self.setup(registry, label_set, predictor, "Histogram+GraphCut")


class DinoMixGMMGraphCut(_DinoMixScribbles, GMMBasedGraphCut):
    """MONAI Label's GMM+GraphCut with the DINO-Mix probability as the organ likelihood (on a CPU, the strokes' GMM
    is fitted with scikit-learn: :class:`GMMLikelihoodCPU`)."""

    def strokes_likelihood(self, data=None):
        if torch.cuda.is_available():
            return GMMBasedGraphCut.inferer(self, data)
        return GMMLikelihoodCPU(self.scribbles_bg_label, self.scribbles_fg_label, self.num_mixtures)

    def __init__(self, registry: ModelRegistry, label_set: LabelSet, predictor: Predictor):
        super().__init__(labels=label_set.ids_by_name)
        self.setup(registry, label_set, predictor, "GMM+GraphCut")
