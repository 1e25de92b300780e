"""The DinoMix 3D Slicer module's widget, driven through a STAND-IN for Slicer's Python modules.

3D Slicer cannot be installed here. ``tests/slicer_standin`` provides stand-ins for ``slicer``, ``qt``, ``ctk``,
``vtk`` and ``slicer.ScriptedLoadableModule``; its ``slicer.util.loadUI`` builds widgets from the module's real
Qt Designer file, and its message boxes record what would have been shown. The widget is set up, each button is
clicked, and a recording logic object checks which logic method was called with which arguments; an exception
raised by the logic must end up as a displayed error message, never as a raised exception. The last tests run the
module's own DinoMixLogic and client against the real server (``live_server``): connect, and the whole
next-sample / infer / submit / retrain / stop loop with the stand-in MRML.
"""

import os
import socket
import sys
import time

import nibabel as nib
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN = os.path.join(ROOT, "tests", "slicer_standin")
MODULE_DIR = os.path.join(ROOT, "slicer_module", "DinoMix")
STANDIN_MODULES = ("qt", "ctk", "vtk", "slicer", "slicer.util", "slicer.ScriptedLoadableModule", "DinoMix")

ORGANS = [
    "spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland",
]  # fmt: skip


@pytest.fixture(scope="module")
def env():
    """Import DinoMix.py against the stand-ins; remove them from sys.modules/sys.path afterwards."""
    saved = {name: sys.modules.pop(name) for name in STANDIN_MODULES if name in sys.modules}
    sys.path[:0] = [STANDIN, MODULE_DIR]
    try:
        import ctk  # noqa: F401
        import qt
        import slicer

        import DinoMix

        assert getattr(slicer, "STANDIN", False) and getattr(qt, "STANDIN", False), "real Slicer modules were imported"
        yield DinoMix, slicer, qt
    finally:
        for p in (STANDIN, MODULE_DIR):
            sys.path.remove(p)
        for name in STANDIN_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


class RecordingLogic:
    """Stands in for DinoMixLogic: records each call and returns canned results (or raises ``fail[name]``)."""

    isConnected = True
    hasImage = True
    hasSegmentation = True

    def __init__(self, results=None, fail=None):
        self.calls = []
        self.results = results or {}
        self.fail = fail or {}

    def _call(self, name, *args):
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]
        return self.results.get(name)

    def connect(self, url, username="", password=""):
        return self._call("connect", url, username, password)

    def nextSample(self, strategy):
        return self._call("nextSample", strategy)

    def runInference(self):
        return self._call("runInference")

    def submitCorrection(self):
        return self._call("submitCorrection")

    def startTraining(self, settings):
        return self._call("startTraining", settings)

    def stopTraining(self):
        return self._call("stopTraining")

    def pollTraining(self):
        return self._call("pollTraining")

    def clickList(self, foreground):
        import slicer

        return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"clicks {foreground}")


CONNECT_SUMMARY = {
    "name": "DINO-Mix",
    "models": ["dinomix"],
    "organs": ORGANS,
    "model_status": {"listed": True, "model_present": False, "details": {}},
    "strategies": ["dinomix_minority_uncertainty", "random", "first"],
    "default_strategy": "dinomix_minority_uncertainty",
    "training_running": False,
    "train_config": {"max_iterations": 200, "preset": "cpu", "use_fkd": True, "use_pic": True, "device": "auto",
                     "teacher": "none"},
    "train_presets": ["cpu", "gpu_small", "paper"],
}  # fmt: skip


@pytest.fixture()
def make_widget(env):
    DinoMix, slicer, qt = env

    made = []

    def make(logic=None):
        slicer.util.messages.clear()
        slicer.util.confirm_answer = False
        qt.QSettings._store.clear()
        qt.QApplication.override_cursor_depth = 0
        w = DinoMix.DinoMixWidget()
        w.setup()
        if logic is not None:
            w.logic = logic
            w.updateButtonStates()
        made.append(w)
        return w

    yield make
    for w in made:  # as Slicer does when the module closes
        w.cleanup()


def _errors(slicer):
    return [m for m in slicer.util.messages if m["kind"] == "error"]


