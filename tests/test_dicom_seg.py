"""DICOM-SEG export of a DINO-Mix label, done the way MONAI Label 0.8.5 does it for a DICOMweb datastore.

With ``output=dicom_seg`` MONAI Label's infer endpoint (``monailabel/endpoints/infer.py``) converts the label
written by our infer task with ``monailabel.datastore.utils.convert.nifti_to_dicom_seg(series_dir, label_file,
label_info, use_itk=True)``, which runs dcmqi's ``itkimage2segimage``. No DICOMweb server runs here, so these
tests exercise that conversion step itself on real files:

* a real DICOM CT series (CT Image Storage, one file per axial slice) built from the sample CT ``real_ct_001``;
* the sample's real organ label, written as our infer task writes its output (uint8 NIfTI on the image grid,
  Synapse organ ids 1..13 as in :data:`dinomix_core.config.ORGANS`);
* the DICOM-SEG that dcmqi writes, read back with pydicom and ``pydicom_seg`` and compared voxel for voxel.

MONAI Label quirk documented here: ``nifti_to_dicom_seg`` pairs ``label_info[i]`` with the i-th label id *present*
in the volume (in increasing order), not with label id ``i + 1``. A client must therefore send ``label_info`` for
the present organ ids only; a list of all 13 organs mislabels every segment after the first absent organ (the
sample label has no gallbladder, id 4).

Needs the ``dcmqi`` package, a project dependency (``make install``); the tests fail saying so without it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import nibabel as nib
import numpy as np
import pydicom
import pydicom_seg
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dinomix_core.config import ORGANS
from monailabel.datastore.utils.convert import nifti_to_dicom_seg

REPO = Path(__file__).resolve().parents[1]
CT_FILE = REPO / "sample_data" / "studies" / "real_ct_001.nii.gz"
LABEL_FILE = REPO / "sample_data" / "studies" / "labels" / "final" / "real_ct_001.nii.gz"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: CT values are stored as HU - RESCALE_INTERCEPT (signed 16 bit) so the rescale is exercised.
RESCALE_INTERCEPT = -1024


def _ds(value: float) -> str:
    """Formats a float as a DICOM decimal string (at most 16 characters, no negative zero)."""
    return f"{float(value) + 0.0:.6f}"


def write_ct_series(image: sitk.Image, series_dir: Path) -> Dict[str, object]:
    """Writes a CT volume as a DICOM series, one CT Image Storage file per axial slice.

    Args:
        image: the CT in Hounsfield units (SimpleITK, LPS geometry, slices along the third axis).
        series_dir: empty folder that receives ``ct_000.dcm``, ``ct_001.dcm``, ...

    Returns:
        The series' identifiers: ``study``, ``series`` and ``frame_of_reference`` UIDs and the list ``sops`` of
        SOP Instance UIDs.
    """
    hu = sitk.GetArrayFromImage(image)  # (slices, rows, columns)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    sx, sy, sz = image.GetSpacing()
    uids: Dict[str, object] = {
        "study": generate_uid(),
        "series": generate_uid(),
        "frame_of_reference": generate_uid(),
        "sops": [],
    }
    orientation = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    for k in range(hu.shape[0]):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian

        ds = Dataset()
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["frame_of_reference"], ""
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Sample^CT", "real_ct_001", "", ""
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "DINO-Mix tests"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(v) for v in origin + k * sz * direction[:, 2]]
        ds.ImageOrientationPatient = orientation
        ds.PixelSpacing = [_ds(sy), _ds(sx)]  # (between rows, between columns)
        ds.SliceThickness = _ds(sz)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(RESCALE_INTERCEPT), "1", "HU"
        ds.PixelData = (hu[k].astype(np.int32) - RESCALE_INTERCEPT).astype("<i2").tobytes()
        ds.save_as(series_dir / f"ct_{k:03d}.dcm", write_like_original=False)
        uids["sops"].append(sop)
    return uids


@pytest.fixture(scope="module")
def ct_image() -> sitk.Image:
    """The sample CT ``real_ct_001`` (180 x 148 x 69, 2 x 2 x 2.5 mm)."""
    return sitk.ReadImage(str(CT_FILE))


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory, ct_image) -> Dict[str, object]:
    """The sample CT as a DICOM series on disk: the UIDs of :func:`write_ct_series` plus its ``dir``."""
    series_dir = tmp_path_factory.mktemp("ct_series")
    uids = write_ct_series(ct_image, series_dir)
    uids["dir"] = series_dir
    return uids


@pytest.fixture(scope="module")
def label_array() -> np.ndarray:
    """The sample's organ label as uint8, in NIfTI (x, y, z) order."""
    return np.asarray(nib.load(str(LABEL_FILE)).dataobj).astype(np.uint8)


