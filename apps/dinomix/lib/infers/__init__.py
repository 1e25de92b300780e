from .dinomix import DinoMixInfer, shared_predictor
from .dinomix_edit import DinoMixEditInfer
from .dinomix_scribbles import DinoMixGMMGraphCut, DinoMixHistogramGraphCut

__all__ = ["DinoMixInfer", "DinoMixEditInfer", "DinoMixHistogramGraphCut", "DinoMixGMMGraphCut", "shared_predictor"]
