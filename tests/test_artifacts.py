"""Unit tests of dinomix_core.artifacts: atomic writes, the model file and the resume checkpoint (no training)."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from dinomix_core.artifacts import ModelFile, ResumeCheckpoint, atomic_copy, atomic_write, pid_alive, temp_path
from dinomix_core.config import DinoMixConfig
from dinomix_core.errors import ModelFileError


@pytest.mark.parametrize("content, expected", [(b"\x00\x01", b"\x00\x01"), ("héllo", "héllo".encode()),
                                               (lambda f: f.write(b"abc"), b"abc")])
def test_atomic_write_content_kinds(tmp_path, content, expected):
    path = atomic_write(tmp_path / "sub" / "f.bin", content)
    assert path.read_bytes() == expected
    assert sorted(os.listdir(path.parent)) == ["f.bin"]  # no temporary file left


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic_write(tmp_path / "f.txt", "old")

    def boom(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_atomic_copy_and_temp_name(tmp_path):
    src = atomic_write(tmp_path / "a.nii.gz", b"123")
    dst = atomic_copy(src, tmp_path / "b" / "c.nii.gz")
    assert dst.read_bytes() == b"123"
    name = temp_path(dst).name
    assert name.startswith(".c.nii.gz.tmp" + str(os.getpid()) + ".")


@pytest.mark.parametrize("pid, alive", [(os.getpid(), True), (None, False), ("x", False), (0, False), (-1, False),
                                        (2**22 + 12345, False)])
def test_pid_alive(pid, alive):
    assert pid_alive(pid) is alive


def _model_file(**kw) -> ModelFile:
    return ModelFile(model={"w": torch.arange(3.0)}, config=DinoMixConfig().to_dict(), **kw)


def test_model_file_round_trip(tmp_path):
    mf = _model_file(label_ids=[1, 6], iteration=7, metric=0.5, trained_on={"labeled": ["a"]})
    back = ModelFile.load(mf.save(tmp_path / "m.pt"))
    assert torch.equal(back.model["w"], torch.arange(3.0))
    assert (back.label_ids, back.iteration, back.metric, back.trained_on) == ([1, 6], 7, 0.5, {"labeled": ["a"]})
    assert back.label_names == list(DinoMixConfig().label_names)
    assert back.summary() == {"label_ids": [1, 6], "iteration": 7, "saved_at": mf.saved_at, "metric": 0.5,
                              "preset": "cpu", "label_names": list(DinoMixConfig().label_names)}
    assert ModelFile.is_model_file(tmp_path / "m.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload, why", [
    (b"not a torch file", "is not a DINO-Mix model file"),
    ({"model": {}}, "lacks 'model' and 'config'"),
    ([1, 2], "lacks 'model' and 'config'"),
    ({"model": {}, "config": {}, "x": _Evil()}, "is not a DINO-Mix model file"),  # never unpickled
])
def test_not_a_model_file(tmp_path, payload, why):
    path = tmp_path / "bad.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path, pickle_module=pickle)
    with pytest.raises(ModelFileError, match=why):
        ModelFile.load(path)
    assert not ModelFile.is_model_file(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        ModelFile.load(tmp_path / "none.pt")


def test_resume_checkpoint_round_trip_and_torn_file(tmp_path):
    ck = ResumeCheckpoint(model={"w": torch.ones(2)}, ema={"w": torch.zeros(2)}, optimizer={"state": {}},
                          tracker={"freq": torch.ones(3)}, generator=torch.Generator().get_state(),
                          config={"optimizer": "adamw"}, iteration=5, best_metric=0.25)
    back = ResumeCheckpoint.load(ck.save(tmp_path / "c.pt"))
    assert back.iteration == 5 and back.best_metric == 0.25 and not back.finished
    assert torch.equal(back.ema["w"], torch.zeros(2))
    (tmp_path / "torn.pt").write_bytes(ck.save(tmp_path / "c2.pt").read_bytes()[:100])
    with pytest.raises(ModelFileError, match="resume checkpoint"):
        ResumeCheckpoint.load(tmp_path / "torn.pt")