@pytest.fixture
def infer_label_file(tmp_path, label_array) -> Path:
    """The sample label written the way ``apps/dinomix/lib/infers/dinomix.py`` writes an infer result."""
    out = tmp_path / "infer_label.nii.gz"
    img = nib.Nifti1Image(label_array, nib.load(str(LABEL_FILE)).affine)
    img.set_data_dtype(np.uint8)
    nib.save(img, str(out))
    return out


@pytest.fixture
def dcmqi(monkeypatch, tmp_path) -> str:
    """Makes dcmqi's ``itkimage2segimage`` reachable by its bare name, as MONAI Label calls it.

    Prepends the interpreter's ``bin`` folder (where pip puts dcmqi's console scripts) to ``PATH`` and sends
    ``nifti_to_dicom_seg``'s temporary files into ``tmp_path``.

    Returns:
        The path of ``itkimage2segimage``.
    """
    try:
        import dcmqi  # noqa: F401
    except ImportError:
        pytest.fail("dcmqi is not installed (a dependency: it provides itkimage2segimage); run `make install`")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    exe = shutil.which("itkimage2segimage")
    if exe is None:
        pytest.fail(
            "dcmqi is installed but its itkimage2segimage executable is not on PATH (looked in "
            f"{os.path.dirname(sys.executable)} first); MONAI Label runs it by its bare name for DICOM-SEG output"
        )
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return exe


def present_ids(label: np.ndarray) -> List[int]:
    """The non-zero label ids in ``label``, in increasing order (the order ``nifti_to_dicom_seg`` uses)."""
    return [int(i) for i in np.unique(label) if i != 0]


def convert(series_dir: Path, label_file: Path, label_info: List[Dict[str, str]]) -> pydicom.Dataset:
    """Runs MONAI Label's DICOMweb conversion (dcmqi) and reads the DICOM-SEG it wrote.

    ``run_command`` ignores dcmqi's exit status, so a failed conversion shows up here as a missing or empty file.
    """
    out = nifti_to_dicom_seg(str(series_dir), str(label_file), label_info, use_itk=True)
    assert out and os.path.isfile(out) and os.path.getsize(out) > 0, f"itkimage2segimage wrote no DICOM-SEG ({out!r})"
    return pydicom.dcmread(out)


def read_segments(seg: pydicom.Dataset) -> sitk.Image:
    """Reads a DICOM-SEG back as one label image whose values are the SEG's segment numbers."""
    return pydicom_seg.MultiClassReader().read(seg).image


def test_ct_series_round_trips(ct_series, ct_image):
    """The DICOM series built from the sample CT reads back (as MONAI Label reads one) with its HU and geometry."""
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(ct_series["dir"]), ct_series["series"])
    assert len(files) == ct_image.GetSize()[2]
    reader.SetFileNames(files)
    back = reader.Execute()
    assert back.GetSize() == ct_image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), ct_image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ct_image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), ct_image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(ct_image))


def test_infer_label_converts_to_dicom_seg(dcmqi, ct_series, infer_label_file, label_array, ct_image):
    """Our infer output becomes a valid DICOM-SEG with one correctly named segment per present organ.

    ``label_info`` lists the present organ ids in increasing order, so segment ``k`` is the k-th present organ;
    reading the SEG back and mapping segment numbers to organ ids through the segment names reproduces the
    input label voxel for voxel, on the full CT grid.
    """
    ids = present_ids(label_array)
    assert len(ids) < len(ORGANS)  # the sample has no gallbladder: the present ids have a gap
    label_info = [{"name": ORGANS[i - 1], "description": f"DINO-Mix organ {i}"} for i in ids]

    seg = convert(ct_series["dir"], infer_label_file, label_info)

    assert seg.Modality == "SEG"
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.StudyInstanceUID == ct_series["study"]
    assert seg.FrameOfReferenceUID == ct_series["frame_of_reference"]
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == ct_series["series"]
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence} == set(ct_series["sops"])

    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert len(segments) == len(ids)
    # dcmqi numbers segments 1..N in the order of label_info, i.e. increasing organ id
    assert segments == {k + 1: ORGANS[i - 1] for k, i in enumerate(ids)}

    image = read_segments(seg)
    assert image.GetSize() == ct_image.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), ct_image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), ct_image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), ct_image.GetDirection(), atol=1e-6)

    numbers = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> NIfTI (x, y, z)
    organ_of_segment = np.zeros(max(segments) + 1, dtype=np.uint8)
    for number, name in segments.items():
        organ_of_segment[number] = ORGANS.index(name) + 1
    decoded = organ_of_segment[numbers]

    expected = {i: int((label_array == i).sum()) for i in ids}
    assert {i: int((decoded == i).sum()) for i in ids} == expected
    np.testing.assert_array_equal(decoded, label_array)


