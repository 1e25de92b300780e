"""dinomix_core.labels: label sets, volume extensions, benchmark splits and the checks of submitted labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dinomix_core import labels
from dinomix_core.errors import InvalidVolumeError
from dinomix_core.labels import AMOS, SYNAPSE, LabelSet, get_label_set

SYNAPSE_ORGANS = (
    "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland",
)
AMOS_ORGANS = (
    "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior vena cava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
    "prostate/uterus",
)


# ------------------------------------------------------------------------------------------- label sets


@pytest.mark.parametrize(
    "label_set, name, organs, abbreviations, small, small_ids",
    [
        (SYNAPSE, "synapse", SYNAPSE_ORGANS,
         ("Sp", "RK", "LK", "Ga", "Es", "Li", "St", "Ao", "IVC", "PSV", "PA", "RAG", "LAG"),
         ("esophagus", "portal and splenic veins", "right adrenal gland", "left adrenal gland"), (5, 10, 12, 13)),
        (AMOS, "amos", AMOS_ORGANS,
         ("Sp", "RK", "LK", "Ga", "Es", "Li", "St", "Ao", "IVC", "PA", "RAG", "LAG", "Du", "Bl", "P/U"),
         ("esophagus", "right adrenal gland", "left adrenal gland"), (5, 11, 12)),
    ],
)
def test_known_label_sets(label_set, name, organs, abbreviations, small, small_ids):
    assert label_set.name == name
    assert label_set.organs == organs
    assert label_set.abbreviations == abbreviations
    assert label_set.small_organs == small
    assert label_set.small_organ_ids == small_ids
    assert label_set.num_classes == len(organs) + 1
    assert label_set.ids == tuple(range(1, len(organs) + 1))
    assert get_label_set(name) is label_set
    assert get_label_set(name.upper()) is label_set
    assert LabelSet.from_names(list(organs)) is label_set


@pytest.mark.parametrize(
    "label_set, organ, label_id, abbreviation",
    [
        (SYNAPSE, "spleen", 1, "Sp"),
        (SYNAPSE, "portal and splenic veins", 10, "PSV"),
        (SYNAPSE, "left adrenal gland", 13, "LAG"),
        (AMOS, "pancreas", 10, "PA"),
        (AMOS, "duodenum", 13, "Du"),
        (AMOS, "prostate/uterus", 15, "P/U"),
    ],
)
def test_ids_and_abbreviations(label_set, organ, label_id, abbreviation):
    assert label_set.id_of(organ) == label_id
    assert label_set.organs[label_id - 1] == organ
    assert label_set.abbreviation(organ) == abbreviation
    assert labels.abbreviation(organ) == abbreviation


def test_lookup_errors():
    with pytest.raises(ValueError, match="no organ 'duodenum'"):
        SYNAPSE.id_of("duodenum")
    with pytest.raises(ValueError, match="no organ"):
        AMOS.abbreviation("portal and splenic veins")
    with pytest.raises(ValueError, match="unknown label set 'brats'; choose one of synapse, amos"):
        get_label_set("brats")
    assert labels.abbreviation("tumour") == "tumour"


def test_module_constants():
    assert labels.ORGANS == SYNAPSE_ORGANS
    assert labels.ORGAN_ABBREVIATIONS == SYNAPSE.abbreviations
    assert labels.NUM_CLASSES == 14
    assert labels.SMALL_ORGANS == (5, 10, 12, 13)
    assert labels.SMALL_ORGAN_NAMES == SYNAPSE.small_organs
    assert labels.AMOS_ORGANS == AMOS_ORGANS
    assert labels.LABEL_SETS == {"synapse": SYNAPSE, "amos": AMOS}
    assert labels.DATASETS == ("synapse", "amos")


def test_from_names_builds_a_custom_set():
    s = LabelSet.from_names(["liver", "tumour", "right adrenal gland"], name="liver-tumour")
    assert (s.name, s.organs, s.num_classes, s.ids) == ("liver-tumour", ("liver", "tumour", "right adrenal gland"), 4,
                                                         (1, 2, 3))
    assert s.abbreviations == ("Li", "tumour", "RAG")
    assert s.small_organs == ("right adrenal gland",) and s.small_organ_ids == (3,)
    t = LabelSet.from_names(["a", "b"], abbreviations=["A", "B"], small_organs=["b"])
    assert (t.name, t.abbreviations, t.small_organs) == ("custom", ("A", "B"), ("b",))
    # the Synapse names with other abbreviations are a new set, not SYNAPSE
    u = LabelSet.from_names(SYNAPSE_ORGANS, name="mine", abbreviations=[str(i) for i in range(13)])
    assert u is not SYNAPSE and u.abbreviations[0] == "0" and u.small_organs == SYNAPSE.small_organs


def test_label_set_is_frozen_and_normalised():
    s = LabelSet(" mine ", [" liver ", "spleen"], ["Li", "Sp"], small_organs=["spleen"])
    assert (s.name, s.organs, s.abbreviations, s.small_organs) == ("mine", ("liver", "spleen"), ("Li", "Sp"), ("spleen",))
    with pytest.raises(AttributeError):
        s.name = "other"  # type: ignore[misc]
    # small organs are kept in id order whatever order they are given in
    assert LabelSet("x", ("a", "b", "c"), ("A", "B", "C"), ("c", "a")).small_organs == ("a", "c")


@pytest.mark.parametrize(
    "args, message",
    [
        (("", ("a",), ("A",)), "non-empty name"),
        ((None, ("a",), ("A",)), "non-empty name"),
        (("x", (), ()), "at least one organ"),
        (("x", "liver", ("L",)), "sequence of names"),
        (("x", ("a", "a"), ("A", "B")), "repeated: a"),
        (("x", ("a", ""), ("A", "B")), "non-empty strings"),
        (("x", ("a", 3), ("A", "B")), "non-empty strings"),
        (("x", ("background", "a"), ("Bg", "A")), "'background' is label 0"),
        (("x", ("a", "b"), ("A",)), "1 abbreviations given for 2 organs"),
        (("x", ("a", "b"), ("A", "A")), "abbreviations must be unique"),
        (("x", ("a", "b"), ("A", "B"), ("c",)), r"small organs \['c'\]"),
    ],
)
def test_bad_label_sets_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        LabelSet(*args)


# ------------------------------------------------------------------------------------------ extensions


def test_extension_list():
    assert labels.VOLUME_EXTENSIONS == (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd")
    assert labels.LABEL_EXTENSIONS == (".seg.nrrd", ".nii.gz", ".nrrd", ".nii")
    assert labels.NIFTI_EXTENSIONS == (".nii.gz", ".nii")
    # longest first: no suffix is tried after a shorter suffix of itself
    exts = labels.VOLUME_EXTENSIONS
    assert not any(exts[j].endswith(exts[i]) for i in range(len(exts)) for j in range(i + 1, len(exts)))


@pytest.mark.parametrize(
    "name, extensions, stem",
    [
        ("img0001.nii.gz", labels.VOLUME_EXTENSIONS, "img0001"),
        ("img0001.NII.GZ", labels.VOLUME_EXTENSIONS, "img0001"),
        ("img0001.nii", labels.VOLUME_EXTENSIONS, "img0001"),
        ("case.seg.nrrd", labels.VOLUME_EXTENSIONS, "case"),
        ("case.nrrd", labels.VOLUME_EXTENSIONS, "case"),
        ("case.mha", labels.VOLUME_EXTENSIONS, "case"),
        ("case.mhd", labels.LABEL_EXTENSIONS, None),
        ("case.nii.gz", labels.NIFTI_EXTENSIONS, "case"),
        ("case.nrrd", labels.NIFTI_EXTENSIONS, None),
        ("notes.txt", labels.VOLUME_EXTENSIONS, None),
        (".nii.gz", labels.VOLUME_EXTENSIONS, None),
    ],
)
def test_volume_stem(name, extensions, stem):
    assert labels.volume_stem(name, extensions) == stem


def test_readers_use_the_one_list():
    from dinomix_core.data import case_id_from_path
    from dinomix_core.evaluation import SUPPORTED_EXTENSIONS
    from dinomix_core.studies import STUDY_EXTENSIONS

    assert SUPPORTED_EXTENSIONS == STUDY_EXTENSIONS == labels.LABEL_EXTENSIONS
    assert case_id_from_path("/data/a/label0001.nii.gz") == "label0001"
    assert case_id_from_path("seg/case7.seg.nrrd") == "case7"
    assert case_id_from_path("x.mhd") == "x"
    assert case_id_from_path("x.txt") == "x.txt"


# ---------------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("fraction, key", [(0.2, "0.2"), (0.05, "0.05"), (0.1, "0.1"), ("0.02", "0.02"), (1, "1")])
def test_fraction_key(fraction, key):
    assert labels.fraction_key(fraction) == key


@pytest.mark.parametrize(
    "dataset, variant, sizes, fractions",
    [
        ("synapse", None, (20, 4, 6), ["0.2"]),
        ("Synapse", "default", (20, 4, 6), ["0.2"]),
        ("synapse", "dhc", (20, 4, 6), ["0.1", "0.2", "0.4"]),
        ("amos", None, (216, 24, 120), ["0.02", "0.05", "0.1"]),
    ],
)
def test_load_split(dataset, variant, sizes, fractions):
    s = labels.load_split(dataset, variant)
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == sizes
    assert sorted(s["labeled"], key=float) == fractions
    assert s["variant"] == (variant or "default")
    assert "alternatives" not in s and s["available_variants"][0] == "default"


def test_load_split_errors_and_reexport():
    from dinomix_core import splits

    assert splits.load_split is labels.load_split and splits.fraction_key is labels.fraction_key
    assert labels.load_split("amos")["label_names"] == list(AMOS_ORGANS)
    with pytest.raises(ValueError, match="unknown dataset 'brats'"):
        labels.load_split("brats")
    with pytest.raises(ValueError, match="no split variant 'nope'; choose 'default' or one of \\['dhc'\\]"):
        labels.load_split("synapse", "nope")
    with pytest.raises(ValueError, match="no split variant 'dhc'; choose 'default'.$"):
        labels.load_split("amos", "dhc")


def test_labels_imports_neither_config_nor_data():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(labels.__file__).read_text())
    local = sorted({n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0})
    assert local == ["errors"]


# ---------------------------------------------------------------------------------------- label checks

_AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _save(path, arr, affine=_AFFINE):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return str(path)


@pytest.fixture
def image(tmp_path):
    return _save(tmp_path / "image.nii.gz", np.zeros((6, 5, 4), np.int16))


def _good():
    lab = np.zeros((6, 5, 4), np.uint8)
    lab[1:3, 1:3, 1:3] = 6
    lab[4, 4, 3] = 13
    return lab


def test_good_label_is_accepted(tmp_path, image):
    out = labels.check_label(image, _save(tmp_path / "l.nii.gz", _good()))
    assert out.dtype == np.uint8 and out.shape == (6, 5, 4) and np.array_equal(out, _good())
    # a trailing singleton axis and whole-number floats are fine
    four_d = labels.check_label(image, _save(tmp_path / "l4.nii.gz", _good()[..., None].astype(np.float32)))
    assert np.array_equal(four_d, _good())
    empty = labels.check_label(image, _save(tmp_path / "e.nii.gz", np.zeros((6, 5, 4), np.uint8)), allow_empty=True)
    assert empty.max() == 0
    arr, affine = labels.check_image(image)
    assert arr.shape == (6, 5, 4) and np.array_equal(affine, _AFFINE)


@pytest.mark.parametrize(
    "label, affine, kwargs, message",
    [
        (_good()[:, :, :-1], _AFFINE, {}, r"label shape \(6, 5, 3\) differs from the image shape \(6, 5, 4\)"),
        (_good(), np.diag([1.5, 1.5, 2.0, 1.0]), {}, "label spacing .* differs from the image spacing"),
        (_good(), np.diag([-1.5, 1.5, 3.0, 1.0]), {}, "label orientation"),
        (_good(), np.array([[1.5, 0, 0, 9.0], [0, 1.5, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]]), {}, "label origin"),
        (np.where(_good() > 0, _good() + 0.5, 0).astype(np.float32), _AFFINE, {}, "non-integer"),
        (np.where(_good() == 13, 14, _good()).astype(np.uint8), _AFFINE, {}, r"ids outside 0..13: \[14\]"),
        (_good(), _AFFINE, {"num_classes": 7}, r"ids outside 0..6: \[13\]"),
        (np.zeros((6, 5, 4), np.uint8), _AFFINE, {}, "no organ voxel"),
        (np.zeros((6, 5, 4, 2), np.uint8), _AFFINE, {}, "label must be a 3D volume"),
    ],
)
def test_bad_labels_are_refused(tmp_path, image, label, affine, kwargs, message):
    with pytest.raises(InvalidVolumeError, match=message):
        labels.check_label(image, _save(tmp_path / "bad.nii.gz", label, affine), **kwargs)


def test_unreadable_and_flat_images_are_refused(tmp_path, image):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a volume")
    with pytest.raises(InvalidVolumeError, match="label is not a readable NIfTI/NRRD file"):
        labels.check_label(image, str(junk))
    with pytest.raises(InvalidVolumeError, match="image is not a readable NIfTI/NRRD file"):
        labels.check_image(str(junk))
    flat = _save(tmp_path / "flat.nii.gz", np.zeros((6, 5, 1), np.int16))
    with pytest.raises(InvalidVolumeError, match="image must be a 3D volume"):
        labels.check_image(flat)


# ------------------------------------------------------------------------------------- label_info (segment names)


@pytest.mark.parametrize(
    "label_info, expected",
    [
        (None, None),
        ([], None),
        # the stock Slicer plugin after the user deleted the spleen segment: liver is the 5th segment left
        ([{"name": "right kidney", "idx": 1}, {"name": "liver", "idx": 5}], {1: 2, 5: 6}),
        ([{"name": "Liver ", "idx": 1}, {"name": "SPLEEN", "id": 2}], {1: 6, 2: 1}),  # case, "id" (its other call)
        ([{"name": "background", "idx": 3}, {"name": "liver", "idx": 6}], {3: 0, 6: 6}),
    ],
)
def test_label_info_mapping(label_info, expected):
    assert labels.label_info_mapping(label_info, SYNAPSE_ORGANS) == expected


@pytest.mark.parametrize(
    "label_info, message",
    [
        ([{"name": "tumour", "idx": 2}], "segment 'tumour' (value 2), which is not a label of this app"),
        ([{"name": "liver"}], "label_info entries must be"),
        ([{"name": "liver", "idx": 0}], "label_info entries must be"),
        ([{"name": "liver", "idx": True}], "label_info entries must be"),
        (["liver"], "label_info entries must be"),
        ({"name": "liver", "idx": 1}, "label_info must be a list"),
        ([{"name": "liver", "idx": 1}, {"name": "spleen", "idx": 1}], "gives value 1 to two segments"),
        ([{"name": "liver", "idx": 1}, {"name": "liver", "idx": 2}], "names two segments 'liver'"),
    ],
)
def test_label_info_mapping_refuses(label_info, message):
    with pytest.raises(InvalidVolumeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        labels.label_info_mapping(label_info, SYNAPSE_ORGANS)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd"])
def test_relabel_file_keeps_the_grid(tmp_path, ext):
    import nrrd

    data = np.zeros((6, 5, 4), np.uint8)
    data[1:3, 1:3, 1:3], data[4, 4, 3] = 1, 2
    affine = np.array([[-1.5, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 3, -30], [0, 0, 0, 1]])
    src, dst = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    if ext == ".nrrd":
        nrrd.write(str(src), data, {"space": "left-posterior-superior", "space origin": [-10.0, -20.0, -30.0],
                                    "space directions": [[1.5, 0, 0], [0, 1.5, 0], [0, 0, 3.0]]})
    else:
        nib.save(nib.Nifti1Image(data, affine), str(src))
    assert labels.relabel_file(str(src), str(dst), {1: 6, 2: 12, 7: 3}) == {1: 6, 2: 12}
    out, out_affine = labels.read_volume(str(dst))
    _, in_affine = labels.read_volume(str(src))
    np.testing.assert_array_equal(out, np.where(data == 1, 6, np.where(data == 2, 12, 0)))
    np.testing.assert_allclose(out_affine, in_affine)
    with pytest.raises(InvalidVolumeError, match=r"label values \[2\] have no label_info entry"):
        labels.relabel_file(str(src), str(dst), {1: 6})


# ------------------------------------------------------------------------------------- label sets from options


def test_parse_label_set(tmp_path):
    assert labels.parse_label_set("synapse") is SYNAPSE and labels.parse_label_set(" AMOS ") is AMOS
    custom = labels.parse_label_set("liver, spleen,tumour")
    assert custom.organs == ("liver", "spleen", "tumour") and custom.small_organs == ()
    assert custom.abbreviations == ("Li", "Sp", "tumour")
    as_dict = tmp_path / "labels.json"
    as_dict.write_text('{"tumour": 3, "liver": 1, "spleen": 2}')
    assert labels.parse_label_set(str(as_dict)).organs == ("liver", "spleen", "tumour")
    as_list = tmp_path / "list.json"
    as_list.write_text('["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", '
                       '"aorta", "inferior vena cava", "portal and splenic veins", "pancreas", '
                       '"right adrenal gland", "left adrenal gland"]')
    assert labels.parse_label_set(str(as_list)) is SYNAPSE


@pytest.mark.parametrize("text, message", [
    ("", "labels must name a label set"),
    ("liver,liver", "repeated: liver"),
    ("liver,,spleen", "non-empty strings"),
    ("liver,background", "'background' is label 0"),
    ("missing.json", "cannot be read as JSON"),
])
def test_parse_label_set_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        labels.parse_label_set(text)


@pytest.mark.parametrize("content, message", [
    ('{"liver": 1, "spleen": 3}', r"ids must be 1..2"),
    ('{"liver": "1"}', r"ids must be 1..1"),
    ('"liver"', "must hold a list of names"),
])
def test_parse_label_set_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        labels.parse_label_set(str(path))
