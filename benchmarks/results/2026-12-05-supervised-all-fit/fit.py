"""Diagnostic: supervised_all's selected model on its own training phantoms against the test phantoms.

    python benchmarks/results/2026-12-05-supervised-all-fit/fit.py DIR SEED OUT.json

DIR: the ``--output`` folder of ``dinomix benchmark ssl --methods supervised_all --seeds SEED`` (its ``data/`` and
``runs/supervised_all_seedSEED/model.pt``).
"""
import glob
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from dinomix_core.benchmark_ssl import score_model  # noqa: E402

torch.set_num_threads(1)
d, seed, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
model = f"{d}/runs/supervised_all_seed{seed}/model.pt"


def cases(split):
    return [(i, i.replace(".nii.gz", "_label.nii.gz")) for i in sorted(glob.glob(f"{d}/data/{split}/phantom_????.nii.gz"))]


out = {split: score_model(model, cases(split)) for split in ("labeled", "unlabeled", "test")}
for split, r in out.items():
    print(split, round(r["mean_dice"], 1), round(r["small_organ_dice"], 1), r["per_organ"])
Path(out_path).write_text(json.dumps(out, indent=1) + "\n")