def test_label_info_for_all_organs_shifts_segment_names(dcmqi, ct_series, infer_label_file, label_array):
    """A ``label_info`` for all 13 organs mislabels segments once an organ is absent: send present ids only.

    ``nifti_to_dicom_seg`` pairs ``label_info[i]`` with the i-th *present* label id. The sample has no
    gallbladder (id 4), so with all 13 names the esophagus (id 5) is written as "gallbladder", every later
    organ takes its predecessor's name and the last name ("left adrenal gland") is dropped. The voxels are
    still right (each segment keeps its own label id), only the names are wrong, which a viewer cannot detect.
    """
    ids = present_ids(label_array)
    absent = sorted(set(range(1, len(ORGANS) + 1)) - set(ids))
    assert absent == [4]

    seg = convert(ct_series["dir"], infer_label_file, [{"name": name} for name in ORGANS])

    names = [str(s.SegmentLabel) for s in sorted(seg.SegmentSequence, key=lambda s: int(s.SegmentNumber))]
    assert names == list(ORGANS[: len(ids)])
    assert "left adrenal gland" not in names

    numbers = sitk.GetArrayFromImage(read_segments(seg)).transpose(2, 1, 0)
    gallbladder_segment = names.index("gallbladder") + 1
    np.testing.assert_array_equal(numbers == gallbladder_segment, label_array == ORGANS.index("esophagus") + 1)


# ------------------------------------------------------------------------------------------------------------------
# the app's guard (apps/dinomix/lib/compat/dicom_seg.py): every organ named right whatever list a client sends
# ------------------------------------------------------------------------------------------------------------------
sys.path.insert(0, str(REPO / "apps" / "dinomix"))
from fastapi import HTTPException  # noqa: E402
from lib.compat import dicom_seg as app_dicom_seg  # noqa: E402


@pytest.mark.parametrize(
    "label_info, expected",
    [
        ([], [{"name": "spleen"}, {"name": "esophagus"}]),
        ([{"name": f"o{i}"} for i in range(1, 14)], [{"name": "o1"}, {"name": "o5"}]),
        ([{"name": "a", "color": [1, 2, 3]}, {}], [{"name": "a", "color": [1, 2, 3]}, {"name": "esophagus"}]),
        ([{}] * 13, [{"name": "spleen"}, {"name": "esophagus"}]),
    ],
)
def test_segment_label_info_pairs_entries_with_organ_ids(label_info, expected):
    given = [dict(e) for e in label_info]
    assert app_dicom_seg.segment_label_info(label_info, [1, 5], ORGANS) == expected
    assert label_info == given  # the request's list is not changed


@pytest.mark.parametrize("label_info, ids", [([{}] * 3, [1, 5]), ([{}] * 12, [1, 5]), ([{}], [14])])
def test_segment_label_info_refuses_what_it_cannot_pair(label_info, ids):
    with pytest.raises(ValueError, match="label_info has|not organ ids"):
        app_dicom_seg.segment_label_info(label_info, ids, ORGANS)


@pytest.mark.parametrize("kind", ["all organs", "present organs", "empty"])
def test_app_converter_names_every_segment_right(dcmqi, ct_series, infer_label_file, label_array, kind):
    """The list of all 13 organs, which MONAI Label alone mislabels (test above), now names every segment right."""
    ids = present_ids(label_array)
    label_info = {
        "all organs": [{"name": name} for name in ORGANS],
        "present organs": [{"name": ORGANS[i - 1]} for i in ids],
        "empty": [],
    }[kind]
    out = app_dicom_seg.make_converter(ORGANS)(str(ct_series["dir"]), str(infer_label_file), label_info)
    seg = pydicom.dcmread(out)
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert segments == {k + 1: ORGANS[i - 1] for k, i in enumerate(ids)}
    numbers = sitk.GetArrayFromImage(read_segments(seg)).transpose(2, 1, 0)
    organ_of_segment = np.zeros(max(segments) + 1, dtype=np.uint8)
    for number, name in segments.items():
        organ_of_segment[number] = ORGANS.index(name) + 1
    np.testing.assert_array_equal(organ_of_segment[numbers], label_array)


def test_app_converter_errors_say_what_is_wrong(dcmqi, ct_series, infer_label_file, tmp_path, monkeypatch):
    convert_ = app_dicom_seg.make_converter(ORGANS)
    with pytest.raises(HTTPException) as e:
        convert_(str(ct_series["dir"]), str(infer_label_file), [{"name": "spleen"}] * 5)
    assert e.value.status_code == 400 and "send one per organ (13" in e.value.detail
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(empty))
    with pytest.raises(HTTPException) as e:
        convert_(str(ct_series["dir"]), str(empty), [])
    assert e.value.status_code == 422 and "no organ voxel" in e.value.detail
    monkeypatch.setenv("PATH", str(tmp_path))  # no itkimage2segimage
    with pytest.raises(HTTPException) as e:
        convert_(str(ct_series["dir"]), str(infer_label_file), [])
    assert e.value.status_code == 500 and "itkimage2segimage" in e.value.detail


def test_the_app_installs_the_guard_in_monai_labels_infer_endpoint(app_client):
    from monailabel.endpoints import infer as infer_endpoint

    assert getattr(infer_endpoint.nifti_to_dicom_seg, "dinomix", False)
