"""Distributed training: dinomix_core's trainer under ``torchrun --nproc_per_node 2`` on the CPU (gloo).

Each rank samples different patches (its generator is seeded with the rank), so identical weights after the steps
show that DDP averaged the gradients; only rank 0 may write ``model.pt`` / ``checkpoint.pt``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    '''
    import json, os, sys
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    from dinomix_core.config import get_preset
    from dinomix_core.trainer import DinoMixTrainer

    spec = json.loads(sys.argv[1])
    cfg = get_preset("cpu", patch_size=(16, 16, 8), max_iterations=3, teacher="none", val_interval=0, amp=False)
    out = os.path.join(spec["root"], f"rank{rank}")
    tr = DinoMixTrainer(cfg, [tuple(x) for x in spec["labeled"]], spec["unlabeled"], out, device="cpu")
    init = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    first = int(tr.gen.initial_seed())  # the seed of this rank's patch sampler
    summary = tr.fit()
    torch.save(
        {
            "rank": rank,
            "world_size": tr.world_size,
            "ddp": isinstance(tr.net, torch.nn.parallel.DistributedDataParallel),
            "init": init,
            "final": {k: v.detach().clone() for k, v in tr.model.state_dict().items()},
            "ema": {k: v.detach().clone() for k, v in tr.ema.state_dict().items()},
            "iterations": summary["iterations"],
            "sampler_seed": first,
        },
        os.path.join(spec["root"], f"weights_rank{rank}.pt"),
    )
    dist.barrier()
    dist.destroy_process_group()
    '''
)


def _tiny_case(folder: Path, name: str, seed: int, labeled: bool):
    """A 24 x 24 x 12 CT-like volume at the cpu preset's spacing (no resampling), with two box 'organs'."""
    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    img = rng.normal(-500, 50, (24, 24, 12)).astype(np.float32)
    lab = np.zeros((24, 24, 12), np.uint8)
    x0, y0 = rng.integers(2, 8, 2)
    lab[x0 : x0 + 10, y0 : y0 + 8, 2:9] = 6  # "liver"
    lab[x0 + 11 : x0 + 14, y0 + 2 : y0 + 5, 4:7] = 12  # "right adrenal gland" (small)
    img[lab == 6] = 60 + rng.normal(0, 5, int((lab == 6).sum()))
    img[lab == 12] = 20 + rng.normal(0, 5, int((lab == 12).sum()))
    folder.mkdir(parents=True, exist_ok=True)
    ip = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(img.astype(np.int16), affine), str(ip))
    if not labeled:
        return str(ip), None
    (folder / "labels" / "final").mkdir(parents=True, exist_ok=True)
    lp = folder / "labels" / "final" / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(lab, affine), str(lp))
    return str(ip), str(lp)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU + gloo even on a GPU machine
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _torchrun(args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    p = subprocess.run(cmd, env=_env(), cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


@pytest.fixture(scope="module")
def tiny_studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_studies")
    labeled = [_tiny_case(root, f"case_{i}", i, True) for i in range(2)]
    unlabeled = [_tiny_case(root, f"case_{i}", i, False)[0] for i in range(2, 4)]
    return root, labeled, unlabeled


def test_two_ranks_keep_identical_weights_and_only_rank0_writes(tmp_path, tiny_studies):
    _, labeled, unlabeled = tiny_studies
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _torchrun([str(script), json.dumps({"root": str(tmp_path), "labeled": labeled, "unlabeled": unlabeled})])

    w = [torch.load(tmp_path / f"weights_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [x["rank"] for x in w] == [0, 1]
    assert all(x["world_size"] == 2 and x["ddp"] for x in w), "trainer did not detect torch.distributed / wrap in DDP"
    assert all(x["iterations"] == 3 for x in w)
    # the ranks draw different patches (their samplers are seeded differently) ...
    assert w[0]["sampler_seed"] != w[1]["sampler_seed"]
    # ... yet hold bit-identical weights (and EMA teachers) after the steps, which moved the weights
    for key in w[0]["final"]:
        assert torch.equal(w[0]["final"][key], w[1]["final"][key]), f"ranks differ in {key}"
    for key in w[0]["ema"]:
        assert torch.equal(w[0]["ema"][key], w[1]["ema"][key]), f"EMA differs in {key}"
    moved = [k for k in w[0]["final"] if w[0]["final"][k].is_floating_point()
             and not torch.equal(w[0]["final"][k], w[0]["init"][k])]
    assert moved, "no weight changed: no optimiser step happened"
    # only rank 0 wrote the model, checkpoint and summary
    r0 = tmp_path / "rank0"
    assert (r0 / "model.pt").is_file() and (r0 / "checkpoint.pt").is_file() and (r0 / "summary.json").is_file()
    ckpt = torch.load(r0 / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 3 and ckpt["finished"] is True
    r1 = tmp_path / "rank1"
    assert not r1.exists() or not any(r1.rglob("*")), f"rank 1 wrote files: {sorted(map(str, r1.rglob('*')))}"


def test_cli_train_under_torchrun_initialises_the_process_group(tmp_path, tiny_studies):
    studies, _, _ = tiny_studies
    out = tmp_path / "out"
    p = _torchrun(
        ["-m", "dinomix_core.cli", "train", "--studies", str(studies), "--output", str(out), "--max-iterations", "2",
         "--device", "cpu", "--no-pic", "--no-consistency", "--teacher", "none"]
    )
    # only rank 0 prints the summary and writes the files
    assert p.stdout.count('"checkpoint"') == 1, p.stdout
    summary = json.loads(p.stdout[p.stdout.index("{"):p.stdout.rindex("}") + 1])
    assert summary["iterations"] == 2
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 2 and ckpt["finished"] is True
    assert (out / "model.pt").is_file()
    assert not list(out.glob(".*.tmp*")), "a temporary file was left behind"
