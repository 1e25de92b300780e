"""Benchmark protocol: the fixed splits, the data-folder check, seed aggregation and the results table."""

from __future__ import annotations

import argparse
import math

import pytest

from dinomix_core.benchmark import (
    AMOS_ORGANS,
    DataFolderError,
    aggregate_seeds,
    benchmark_main,
    markdown_table,
    paper_config,
    validate_data_folder,
)
from dinomix_core.config import ORGANS
from dinomix_core.splits import load_split

BTCV_IDS = [f"{i:04d}" for i in [*range(1, 11), *range(21, 41)]]


def _check_partition(split, all_ids=None):
    train, val, test = split["train"], split["validation"], split["test"]
    assert len(set(train)) == len(train) and len(set(val)) == len(val) and len(set(test)) == len(test)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    if all_ids is not None:
        assert sorted(train + val + test) == sorted(all_ids)
    for key, labeled in split["labeled"].items():
        unlabeled = split["unlabeled"][key]
        assert set(labeled) <= set(train)
        assert sorted(unlabeled) == sorted(set(train) - set(labeled))


def test_synapse_split_is_the_protocol_split():
    s = load_split("synapse")
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (20, 4, 6)
    assert s["validation"] == ["0001", "0007", "0023", "0030"]
    assert s["test"] == ["0008", "0027", "0029", "0033", "0037", "0039"]
    assert s["labeled"]["0.2"] == ["0009", "0021", "0025", "0034"]
    assert len(s["unlabeled"]["0.2"]) == 16
    assert s["case_ids"] == BTCV_IDS
    _check_partition(s, BTCV_IDS)
    assert "GenericSSL" in s["source"]


def test_synapse_dhc_variant_is_a_partition_too():
    s = load_split("synapse", "dhc")
    assert s["variant"] == "dhc"
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (20, 4, 6)
    assert {k: len(v) for k, v in s["labeled"].items()} == {"0.1": 2, "0.2": 4, "0.4": 8}
    _check_partition(s, BTCV_IDS)
    with pytest.raises(ValueError, match="variant"):
        load_split("synapse", "nope")


def test_amos_split_counts():
    s = load_split("amos")
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (216, 24, 120)
    assert {k: len(v) for k, v in s["labeled"].items()} == {"0.02": 4, "0.05": 10, "0.1": 21}
    _check_partition(s)
    assert all(c.startswith("amos_") and len(c) == 9 for c in s["train"] + s["validation"] + s["test"])
    assert tuple(s["label_names"]) == AMOS_ORGANS and len(AMOS_ORGANS) == 15
    assert "xmed-lab/DHC" in s["source"]
    # the baselines' lists include AMOS's MRI cases (ids >= 500), as the split file documents
    mri = [sum(int(c[5:]) >= 500 for c in s[k]) for k in ("train", "validation", "test")]
    assert mri == [34, 6, 20]


def test_unknown_dataset_and_fraction():
    with pytest.raises(ValueError, match="dataset"):
        load_split("brats")
    with pytest.raises(ValueError, match="0.2"):
        validate_data_folder("synapse", ".", labeled_fraction=0.3)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_synapse_folder_validation(tmp_path):
    with pytest.raises(DataFolderError, match="does not exist"):
        validate_data_folder("synapse", tmp_path / "missing")
    with pytest.raises(DataFolderError, match="imagesTr"):
        validate_data_folder("synapse", tmp_path)  # empty folder: says which layout it expects
    for c in BTCV_IDS[:5]:
        _touch(tmp_path / "imagesTr" / f"img{c}.nii.gz")
        _touch(tmp_path / "labelsTr" / f"label{c}.nii.gz")
    with pytest.raises(DataFolderError) as err:
        validate_data_folder("synapse", tmp_path)
    msg = str(err.value)
    # needed: 30 images + 14 labels (4 labeled + 4 validation + 6 test cases); present: 0001..0005
    assert "file(s) missing" in msg and "img0009.nii.gz" in msg and "label0009.nii.gz" in msg
    listed = [line.strip() for line in msg.splitlines() if line.startswith("  ")]
    assert len(listed) == 11 and listed[-1].startswith("... and")  # 10 paths shown, then the count of the rest
    assert not any(p.endswith(("img0001.nii.gz", "label0001.nii.gz")) for p in listed)  # present files not listed
    assert "38 file(s) missing" in msg  # 25 images (30 - 5) and 13 labels (14 - label0001)
    for c in BTCV_IDS:
        _touch(tmp_path / "imagesTr" / f"img{c}.nii.gz")
        _touch(tmp_path / "labelsTr" / f"label{c}.nii.gz")
    data = validate_data_folder("synapse", tmp_path)
    assert (len(data["labeled"]), len(data["unlabeled"]), len(data["validation"]), len(data["test"])) == (4, 16, 4, 6)
    assert data["labeled"][0][0].endswith("imagesTr/img0009.nii.gz")
    assert data["labeled"][0][1].endswith("labelsTr/label0009.nii.gz")
    assert data["test_label_dir"].endswith("labelsTr") and data["labeled_fraction"] == 0.2


