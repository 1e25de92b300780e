"""Unit tests of dinomix_core.registry: publishing, history, restore and what is served (tiny model files)."""

from __future__ import annotations

import json

import pytest
import torch

from dinomix_core.artifacts import ModelFile
from dinomix_core.config import DinoMixConfig
from dinomix_core.errors import ModelFileError
from dinomix_core.registry import ModelRegistry


def _model(path, iteration, label_ids=(1, 6)):
    return ModelFile(model={"w": torch.full((2,), float(iteration))}, config=DinoMixConfig().to_dict(),
                     label_ids=list(label_ids), iteration=iteration, metric=iteration / 100).save(path)


def test_publish_history_and_restore(tmp_path):
    reg = ModelRegistry(str(tmp_path / "m"))
    assert (reg.has_model(), reg.current(), reg.history(), reg.served()) == (False, None, [], None)
    e1 = reg.publish(str(_model(tmp_path / "a.pt", 10)), ["b", "a"], extra={"unlabeled_count": 3})
    e2 = reg.publish(str(_model(tmp_path / "b.pt", 20, (1,))), ["a"])
    assert (e1["version"], e2["version"]) == (1, 2)
    assert {k: e1[k] for k in ("labeled_ids", "iteration", "metric", "label_ids", "preset", "unlabeled_count")} == {
        "labeled_ids": ["a", "b"], "iteration": 10, "metric": 0.1, "label_ids": [1, 6], "preset": "cpu",
        "unlabeled_count": 3}
    assert [h["current"] for h in reg.history()] == [False, True]
    assert ModelFile.load(reg.model_path).iteration == 20
    reg.restore(1)
    assert ModelFile.load(reg.model_path).iteration == 10 and reg.current()["version"] == 1
    assert sorted(p.name for p in reg.history_dir.iterdir()) == ["0001.pt", "0002.pt"]  # history kept
    with pytest.raises(ValueError, match=r"no published model version 7 \(have: 1, 2\)"):
        reg.restore(7)


def test_publishing_a_non_model_changes_nothing(tmp_path):
    reg = ModelRegistry(str(tmp_path / "m"))
    reg.publish(str(_model(tmp_path / "a.pt", 10)), ["a"])
    before = (reg.model_path.read_bytes(), reg.history_file.read_text())
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="Nothing published"):
        reg.publish(str(tmp_path / "junk.pt"), ["a"])
    assert (reg.model_path.read_bytes(), reg.history_file.read_text()) == before


@pytest.mark.parametrize("starter, published, source, version", [
    (False, False, None, None),
    (True, False, "starter", "starter"),
    (True, True, "retrained", 1),
    (False, True, "retrained", 1),
])
def test_served(tmp_path, starter, published, source, version):
    starter_path = _model(tmp_path / "pretrained_dinomix.pt", 1000, range(1, 14)) if starter else tmp_path / "no.pt"
    reg = ModelRegistry(str(tmp_path / "m"), starter_path=str(starter_path))
    if published:
        reg.publish(str(_model(tmp_path / "a.pt", 5, (2, 3))), ["a"])
    served = reg.served()
    if source is None:
        assert served is None and reg.served_path() is None
        return
    assert (served["source"], served["version"]) == (source, version)
    assert served["label_ids"] == (list(range(1, 14)) if source == "starter" else [2, 3])
    assert served["iteration"] == (1000 if source == "starter" else 5)


def test_model_summary_follows_the_file(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    path = _model(tmp_path / "x.pt", 3)
    assert reg.model_summary(path)["iteration"] == 3
    _model(path, 4)
    assert reg.model_summary(path)["iteration"] == 4  # a new file version is read again
    path.write_bytes(b"torn")
    assert reg.model_summary(path) == {} and reg.model_summary(tmp_path / "missing.pt") == {}


def test_a_torn_history_file_reads_as_empty(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    reg.history_file.write_text("[{")
    assert reg.history() == []
    reg.history_file.write_text(json.dumps([{"version": 1}]))
    assert reg.history() == [{"version": 1}]


@pytest.mark.parametrize("name", ["", "a/b"])
def test_bad_name(tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        ModelRegistry(str(tmp_path), name=name)
