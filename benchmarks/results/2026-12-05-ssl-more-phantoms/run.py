"""Diagnostic: one run of the SSL benchmark with more unlabeled (wide-protocol) training phantoms.

    python benchmarks/results/2026-12-05-ssl-more-phantoms/run.py OUT METHOD SEED N_EXTRA

The ``default`` scale's data (``dinomix_core.benchmark_ssl.write_dataset``: the same 4 labeled, 16 unlabeled,
4 validation and 10 test phantoms) plus ``N_EXTRA`` more unlabeled phantoms of the wide protocol (data seeds
6000, 6001, ...; the benchmark's own data seeds are 5000-5033), then ``run_method`` exactly as the benchmark runs
it (``supervised_all`` trains on every training phantom with its label; a semi-supervised method gets the extra
phantoms as unlabeled volumes). Writes ``OUT/METHOD_seedSEED.json``: the run's record (test Dice of the model
selected on validation, validation curve, pseudo-label precision and recall), the phantom counts and the seconds.
"""
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from dinomix_core.benchmark_ssl import SCALES, WIDE, run_method, write_dataset  # noqa: E402
from dinomix_core.phantoms import write_phantom_nifti  # noqa: E402

torch.set_num_threads(1)
out, method, seed, n_extra = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sc = SCALES["default"]
data = write_dataset(out / "data", sc)
extra = []
for s in range(6000, 6000 + n_extra):
    img, lab = out / "data" / "extra" / f"phantom_{s}.nii.gz", out / "data" / "extra" / f"phantom_{s}_label.nii.gz"
    if not (img.exists() and lab.exists()):
        write_phantom_nifti(img, lab, s, sc.shape, sc.spacing, WIDE)
    extra.append((str(img), str(lab)))
data = dict(data, unlabeled=data["unlabeled"] + extra)
t0 = time.time()
rec = run_method(method, seed, data, sc, out)
rec.update(n_labeled=len(data["labeled"]), n_unlabeled=len(data["unlabeled"]), n_extra=n_extra,
           wall_seconds=round(time.time() - t0, 1))
(out / f"{method}_seed{seed}.json").write_text(json.dumps(rec, indent=1) + "\n")
print(method, seed, round(rec["mean_dice"], 2), round(rec["small_organ_dice"], 2), rec["per_organ"])
