"""The ``dinomix`` command line: train, infer, evaluate, benchmark, prepare-studies."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from .service import TrainRequest

__all__ = ["main", "build_parser"]

LABELS_HELP = "label set: synapse (default), amos, organ names in id order 'a,b,c', or a JSON file (names or {name: id})"


def _progress_bar(total: int, initial: int = 0):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc="training", unit="it", dynamic_ncols=True)

    def update(p):
        bar.n = p["iteration"]
        post = {k: f"{v:.3f}" for k, v in p["losses"].items() if k in ("total", "sup", "unsup", "fkd", "refiner")}
        if p.get("validation"):
            post["val_dice"] = f"{p['validation']['mean_dice']:.3f}"
        bar.set_postfix(post, refresh=False)
        bar.refresh()
        if p["iteration"] >= total:
            bar.close()

    return update


def train_request(args: argparse.Namespace) -> "TrainRequest":
    """The CLI's ``train`` arguments as the :class:`~dinomix_core.service.TrainRequest` the app also takes."""
    from .config import PRESETS
    from .service import TrainRequest

    return TrainRequest.from_request({
        "preset": args.preset, "teacher": args.teacher, "seed": args.seed, "device": args.device,
        "max_iterations": args.max_iterations or PRESETS[args.preset].max_iterations,
        "use_fkd": not args.no_fkd, "use_pic": not args.no_pic, "use_consistency": not args.no_consistency,
        "val_fraction": args.val_fraction, "min_labeled_for_validation": args.min_labeled_for_validation,
    })


def cmd_train(args: argparse.Namespace) -> int:
    from .data import case_id_from_path
    from .labels import parse_label_set
    from .service import split_validation
    from .studies import list_studies
    from .trainer import init_distributed, run_training

    request = train_request(args)
    config = request.to_config(parse_label_set(args.labels).organs)
    labeled, unlabeled = list_studies(args.studies)
    cases = [(case_id_from_path(i), str(i), str(l)) for i, l in labeled]
    train, val, note = split_validation(cases, request.val_fraction, request.min_labeled_for_validation)
    print(
        f"DINO-Mix training: {len(train)} labeled, {len(unlabeled)} unlabeled, {len(val)} validation volumes ({note}); "
        f"preset {config.preset}, {config.max_iterations} iterations, teacher {config.teacher!r}",
        file=sys.stderr,
    )
    rank = init_distributed(request.torch_device)
    summary = run_training(
        config, [c[1:] for c in train], unlabeled, args.output, validation=[c[1:] for c in val], resume=args.resume,
        init_checkpoint=args.init, progress=_progress_bar(config.max_iterations) if rank == 0 else None,
        device=request.torch_device,
    )
    if rank != 0:
        return 0
    print(json.dumps({k: summary[k] for k in ("checkpoint", "iterations", "best_metric", "seconds")}, indent=2))
    return 0


