"""How close are cached-and-mixed DINOv3 features to the teacher run live on a CutMix patch?

DINO-Mix (arXiv 2602.07819) distils DINOv3 features of (CutMix-)mixed patches. ``dinomix_core.teacher`` avoids
running the ViT at every iteration: it caches the features of whole volumes once, crops them to the patch and pastes
the CutMix box on the feature grid (``mix_features``). This benchmark measures, over random mixed patches:

* cosine similarity per feature voxel (over channels) between (a) cached full-volume features cropped and mixed with
  the box and (b) the teacher run live on the mixed image patch: overall, inside / outside the box, and for the
  unmixed patch (context effect alone);
* a reference: the cosine between live features of *different* feature voxels of the same patch (what
  "unrelated" looks like for this teacher);
* time per patch of the live teacher vs the cache crop + mix, and the one-off cache build time per volume.

Volumes: ``dinomix_core.phantoms.generate_phantom`` when that module exists, else smooth *synthetic* volumes made
here (random ellipsoid "organs" in an elliptic "body" plus low-frequency texture; not CT).
Teacher: ``--teacher PATH`` (a real DINOv3 folder, if you have the gated weights); otherwise a DINOv3ViTModel with
RANDOM weights (``--arch``), saved and reloaded through ``load_dinov3``: its similarity numbers only exercise the
pipeline and say nothing about real DINOv3 features; its timings are representative of the architecture.

Run: ``PYTHONPATH=. python benchmarks/teacher_cache_similarity.py --patches 8``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dinomix_core.config import DinoMixConfig  # noqa: E402
from dinomix_core.teacher import TeacherFeatureCache, build_teacher, feature_box, mix_features  # noqa: E402

#: random-init architectures: name -> DINOv3ViTConfig kwargs (ViT-S/B/L/16 match the released DINOv3 shapes)
ARCHS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256),
    "vits16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "vitb16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "vitl16": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def synthetic_volume(seed: int, size: Tuple[int, int, int]) -> torch.Tensor:
    """A smooth SYNTHETIC volume [1, X, Y, Z] in [0, 1] (not CT): body ellipse, ellipsoid organs, soft texture."""
    g = torch.Generator().manual_seed(seed)
    x, y, z = size
    gx, gy, gz = torch.meshgrid(
        torch.linspace(-1, 1, x), torch.linspace(-1, 1, y), torch.linspace(-1, 1, z), indexing="ij"
    )
    vol = torch.zeros(size)
    body = (gx / 0.9) ** 2 + (gy / 0.75) ** 2 <= 1.0
    vol[body] = 0.35
    for _ in range(10):
        c = (torch.rand(3, generator=g) * 1.2 - 0.6).tolist()
        r = (torch.rand(3, generator=g) * 0.25 + 0.08).tolist()
        inside = ((gx - c[0]) / r[0]) ** 2 + ((gy - c[1]) / r[1]) ** 2 + ((gz - c[2]) / (2 * r[2])) ** 2 <= 1.0
        vol[inside & body] = float(torch.rand(1, generator=g) * 0.6 + 0.3)
    noise = torch.rand(1, 1, max(x // 8, 2), max(y // 8, 2), max(z // 4, 2), generator=g)
    noise = F.interpolate(noise, size=size, mode="trilinear", align_corners=False)[0, 0]
    vol = torch.where(body, vol + 0.15 * (noise - 0.5), vol)
    vol = F.avg_pool3d(vol[None, None], 3, stride=1, padding=1, count_include_pad=False)[0]
    return vol.clamp(0, 1)


def phantom_volume(seed: int, size: Tuple[int, int, int]) -> Optional[torch.Tensor]:
    """The project's phantom (if ``dinomix_core.phantoms.generate_phantom`` exists) as [1, X, Y, Z] in [0, 1]."""
    try:
        from dinomix_core.phantoms import generate_phantom  # type: ignore
    except Exception:
        return None
    try:
        try:  # (seed, shape, spacing): the preprocessing spacing of the cpu preset
            out = generate_phantom(seed, shape=size, spacing=DinoMixConfig().target_spacing)
        except TypeError:
            out = generate_phantom(seed)
        if isinstance(out, dict):
            out = out.get("image", next(iter(out.values())))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        img = torch.as_tensor(out.as_tensor() if hasattr(out, "as_tensor") else out).float()
        if img.ndim == 3:
            img = img[None]
        if img.ndim != 4 or img.shape[0] != 1:
            return None
        if img.max() > 1.5 or img.min() < -0.5:  # HU: window as the preprocessing does
            lo, hi = DinoMixConfig().hu_range
            img = ((img.clamp(lo, hi) - lo) / (hi - lo))
        if any(a < b for a, b in zip(img.shape[1:], size)):
            img = F.pad(img, [0, max(0, size[2] - img.shape[3]), 0, max(0, size[1] - img.shape[2]),
                              0, max(0, size[0] - img.shape[1])])
        return img
    except Exception as e:  # unknown signature: fall back to synthetic volumes
        print(f"note: dinomix_core.phantoms.generate_phantom could not be used ({type(e).__name__}: {e})")
        return None