def test_module_metadata(env):
    DinoMix, _, _ = env
    from slicer.ScriptedLoadableModule import _ModuleParent

    parent = _ModuleParent()
    DinoMix.DinoMix(parent)
    assert parent.title == "DINO-Mix"
    assert parent.categories == ["Segmentation"]
    assert "2602.07819" in parent.helpText


def test_setup_builds_widgets_from_the_ui_file(env, make_widget):
    DinoMix, slicer, qt = env
    w = make_widget()
    assert isinstance(w.logic, DinoMix.DinoMixLogic)
    for name in (
        "serverUrlLineEdit", "connectButton", "serverInfoLabel", "organListWidget", "strategyComboBox",
        "nextSampleButton", "sampleLabel", "inferButton", "submitButton", "iterationsSpinBox", "presetComboBox",
        "fkdCheckBox", "picCheckBox", "deviceComboBox", "retrainButton", "stopButton", "trainProgressBar",
        "trainStatsTextEdit", "statusLabel", "editOrganComboBox", "foregroundClickPlaceWidget",
        "backgroundClickPlaceWidget", "clearClicksButton", "addStrokeSegmentsButton", "scribblesMethodComboBox",
        "applyStrokesButton",
    ):  # fmt: skip
        assert hasattr(w.ui, name), name
    methods = w.ui.scribblesMethodComboBox
    assert [methods.itemText(i) for i in range(methods.count)] == list(DinoMix.SCRIBBLES_MODELS)
    assert w.ui.serverUrlLineEdit.text == "http://127.0.0.1:8000"
    assert w.ui.strategyComboBox.currentText == "dinomix_minority_uncertainty"
    assert w.trainingSettings() == dict(max_iterations=300, preset="cpu", use_fkd=True, use_pic=True, device="auto")
    assert w.pollTimer.interval == 5000 and not w.pollTimer.isActive()
    # not connected yet: only Connect is usable
    assert w.ui.connectButton.enabled
    assert not any(b.enabled for b in (w.ui.nextSampleButton, w.ui.inferButton, w.ui.submitButton,
                                       w.ui.retrainButton, w.ui.stopButton, w.ui.applyStrokesButton,
                                       w.ui.foregroundClickPlaceWidget, w.ui.clearClicksButton))  # fmt: skip
    # a disabled button ignores clicks (as in Qt)
    w.ui.nextSampleButton.click()
    assert slicer.util.messages == []


def test_connect_button_calls_logic_and_fills_the_panel(env, make_widget):
    _, slicer, qt = env
    logic = RecordingLogic(results={"connect": CONNECT_SUMMARY})
    w = make_widget(logic)
    w.ui.serverUrlLineEdit.text = "  http://10.0.0.5:8123 "
    w.ui.userLineEdit.text = " ann "
    w.ui.passwordLineEdit.text = "s3cret"
    w.ui.connectButton.click()
    assert logic.calls == [("connect", ("http://10.0.0.5:8123", "ann", "s3cret"))]
    assert w.ui.passwordLineEdit.text == ""  # cleared from the panel after use
    assert qt.QSettings().value("DinoMix/userName") == "ann"
    assert "s3cret" not in [str(v) for v in qt.QSettings._store.values()]  # the password is never stored
    assert w.ui.organListWidget.count == 13
    assert w.ui.organListWidget.item(0).text() == "1  spleen"
    assert w.ui.organListWidget.item(12).text() == "13  left adrenal gland"
    assert w.ui.organListWidget.item(5).data(qt.Qt.DecorationRole).rgba == (221, 130, 101, 255)  # liver colour
    assert [w.ui.strategyComboBox.itemText(i) for i in range(w.ui.strategyComboBox.count)] == [
        "dinomix_minority_uncertainty", "random", "first"]  # fmt: skip
    assert w.ui.strategyComboBox.currentText == "dinomix_minority_uncertainty"
    assert w.ui.serverInfoLabel.text == "DINO-Mix: models dinomix; no trained model yet: submit a label and Retrain"
    assert w.ui.iterationsSpinBox.value == 200  # server's training default
    presets = w.ui.presetComboBox
    assert [presets.itemText(i) for i in range(presets.count)] == ["cpu", "gpu_small", "paper"]  # the server's list
    assert presets.currentText == "cpu"
    assert "no DINOv3 teacher" in w.ui.fkdCheckBox.toolTip
    assert qt.QSettings().value("DinoMix/serverUrl") == "http://10.0.0.5:8123"
    assert _errors(slicer) == []
    assert qt.QApplication.override_cursor_depth == 0


