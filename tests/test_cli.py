"""The ``dinomix`` command line: help, clean errors (exit code 2, one message, no traceback), prepare-studies, train.

Most tests call ``dinomix_core.cli.main`` in-process; a few run the real interpreter to check the exit code and
stderr a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dinomix_core import cli
from dinomix_core.config import get_preset
from dinomix_core.networks import build_student
from dinomix_core.phantoms import write_phantom_nifti
from dinomix_core.studies import default_sample_dir, list_studies

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "dinomix_core.cli", *args], capture_output=True, text=True, env=env, timeout=timeout,
        cwd=str(REPO),
    )


# ---------------------------------------------------------------------------------------------- help
def test_top_level_help_lists_subcommands():
    r = run_cli("--help", timeout=120)
    assert r.returncode == 0, r.stderr
    for sub in ("train", "infer", "evaluate", "benchmark", "models", "prepare-studies"):
        assert sub in r.stdout
    assert "DINO-Mix" in r.stdout


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "dinomix"
    if not exe.exists():
        pytest.skip("the dinomix console script is not installed in this environment (pip install -e .)")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "prepare-studies" in r.stdout


def test_train_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in ("--studies", "--output", "--preset", "--max-iterations", "--teacher", "--resume", "--init",
                "--no-fkd", "--no-pic", "--no-consistency", "--val-fraction", "--device"):
        assert opt in out, opt


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--output", "x"])  # --studies missing
    assert e.value.code == 2
    assert "--studies" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--studies", "s", "--output", "o", "--preset", "huge"])
    assert e.value.code == 2


# ---------------------------------------------------------------------------------------------- clean errors
def test_train_missing_studies_is_a_clean_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    rc = cli.main(["train", "--studies", str(missing), "--output", str(tmp_path / "out"), "--teacher", "none"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"dinomix train: error: studies folder not found: {missing}" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model.pt").exists()


def test_infer_missing_model_is_a_clean_error(tmp_path, capsys):
    img, _ = write_phantom_nifti(tmp_path / "img.nii.gz", None, 0, (24, 24, 12), (4.0, 4.0, 6.0))
    model = tmp_path / "nowhere" / "model.pt"
    rc = cli.main(["infer", "--model", str(model), "--image", str(img), "--output", str(tmp_path / "p.nii.gz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("dinomix infer: error: no trained DINO-Mix model at")
    assert "Traceback" not in err
    assert not (tmp_path / "p.nii.gz").exists()


def test_infer_unreadable_image_is_a_clean_error(tmp_path, capsys):
    cfg = get_preset("cpu", channels=(4, 8, 16, 32), patch_size=(32, 32, 16))
    model = tmp_path / "model.pt"
    torch.save({"model": build_student(cfg).state_dict(), "config": cfg.to_dict()}, model)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    rc = cli.main(["infer", "--model", str(model), "--image", str(bad), "--output", str(tmp_path / "p.nii.gz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "dinomix infer: error: cannot read image" in err and "Traceback" not in err
    # a file that is not a model file (torch.load raises UnpicklingError): also exit 2 with one line
    rc = cli.main(["infer", "--model", str(bad), "--image", str(bad), "--output", str(tmp_path / "p.nii.gz")])
    assert rc == 2
    assert "is not a DINO-Mix model file" in capsys.readouterr().err


def test_verbose_reraises_for_debugging(tmp_path):
    with pytest.raises(FileNotFoundError):
        cli.main(["-v", "infer", "--model", str(tmp_path / "m.pt"), "--image", "x.nii.gz", "--output", "y.nii.gz"])


def test_train_without_labeled_volume_is_a_clean_error(tmp_path, capsys):
    studies = tmp_path / "studies"
    write_phantom_nifti(studies / "only_unlabeled.nii.gz", None, 0, (24, 24, 12), (4.0, 4.0, 6.0))
    rc = cli.main(["train", "--studies", str(studies), "--output", str(tmp_path / "out"), "--teacher", "none",
                   "--max-iterations", "1", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no usable labeled volume" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- prepare-studies
def test_prepare_studies_works_and_is_idempotent(tmp_path, capsys):
    out = tmp_path / "studies"
    assert cli.main(["prepare-studies", "--output", str(out)]) == 0
    msg = capsys.readouterr().out
    src_labeled, src_unlabeled = list_studies(default_sample_dir())
    labeled, unlabeled = list_studies(out)
    assert (len(labeled), len(unlabeled)) == (len(src_labeled), len(src_unlabeled))
    assert len(labeled) >= 1 and len(unlabeled) >= 1
    assert f"{len(labeled)} labeled, {len(unlabeled)} unlabeled" in msg
    for (a, b), (c, d) in zip(src_labeled, labeled):
        assert a.name == c.name and a.read_bytes() == c.read_bytes() and b.read_bytes() == d.read_bytes()

    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamp = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in files}
    # user edits survive a second run; a server's own files are left alone
    edited = labeled[0][1]
    edited.write_bytes(b"user edit")
    (out / "datastore_v2.json").write_text("{}")
    assert cli.main(["prepare-studies", "--output", str(out)]) == 0
    assert edited.read_bytes() == b"user edit"
    assert (out / "datastore_v2.json").read_text() == "{}"
    for p in files:
        if p != edited:
            assert (p.stat().st_mtime_ns, p.stat().st_size) == stamp[p], p
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(files + [out / "datastore_v2.json"])
    # --overwrite restores the sample copy
    assert cli.main(["prepare-studies", "--output", str(out), "--overwrite"]) == 0
    assert edited.read_bytes() == src_labeled[0][1].read_bytes()


def test_prepare_studies_refuses_the_sample_folder(capsys):
    target = default_sample_dir().parent / "copy"
    rc = cli.main(["prepare-studies", "--output", str(target)])
    assert rc == 2
    assert "must lie outside" in capsys.readouterr().err
    assert not target.exists()


# ---------------------------------------------------------------------------------------------- train
def test_train_and_infer_from_the_command_line(tmp_path, capsys):
    """`dinomix train` on a tiny SYNTHETIC studies folder, then `dinomix infer` with its model (2 iterations)."""
    torch.set_num_threads(1)
    studies = tmp_path / "studies"
    for s in (0, 1):
        write_phantom_nifti(studies / f"p{s}.nii.gz", studies / "labels" / "final" / f"p{s}.nii.gz", s,
                            (24, 24, 16), (8.0, 8.0, 6.0))
    write_phantom_nifti(studies / "p2.nii.gz", None, 2, (24, 24, 16), (8.0, 8.0, 6.0))
    out = tmp_path / "run"
    rc = cli.main(["train", "--studies", str(studies), "--output", str(out), "--max-iterations", "2",
                   "--teacher", "none", "--device", "cpu", "--seed", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 labeled, 1 unlabeled, 0 validation" in captured.err
    summary = json.loads(captured.out)
    assert summary["iterations"] == 2 and Path(summary["checkpoint"]) == out / "model.pt"
    payload = torch.load(out / "model.pt", map_location="cpu", weights_only=False)
    assert payload["config"]["seed"] == 1 and payload["config"]["max_iterations"] == 2
    assert payload["config"]["preset"] == "cpu"
    pred = tmp_path / "pred.nii.gz"
    assert cli.main(["infer", "--model", str(out / "model.pt"), "--image", str(studies / "p2.nii.gz"),
                     "--output", str(pred), "--device", "cpu"]) == 0
    import nibabel as nib

    assert nib.load(str(pred)).shape == (24, 24, 16)


# ---------------------------------------------------------------------------------------------- infer: geometry
def _untrained_model(path: Path, **overrides) -> Path:
    cfg = get_preset("cpu", channels=(4, 8, 16, 32), patch_size=(32, 32, 16), target_spacing=(4.0, 4.0, 6.0))
    cfg = cfg.replace(**overrides)
    torch.manual_seed(0)
    torch.save({"model": build_student(cfg).state_dict(), "config": cfg.to_dict()}, path)
    return path


def test_infer_label_lies_on_the_input_grid_in_any_orientation(tmp_path):
    """An LPS copy of a RAS image (same voxels in world space) gets the same label, flipped back onto its own grid."""
    import nibabel as nib
    import numpy as np

    model = _untrained_model(tmp_path / "model.pt")
    ras_path, _ = write_phantom_nifti(tmp_path / "ras.nii.gz", None, 0, (40, 36, 20), (4.0, 4.0, 6.0))
    ras = nib.load(str(ras_path))
    nx, ny, _ = ras.shape
    to_lps = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    lps_affine = ras.affine @ to_lps
    lps = nib.Nifti1Image(np.asarray(ras.dataobj)[::-1, ::-1, :].copy(), lps_affine)
    lps.set_qform(lps_affine, code=1)
    lps.set_sform(lps_affine, code=1)
    lps_path = tmp_path / "lps.nii.gz"
    nib.save(lps, str(lps_path))
    assert nib.aff2axcodes(lps_affine) == ("L", "P", "S")

    outs = {}
    for name, path in (("ras", ras_path), ("lps", lps_path)):
        outs[name] = tmp_path / f"pred_{name}.nii.gz"
        assert cli.main(["infer", "--model", str(model), "--image", str(path), "--output", str(outs[name]),
                         "--device", "cpu"]) == 0
    p_ras, p_lps = nib.load(str(outs["ras"])), nib.load(str(outs["lps"]))
    assert p_ras.shape == p_lps.shape == (40, 36, 20)
    np.testing.assert_allclose(p_ras.affine, ras.affine, atol=1e-4)
    np.testing.assert_allclose(p_lps.affine, lps_affine, atol=1e-4)
    a, b = np.asarray(p_ras.dataobj), np.asarray(p_lps.dataobj)
    assert len(np.unique(a)) > 1  # a non-trivial label map, so the comparison means something
    np.testing.assert_array_equal(b[::-1, ::-1, :], a)


def test_infer_resamples_back_to_the_input_grid(tmp_path):
    import nibabel as nib
    import numpy as np

    model = _untrained_model(tmp_path / "model.pt", target_spacing=(5.0, 5.0, 8.0))
    img, _ = write_phantom_nifti(tmp_path / "img.nii.gz", None, 1, (44, 38, 18), (4.0, 4.0, 6.0))
    out = tmp_path / "pred.nii.gz"
    assert cli.main(["infer", "--model", str(model), "--image", str(img), "--output", str(out), "--device", "cpu"]) == 0
    ref, pred = nib.load(str(img)), nib.load(str(out))
    assert pred.shape == ref.shape == (44, 38, 18)
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-4)
    assert pred.get_data_dtype() == np.uint8


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], dict(preset="cpu", max_iterations=300, use_fkd=True, device="auto", val_fraction=0.0, seed=0)),
        (["--preset", "paper"], dict(preset="paper", max_iterations=2400)),
        (["--max-iterations", "7", "--no-pic", "--no-fkd", "--device", "CPU", "--seed", "3"],
         dict(max_iterations=7, use_pic=False, use_fkd=False, use_consistency=True, device="cpu", seed=3)),
        (["--val-fraction", "0.25", "--min-labeled-for-validation", "2"],
         dict(val_fraction=0.25, min_labeled_for_validation=2)),
    ],
)
def test_train_arguments_are_a_train_request(argv, expected):
    """The CLI and the app share one TrainRequest; without --max-iterations the preset's budget applies."""
    args = cli.build_parser().parse_args(["train", "--studies", "s", "--output", "o", *argv])
    request = cli.train_request(args).to_dict()
    assert {k: request[k] for k in expected} == expected


def test_train_request_errors_exit_2(capsys):
    assert cli.main(["train", "--studies", "s", "--output", "o", "--device", "tpu"]) == 2
    assert "device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
