"""The ``dinomix_minority_uncertainty`` strategy: scores computed in the background, never inside a request;
served timestamps honoured as MONAI Label's strategies do. A real datastore over SYNTHETIC phantoms and a real
(untrained, tiny) model."""

from __future__ import annotations

import os
import sys
import time

import pytest
from test_cli import _untrained_model

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "apps", "dinomix"))

from lib.activelearning.minority_uncertainty import NAME, MinorityUncertainty  # noqa: E402
from lib.datastore import DinoMixDatastore  # noqa: E402

from dinomix_core.phantoms import write_phantom_nifti  # noqa: E402
from dinomix_core.registry import ModelRegistry  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    studies = tmp_path / "studies"
    for s in range(3):
        write_phantom_nifti(studies / f"p{s}.nii.gz", None, s, (32, 32, 16), (8.0, 8.0, 6.0))
    store = DinoMixDatastore(str(studies), auto_reload=False)
    registry = ModelRegistry(str(tmp_path / "model"), starter_path=str(_untrained_model(tmp_path / "starter.pt")))
    return store, MinorityUncertainty(registry, poll_s=3600)  # the thread is woken by requests only


def serve(strategy, store, client_id="ann"):
    """What MONAI Label's active-learning endpoint does: ask the strategy, then stamp the image it served."""
    res = strategy({"strategy": NAME, "client_id": client_id}, store)
    info = store.get_image_info(res["id"]).get("strategy", {})
    info[NAME] = {"ts": int(time.time()), "client_id": client_id}
    store.update_image_info(res["id"], {"strategy": info})
    return res


def test_request_does_not_score_and_the_background_does(setup, monkeypatch):
    store, strategy = setup
    monkeypatch.setattr(strategy, "start", lambda datastore: None)  # no thread: the request alone
    res = strategy({"strategy": NAME}, store)
    assert res["selected_by"] == "pending (scores pending): least recently served" and res["id"] == "p0"
    assert strategy.scores() == {}  # the request computed nothing
    assert strategy.score_pending(store, limit=1) == 1 and list(strategy.scores()) == ["p0"]
    assert strategy.score_pending(store) == 2 and sorted(strategy.scores()) == ["p0", "p1", "p2"]
    assert strategy.score_pending(store) == 0
    res = strategy({"strategy": NAME}, store)
    assert res["selected_by"] == NAME and res["scored"] == "3/3"
    assert res["id"] == max(strategy.scores(), key=lambda i: (strategy.scores()[i], i))


def test_served_images_go_to_nobody_else(setup):
    store, strategy = setup
    strategy.score_pending(store)
    ranked = sorted(strategy.scores(), key=lambda i: -strategy.scores()[i])
    got = [serve(strategy, store, c)["id"] for c in ("ann", "bob", "cid")]
    assert got == ranked  # each annotator gets the best image nobody holds
    assert serve(strategy, store, "dan")["id"] in ranked  # all held: the candidates are all images again


def test_a_new_model_is_scored_again_and_the_thread_starts(setup):
    store, strategy = setup
    strategy.score_pending(store)
    assert len(strategy.scores()) == 3
    starter = strategy.registry.starter_path
    os.utime(starter, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new model file version
    assert strategy.scores() == {}
    strategy({"strategy": NAME}, store)  # starts the background thread and wakes it
    deadline = time.monotonic() + 120
    while len(strategy.scores()) < 3:
        assert time.monotonic() < deadline, "the background scorer did not score the new model's images"
        time.sleep(0.1)
    assert strategy._thread is not None and strategy._thread.daemon