def test_connect_starts_polling_when_the_server_is_already_training(env, make_widget):
    logic = RecordingLogic(results={"connect": dict(CONNECT_SUMMARY, training_running=True)})
    w = make_widget(logic)
    w.ui.connectButton.click()
    assert w.pollTimer.isActive()
    assert not w.ui.retrainButton.enabled and w.ui.stopButton.enabled


def test_next_sample_button(env, make_widget):
    _, slicer, _ = env
    logic = RecordingLogic(
        results={"nextSample": {"image_id": "case_0007", "volume_node": object(), "strategy_used": "random"}}
    )
    w = make_widget(logic)
    w.ui.strategyComboBox.setCurrentText("dinomix_minority_uncertainty")
    w.ui.nextSampleButton.click()
    assert logic.calls == [("nextSample", ("dinomix_minority_uncertainty",))]
    assert w.ui.sampleLabel.text == "case_0007 (random)"
    assert "not offered, used 'random'" in w.ui.statusLabel.text

    logic.results["nextSample"] = None  # nothing left to annotate
    w.ui.nextSampleButton.click()
    assert w.ui.sampleLabel.text == "none"
    assert [m["kind"] for m in slicer.util.messages] == ["info"]


def test_run_inference_button(env, make_widget):
    logic = RecordingLogic(results={"runInference": {"organs_found": ORGANS[:11], "organs_missing": ORGANS[11:]}})
    w = make_widget(logic)
    w.ui.inferButton.click()
    assert logic.calls == [("runInference", ())]
    assert w.ui.statusLabel.text.startswith("DINO-Mix found 11 organ(s); missing: right adrenal gland, left adrenal")


def test_submit_button(env, make_widget):
    logic = RecordingLogic(results={"submitCorrection": {"image": "case_0007", "label": "case_0007", "organs": ORGANS}})
    w = make_widget(logic)
    w.ui.submitButton.click()
    assert logic.calls == [("submitCorrection", ())]
    assert w.ui.statusLabel.text.startswith("Saved final label for case_0007 (13 organ(s))")


def test_retrain_button_sends_the_settings_and_starts_polling(env, make_widget):
    logic = RecordingLogic(results={"startTraining": {"max_iterations": 50}})
    w = make_widget(logic)
    w.ui.iterationsSpinBox.setValue(50)
    w.ui.presetComboBox.setCurrentText("paper")
    w.ui.fkdCheckBox.click()  # uncheck
    w.ui.deviceComboBox.setCurrentText("cuda:1")  # editable combo: free text
    w.ui.retrainButton.click()
    assert logic.calls == [
        ("startTraining", (dict(max_iterations=50, preset="paper", use_fkd=False, use_pic=True, device="cuda:1"),))
    ]
    assert w.pollTimer.isActive()
    assert not w.ui.retrainButton.enabled  # no second run while polling
    assert w.ui.trainProgressBar.value == 0


def test_stop_button(env, make_widget):
    logic = RecordingLogic(results={"stopTraining": {}})
    w = make_widget(logic)
    w.ui.stopButton.click()
    assert logic.calls == [("stopTraining", ())]
    assert w.ui.statusLabel.text == "Stop requested."


def _poll_state(percent, running, new_model=False, finished=False):
    return {"percent": percent, "text": f"epoch {percent}/100\nspleen: 0.900", "running": running,
            "new_model": new_model, "finished": finished, "best_metric": 0.5}  # fmt: skip


def test_poll_timer_updates_progress_and_offers_rerun_of_a_new_model(env, make_widget):
    _, slicer, _ = env
    logic = RecordingLogic(results={"startTraining": {}, "pollTraining": _poll_state(40, True)})
    w = make_widget(logic)
    w.ui.retrainButton.click()
    w.pollTimer.fire()
    assert w.ui.trainProgressBar.value == 40
    assert w.ui.trainStatsTextEdit.plainText == "epoch 40/100\nspleen: 0.900"
    assert w.pollTimer.isActive()

    logic.results["pollTraining"] = _poll_state(100, False, new_model=True, finished=True)
    slicer.util.confirm_answer = True
    w.pollTimer.fire()
    assert not w.pollTimer.isActive()
    assert [c[0] for c in logic.calls] == ["startTraining", "pollTraining", "pollTraining", "runInference"]
    confirms = [m for m in slicer.util.messages if m["kind"] == "confirm"]
    assert len(confirms) == 1 and "best mean Dice 0.500" in confirms[0]["text"]
    assert w.ui.retrainButton.enabled