def random_teacher_dir(arch: str, patch: int, seed: int, tmp: str) -> str:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(seed)
    cfg = DINOv3ViTConfig(patch_size=patch, num_register_tokens=4, image_size=224, **ARCHS[arch])
    DINOv3ViTModel(cfg).save_pretrained(tmp)
    return tmp


def aligned_start(limit: int, stride: int, g: torch.Generator) -> int:
    """Random start in [0, limit] that is a multiple of ``stride``."""
    n = limit // stride
    return int(torch.randint(0, n + 1, (1,), generator=g)) * stride


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: Optional[List[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="", help="local DINOv3 folder / hub id; default: random-init DINOv3")
    p.add_argument("--arch", default="tiny", choices=sorted(ARCHS), help="random-init architecture (no --teacher)")
    p.add_argument("--vit-patch", type=int, default=16, help="ViT patch size of the random-init teacher")
    p.add_argument("--upsample", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16, help="slices per ViT forward")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patches", type=int, default=8)
    p.add_argument("--volumes", type=int, default=3)
    p.add_argument("--volume-size", type=int, nargs=3, default=(160, 160, 48), metavar=("X", "Y", "Z"))
    p.add_argument("--patch-size", type=int, nargs=3, default=(96, 96, 32), metavar=("X", "Y", "Z"))
    p.add_argument("--box-fraction", type=float, default=0.5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave default)")
    p.add_argument("--json", default="", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    vsize, psize = tuple(args.volume_size), tuple(args.patch_size)
    if any(a > b for a, b in zip(psize, vsize)):
        p.error("--patch-size must fit in --volume-size")

    with tempfile.TemporaryDirectory() as tmp:
        if args.teacher:
            src = args.teacher
            kind = f"DINOv3 from {args.teacher}"
        else:
            src = random_teacher_dir(args.arch, args.vit_patch, args.seed, tmp)
            kind = (f"RANDOM-INIT DINOv3ViTModel '{args.arch}' (patch {args.vit_patch}, 4 registers): real DINOv3 "
                    "weights are gated and unavailable here, so the similarities below only test the pipeline")
        teacher = build_teacher(src, upsample=args.upsample, batch_size=args.batch_size, device=device)
    s = teacher.feature_stride
    print(f"teacher: {kind}")
    print(f"hidden={teacher.hidden_size} feature_stride={s} device={device} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")

    vols, source = [], "dinomix_core.phantoms.generate_phantom (synthetic CT, HU-windowed)"
    for i in range(args.volumes):
        v = phantom_volume(args.seed + i, vsize)
        if v is None:
            v, source = synthetic_volume(args.seed + i, vsize), "SYNTHETIC smooth volumes (ellipsoids + texture)"
        vols.append(v)
    print(f"volumes: {args.volumes} x {tuple(vols[0].shape[1:])} from {source}; patch {psize}, "
          f"box fraction {args.box_fraction}")

    cache = TeacherFeatureCache(teacher)
    t_build = []
    for i, v in enumerate(vols):
        sync(device)
        t0 = time.perf_counter()
        cache.get(f"vol{i}", v)
        sync(device)
        t_build.append(time.perf_counter() - t0)

    g = torch.Generator().manual_seed(args.seed)
    box_size = [max(1, round(n * args.box_fraction)) for n in psize]
    for a in range(2):  # in-plane box size: a multiple of the stride (exact correspondence on the feature grid)
        box_size[a] = max(s, (box_size[a] // s) * s)
    cos_all, cos_in, cos_out, cos_plain, cos_ref, t_live, t_cache = [], [], [], [], [], [], []
    for k in range(args.patches):
        ia, ib = [int(i) for i in torch.randint(0, len(vols), (2,), generator=g)]
        sa = [aligned_start(vs - ps, s if a < 2 else 1, g) for a, (vs, ps) in enumerate(zip(vsize, psize))]
        sb = [aligned_start(vs - ps, s if a < 2 else 1, g) for a, (vs, ps) in enumerate(zip(vsize, psize))]
        bs = [aligned_start(ps - bz, s if a < 2 else 1, g) for a, (ps, bz) in enumerate(zip(psize, box_size))]
        pa = vols[ia][:, sa[0]:sa[0] + psize[0], sa[1]:sa[1] + psize[1], sa[2]:sa[2] + psize[2]]
        pb = vols[ib][:, sb[0]:sb[0] + psize[0], sb[1]:sb[1] + psize[1], sb[2]:sb[2] + psize[2]]
        mixed = pa.clone()
        box = (slice(None),) + tuple(slice(b, b + z) for b, z in zip(bs, box_size))
        mixed[box] = pb[box]

        sync(device)
        t0 = time.perf_counter()
        live = teacher(mixed[None])[0]
        sync(device)
        t_live.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cached = mix_features(cache.crop(f"vol{ia}", sa, psize), cache.crop(f"vol{ib}", sb, psize), bs, box_size, s)
        t_cache.append(time.perf_counter() - t0)

        cos = F.cosine_similarity(live, cached, dim=0)  # [Xf, Yf, Z]
        inside = torch.zeros_like(cos, dtype=torch.bool)
        inside[feature_box(bs, box_size, s)] = True
        cos_all.append(cos.mean().item())
        cos_in.append(cos[inside].mean().item())
        cos_out.append(cos[~inside].mean().item())
        plain_live = teacher(pa[None])[0]
        cos_plain.append(F.cosine_similarity(plain_live, cache.crop(f"vol{ia}", sa, psize), dim=0).mean().item())
        flat = live.flatten(1)
        perm = torch.randperm(flat.shape[1], generator=g)
        cos_ref.append(F.cosine_similarity(flat, flat[:, perm], dim=0).mean().item())

    def stats(v: List[float]) -> str:
        m = sum(v) / len(v)
        sd = math.sqrt(sum((a - m) ** 2 for a in v) / max(1, len(v) - 1))
        return f"{m:.4f} +- {sd:.4f} (min {min(v):.4f})"

    grid = teacher.feature_shape(psize)
    print(f"feature grid per patch: {grid} x {teacher.hidden_size} ch; box {tuple(box_size)} voxels")
    print(f"cosine(cached+mixed, live on mixed patch), {args.patches} patches:")
    print(f"  all feature voxels : {stats(cos_all)}")
    print(f"  inside the box     : {stats(cos_in)}")
    print(f"  outside the box    : {stats(cos_out)}")
    print(f"  unmixed patch      : {stats(cos_plain)}   (crop of cache vs live on the same patch)")
    print(f"  reference (live vs shuffled live voxels): {stats(cos_ref)}")
    ms = lambda v: 1000 * sum(v) / len(v)  # noqa: E731
    print(f"time per patch: live teacher {ms(t_live):.1f} ms, cache crop+mix {ms(t_cache):.3f} ms "
          f"(x{ms(t_live) / max(ms(t_cache), 1e-9):.0f}); cache build {ms(t_build):.0f} ms per volume, "
          f"{cache.nbytes / 2**20:.1f} MiB for {len(cache)} volumes (float16)")
    result = dict(
        teacher=kind, device=str(device), hidden=teacher.hidden_size, stride=s, volumes=source,
        volume_size=vsize, patch_size=psize, box_size=tuple(box_size), patches=args.patches,
        cos_all=cos_all, cos_in=cos_in, cos_out=cos_out, cos_unmixed=cos_plain, cos_reference=cos_ref,
        ms_live=ms(t_live), ms_cache=ms(t_cache), ms_build_per_volume=ms(t_build), cache_mib=cache.nbytes / 2**20,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