def cmd_train_starter(args: argparse.Namespace) -> int:
    from .starter import train_starter

    summary = train_starter(
        args.studies, args.output, seed=args.seed, iterations=args.iterations, phantoms=args.phantoms,
        phantom_share=args.phantom_share or None, work_dir=args.work_dir,
        device=args.device, progress=_progress_bar(args.iterations),
    )
    print(json.dumps({k: summary[k] for k in ("model", "iterations", "seconds")}, indent=2))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .inference import predict_file
    from .infer_folder import infer_folder

    if args.image:
        print(predict_file(args.model, args.image, args.output, device=args.device))
        return 0
    summary = infer_folder(args.model, args.input, args.output, device=args.device, overwrite=args.overwrite,
                           dicom_seg=args.dicom_seg, progress=not args.no_progress)
    print(json.dumps(summary.to_dict(), indent=2))
    print(f"{len(summary.segmented)} segmented, {len(summary.skipped)} skipped (results exist; --overwrite), "
          f"{len(summary.failed)} failed, in {summary.seconds:.1f} s -> {args.output}", file=sys.stderr)
    for name, why in summary.failed.items():
        print(f"  {name}: {why}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_main

    return int(evaluate_main(args) or 0)


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.which == "ssl":
        from .benchmark_ssl import ssl_main

        return int(ssl_main(args) or 0)
    from .benchmark import benchmark_main

    return int(benchmark_main(args) or 0)


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import ModelRegistry

    reg = ModelRegistry(args.model_dir)
    if args.action == "list":
        hist = reg.history()
        if not hist:
            print(f"no published model in {args.model_dir}")
        for h in hist:
            mark = "*" if h.get("current") else " "
            print(
                f"{mark} version {h['version']:>3}  {h.get('published_at')}  iteration {h.get('iteration')}  "
                f"metric {h.get('metric')}  trained on {len(h.get('labeled_ids') or [])} labeled"
            )
        return 0
    if args.version is None:
        raise ValueError("restore needs a VERSION (see `dinomix models --model-dir DIR list`).")
    entry = reg.restore(args.version)
    print(f"restored version {entry['version']} as {reg.model_path}")
    return 0


def cmd_prepare_studies(args: argparse.Namespace) -> int:
    from .studies import list_studies, prepare_studies

    out = prepare_studies(args.output, overwrite=args.overwrite)
    labeled, unlabeled = list_studies(out)
    print(f"studies ready in {out}: {len(labeled)} labeled, {len(unlabeled)} unlabeled volumes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import PRESETS

    p = argparse.ArgumentParser(prog="dinomix", description="DINO-Mix (arXiv 2602.07819) 3D CT organ segmentation")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on a MONAI Label studies folder (labels/final = labeled)")
    t.add_argument("--studies", required=True, help="folder of images; labels in STUDIES/labels/final")
    t.add_argument("--output", required=True, help="output folder (model.pt, checkpoint.pt, logs/, curves.png)")
    t.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    t.add_argument("--labels", default="synapse", help=LABELS_HELP)
    t.add_argument("--max-iterations", type=int, default=None)
    t.add_argument("--teacher", default=None, help="DINOv3 local folder or hub id, or 'none' (default: preset's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (auto: CUDA if available)")
    t.add_argument("--val-fraction", type=float, default=0.0, help="labeled fraction held back for validation")
    t.add_argument("--min-labeled-for-validation", type=int, default=5,
                   help="hold back validation volumes only with at least this many labeled ones")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    t.add_argument("--init", default=None, help="warm-start from this model file")
    t.add_argument("--no-fkd", action="store_true")
    t.add_argument("--no-pic", action="store_true")
    t.add_argument("--no-consistency", action="store_true")
    t.set_defaults(func=cmd_train)

    from .starter import STARTER_ITERATIONS, STARTER_PHANTOM_SHARE, STARTER_PHANTOMS

    st = sub.add_parser("train-starter", help="train the starter model the app serves before its first Retrain")
    st.add_argument("--studies", default="sample_data/studies", help="studies folder (default: sample_data/studies)")
    st.add_argument("--output", default="apps/dinomix/model/pretrained_dinomix.pt", help="model file to write")
    st.add_argument("--iterations", type=int, default=STARTER_ITERATIONS)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--phantoms", type=int, default=STARTER_PHANTOMS,
                    help="labeled SYNTHETIC phantoms generated beside the studies (default: %(default)s)")
    st.add_argument("--phantom-share", type=float, default=STARTER_PHANTOM_SHARE,
                    help="share of labeled patches drawn from those phantoms together; 0 draws every labeled "
                         "volume equally often (default: %(default)s)")
    st.add_argument("--work-dir", default=None, help="training folder (default: beside OUTPUT, starter_run/)")
    st.add_argument("--device", default=None)
    st.set_defaults(func=cmd_train_starter)

    i = sub.add_parser("infer", help="segment an image, or every image of a folder, with a trained model")
    i.add_argument("--model", required=True)
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image file; --output is the label file to write")
    src.add_argument("--input", help="an image file, a DICOM series folder, or a folder of image files and DICOM "
                     "series folders; --output is the folder that receives <name>.nii.gz")
    i.add_argument("--output", required=True)
    i.add_argument("--overwrite", action="store_true", help="redo results that exist (default: skip them)")
    i.add_argument("--dicom-seg", action="store_true", help="also write <name>.seg.dcm for DICOM series inputs")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    i.add_argument("--device", default=None)
    i.set_defaults(func=cmd_infer)

    e = sub.add_parser("evaluate", help="per-organ Dice, HD95 and ASD of predictions against references")
    e.add_argument("--pred", required=True)
    e.add_argument("--ref", required=True)
    e.add_argument("--json", default=None, help="also write the results as JSON")
    e.add_argument("--mm", action="store_true", help="distances in millimetres (default: voxels, as the baselines)")
    e.add_argument("--labels", default="synapse", help=LABELS_HELP)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("benchmark", help="the paper protocol (synapse, amos) or the SYNTHETIC semi-supervised benchmark (ssl)")
    b.add_argument("which", choices=["synapse", "amos", "ssl"])
    b.add_argument("--data", default=None, help="dataset folder (synapse/amos)")
    b.add_argument("--output", default=None, help="results folder")
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    b.add_argument("--teacher", default="none")
    b.add_argument("--max-iterations", type=int, default=None)
    b.add_argument("--device", default=None)
    b.add_argument("--methods", nargs="+", default=None,
                   help="ssl: methods to run (default: supervised supervised_all mean_teacher dinomix; ablations: "
                        "dinomix_no_lcc, dinomix_no_pic, dinomix_no_consistency, dinomix_no_class_weights, "
                        "dinomix_warmup, dinomix_no_augment, supervised_no_augment)")
    b.add_argument("--quick", action="store_true", help="ssl: tiny smoke-size run")
    b.add_argument("--full", action="store_true",
                   help="ssl: the GPU scale (96 x 96 x 48 fat-plane phantoms, 6000 iterations)")
    b.add_argument("--scale", choices=["fat_planes_fast", "fat_planes", "full", "quick", "plain", "fast", "coarse"],
                   default="fat_planes_fast",
                   help="ssl: data and budget (default fat_planes_fast: phantoms whose adrenals and oesophagus lie in "
                        "fat planes, 3000 / 6000 (DINO-Mix) iterations, the main table in about 80 minutes of 2 "
                        "cores; fat_planes: the same with 4000 / 9000; full: the same phantoms at 96 x 96 x 48, for a "
                        "GPU; quick: a smoke run; without fat planes: plain (4000 / 9000), fast (patch 32 x 32 x 16) "
                        "and coarse (6 x 6 x 8 mm voxels); --quick and --full are the same as those two)")
    b.add_argument("--resume", action="store_true",
                   help="ssl: keep the runs already in OUTPUT/ssl_benchmark.json (refused unless made with the same "
                        "scale, teacher, recipe and --set)")
    b.add_argument("--merge", nargs="+", default=None, metavar="DIR_OR_JSON",
                   help="ssl: instead of training, merge two or more results files made the same way (each holding "
                        "some methods and seeds; a folder means its ssl_benchmark.json) into OUTPUT; two different "
                        "runs of one method and seed are refused")
    b.add_argument("--workers", type=int, default=1,
                   help="ssl: runs trained at once, one process each, sharing the CPU cores (2 on a 2-core machine)")
    b.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="ssl: a DinoMixConfig field for every method of the run, e.g. --set confidence_threshold=0.8 "
                        "(repeatable; values as JSON where they parse; recorded in the results)")
    b.add_argument("--real-ct-dir", default=None,
                   help="ssl: instead, the real-CT transductive check (a folder with ct.nii.gz and label.nii.gz), "
                        "added to OUTPUT/ssl_benchmark.json")
    b.add_argument("--studies", default=None, help="ssl --real-ct-dir: the studies holding the labeled real CT "
                                                   "(default sample_data/studies)")
    b.add_argument("--labeled-fraction", type=float, default=None, help="synapse/amos: labeled subset (default 0.2 / 0.05)")
    b.add_argument("--split", default=None, help="synapse: 'protocol' (default, A&D's) or 'dhc'")
    b.add_argument("--ct-only", action="store_true", help="amos: drop the MRI cases (ids >= 500)")
    b.add_argument("--mm", action="store_true", help="distances in millimetres")
    b.set_defaults(func=cmd_benchmark)

    m = sub.add_parser("models", help="list published models or restore an earlier one")
    m.add_argument("action", choices=["list", "restore"])
    m.add_argument("version", nargs="?", type=int, default=None)
    m.add_argument("--model-dir", default="apps/dinomix/model")
    m.set_defaults(func=cmd_models)

    s = sub.add_parser("prepare-studies", help="copy the sample studies into a (git-ignored) working folder")
    s.add_argument("--output", required=True)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_prepare_studies)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if args.verbose:
            raise
        print(f"dinomix {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