def test_poll_declined_rerun_and_run_without_new_model(env, make_widget):
    _, slicer, _ = env
    logic = RecordingLogic(results={"startTraining": {}, "pollTraining": _poll_state(100, False, True, True)})
    w = make_widget(logic)
    w.ui.retrainButton.click()
    w.pollTimer.fire()  # user answers No
    assert [c[0] for c in logic.calls] == ["startTraining", "pollTraining"]

    logic.results["pollTraining"] = _poll_state(30, False, new_model=False, finished=True)
    w.ui.retrainButton.click()
    w.pollTimer.fire()
    assert w.ui.statusLabel.text == "Training stopped without publishing a new model."
    assert len([m for m in slicer.util.messages if m["kind"] == "confirm"]) == 1


BUTTON_ACTIONS = [
    ("connectButton", "connect", "Connect"),
    ("nextSampleButton", "nextSample", "Next sample"),
    ("inferButton", "runInference", "Run DINO-Mix"),
    ("submitButton", "submitCorrection", "Submit correction"),
    ("retrainButton", "startTraining", "Retrain"),
    ("stopButton", "stopTraining", "Stop training"),
]


@pytest.mark.parametrize("button,method,action", BUTTON_ACTIONS)
@pytest.mark.parametrize("error", ["client", "bug"])
def test_logic_exceptions_become_displayed_errors(env, make_widget, button, method, action, error):
    DinoMix, slicer, qt = env
    from DinoMixLib.client import DinoMixClientError

    exc = (
        DinoMixClientError("request refused (422) for PUT /datastore/label: label refused, nothing stored", 422)
        if error == "client"
        else KeyError("image_id")
    )
    logic = RecordingLogic(fail={method: exc})
    w = make_widget(logic)
    getattr(w.ui, button).click()  # must not raise
    assert [c[0] for c in logic.calls] == [method]
    errors = _errors(slicer)
    assert len(errors) == 1
    expected = str(exc) if error == "client" else "KeyError: 'image_id'"
    assert errors[0]["text"] == f"{action} failed:\n{expected}"
    assert "Traceback" not in errors[0]["text"]
    assert w.ui.statusLabel.text == f"{action} failed: {expected}"
    assert qt.QApplication.override_cursor_depth == 0
    assert not w.pollTimer.isActive()


def test_repeated_poll_failures_stop_polling_with_one_error(env, make_widget):
    _, slicer, _ = env
    from DinoMixLib.client import DinoMixClientError

    logic = RecordingLogic(results={"startTraining": {}})
    w = make_widget(logic)
    w.ui.retrainButton.click()
    logic.fail["pollTraining"] = DinoMixClientError(
        "cannot reach server at http://127.0.0.1:1: is `make serve` running?"
    )
    w.pollTimer.fire()
    w.pollTimer.fire()
    assert w.pollTimer.isActive() and _errors(slicer) == []
    assert w.ui.statusLabel.text.startswith("Training status unavailable (2)")
    w.pollTimer.fire()
    assert not w.pollTimer.isActive()
    assert [e["text"] for e in _errors(slicer)] == [
        "Training status failed:\ncannot reach server at http://127.0.0.1:1: is `make serve` running?"
    ]


def _dead_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_real_logic_and_client_report_a_dead_server(env, make_widget):
    """No recording logic here: the module's own DinoMixLogic and DinoMixClient against a closed port."""
    _, slicer, _ = env
    w = make_widget()
    url = f"http://127.0.0.1:{_dead_port()}"
    w.ui.serverUrlLineEdit.text = url
    w.ui.connectButton.click()
    assert [e["text"] for e in _errors(slicer)] == [
        f"Connect failed:\ncannot reach server at {url}: is `make serve` running?"
    ]
    assert w.ui.serverInfoLabel.text == "not connected"
    assert not w.logic.isConnected and not w.ui.nextSampleButton.enabled


