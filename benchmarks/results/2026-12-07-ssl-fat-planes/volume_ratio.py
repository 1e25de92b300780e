"""How the small organs are over- or under-segmented, on the VALIDATION split (never the test split).

For each model folder (``RUNS/<method>_seed<s>/model.pt`` as ``dinomix benchmark ssl`` leaves them) and each small
organ (and the gallbladder and pancreas): the predicted volume over the true one, the precision, the share of
predicted voxels more than 2 voxels from the organ, and Dice; mean over the validation phantoms holding the organ.

    python benchmarks/results/2026-12-07-ssl-fat-planes/volume_ratio.py RUNS DATA/validation supervised_seed0 ...
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from dinomix_core.inference import Predictor
from dinomix_core.labels import ORGANS

ORGANS_SHOWN = ["esophagus", "portal and splenic veins", "right adrenal gland", "left adrenal gland", "gallbladder",
                "pancreas"]


def main(runs: Path, validation: Path, models) -> None:
    torch.set_num_threads(1)
    images = sorted(p for p in validation.glob("*.nii.gz") if not p.name.endswith("_label.nii.gz"))
    print(f"{len(images)} validation phantoms; columns: predicted / true volume, precision, "
          "share of predicted voxels > 2 voxels away, Dice")
    for model in models:
        predictor = Predictor(str(runs / model / "model.pt"), device="cpu")
        rows = {o: [] for o in ORGANS_SHOWN}
        for image in images:
            ref = np.asarray(nib.load(str(image).replace(".nii.gz", "_label.nii.gz")).dataobj).astype(int)
            pred, _ = predictor.predict(str(image))
            for organ in ORGANS_SHOWN:
                c = ORGANS.index(organ) + 1
                t, p = ref == c, np.asarray(pred) == c
                if t.any():
                    near = ndimage.binary_dilation(t, iterations=2)
                    rows[organ].append((p.sum() / t.sum(), (p & t).sum() / max(p.sum(), 1),
                                        (p & ~near).sum() / max(p.sum(), 1), 2 * (p & t).sum() / (p.sum() + t.sum())))
        print(model)
        for organ, r in rows.items():
            if r:
                print(f"  {organ:26s} " + "  ".join(f"{x:5.2f}" for x in np.mean(r, axis=0)))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
