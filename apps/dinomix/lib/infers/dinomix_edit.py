"""Infer task ``dinomix_edit`` (type ``deepedit``): the automatic result corrected by clicks.

It takes the stock Slicer plugin's multi-label DeepEdit request: ``{"<organ name>": [[i, j, k], ...] for every
organ, "label": "<organ being edited>"}``, points as voxel indices of the image; ``"background": [[i, j, k], ...]``
adds background clicks (the DinoMix module sends them; the stock plugin has no background landmarks for a
multi-label model). It returns the whole label map, the clicked organs re-predicted by the model's click refiner
around the clicks (dinomix_core/interactive.py). Without any click it is exactly the ``dinomix`` result.
"""

import time
from typing import Any, Dict, List, Tuple, Union

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferType

from dinomix_core.errors import ModelNotFoundError

from .dinomix import DinoMixInfer, result_format, write_result

#: the request key of background clicks
BACKGROUND = "background"


class DinoMixEditInfer(DinoMixInfer):
    """DINO-Mix interactive editing: clicks (foreground on an organ, background) fix the automatic result.

    Shares the ``dinomix`` task's predictor, so the automatic result it corrects is computed once per image and
    model; a click then runs only the small click refiner over a window around it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.type = InferType.DEEPEDIT
        self.description = ("DINO-Mix interactive editing: clicks on an organ (and on background) correct the automatic "
                            "result around them")

    def clicks(self, request: Dict[str, Any]) -> Tuple[Dict[int, List[List[int]]], List[List[int]], Union[int, None]]:
        """(label id -> points, background points, edited label id) from a DeepEdit request; 422 when malformed."""
        ids = self.labels
        edited = request.get("label")
        if edited not in (None, "") and edited not in ids:
            raise HTTPException(status_code=422, detail=f"label {edited!r} is not one of this app's labels: "
                                f"{', '.join(ids)}.")
        clicks: Dict[int, List[List[int]]] = {}
        for name in [*ids, BACKGROUND]:
            points = request.get(name)
            if points in (None, ""):
                continue
            if not isinstance(points, list) or not all(
                isinstance(p, (list, tuple)) and len(p) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in points
            ):
                raise HTTPException(status_code=422, detail=f"{name!r} must be a list of [i, j, k] voxel indices, "
                                    f"got {points!r}.")
            if points:
                clicks[0 if name == BACKGROUND else ids[name]] = [[int(round(v)) for v in p] for p in points]
        background = clicks.pop(0, [])
        return clicks, background, ids[edited] if edited else None

    def __call__(self, request) -> Tuple[Union[str, None], Dict]:
        image = self.image_file(request)
        ext, dtype = result_format(request)
        clicks, background, edited = self.clicks(request)
        t0 = time.time()
        try:
            label, affine = self.predictor.refine(image, clicks, background, edited)
        except ModelNotFoundError as e:
            raise ModelNotFoundError(str(e) if self.registry.served_path() else self.not_ready()) from None
        except ValueError as e:  # a point outside the image
            raise HTTPException(status_code=422, detail=str(e)) from None
        t1 = time.time()
        out = write_result(label, affine, ext, dtype)
        return out, self.result_meta(t0, t1, clicks=sum(map(len, clicks.values())) + len(background))
