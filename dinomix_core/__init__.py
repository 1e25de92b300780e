"""dinomix_core: DINO-Mix (arXiv 2602.07819) semi-supervised, class-imbalance-aware 3D CT organ segmentation.

Parts: a 3D student network (:mod:`.networks`), a frozen DINOv3 teacher for feature distillation
(:mod:`.teacher`), the PIC CutMix curriculum (:mod:`.pic`), EMA-teacher consistency (:mod:`.consistency`),
losses (:mod:`.losses`), the trainer (:mod:`.trainer`), inference (:mod:`.inference`), evaluation
(:mod:`.evaluation`) and the ``dinomix`` command line (:mod:`.cli`). No MONAI Label imports here.
"""

__version__ = "0.1.0"

from .config import NUM_CLASSES, ORGANS, DinoMixConfig, get_preset  # noqa: E402

__all__ = ["__version__", "DinoMixConfig", "get_preset", "ORGANS", "NUM_CLASSES"]