def test_real_logic_refuses_actions_before_connect(env):
    DinoMix, _, _ = env
    logic = DinoMix.DinoMixLogic()
    with pytest.raises(RuntimeError, match="not connected"):
        logic.nextSample("random")
    with pytest.raises(RuntimeError, match="not connected"):
        logic.startTraining(dict(max_iterations=5))


def test_logic_work_folder_is_made_on_use_and_removed_by_cleanup(env):
    DinoMix, _, _ = env
    logic = DinoMix.DinoMixLogic()
    assert logic._workDir is None  # nothing made until needed
    d = logic.workDir
    assert os.path.isdir(d) and os.path.basename(d).startswith("DinoMix-") and logic.workDir == d
    open(os.path.join(d, "prediction.nii.gz"), "wb").close()
    logic.cleanup()
    assert not os.path.exists(d) and logic._workDir is None
    logic.cleanup()  # twice is harmless


def test_module_self_test_runs(env):
    """The module's Slicer self-test (Reload and Test) needs only numpy; it runs under the stand-in too."""
    DinoMix, slicer, _ = env
    slicer.util.messages.clear()
    DinoMix.DinoMixTest().runTest()
    assert [m["text"] for m in slicer.util.messages][-1] == "Test passed"


def test_real_logic_connects_to_the_live_server(env, make_widget, live_server):
    """Connect with the module's own logic and client to the real DINO-Mix MONAI Label server."""
    _, slicer, _ = env
    w = make_widget()
    w.ui.serverUrlLineEdit.text = live_server.url
    w.ui.connectButton.click()
    assert _errors(slicer) == []
    assert w.logic.isConnected
    assert [w.ui.organListWidget.item(i).text() for i in range(w.ui.organListWidget.count)] == [
        f"{i}  {n}" for i, n in enumerate(ORGANS, start=1)
    ]
    assert "dinomix_minority_uncertainty" in [
        w.ui.strategyComboBox.itemText(i) for i in range(w.ui.strategyComboBox.count)
    ]
    presets = w.ui.presetComboBox
    assert [presets.itemText(i) for i in range(presets.count)] == ["cpu", "paper"]  # from dinomix_core.config.PRESETS
    listed = list(live_server.get("/info/")[1]["models"])  # infer tasks are listed once a model exists (no starter)
    assert w.ui.serverInfoLabel.text.startswith(
        f"DINO-Mix: models {', '.join(listed)};" if listed else "DINO-Mix: models none; no trained model yet")
    assert ("dinomix" in listed) == ("no trained model yet" not in w.ui.serverInfoLabel.text)
    assert w.ui.nextSampleButton.enabled and w.ui.retrainButton.enabled


def test_real_logic_logs_in_to_a_server_with_authentication(env, make_widget, auth_server):
    """Against the real server with MONAI Label authentication on (stand-in Keycloak realm, see test_auth.py)."""
    _, slicer, _ = env
    w = make_widget()
    w.ui.serverUrlLineEdit.text = auth_server.url
    w.ui.connectButton.click()  # no user name
    assert "requires a login: enter your user name and password" in _errors(slicer)[-1]["text"]
    assert not w.logic.isConnected and w.ui.serverInfoLabel.text == "not connected"
    w.ui.userLineEdit.text, w.ui.passwordLineEdit.text = "ann", "wrong"
    w.ui.connectButton.click()
    assert "login failed for 'ann' (401): login refused by the identity server: Invalid user credentials" in (
        _errors(slicer)[-1]["text"]
    )
    assert not w.logic.isConnected
    slicer.util.messages.clear()
    w.ui.userLineEdit.text, w.ui.passwordLineEdit.text = "ann", "ann-pw"
    w.ui.connectButton.click()
    assert _errors(slicer) == []
    assert w.logic.isConnected and w.logic.client.token
    assert w.ui.organListWidget.count == 13 and w.ui.passwordLineEdit.text == ""


