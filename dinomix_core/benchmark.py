"""The paper-protocol benchmarks: Synapse (20% labeled) and AMOS (5% labeled), mean ± std over seeds.

DINO-Mix (arXiv 2602.07819) reports mean Dice over organs on the semi-supervised, class-imbalanced CT
benchmarks of DHC (MICCAI 2023) and A&D (NeurIPS 2023). :func:`benchmark_paper` runs that protocol on a
local copy of the data (which cannot be redistributed): fixed splits from ``dinomix_core/splits``, one
training run per seed with the ``paper`` preset, sliding-window prediction of every test case,
per-case / per-organ evaluation (:mod:`dinomix_core.evaluation`) and a per-organ table like the papers'.
Folder layouts, commands and the metric conventions are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .config import DinoMixConfig, get_preset
from .errors import DataFolderError
from .evaluation import evaluate_folders, format_table, summarize, to_jsonable
from .labels import AMOS, AMOS_ORGANS, DATASETS, abbreviation, fraction_key, load_split

__all__ = [
    "AMOS_ORGANS",
    "EPOCHS",
    "REPORTED",
    "DataFolderError",
    "validate_data_folder",
    "paper_config",
    "aggregate_seeds",
    "markdown_table",
    "benchmark_paper",
    "benchmark_main",
]

logger = logging.getLogger(__name__)

#: training epochs of the baselines' recipe (docs/protocol.md); one epoch = one pass over the unlabeled cases
#: in batches of ``batch_size_unlabeled`` (Synapse 20%: 300 x 16/2 = 2400 iterations; AMOS 5%: 200 x 103 = 20600).
EPOCHS: Dict[str, int] = {"synapse": 300, "amos": 200}

#: numbers reported in the papers (docs/protocol.md), shown under our results for comparison; Dice in %.
REPORTED: Dict[str, Dict[str, List[Dict[str, Any]]]] = {
    "synapse": {
        "0.2": [
            {"method": "V-Net, fully supervised (reported)", "mean_dice": 62.09, "mean_asd": 10.28,
             "per_organ_dice": [84.6, 77.2, 73.8, 73.3, 38.2, 94.6, 68.4, 72.1, 71.2, 58.2, 48.5, 17.9, 29.0]},
            {"method": "DHC (reported)", "mean_dice": 48.61, "mean_asd": 10.71,
             "per_organ_dice": [62.8, 69.5, 59.2, 66.0, 13.2, 85.2, 36.9, 67.9, 61.5, 37.0, 30.9, 31.4, 10.6]},
            {"method": "A&D (reported)", "mean_dice": 60.88, "mean_asd": 2.52,
             "per_organ_dice": [85.2, 66.9, 67.0, 52.7, 62.9, 89.6, 52.1, 83.0, 74.9, 41.8, 43.4, 44.8, 27.2]},
            {"method": "DINO-Mix (paper, reported)", "mean_dice": 66.45, "mean_asd": None, "per_organ_dice": None},
        ]
    },
    "amos": {
        "0.02": [{"method": "DHC (reported)", "mean_dice": 38.28, "mean_asd": None, "per_organ_dice": None}],
        "0.05": [
            {"method": "V-Net, fully supervised (reported)", "mean_dice": 76.50, "mean_asd": None, "per_organ_dice": None},
            {"method": "DHC (reported)", "mean_dice": 49.53, "mean_asd": None, "per_organ_dice": None},
            {"method": "DINO-Mix (paper, reported)", "mean_dice": 62.73, "mean_asd": None, "per_organ_dice": None},
        ],
        "0.1": [{"method": "DHC (reported)", "mean_dice": 64.16, "mean_asd": None, "per_organ_dice": None}],
    },
}

# Synapse folder layouts accepted under DATA (image folder, label folder); the first whose image folder exists wins.
_SYNAPSE_LAYOUTS: Tuple[Tuple[str, str], ...] = (
    ("imagesTr", "labelsTr"),
    ("img", "label"),
    ("Training/img", "Training/label"),
    ("RawData/Training/img", "RawData/Training/label"),
)
_MAX_LISTED = 10


def _check_dataset(dataset: str) -> str:
    name = str(dataset).lower()
    if name not in DATASETS:
        raise ValueError(f"dataset must be 'synapse' or 'amos', got {dataset!r}.")
    return name


def _missing_message(dataset: str, data_dir: Path, missing: Sequence[Path], expected: str) -> str:
    shown = "\n".join(f"  {p}" for p in missing[:_MAX_LISTED])
    more = f"\n  ... and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return (
        f"{dataset} data folder {data_dir} is incomplete: {len(missing)} file(s) missing, the first ones:\n{shown}{more}\n"
        f"Expected layout: {expected} (see docs/benchmarks.md)."
    )


def validate_data_folder(
    dataset: str,
    data_dir: Union[str, Path],
    *,
    labeled_fraction: Optional[float] = None,
    split: Optional[str] = None,
    ct_only: bool = False,
) -> Dict[str, Any]:
    """Check that ``data_dir`` holds every file the benchmark needs and resolve the case files.

    Synapse: ``DATA/imagesTr/img0001.nii.gz`` and ``DATA/labelsTr/label0001.nii.gz`` (BTCV's own file names;
    the folders may also be ``img``/``label`` or BTCV's ``Training/img``/``Training/label``).
    AMOS: ``DATA/imagesTr/amos_0001.nii.gz``, ``DATA/labelsTr/amos_0001.nii.gz`` (training and validation
    cases) and ``DATA/imagesVa``/``DATA/labelsVa`` (test cases), AMOS 2022's own layout.

    Args:
        dataset: ``"synapse"`` or ``"amos"``.
        data_dir: the dataset folder.
        labeled_fraction: labeled fraction of the training cases (default: 0.2 Synapse, 0.05 AMOS).
        split: ``None`` for the protocol's split or an alternative in the split file (``"dhc"`` for Synapse).
        ct_only: AMOS only: leave out the MRI cases (ids >= 500), which the baselines' lists include.

    Returns:
        ``{"dataset", "labeled_fraction", "split", "labeled": [(image, label)], "unlabeled": [image],
        "validation": [(image, label)], "test": [(image, label)], "test_label_dir", "label_names", "source"}``.

    Raises:
        DataFolderError: the folder is missing, or files are missing (the message lists the first ones).
        ValueError: unknown dataset, split variant or labeled fraction.
    """
    name = _check_dataset(dataset)
    info = load_split(name, split)
    fraction, key = _labeled_key(name, info, labeled_fraction)
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataFolderError(f"{name} data folder {data_dir} does not exist (see docs/benchmarks.md for the layout).")
    ids = _role_ids(info, key, ct_only=name == "amos" and ct_only)
    layout = _synapse_layout(data_dir) if name == "synapse" else _amos_layout(data_dir)
    labeled = [(layout.image(c, "train"), layout.label(c, "train")) for c in ids["labeled"]]
    unlabeled = [layout.image(c, "train") for c in ids["unlabeled"]]
    validation = [(layout.image(c, "validation"), layout.label(c, "validation")) for c in ids["validation"]]
    test = [(layout.image(c, "test"), layout.label(c, "test")) for c in ids["test"]]
    needed = [p for pair in labeled + validation + test for p in pair] + unlabeled
    missing = [p for p in needed if not p.is_file()]
    if missing:
        raise DataFolderError(_missing_message(name, data_dir, missing, layout.expected))
    return {
        "dataset": name,
        "labeled_fraction": fraction,
        "split": info["variant"],
        "source": info.get("source", ""),
        "labeled": [(str(i), str(l)) for i, l in labeled],
        "unlabeled": [str(i) for i in unlabeled],
        "validation": [(str(i), str(l)) for i, l in validation],
        "test": [(str(i), str(l)) for i, l in test],
        "test_label_dir": str(layout.test_label_dir),
        "label_names": list(AMOS_ORGANS) if name == "amos" else None,
        "ct_only": bool(ct_only and name == "amos"),
    }


def _labeled_key(name: str, info: Mapping[str, Any], labeled_fraction: Optional[float]) -> Tuple[float, str]:
    """The labeled fraction (default: the split's) and its key; ``ValueError`` when the split has no such list."""
    fraction = float(labeled_fraction if labeled_fraction is not None else info["default_labeled_fraction"])
    key = fraction_key(fraction)
    if key not in info["labeled"]:
        raise ValueError(
            f"{name} ({info['variant']} split) has no labeled list for fraction {fraction:g}; available: "
            f"{', '.join(sorted(info['labeled'], key=float))}."
        )
    return fraction, key


def _role_ids(info: Mapping[str, Any], key: str, ct_only: bool) -> Dict[str, List[str]]:
    """Case ids of each role (labeled, unlabeled, validation, test); ``ct_only``: without AMOS's MRI (ids >= 500)."""
    ids = {"labeled": list(info["labeled"][key]), "unlabeled": list(info["unlabeled"][key]),
           "validation": list(info["validation"]), "test": list(info["test"])}
    if ct_only:
        ids = {role: [c for c in seq if int(c.split("_")[-1]) < 500] for role, seq in ids.items()}
    return ids


class _Layout(NamedTuple):
    """Where a dataset keeps its files: ``image(case, role)`` and ``label(case, role)`` paths."""

    image: Callable[[str, str], Path]
    label: Callable[[str, str], Path]
    test_label_dir: Path
    expected: str


def _synapse_layout(data_dir: Path) -> _Layout:
    """BTCV file names in the first of :data:`_SYNAPSE_LAYOUTS` whose image folder exists."""
    layout = next(((data_dir / i, data_dir / l) for i, l in _SYNAPSE_LAYOUTS if (data_dir / i).is_dir()), None)
    if layout is None:
        raise DataFolderError(
            f"synapse data folder {data_dir} has no image folder; expected one of "
            f"{', '.join(i for i, _ in _SYNAPSE_LAYOUTS)} with BTCV files img0001.nii.gz ... and the matching "
            f"label folder with label0001.nii.gz ... (see docs/benchmarks.md)."
        )
    img_dir, lbl_dir = layout
    return _Layout(
        image=lambda case, role: img_dir / f"img{case}.nii.gz",
        label=lambda case, role: lbl_dir / f"label{case}.nii.gz",
        test_label_dir=lbl_dir,
        expected="DATA/imagesTr/img0001.nii.gz ... and DATA/labelsTr/label0001.nii.gz ...",
    )


def _amos_layout(data_dir: Path) -> _Layout:
    """AMOS 2022's own layout: training and validation cases in ``*Tr``, test cases in ``*Va``."""
    return _Layout(
        image=lambda case, role: data_dir / ("imagesVa" if role == "test" else "imagesTr") / f"{case}.nii.gz",
        label=lambda case, role: data_dir / ("labelsVa" if role == "test" else "labelsTr") / f"{case}.nii.gz",
        test_label_dir=data_dir / "labelsVa",
        expected=("DATA/imagesTr + DATA/labelsTr (amos_XXXX.nii.gz, training and validation cases) and "
                  "DATA/imagesVa + DATA/labelsVa (test cases)"),
    )


def paper_config(
    dataset: str,
    seed: int = 0,
    teacher: str = "none",
    max_iterations: Optional[int] = None,
    num_unlabeled: Optional[int] = None,
) -> DinoMixConfig:
    """The ``paper`` preset for ``dataset``.

    AMOS gets 16 output channels and AMOS's organ names. Without ``max_iterations`` the run lasts the
    baselines' epochs (:data:`EPOCHS`) times ``ceil(num_unlabeled / batch_size_unlabeled)`` iterations.
    """
    name = _check_dataset(dataset)
    extra: Dict[str, Any] = {}
    if name == "amos":
        extra.update(out_channels=AMOS.num_classes, label_names=AMOS.organs)
    cfg = get_preset("paper", seed=int(seed), teacher=teacher or "none", **extra)
    if max_iterations is None and num_unlabeled:
        per_epoch = math.ceil(num_unlabeled / max(cfg.batch_size_unlabeled, 1))
        max_iterations = EPOCHS[name] * per_epoch
    if max_iterations is not None:
        cfg = cfg.replace(max_iterations=int(max_iterations))
    return cfg


# ------------------------------------------------------------------------------------------ aggregation


def _seed_stats(values: Sequence[float]) -> Dict[str, Any]:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    valid = a[~np.isnan(a)]
    vals = [None if math.isnan(v) else float(v) for v in a]
    if valid.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "values": vals}
    return {"mean": float(valid.mean()), "std": float(valid.std()), "values": vals}


def aggregate_seeds(summaries: Sequence[Mapping[str, Any]], seeds: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Mean ± std over runs (seeds) of :func:`~dinomix_core.evaluation.summarize` results.

    The std is the population std over seeds (``np.std``, ddof=0), as the baselines' evaluation scripts
    compute it. Values that are NaN in a run (organ excluded in every case) are left out for that run.

    Returns:
        ``{"n_seeds", "seeds", "label_names", "units", "mean_dice", "mean_hd95", "mean_asd", "small_organ_dice",
        "small_organs", "per_organ": {organ: {"abbreviation", "dice", "hd95", "asd"}}}`` where each statistic is
        ``{"mean", "std", "values"}`` (Dice as fractions).
    """
    if not summaries:
        raise ValueError("aggregate_seeds needs at least one summary.")
    names = list(summaries[0]["label_names"])
    for s in summaries[1:]:
        if list(s["label_names"]) != names:
            raise ValueError("all summaries must share the same label names (same dataset and label set).")
    if seeds is not None and len(seeds) != len(summaries):
        raise ValueError(f"{len(seeds)} seeds given for {len(summaries)} summaries.")
    per_organ: Dict[str, Dict[str, Any]] = {}
    for n in names:
        entry: Dict[str, Any] = {"abbreviation": abbreviation(n)}
        for m in ("dice", "hd95", "asd"):
            entry[m] = _seed_stats([s["per_organ"][n][m]["mean"] for s in summaries])
        per_organ[n] = entry
    return {
        "n_seeds": len(summaries),
        "seeds": list(seeds) if seeds is not None else None,
        "label_names": names,
        "units": summaries[0].get("units", "voxel"),
        "mean_dice": _seed_stats([s["mean_dice"] for s in summaries]),
        "mean_hd95": _seed_stats([s["mean_hd95"] for s in summaries]),
        "mean_asd": _seed_stats([s["mean_asd"] for s in summaries]),
        "small_organ_dice": _seed_stats([s.get("small_organ_dice", float("nan")) for s in summaries]),
        "small_organs": list(summaries[0].get("small_organs", [])),
        "per_organ": per_organ,
    }


def _cell(stats: Any, scale: float = 1.0, digits: int = 2, with_std: bool = True) -> str:
    if stats is None:
        return "-"
    if isinstance(stats, Mapping):
        mean, std = stats.get("mean"), stats.get("std")
    else:
        mean, std = stats, None
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    if with_std and std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std * scale:.{digits}f}"
    return text


def markdown_table(
    results: Mapping[str, Mapping[str, Any]],
    reported: Sequence[Mapping[str, Any]] = (),
    *,
    organ_digits: int = 1,
) -> str:
    """A markdown table like the papers': one row per method, mean Dice (%), mean ASD, mean HD95,
    small-organ Dice (%) and the per-organ Dice (%) in label order (Synapse: Sp RK LK Ga Es Li St Ao IVC PSV
    PA RAG LAG).

    Args:
        results: ``{method name: aggregate_seeds(...) or summarize(...)}``; all must share the label names.
        reported: extra rows of published numbers, each ``{"method", "mean_dice" (in %), "mean_asd",
            "per_organ_dice" (list in %, label order, or None)}``; missing values print as "-".
        organ_digits: decimals of the per-organ cells (the papers use 1).
    """
    if not results:
        raise ValueError("markdown_table needs at least one result.")
    first = next(iter(results.values()))
    names = list(first["label_names"])
    for method, r in results.items():
        if list(r["label_names"]) != names:
            raise ValueError(f"result {method!r} has different label names than the first result.")
    units = first.get("units", "voxel")
    header = ["method", "mean Dice (%)", f"mean ASD ({units})", f"mean HD95 ({units})", "small-organ Dice (%)",
              *[abbreviation(n) for n in names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for method, r in results.items():
        row = [method, _cell(r["mean_dice"], 100.0), _cell(r["mean_asd"]), _cell(r["mean_hd95"]),
               _cell(r.get("small_organ_dice"), 100.0)]
        row += [_cell(r["per_organ"][n]["dice"], 100.0, organ_digits, with_std=False) for n in names]
        lines.append("| " + " | ".join(row) + " |")
    for rep in reported:
        organs = rep.get("per_organ_dice") or [None] * len(names)
        if len(organs) != len(names):
            raise ValueError(f"reported row {rep.get('method')!r} has {len(organs)} organ values, expected {len(names)}.")
        row = [str(rep.get("method", "?")), _cell(rep.get("mean_dice")), _cell(rep.get("mean_asd")), "-", "-"]
        row += [_cell(v, 1.0, organ_digits) for v in organs]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- benchmark


def _label_file_name(label_path: str) -> str:
    return Path(label_path).name


def _log_progress(prefix: str, every: int = 100) -> Callable[[Dict[str, Any]], None]:
    def report(info: Dict[str, Any]) -> None:
        it = int(info.get("iteration", 0))
        if it % every == 0 or it == info.get("max_iterations"):
            val = info.get("validation")
            extra = f", val mean Dice {val['mean_dice']:.4f}" if val and val.get("mean_dice") is not None else ""
            print(f"{prefix} iteration {it}/{info.get('max_iterations')} ({info.get('elapsed', 0.0):.0f} s){extra}",
                  flush=True)

    return report


def benchmark_paper(
    dataset: str,
    data_dir: Union[str, Path],
    output_dir: Union[str, Path],
    seeds: Sequence[int] = (0, 1, 2),
    labeled_fraction: Optional[float] = None,
    teacher: str = "none",
    max_iterations: Optional[int] = None,
    device: Optional[str] = None,
    *,
    split: Optional[str] = None,
    ct_only: bool = False,
    mm: bool = False,
    reuse: bool = True,
) -> Dict[str, Any]:
    """Run the paper protocol on ``dataset`` for every seed and write the results.

    For each seed: train with :func:`dinomix_core.trainer.run_training` (``paper`` preset, the split's
    labeled / unlabeled / validation cases) in ``output_dir/seed_<s>``, predict every test case with
    :func:`dinomix_core.inference.predict_file` into ``output_dir/seed_<s>/predictions`` (named like the
    reference label files), evaluate with :func:`dinomix_core.evaluation.evaluate_folders` and summarize.
    Then aggregates over seeds into ``output_dir/results.json`` and ``output_dir/results.md``.

    Args:
        dataset: ``"synapse"`` or ``"amos"``.
        data_dir: dataset folder (layout: :func:`validate_data_folder`, checked before anything runs).
        output_dir: results folder.
        seeds: one training run per seed.
        labeled_fraction: default 0.2 (Synapse) / 0.05 (AMOS).
        teacher: DINOv3 folder or hub id for FKD, or ``"none"``.
        max_iterations: override the recipe's iteration count (see :func:`paper_config`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        split: ``None`` (protocol split) or ``"dhc"`` (Synapse: DHC's partition).
        ct_only: AMOS: drop MRI cases (a deviation from the baselines' lists).
        mm: distances in millimetres instead of voxels (the baselines use voxels).
        reuse: keep a seed's finished ``evaluation.json`` / trained model instead of redoing it.

    Returns:
        ``{"dataset", "labeled_fraction", "seeds", "per_seed": [summary], "aggregate", "markdown", "results_json",
        "results_md"}``.
    """
    name = _check_dataset(dataset)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed.")
    data = validate_data_folder(name, data_dir, labeled_fraction=labeled_fraction, split=split, ct_only=ct_only)
    key = fraction_key(data["labeled_fraction"])
    out_root = Path(output_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    print(f"{name}: {len(data['labeled'])} labeled, {len(data['unlabeled'])} unlabeled, {len(data['validation'])} "
          f"validation, {len(data['test'])} test cases ({data['split']} split, labeled fraction {key})", flush=True)
    summaries: List[Dict[str, Any]] = []
    for seed in seeds:
        config = paper_config(name, seed=seed, teacher=teacher, max_iterations=max_iterations,
                              num_unlabeled=len(data["unlabeled"]))
        summaries.append(_run_seed(config, data, out_root / f"seed_{seed}", device=device, mm=mm, reuse=reuse))
    return _write_report(name, data, seeds, teacher, summaries, out_root)


def _run_seed(config: DinoMixConfig, data: Mapping[str, Any], seed_dir: Path, *, device: Optional[str], mm: bool,
              reuse: bool) -> Dict[str, Any]:
    """One seed of :func:`benchmark_paper`: train (or reuse), predict the test cases, evaluate; the summary."""
    seed = config.seed
    eval_path = seed_dir / "evaluation.json"
    if reuse and eval_path.is_file():
        stored = json.loads(eval_path.read_text())
        if stored.get("config", {}).get("max_iterations") == config.max_iterations:
            print(f"seed {seed}: reusing {eval_path}", flush=True)
            return _restore_nan(stored["summary"])
    t0 = time.time()
    model_path, train_summary = _train_seed(config, data, seed_dir, device=device, reuse=reuse)
    pred_dir = seed_dir / "predictions"
    _predict_test_cases(model_path, data["test"], pred_dir, f"seed {seed}:", device=device)
    label_names = data["label_names"]
    results = evaluate_folders(
        pred_dir, data["test_label_dir"], mm=mm,
        **({"num_classes": len(label_names) + 1, "label_names": label_names} if label_names else {}),
    )
    summary = summarize(results)
    print(f"seed {seed}: mean Dice {summary['mean_dice'] * 100:.2f} % ({time.time() - t0:.0f} s)", flush=True)
    print(format_table(summary), flush=True)
    eval_path.write_text(json.dumps(to_jsonable({
        "seed": seed, "config": config.to_dict(), "summary": summary, "results": results,
        "training": {k: v for k, v in train_summary.items() if k != "per_organ_dice"},
    }), indent=2, default=str))
    return summary


def _train_seed(config: DinoMixConfig, data: Mapping[str, Any], seed_dir: Path, *, device: Optional[str],
                reuse: bool) -> Tuple[Path, Dict[str, Any]]:
    """Train one seed into ``seed_dir``, or reuse its finished model; returns (model path, training summary)."""
    from .trainer import run_training

    seed = config.seed
    model_path = seed_dir / "model.pt"
    done_path = seed_dir / "summary.json"
    if reuse and model_path.is_file() and done_path.is_file():
        prev = json.loads(done_path.read_text())
        if int(prev.get("iterations", -1)) >= config.max_iterations and not prev.get("stopped"):
            print(f"seed {seed}: reusing trained model {model_path}", flush=True)
            return model_path, prev
    print(f"seed {seed}: training {config.max_iterations} iterations into {seed_dir}", flush=True)
    train_summary = run_training(
        config, data["labeled"], data["unlabeled"], str(seed_dir), validation=data["validation"],
        resume=True, progress=_log_progress(f"seed {seed}:"), device=device,
    )
    return Path(train_summary.get("checkpoint") or model_path), train_summary


def _predict_test_cases(model_path: Path, test: Sequence[Tuple[str, str]], pred_dir: Path, prefix: str, *,
                        device: Optional[str]) -> None:
    """Predict every test image into ``pred_dir``, each named like its reference label file."""
    from .inference import predict_file

    pred_dir.mkdir(parents=True, exist_ok=True)
    for i, (img, lbl) in enumerate(test, start=1):
        target = pred_dir / _label_file_name(lbl)
        predict_file(str(model_path), img, str(target), device=device)
        print(f"{prefix} predicted {i}/{len(test)} {target.name}", flush=True)


def _write_report(name: str, data: Mapping[str, Any], seeds: List[int], teacher: str,
                  summaries: List[Dict[str, Any]], out_root: Path) -> Dict[str, Any]:
    """Aggregate the seeds, write ``results.md`` and ``results.json`` into ``out_root``; the result dict."""
    key = fraction_key(data["labeled_fraction"])
    aggregate = aggregate_seeds(summaries, seeds=seeds)
    title = f"DINO-Mix (ours, {len(seeds)} seed{'s' if len(seeds) > 1 else ''})"
    reported = REPORTED.get(name, {}).get(key, [])
    # reported per-organ values only line up with our columns for the label set they were made on
    reported = [r for r in reported if r.get("per_organ_dice") is None or len(r["per_organ_dice"]) == len(aggregate["label_names"])]
    table = markdown_table({title: aggregate}, reported=reported)
    header = (
        f"# {name} benchmark, {float(key) * 100:g}% labeled ({data['split']} split{', CT only' if data['ct_only'] else ''})\n\n"
        f"Seeds {seeds}; mean ± population std over seeds; per-organ Dice (%) averaged over the "
        f"{len(data['test'])} test cases then over seeds; distances in {aggregate['units']} units "
        f"(class present in exactly one of prediction and reference: Dice 0, distance 128; absent from both: "
        f"excluded). Rows marked 'reported' are the published numbers, not rerun here.\n\n"
    )
    markdown = header + table + "\n"
    results_md = out_root / "results.md"
    results_json = out_root / "results.json"
    results_md.write_text(markdown)
    payload = {
        "dataset": name,
        "labeled_fraction": data["labeled_fraction"],
        "split": data["split"],
        "split_source": data["source"],
        "ct_only": data["ct_only"],
        "seeds": seeds,
        "teacher": teacher,
        "per_seed": summaries,
        "aggregate": aggregate,
        "reported": reported,
    }
    results_json.write_text(json.dumps(to_jsonable(payload), indent=2))
    print(markdown, flush=True)
    print(f"wrote {results_md} and {results_json}", flush=True)
    return {**payload, "markdown": markdown, "results_json": str(results_json), "results_md": str(results_md)}


def _restore_nan(obj: Any) -> Any:
    """Inverse of ``to_jsonable`` for the numeric statistics of a stored summary (``None`` -> NaN)."""
    if isinstance(obj, dict):
        return {k: (float("nan") if v is None and k in ("mean", "std", "mean_dice", "mean_hd95", "mean_asd",
                                                          "small_organ_dice") else _restore_nan(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore_nan(v) for v in obj]
    return obj


def benchmark_main(args: Any) -> int:
    """CLI entry: ``dinomix benchmark synapse|amos --data DIR [--output DIR] [--seeds 0 1 2] [--teacher T]
    [--max-iterations N] [--device D]``; also reads ``labeled_fraction``, ``split``, ``ct_only`` and ``mm`` when
    the parser defines them."""
    which = str(args.which).lower()
    if which not in ("synapse", "amos"):
        raise ValueError(f"benchmark_main handles 'synapse' and 'amos', got {args.which!r}.")
    if not getattr(args, "data", None):
        raise SystemExit(f"dinomix benchmark {which}: --data DIR is required (the {which} dataset folder; "
                         "layout in docs/benchmarks.md).")
    output = getattr(args, "output", None) or str(Path("benchmark_results") / which)
    benchmark_paper(
        which,
        args.data,
        output,
        seeds=tuple(getattr(args, "seeds", None) or (0, 1, 2)),
        labeled_fraction=getattr(args, "labeled_fraction", None),
        teacher=getattr(args, "teacher", None) or "none",
        max_iterations=getattr(args, "max_iterations", None),
        device=getattr(args, "device", None),
        split=getattr(args, "split", None),
        ct_only=bool(getattr(args, "ct_only", False)),
        mm=bool(getattr(args, "mm", False)),
    )
    return 0