def test_amos_folder_validation(tmp_path):
    s = load_split("amos")
    for c in s["train"] + s["validation"]:
        _touch(tmp_path / "imagesTr" / f"{c}.nii.gz")
        _touch(tmp_path / "labelsTr" / f"{c}.nii.gz")
    with pytest.raises(DataFolderError) as err:
        validate_data_folder("amos", tmp_path)
    msg = str(err.value)
    assert "240 file(s) missing" in msg and "imagesVa/amos_0008.nii.gz" in msg and "labelsVa" in msg
    for c in s["test"]:
        _touch(tmp_path / "imagesVa" / f"{c}.nii.gz")
        _touch(tmp_path / "labelsVa" / f"{c}.nii.gz")
    data = validate_data_folder("amos", tmp_path)
    assert (len(data["labeled"]), len(data["unlabeled"]), len(data["validation"]), len(data["test"])) == (10, 206, 24, 120)
    assert data["label_names"] == list(AMOS_ORGANS)
    ct = validate_data_folder("amos", tmp_path, labeled_fraction=0.05, ct_only=True)
    assert (len(ct["labeled"]), len(ct["validation"]), len(ct["test"])) == (7, 18, 100)


def test_paper_config_iterations_and_amos_channels():
    syn = paper_config("synapse", seed=1, num_unlabeled=16)
    assert syn.max_iterations == 300 * 8 and syn.seed == 1 and syn.out_channels == 14
    amos = paper_config("amos", num_unlabeled=206, teacher="/weights/dinov3")
    assert amos.out_channels == 16 and tuple(amos.label_names) == AMOS_ORGANS
    assert amos.max_iterations == 200 * 103 and amos.teacher == "/weights/dinov3"
    assert paper_config("amos", max_iterations=7, num_unlabeled=206).max_iterations == 7


def _summary(mean_dice, organ_dice, asd=2.0):
    per_organ = {
        n: {"dice": {"mean": d, "std": 0.0, "n": 6}, "hd95": {"mean": 4.0, "std": 0.0, "n": 6},
            "asd": {"mean": asd, "std": 0.0, "n": 6}}
        for n, d in zip(ORGANS, organ_dice)
    }
    return {"per_organ": per_organ, "mean_dice": mean_dice, "mean_hd95": 4.0, "mean_asd": asd,
            "small_organ_dice": mean_dice / 2, "small_organs": [ORGANS[4]], "label_names": list(ORGANS),
            "units": "voxel"}


def test_aggregate_seeds_mean_and_population_std():
    runs = [_summary(0.6, [0.5] * 13, 1.0), _summary(0.7, [0.6] * 13, 2.0), _summary(0.8, [float("nan")] + [0.7] * 12, 3.0)]
    agg = aggregate_seeds(runs, seeds=[0, 1, 2])
    assert agg["n_seeds"] == 3 and agg["seeds"] == [0, 1, 2]
    assert agg["mean_dice"]["mean"] == pytest.approx(0.7)
    assert agg["mean_dice"]["std"] == pytest.approx(math.sqrt(((0.1 ** 2) * 2) / 3))  # ddof=0, as the baselines
    assert agg["mean_asd"]["mean"] == pytest.approx(2.0)
    assert agg["small_organ_dice"]["mean"] == pytest.approx(0.35)
    # an organ excluded in one run is averaged over the other runs
    assert agg["per_organ"][ORGANS[0]]["dice"]["mean"] == pytest.approx(0.55)
    assert agg["per_organ"][ORGANS[0]]["dice"]["values"][2] is None
    assert agg["per_organ"][ORGANS[1]]["dice"]["mean"] == pytest.approx(0.6)
    assert agg["per_organ"][ORGANS[12]]["abbreviation"] == "LAG"
    with pytest.raises(ValueError):
        aggregate_seeds([])
    other = dict(_summary(0.5, [0.5] * 13), label_names=list(AMOS_ORGANS))
    with pytest.raises(ValueError, match="label names"):
        aggregate_seeds([runs[0], other])


def test_markdown_table_has_paper_columns():
    agg = aggregate_seeds([_summary(0.6, [0.5] * 13), _summary(0.8, [0.7] * 13)])
    reported = [{"method": "DHC (reported)", "mean_dice": 48.61, "mean_asd": 10.71,
                 "per_organ_dice": [62.8, 69.5, 59.2, 66.0, 13.2, 85.2, 36.9, 67.9, 61.5, 37.0, 30.9, 31.4, 10.6]}]
    md = markdown_table({"ours": agg}, reported=reported)
    lines = md.splitlines()
    assert lines[0].endswith("| Sp | RK | LK | Ga | Es | Li | St | Ao | IVC | PSV | PA | RAG | LAG |")
    assert lines[2].startswith("| ours | 70.00 ± 10.00 | 2.00 ± 0.00 | 4.00 ± 0.00 | 35.00 ± 5.00 | 60.0 |")
    assert lines[3].startswith("| DHC (reported) | 48.61 | 10.71 | - | - | 62.8 | 69.5 |")
    with pytest.raises(ValueError, match="organ values"):
        markdown_table({"ours": agg}, reported=[{"method": "x", "mean_dice": 1.0, "per_organ_dice": [1.0]}])


def test_benchmark_main_requires_data(tmp_path):
    args = argparse.Namespace(which="synapse", data=None, output=str(tmp_path), seeds=[0], teacher="none",
                              max_iterations=1, device="cpu")
    with pytest.raises(SystemExit, match="--data"):
        benchmark_main(args)
    args.data = str(tmp_path / "absent")
    with pytest.raises(DataFolderError, match="does not exist"):
        benchmark_main(args)
