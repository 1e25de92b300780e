"""One DINO-Mix variant on `dinomix benchmark ssl`'s default scale (SYNTHETIC phantoms), one seed.

    python run_variant.py NAME '{"consistency_weight": 1.0, "confidence_threshold": 0.8, "_seed": 1}' [THREADS] [OUT]

The variant is the benchmark's `dinomix` method with the given DinoMixConfig overrides; `_seed` picks the method
seed (the data seeds are the benchmark's). Model selection on the validation split, as the benchmark; one JSON
line per run is appended to OUT/results.jsonl.
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from dinomix_core import benchmark_ssl as b  # noqa: E402

torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
name, overrides = sys.argv[1], json.loads(sys.argv[2])
base = overrides.pop("_base", "dinomix")
seed = overrides.pop("_seed", 0)
b.METHODS[name] = (dict(b.METHODS[base][0], **overrides), False)
out = Path(sys.argv[4] if len(sys.argv) > 4 else "benchmarks/results/tmp/explore")
data = b.write_dataset(out / "data", b.SCALES["default"])
rec = b.run_method(name, seed, data, b.SCALES["default"], out)
rec.update(name=name, base=base, overrides=overrides)
with open(out / "results.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
print(name, "val", [c["val_mean_dice"] for c in rec["validation_curve"]], "test", rec["mean_dice"],
      rec["small_organ_dice"])
