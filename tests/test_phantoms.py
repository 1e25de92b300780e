"""Tests of the SYNTHETIC phantom generator (dinomix_core.phantoms)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from dinomix_core.config import ORGANS
from dinomix_core.phantoms import (
    ORGAN_HU,
    STOMACH_CONTENTS_HU,
    generate_phantom,
    organ_volumes_ml,
    phantom_affine,
    write_phantom_nifti,
)

ID = {name: i + 1 for i, name in enumerate(ORGANS)}
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def phantoms():
    return {s: generate_phantom(s) for s in SEEDS}


def test_dtypes_shapes_and_affine(phantoms):
    image, label, affine = phantoms[0]
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.shape == label.shape == (96, 96, 48)
    # hand-computed: spacing on the diagonal, origin at minus half the field of view (voxel centres)
    expected = np.array(
        [[3.0, 0, 0, -142.5], [0, 3.0, 0, -142.5], [0, 0, 4.0, -94.0], [0, 0, 0, 1.0]]
    )
    np.testing.assert_allclose(affine, expected)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")


def test_custom_shape_and_spacing():
    image, label, affine = generate_phantom(5, shape=(40, 36, 20), spacing=(6.0, 7.0, 9.0))
    assert image.shape == label.shape == (40, 36, 20)
    np.testing.assert_allclose(np.diag(affine)[:3], (6.0, 7.0, 9.0))
    np.testing.assert_allclose(affine[:3, 3], (-117.0, -122.5, -85.5))
    np.testing.assert_allclose(affine, phantom_affine((40, 36, 20), (6.0, 7.0, 9.0)))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="shape"):
        generate_phantom(0, shape=(96, 96))
    with pytest.raises(ValueError, match="spacing"):
        generate_phantom(0, spacing=(3.0, 0.0, 4.0))


def test_deterministic_per_seed(phantoms):
    image, label, affine = generate_phantom(1)
    np.testing.assert_array_equal(image, phantoms[1][0])
    np.testing.assert_array_equal(label, phantoms[1][1])
    np.testing.assert_array_equal(affine, phantoms[1][2])
    assert not np.array_equal(phantoms[0][0], phantoms[1][0])
    assert not np.array_equal(phantoms[0][1], phantoms[1][1])


@pytest.mark.parametrize("seed", SEEDS)
def test_all_organs_present_and_imbalanced(phantoms, seed):
    _, label, _ = phantoms[seed]
    assert set(np.unique(label).tolist()) == set(range(len(ORGANS) + 1))
    vol = organ_volumes_ml(label, (3.0, 3.0, 4.0))
    liver, adrenal = vol["liver"], (vol["right adrenal gland"] + vol["left adrenal gland"]) / 2
    assert 100.0 <= liver / adrenal <= 400.0
    assert 600.0 <= liver <= 1700.0
    assert max(vol, key=vol.get) == "liver"
    for name in ("spleen", "right kidney", "left kidney"):
        assert 80.0 <= vol[name] <= 300.0, (name, vol[name])
    assert 150.0 <= vol["stomach"] <= 450.0
    assert 30.0 <= vol["pancreas"] <= 100.0
    assert 10.0 <= vol["gallbladder"] <= 60.0
    for name in ("right adrenal gland", "left adrenal gland"):
        assert 1.5 <= vol[name] <= 10.0, (name, vol[name])
    # the four configured small organs are all smaller than every large solid organ
    small = max(vol[n] for n in ("esophagus", "portal and splenic veins", "right adrenal gland", "left adrenal gland"))
    assert small < min(vol[n] for n in ("liver", "spleen", "right kidney", "left kidney", "stomach"))


def test_organ_volumes_ml_hand_computed():
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, :2] = ID["liver"]  # 2 voxels
    label[1, 1, 1] = ID["spleen"]  # 1 voxel
    vol = organ_volumes_ml(label, (2.0, 5.0, 10.0))  # 100 mm^3 = 0.1 ml per voxel
    assert vol["liver"] == pytest.approx(0.2)
    assert vol["spleen"] == pytest.approx(0.1)
    assert vol["aorta"] == 0.0 and len(vol) == 13


@pytest.mark.parametrize("seed", SEEDS)
def test_hu_per_organ(phantoms, seed):
    image, label, _ = phantoms[seed]
    for oid in range(1, len(ORGANS) + 1):
        mask = label == oid
        inner = ndimage.binary_erosion(mask)
        vals = image[inner if inner.sum() >= 5 else mask].astype(np.float64)
        if oid == ID["stomach"]:  # wall and contents
            assert STOMACH_CONTENTS_HU - 15 <= vals.mean() <= ORGAN_HU[oid] + 10
        else:
            assert abs(vals.mean() - ORGAN_HU[oid]) <= 25.0, (ORGANS[oid - 1], vals.mean())
    # enhancement order of the venous phase
    mean = {n: image[label == ID[n]].mean() for n in ("aorta", "liver", "gallbladder", "right kidney")}
    assert mean["aorta"] > mean["liver"] > mean["gallbladder"]
    assert mean["right kidney"] > mean["liver"]
    # air outside the body, bone present, noise level 10-20 HU (+ margin) in the corner air
    corner = image[:6, :6, :].astype(np.float64)
    assert abs(corner.mean() + 1000.0) < 5.0 and 5.0 < corner.std() < 25.0
    assert image.max() >= 400


def test_ras_anatomy(phantoms):
    """X increases towards the patient's right (liver), Y anterior, Z superior."""
    _, label, _ = phantoms[0]
    com = {n: ndimage.center_of_mass(label == ID[n]) for n in ("liver", "spleen", "right kidney", "left kidney",
                                                                 "aorta", "gallbladder")}
    assert com["liver"][0] > com["spleen"][0]
    assert com["right kidney"][0] > com["left kidney"][0]
    assert com["gallbladder"][1] > com["aorta"][1]  # gallbladder anterior to the aorta
    assert com["liver"][2] > com["right kidney"][2]  # liver above the kidney


