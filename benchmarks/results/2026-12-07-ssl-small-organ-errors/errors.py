"""Where DINO-Mix's confident small-organ predictions go wrong on the unlabeled phantoms (a diagnostic).

The final models of the `fat_planes_fast` table's DINO-Mix runs (or another method's) predict every unlabeled
(SYNTHETIC) phantom; their softmax is compared with the phantoms' hidden labels, pooled over the volumes of a seed:
1. precision / recall of each organ's voxels at confidence thresholds 0.5-0.98;
2. what the confident (>= 0.8) predictions of the small organs really are, and how many of their false positives
   lie within 6 mm of the true organ;
3. precision / recall (>= 0.8) by the phantom's contrast phase, seeds pooled.
The trainer's pseudo-labels also pass distribution alignment and the largest-component filter; these numbers are
of the plain softmax.

    python errors.py RUNS_DIR DATA_DIR [METHOD]

RUNS_DIR, DATA_DIR: ``OUT/runs`` and ``OUT/data/fat_planes_fast`` of ``dinomix benchmark ssl --output OUT``;
METHOD: dinomix (default), supervised, ...
"""
import glob
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from dinomix_core.inference import Predictor  # noqa: E402
from dinomix_core.labels import ORGANS  # noqa: E402
from dinomix_core.phantoms import WIDE_VARIATION  # noqa: E402

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
SMALL = {o: ORGANS.index(o) + 1 for o in ("gallbladder", "esophagus", "portal and splenic veins", "pancreas",
                                         "right adrenal gland", "left adrenal gland")}
NAMES = ["background"] + list(ORGANS)


def main(runs: str, data: str, method: str = "dinomix", seeds=(0, 1, 2)) -> None:
    torch.set_num_threads(1)
    cases = sorted(glob.glob(f"{data}/unlabeled/phantom_????.nii.gz"))
    by_phase = {}
    for seed in seeds:
        pr = Predictor(f"{runs}/{method}_seed{seed}/model.pt", device="cpu")
        tp, npred = np.zeros((len(THRESHOLDS), 14)), np.zeros((len(THRESHOLDS), 14))
        nref, confusion, near, fp = np.zeros(14), np.zeros((14, 14)), np.zeros(14), np.zeros(14)
        for img in cases:
            phase = WIDE_VARIATION.draw_extras(int(re.findall(r"(\d+)\.nii", img)[0]))[0]
            p = pr.predict_proba(img).numpy()
            lab = nib.load(img.replace(".nii.gz", "_label.nii.gz"))
            ref, mm = np.asarray(lab.dataobj).astype(int), lab.header.get_zooms()[:3]
            conf, y = p.max(0), p.argmax(0)
            sure = conf >= 0.8
            np.add.at(confusion, (y[sure], ref[sure]), 1)
            ph = by_phase.setdefault(phase, {"volumes": 0, **{c: np.zeros(3) for c in SMALL.values()}})
            ph["volumes"] += 1
            for c in range(1, 14):
                rc = ref == c
                nref[c] += rc.sum()
                for i, t in enumerate(THRESHOLDS):
                    pc = (y == c) & (conf >= t)
                    tp[i, c] += (pc & rc).sum()
                    npred[i, c] += pc.sum()
                if c in SMALL.values():
                    pc = (y == c) & sure
                    ph[c] += [(pc & rc).sum(), pc.sum(), rc.sum()]
                    wrong = pc & ~rc
                    if rc.any() and wrong.any():
                        d = ndimage.distance_transform_edt(~rc, sampling=mm)
                        near[c] += (d[wrong] <= 6.0).sum()
                        fp[c] += wrong.sum()
        print(f"## seed {seed}: precision / recall (%) by threshold")
        for i, t in enumerate(THRESHOLDS):
            print(f"  {t:.2f} " + " ".join(f"{NAMES[c][:5]}:{100 * tp[i, c] / max(npred[i, c], 1):.0f}/"
                                          f"{100 * tp[i, c] / max(nref[c], 1):.0f}" for c in range(1, 14)))
        print(f"## seed {seed}: confident (>= 0.8) small-organ voxels by true class (%); false positives within 6 mm")
        for name, c in SMALL.items():
            row = 100 * confusion[c] / max(confusion[c].sum(), 1)
            top = np.argsort(-row)[:4]
            print(f"  {name:26s} " + " ".join(f"{NAMES[k]}:{row[k]:.0f}" for k in top)
                  + f" | within 6 mm: {100 * near[c] / max(fp[c], 1):.0f}%")
    print("## by contrast phase, seeds pooled: precision / recall (%) at >= 0.8")
    for phase, ph in by_phase.items():
        print(f"  {phase:9s} ({ph.pop('volumes')} volume-runs) "
              + " ".join(f"{NAMES[c][:5]}:{100 * v[0] / max(v[1], 1):.0f}/{100 * v[0] / max(v[2], 1):.0f}"
                         for c, v in ph.items()))


if __name__ == "__main__":
    main(*sys.argv[1:4])