def _ensure_trained_model(client, workdir):
    """Publish a model on the shared server if it has none: a tiny training run (as in test_slicer_client)."""
    from DinoMixLib.labelmap import read_nifti, write_nifti_label

    t0 = time.monotonic()
    while client.training_running():
        assert time.monotonic() - t0 < 600, "a training run on the shared server does not end"
        time.sleep(0.25)
    if client.model_status()["model_present"]:
        return
    if not client.datastore("stats").get("completed"):
        image_id = client.next_sample()["id"]
        data, affine = read_nifti(client.download_image(image_id, str(workdir)))
        lab = np.zeros(data.shape, np.uint8)
        lab[tuple(slice(s // 2 - 3, s // 2 + 3) for s in data.shape)] = 6
        client.submit_label(image_id, write_nifti_label(str(workdir / "l.nii.gz"), lab, affine))
    client.train("dinomix", {"max_iterations": 4, "val_fraction": 0.0, "device": "cpu"})
    stats = client.wait_for_training(poll_s=1, timeout_s=600)
    assert stats.get("status") == "DONE", stats


def test_real_logic_full_loop_on_the_live_server(env, make_widget, live_server, tmp_path):
    """Next sample -> Run DINO-Mix -> (paint) -> Submit -> Retrain/poll/Stop with the module's own logic and client
    against the real server; only MRML is the stand-in (nibabel-read volumes, masks on the image grid)."""
    _, slicer, _ = env
    from DinoMixLib.client import DinoMixClient
    from DinoMixLib.labelmap import organ_color

    _ensure_trained_model(DinoMixClient(live_server.url, timeout=60, infer_timeout=600), tmp_path)
    w = make_widget()
    w.ui.serverUrlLineEdit.text = live_server.url
    w.ui.connectButton.click()
    assert "retrained model version" in w.ui.serverInfoLabel.text  # the live server has no starter
    w.logic.client.infer_timeout = 600
    w.ui.strategyComboBox.setCurrentText("random")  # the model-based default would score every image first

    # Next sample: the image is loaded, with one empty segment per organ
    w.ui.nextSampleButton.click()
    assert _errors(slicer) == []
    logic = w.logic
    image_id = logic.imageId
    assert w.ui.sampleLabel.text == f"{image_id} (random)"
    img = nib.load(os.path.join(logic.workDir, os.listdir(logic.workDir)[0], f"{image_id}.nii.gz"))
    assert logic.volumeNode.array.shape == img.shape[::-1]  # Slicer's (k, j, i)
    np.testing.assert_allclose(logic.ijkToRas(logic.volumeNode), img.affine, atol=1e-6)
    seg = logic.segmentationNode.GetSegmentation()
    names = [seg.GetSegment(seg.GetNthSegmentID(n)).GetName() for n in range(seg.GetNumberOfSegments())]
    assert names == ORGANS and logic.segmentationNode.masks == {}
    assert seg.GetSegment("organ_6").GetColor() == tuple(c / 255.0 for c in organ_color("liver"))
    assert w.ui.inferButton.enabled and w.ui.submitButton.enabled

    # Run DINO-Mix: segments = the server's prediction, organ by organ
    w.ui.inferButton.click()
    assert _errors(slicer) == [], slicer.util.messages
    pred = np.asanyarray(nib.load(os.path.join(logic.workDir, "prediction.nii.gz")).dataobj).transpose(2, 1, 0)
    assert pred.shape == logic.volumeNode.array.shape
    for organ_id in range(1, 14):
        mask = logic.segmentationNode.masks.get(f"organ_{organ_id}")
        expected = pred == organ_id
        if mask is None:
            assert not expected.any()
        else:
            np.testing.assert_array_equal(mask, expected)
    assert w.ui.statusLabel.text.startswith("DINO-Mix found")
    assert not any(isinstance(n, slicer.mrml.vtkMRMLLabelMapVolumeNode) for n in slicer.mrmlScene.nodes)

    # the user paints: a liver block and, overlapping it, a small right adrenal gland (lower in the list: wins)
    shape = logic.volumeNode.array.shape
    liver = np.zeros(shape, bool)
    liver[tuple(slice(s // 2 - 3, s // 2 + 3) for s in shape)] = True
    adrenal = np.zeros(shape, bool)
    adrenal[tuple(slice(s // 2 - 1, s // 2 + 1) for s in shape)] = True
    for organ_id, mask in ((6, liver), (12, adrenal)):
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask.astype(np.uint8), logic.segmentationNode, f"organ_{organ_id}", logic.volumeNode
        )
    expected_kji = np.zeros(shape, np.uint8)
    for organ_id in range(1, 14):
        m = logic.segmentationNode.masks.get(f"organ_{organ_id}")
        if m is not None:
            expected_kji[m] = organ_id

    # Submit correction: the server checks the label against the image (shape, spacing, orientation, origin)
    w.ui.submitButton.click()
    assert _errors(slicer) == [], slicer.util.messages
    assert w.ui.statusLabel.text.startswith(f"Saved final label for {image_id}")
    try:
        stored = nib.load(logic.client.download_label(image_id, str(tmp_path)))
        np.testing.assert_array_equal(np.asanyarray(stored.dataobj), expected_kji.transpose(2, 1, 0))
        assert stored.get_data_dtype() == np.uint8
        np.testing.assert_allclose(stored.affine, img.affine, atol=1e-4)
    finally:
        logic.client.remove_label(image_id, "final")

    # Retrain -> poll -> Stop (a long run, stopped once it runs: nothing is published)
    w.ui.iterationsSpinBox.setValue(100000)
    w.ui.deviceComboBox.setCurrentText("cpu")
    w.ui.retrainButton.click()
    assert _errors(slicer) == [] and w.pollTimer.isActive()
    try:
        t0 = time.monotonic()
        while logic.client.training_status().get("status") != "RUNNING":
            assert time.monotonic() - t0 < 60
            time.sleep(0.2)
        w.pollTimer.fire()
        assert w.pollTimer.isActive() and "status:" in w.ui.trainStatsTextEdit.plainText
    finally:
        w.ui.stopButton.click()
    t0 = time.monotonic()
    while w.pollTimer.isActive():
        assert time.monotonic() - t0 < 60, "training did not stop"
        time.sleep(0.5)
        w.pollTimer.fire()
    assert w.ui.statusLabel.text == "Training stopped without publishing a new model."
    assert not [m for m in slicer.util.messages if m["kind"] == "confirm"]
    assert _errors(slicer) == []


@pytest.mark.parametrize(
    "status, text",
    [
        ({"listed": False, "model_present": None}, "no trained model yet: submit a label and Retrain"),
        ({"listed": True, "model_present": False}, "no trained model yet: submit a label and Retrain"),
        ({"listed": True, "model_present": None}, "model listed"),
        ({"listed": True, "model_present": True, "details": {"model_source": "starter", "model_label_ids": [1, 6]}},
         "starter model (shipped with the app), trained on label ids 1, 6"),
        ({"listed": True, "model_present": True, "details": {"model_source": "retrained", "model_version": 3}},
         "retrained model version 3"),
        ({"listed": True, "model_present": True, "details": {}}, "trained model present"),
    ],
)
def test_connect_says_which_model_is_served(env, status, text):
    DinoMix, _, _ = env
    assert DinoMix.served_model_text(status) == text


def test_panel_click_and_stroke_editing_on_the_live_server(env, make_widget, live_server, tmp_path):
    """The panel's click mode (points placed with the two place widgets: every click so far goes to
    ``dinomix_edit`` and the chosen organ's segment is replaced) and stroke mode (Add stroke segments, strokes painted
    in ``foreground_scribbles`` / ``background_scribbles``, Apply strokes), with the module's own widget, logic and
    client against the real server; only Slicer (widgets, MRML, the click in a view) is the stand-in."""
    _, slicer, _ = env
    from DinoMixLib.client import DinoMixClient

    _ensure_trained_model(DinoMixClient(live_server.url, timeout=60, infer_timeout=600), tmp_path)
    w = make_widget()
    w.ui.serverUrlLineEdit.text = live_server.url
    w.ui.connectButton.click()
    logic = w.logic
    logic.client.infer_timeout = 600
    organs = w.ui.editOrganComboBox
    assert [organs.itemText(i) for i in range(organs.count)] == ORGANS
    w.ui.strategyComboBox.setCurrentText("random")
    w.ui.nextSampleButton.click()
    assert w.ui.applyStrokesButton.enabled and w.ui.foregroundClickPlaceWidget.enabled
    w.ui.inferButton.click()
    assert _errors(slicer) == [], slicer.util.messages
    shape = logic.volumeNode.array.shape  # (k, j, i)
    centre = [s // 2 for s in shape]
    ras = (logic.ijkToRas(logic.volumeNode) @ np.array([*centre[::-1], 1.0]))[:3]
    assert logic.rasToIjk(logic.volumeNode, ras + 0.2) == centre[::-1]  # the nearest voxel
    before = {k: v.copy() for k, v in logic.segmentationNode.masks.items()}
    organClicks = w.ui.foregroundClickPlaceWidget.currentNode()
    backgroundClicks = w.ui.backgroundClickPlaceWidget.currentNode()
    assert organClicks is not backgroundClicks and slicer.mrmlScene.IsNodePresent(organClicks)

    # an organ click on the liver at the image centre: the liver segment now holds that voxel
    organs.setCurrentText("liver")
    organClicks.place(ras)
    assert _errors(slicer) == [], slicer.util.messages
    assert logic.segmentationNode.masks["organ_6"][tuple(centre)]
    assert w.ui.statusLabel.text.startswith("liver: 1 click(s) so far")
    for sid, mask in before.items():  # other organs' segments are untouched
        if sid != "organ_6":
            np.testing.assert_array_equal(logic.segmentationNode.masks.get(sid, mask), mask)
    # a background click on the same voxel takes it out again; both clicks were sent
    backgroundClicks.place(ras)
    assert not logic.segmentationNode.masks["organ_6"][tuple(centre)]
    assert logic.clicks == {"liver": [centre[::-1]], "background": [centre[::-1]]}
    # a point outside the image: an error dialog, and neither the point nor the click is kept
    organClicks.place(ras + 10_000.0)
    errors = _errors(slicer)
    assert len(errors) == 1 and "outside the image" in errors[0]["text"], errors
    assert organClicks.GetNumberOfControlPoints() == 1 and sum(map(len, logic.clicks.values())) == 2
    slicer.util.messages.clear()
    # another organ starts a new set of clicks; Clear clicks forgets them and keeps the segment
    organs.setCurrentText("spleen")
    assert logic.clicks == {} and organClicks.GetNumberOfControlPoints() == 0
    organClicks.place(ras)
    assert logic.clicks == {"spleen": [centre[::-1]]}
    spleenAfterClick = logic.segmentationNode.masks["organ_1"].copy()
    w.ui.clearClicksButton.click()
    assert logic.clicks == {} and organClicks.GetNumberOfControlPoints() == 0
    np.testing.assert_array_equal(logic.segmentationNode.masks["organ_1"], spleenAfterClick)

    # strokes: a spleen stroke, a background stroke beside it, the GMM method
    w.ui.addStrokeSegmentsButton.click()
    seg = logic.segmentationNode.GetSegmentation()
    assert all(seg.GetSegmentIdBySegmentName(n) for n in ("foreground_scribbles", "background_scribbles"))
    fg = np.zeros(shape, np.uint8)
    fg[centre[0], centre[1] - 2:centre[1] + 3, centre[2] + 5:centre[2] + 10] = 1
    bg = np.zeros(shape, np.uint8)
    bg[centre[0], centre[1] - 2:centre[1] + 3, centre[2] - 10:centre[2] - 5] = 1
    for name, mask in (("background_scribbles", bg), ("foreground_scribbles", fg)):
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, logic.segmentationNode,
                                                         seg.GetSegmentIdBySegmentName(name), logic.volumeNode)
    w.ui.scribblesMethodComboBox.setCurrentText("dinomix_gmm_graphcut")
    w.ui.applyStrokesButton.click()
    assert _errors(slicer) == [], slicer.util.messages
    spleen = logic.segmentationNode.masks["organ_1"]
    assert spleen[fg.astype(bool)].all() and not spleen[bg.astype(bool)].any()
    assert w.ui.statusLabel.text.startswith(f"spleen re-segmented from the strokes ({int(spleen.sum())} voxels)")
    assert not logic.segmentationNode.masks[seg.GetSegmentIdBySegmentName("foreground_scribbles")].any()
    w.ui.applyStrokesButton.click()  # the strokes were used up
    assert len(_errors(slicer)) == 1 and "no strokes" in _errors(slicer)[0]["text"]
    # the strokes never reach a submitted label
    assert set(np.unique(logic.segmentationToLabelArray(logic.segmentationNode, logic.volumeNode))) <= set(range(14))