def test_write_phantom_nifti(tmp_path, phantoms):
    img_p, lab_p = write_phantom_nifti(tmp_path / "a" / "img.nii.gz", tmp_path / "b" / "lab.nii.gz", 2)
    img, lab = nib.load(str(img_p)), nib.load(str(lab_p))
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), phantoms[2][0])
    np.testing.assert_array_equal(np.asanyarray(lab.dataobj), phantoms[2][1])
    np.testing.assert_allclose(img.affine, phantoms[2][2])
    np.testing.assert_allclose(lab.affine, phantoms[2][2])
    assert img.header["sform_code"] == 1 and img.header["qform_code"] == 1
    assert b"SYNTHETIC" in img.header["descrip"].tobytes()

    only_img, none = write_phantom_nifti(tmp_path / "c.nii.gz", None, 2)
    assert none is None and only_img.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c.nii.gz"]


def test_variation_defaults_and_validation():
    from dinomix_core.phantoms import PhantomVariation

    wide = PhantomVariation(phases=("portal", "native"), missing=(("gallbladder", 1.0),))
    phase, absent = wide.draw_extras(3)
    assert phase in ("portal", "native") and absent == {"gallbladder"}
    _, label, _ = generate_phantom(3, (48, 48, 24), (6.0, 6.0, 8.0), wide)
    assert 4 not in np.unique(label)  # the gallbladder is absent
    for bad in (dict(phases=("venous",)), dict(noise_hu=(20.0, 10.0)), dict(missing=(("liver", 2.0),)),
                dict(missing=(("tumour", 0.5),)), dict(organ_size_sd=-1.0)):
        with pytest.raises(ValueError):
            PhantomVariation(**bad)


def test_fat_planes_surround_the_small_organs_and_change_nothing_else():
    from dataclasses import replace

    from dinomix_core.phantoms import FAT_PLANES, WIDE_VARIATION, PhantomVariation

    grid = ((64, 64, 32), (4.5, 4.5, 6.0))
    plain = generate_phantom(5010, *grid, WIDE_VARIATION)
    fat = generate_phantom(5010, *grid, replace(WIDE_VARIATION, fat_planes=FAT_PLANES))
    changed = plain[1] != fat[1]
    assert changed.any() and (fat[1][changed] == 0).all()  # the planes take voxels from neighbours, as background
    for organ in ORGANS:  # no organ gains a voxel; the small organs lose none
        assert not ((fat[1] == ID[organ]) & (plain[1] != ID[organ])).any()
    small = np.isin(plain[1], [ID["esophagus"], ID["right adrenal gland"], ID["left adrenal gland"]])
    for organ in ("right adrenal gland", "left adrenal gland"):
        m = plain[1] == ID[organ]
        assert (m == (fat[1] == ID[organ])).all()
        shell = ndimage.binary_dilation(m) & ~m
        assert (fat[1][shell] == 0).all()
        assert np.median(fat[0][shell]) < np.median(plain[0][shell]) - 50  # fat around the gland
    far = ~ndimage.binary_dilation(small, iterations=10)
    assert (plain[0][far] == fat[0][far]).all() and (plain[1][far] == fat[1][far]).all()
    for bad in ((("tumour", 4.0),), (("esophagus", -1.0),), (("esophagus", 40.0),)):
        with pytest.raises(ValueError, match="fat_planes"):
            PhantomVariation(fat_planes=bad)
