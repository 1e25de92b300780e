"""DinoMix: correct-and-retrain loop for DINO-Mix organ segmentation in 3D Slicer.

Connects to a MONAI Label server running the DINO-Mix app (``make serve``), asks it for the next CT to correct
(active learning, minority-organ uncertainty by default), runs the DINO-Mix model, lets the user fix the organ
segments with Slicer's Segment Editor, submits the correction as the image's ``final`` label and retrains.

The widget only reads and writes GUI state; every server or scene action goes through :class:`DinoMixLogic`,
which uses the standard-library client in ``DinoMixLib``.

DINO-Mix: arXiv 2602.07819.
"""

import logging
import os
import shutil
import tempfile

import ctk  # noqa: F401  (CTK widgets of the .ui file)
import numpy as np
import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from DinoMixLib.client import DEFAULT_MODEL, DEFAULT_STRATEGY, DEFAULT_URL, DinoMixClient, DinoMixClientError
from DinoMixLib.labelmap import labelmap_to_segments, organ_color, segments_to_labelmap, write_nifti_label
from DinoMixLib.training import TrainingMonitor, build_train_params

#: QSettings key remembering the last server address
SETTINGS_URL_KEY = "DinoMix/serverUrl"
#: QSettings key remembering the last user name (the password is never stored)
SETTINGS_USER_KEY = "DinoMix/userName"
#: the training progress is polled this often (as the MONAI Label Slicer plugin does)
POLL_INTERVAL_MS = 5000
#: consecutive failed polls after which polling stops and the error is shown
MAX_POLL_FAILURES = 3
#: the app's click-editing model (a DeepEdit request) and its scribbles models
EDIT_MODEL = "dinomix_edit"
SCRIBBLES_MODELS = ("dinomix_histogram_graphcut", "dinomix_gmm_graphcut")
#: the segments the user paints strokes in (the names MONAI Label's scribbles tasks read from ``label_info``)
SCRIBBLE_SEGMENTS = ("background_scribbles", "foreground_scribbles")
#: the point lists clicks are placed in, by ``foreground`` (True: on the organ, False: not the organ), and colours
CLICK_LISTS = {True: ("DinoMix organ clicks", (0.0, 1.0, 0.0)), False: ("DinoMix background clicks", (1.0, 0.0, 0.0))}


#
# DinoMix
#


class DinoMix(ScriptedLoadableModule):
    """Module description shown by Slicer (Help & Acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DINO-Mix"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["DINO-Mix MONAI Label app authors"]
        self.parent.helpText = (
            "Correct-and-retrain loop for abdominal CT organ segmentation with DINO-Mix (arXiv 2602.07819) "
            "served by MONAI Label. Connect to the server started with <code>make serve</code>, fetch the next "
            "sample, run DINO-Mix, correct the organ segments in the Segment Editor, submit the correction and "
            "retrain."
        )
        self.parent.acknowledgementText = (
            "Uses MONAI Label's REST API. DINO-Mix: DINOv3 feature distillation and progressive imbalance-aware "
            "CutMix for semi-supervised class-imbalanced segmentation (arXiv 2602.07819)."
        )


#
# DinoMixWidget
#


def served_model_text(status: dict) -> str:
    """What the server serves, from ``client.model_status``: starter or retrained model, its version and label ids."""
    details = status.get("details") or {}
    present = status.get("model_present")
    if present is None and status.get("listed"):
        return "model listed"
    if not present:
        return "no trained model yet: submit a label and Retrain"
    source = details.get("model_source")
    if source == "starter":
        text = "starter model (shipped with the app)"
    elif source == "retrained":
        text = f"retrained model version {details.get('model_version')}"
    else:
        text = "trained model present"
    ids = details.get("model_label_ids")
    return text + (f", trained on label ids {', '.join(str(i) for i in ids)}" if ids else "")


class DinoMixWidget(ScriptedLoadableModuleWidget):
    """GUI of the module: reads fields, calls :class:`DinoMixLogic`, shows results and errors.

    No server logic lives here; every exception from the logic is caught and shown with
    ``slicer.util.errorDisplay`` and in the status line, never as a traceback.
    """

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None
        self.pollTimer = None
        self._pollFailures = 0
        self._clickObservers = []  # (point list, observer tag)

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DinoMix.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = DinoMixLogic()

        self.ui.serverUrlLineEdit.text = slicer.util.settingsValue(SETTINGS_URL_KEY, DEFAULT_URL)
        self.ui.userLineEdit.text = slicer.util.settingsValue(SETTINGS_USER_KEY, "")
        index = self.ui.strategyComboBox.findText(DEFAULT_STRATEGY)
        if index >= 0:
            self.ui.strategyComboBox.setCurrentIndex(index)

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.serverUrlLineEdit.connect("returnPressed()", self.onConnect)
        self.ui.passwordLineEdit.connect("returnPressed()", self.onConnect)
        self.ui.nextSampleButton.connect("clicked(bool)", self.onNextSample)
        self.ui.inferButton.connect("clicked(bool)", self.onRunInference)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.retrainButton.connect("clicked(bool)", self.onRetrain)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.editOrganComboBox.connect("currentIndexChanged(int)", self.onEditOrganChanged)
        self.ui.clearClicksButton.connect("clicked(bool)", self.onClearClicks)
        self.ui.addStrokeSegmentsButton.connect("clicked(bool)", self.onAddStrokeSegments)
        self.ui.applyStrokesButton.connect("clicked(bool)", self.onApplyStrokes)
        for placeWidget in self._placeWidgets():
            placeWidget.setMRMLScene(slicer.mrmlScene)
            placeWidget.buttonsVisible = False
            placeWidget.placeButton().show()  # points are removed with Clear clicks, so the server's set stays in step

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_INTERVAL_MS)
        self.pollTimer.connect("timeout()", self.onPollTraining)

        self.ui.trainProgressBar.setRange(0, 100)
        self.ui.trainProgressBar.setValue(0)
        self.updateButtonStates()

    def cleanup(self):
        if self.pollTimer is not None:
            self.pollTimer.stop()
        for node, tag in self._clickObservers:
            node.RemoveObserver(tag)
        self._clickObservers = []
        if self.logic is not None and hasattr(self.logic, "cleanup"):
            self.logic.cleanup()

    # ------------------------------------------------------------------ helpers
    def _logicState(self, name):
        return bool(getattr(self.logic, name, False)) if self.logic is not None else False

    def updateButtonStates(self):
        connected = self._logicState("isConnected")
        hasImage = self._logicState("hasImage")
        training = self.pollTimer is not None and self.pollTimer.isActive()
        self.ui.nextSampleButton.enabled = connected
        self.ui.inferButton.enabled = connected and hasImage
        self.ui.submitButton.enabled = connected and self._logicState("hasSegmentation")
        self.ui.retrainButton.enabled = connected and not training
        self.ui.stopButton.enabled = connected
        editing = connected and self._logicState("hasSegmentation")
        for widget in (self.ui.editOrganComboBox, self.ui.clearClicksButton, self.ui.addStrokeSegmentsButton,
                       self.ui.scribblesMethodComboBox, self.ui.applyStrokesButton, *self._placeWidgets()):
            widget.enabled = editing
        if not editing:
            for placeWidget in self._placeWidgets():
                placeWidget.setPlaceModeEnabled(False)

    def setStatus(self, text):
        self.ui.statusLabel.text = text
        slicer.app.processEvents()

    def showError(self, action, exc):
        """Show ``exc`` as a message box and in the status line (no traceback)."""
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if not isinstance(exc, (DinoMixClientError, ValueError, RuntimeError, OSError)):
            message = f"{type(exc).__name__}: {message}"
        logging.error("DinoMix: %s failed: %s", action, message)
        logging.debug("DinoMix: %s failed", action, exc_info=True)
        self.ui.statusLabel.text = f"{action} failed: {message}"
        slicer.util.errorDisplay(f"{action} failed:\n{message}", windowTitle="DINO-Mix")

    def runLogic(self, action, function, *args, **kwargs):
        """Call ``function``; return ``(True, result)``, or ``(False, None)`` after showing the error."""
        self.setStatus(f"{action}...")
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # every failure is shown to the user, none escapes to Slicer
            qt.QApplication.restoreOverrideCursor()
            self.showError(action, exc)
            self.updateButtonStates()
            return False, None
        qt.QApplication.restoreOverrideCursor()
        self.updateButtonStates()
        return True, result

    # ------------------------------------------------------------------ slots
    def onConnect(self):
        url = str(self.ui.serverUrlLineEdit.text).strip()
        user = str(self.ui.userLineEdit.text).strip()
        password = str(self.ui.passwordLineEdit.text)
        ok, summary = self.runLogic("Connect", self.logic.connect, url, user, password)
        self.ui.passwordLineEdit.text = ""  # used once for the token, never kept
        if not ok:
            self.ui.serverInfoLabel.text = "not connected"
            return
        summary = summary or {}
        qt.QSettings().setValue(SETTINGS_URL_KEY, url)
        qt.QSettings().setValue(SETTINGS_USER_KEY, user)
        status = summary.get("model_status") or {}
        present = status.get("model_present") if status.get("listed") else False
        model_text = served_model_text(status)
        models = ", ".join(summary.get("models") or []) or "none"
        self.ui.serverInfoLabel.text = f"{summary.get('name', 'MONAI Label')}: models {models}; {model_text}"

        self.ui.organListWidget.clear()
        for index, name in enumerate(summary.get("organs") or [], start=1):
            item = qt.QListWidgetItem(f"{index}  {name}")
            item.setData(qt.Qt.DecorationRole, qt.QColor(*organ_color(name, index)))
            self.ui.organListWidget.addItem(item)
        self.ui.editOrganComboBox.clear()
        self.ui.editOrganComboBox.addItems(list(summary.get("organs") or []))

        strategies = list(summary.get("strategies") or [])
        if strategies:
            current = self.ui.strategyComboBox.currentText
            self.ui.strategyComboBox.clear()
            for s in strategies:
                self.ui.strategyComboBox.addItem(s)
            preferred = current if current in strategies else summary.get("default_strategy", DEFAULT_STRATEGY)
            index = self.ui.strategyComboBox.findText(preferred)
            self.ui.strategyComboBox.setCurrentIndex(index if index >= 0 else 0)

        self.applyTrainPresets(summary.get("train_presets") or [])
        self.applyTrainDefaults(summary.get("train_config") or {})
        if summary.get("training_running"):
            self._startPolling()
        self.setStatus(
            f"Connected to {url}."
            + ("" if present is not False else " No trained model yet: submit corrections, then Retrain.")
        )
        self.updateButtonStates()

    def onNextSample(self):
        strategy = str(self.ui.strategyComboBox.currentText)
        ok, result = self.runLogic("Next sample", self.logic.nextSample, strategy)
        if not ok:
            return
        if not result:
            self.ui.sampleLabel.text = "none"
            self.setStatus("The server has no image left to annotate.")
            slicer.util.infoDisplay("The server has no image left to annotate.", windowTitle="DINO-Mix")
            return
        used = result.get("strategy_used") or strategy
        self.ui.sampleLabel.text = f"{result['image_id']} ({used})"
        self._attachClickLists()
        note = "" if used == strategy else f" (strategy {strategy!r} not offered, used {used!r})"
        self.setStatus(f"Loaded {result['image_id']}{note}. Press Run DINO-Mix or segment it by hand.")

    def onRunInference(self):
        ok, result = self.runLogic("Run DINO-Mix", self.logic.runInference)
        if not ok:
            return
        found = (result or {}).get("organs_found", [])
        missing = (result or {}).get("organs_missing", [])
        text = f"DINO-Mix found {len(found)} organ(s)"
        if missing:
            text += f"; missing: {', '.join(missing)}"
        self.setStatus(text + ". Correct the segments in the Segment Editor, then Submit correction.")

    def onSubmit(self):
        ok, result = self.runLogic("Submit correction", self.logic.submitCorrection)
        if not ok:
            return
        result = result or {}
        self.setStatus(
            f"Saved final label for {result.get('image', '?')} "
            f"({len(result.get('organs', []))} organ(s)). Press Retrain to update the model."
        )

    # ------------------------------------------------------------------ clicks and strokes
    def _placeWidgets(self):
        return self.ui.foregroundClickPlaceWidget, self.ui.backgroundClickPlaceWidget

    def _attachClickLists(self):
        """Give the place widgets the logic's two point lists and observe where each new point lands."""
        for placeWidget, foreground in zip(self._placeWidgets(), (True, False)):
            node = self.logic.clickList(foreground)
            placeWidget.setCurrentNode(node)
            if not any(n is node for n, _ in self._clickObservers):
                tag = node.AddObserver(slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                                       lambda caller, event, fg=foreground: self.onClickPlaced(caller, fg))
                self._clickObservers.append((node, tag))

    def onClickPlaced(self, pointList, foreground):
        """A point was placed in a view: send it (with the earlier ones) and show the fixed organ."""
        n = pointList.GetNumberOfControlPoints()
        if n == 0:
            return
        organ = str(self.ui.editOrganComboBox.currentText)
        ras = [float(v) for v in pointList.GetNthControlPointPosition(n - 1)]
        action = "Organ click" if foreground else "Background click"
        ok, result = self.runLogic(action, self.logic.addClickAtRas, organ, ras, foreground)
        if not ok:
            pointList.RemoveNthControlPoint(n - 1)  # the server refused it, so it is not one of the clicks
            return
        self.setStatus(f"{organ}: {result['clicks']} click(s) so far; its segment has {result['voxels']} voxels. "
                       "Click again, or Submit correction.")

    def onEditOrganChanged(self, index=None):
        """Clicks fix one organ: choosing another one starts a new set."""
        if getattr(self.logic, "clicks", None):
            self.logic.clearClicks()
            self.setStatus(f"Clicks cleared: the next clicks fix {self.ui.editOrganComboBox.currentText}.")

    def onClearClicks(self):
        ok, _ = self.runLogic("Clear clicks", self.logic.clearClicks)
        if ok:
            self.setStatus("Clicks cleared; the segments stay as they are.")

    def onAddStrokeSegments(self):
        ok, names = self.runLogic("Add stroke segments", self.logic.ensureScribbleSegments)
        if ok:
            self.setStatus(f"Paint strokes on {self.ui.editOrganComboBox.currentText} in {names[1]} and beside it in "
                           f"{names[0]} with the Segment Editor, then press Apply strokes.")

    def onApplyStrokes(self):
        organ = str(self.ui.editOrganComboBox.currentText)
        method = str(self.ui.scribblesMethodComboBox.currentText)
        ok, result = self.runLogic("Apply strokes", self.logic.applyScribbles, organ, method)
        if ok:
            self.setStatus(f"{organ} re-segmented from the strokes ({result['voxels']} voxels); the strokes were "
                           "cleared.")

    def applyTrainPresets(self, presets):
        """The server's preset names (``/info`` ``trainers.dinomix.presets``) as the preset choices."""
        names = [str(p) for p in presets if isinstance(p, str) and p]
        if not names:
            return
        current = self.ui.presetComboBox.currentText
        self.ui.presetComboBox.clear()
        self.ui.presetComboBox.addItems(names)
        self.ui.presetComboBox.setCurrentText(current if current in names else names[0])

    def applyTrainDefaults(self, config):
        """Show the server's training defaults (``/info`` ``trainers.dinomix.config``) in the Retrain fields."""
        try:
            if config.get("max_iterations") is not None:
                self.ui.iterationsSpinBox.setValue(int(config["max_iterations"]))
        except (TypeError, ValueError):
            pass
        for combo, key in ((self.ui.presetComboBox, "preset"), (self.ui.deviceComboBox, "device")):
            if config.get(key):
                combo.setCurrentText(str(config[key]))
        for box, key in ((self.ui.fkdCheckBox, "use_fkd"), (self.ui.picCheckBox, "use_pic")):
            if isinstance(config.get(key), bool):
                box.checked = config[key]
        if "teacher" in config and str(config["teacher"] or "none").strip().lower() in ("none", ""):
            self.ui.fkdCheckBox.toolTip = "FKD is inactive: the server has no DINOv3 teacher (--conf teacher PATH)"

    def trainingSettings(self):
        return dict(
            max_iterations=int(self.ui.iterationsSpinBox.value),
            preset=str(self.ui.presetComboBox.currentText),
            use_fkd=bool(self.ui.fkdCheckBox.checked),
            use_pic=bool(self.ui.picCheckBox.checked),
            device=str(self.ui.deviceComboBox.currentText),
        )

    def onRetrain(self):
        ok, params = self.runLogic("Retrain", self.logic.startTraining, self.trainingSettings())
        if not ok:
            return
        params = params or {}
        self.ui.trainProgressBar.setValue(0)
        self.ui.trainStatsTextEdit.setPlainText("training started")
        self._startPolling()
        self.setStatus(f"Training started ({params.get('max_iterations', '?')} iterations).")

    def onStop(self):
        ok, _ = self.runLogic("Stop training", self.logic.stopTraining)
        if ok:
            self.setStatus("Stop requested.")

    def _startPolling(self):
        self._pollFailures = 0
        self.pollTimer.start()
        self.updateButtonStates()

    def onPollTraining(self):
        try:
            state = self.logic.pollTraining()
        except Exception as exc:  # shown, polling goes on a few times before giving up
            self._pollFailures += 1
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self.ui.statusLabel.text = f"Training status unavailable ({self._pollFailures}): {message}"
            if self._pollFailures >= MAX_POLL_FAILURES:
                self.pollTimer.stop()
                self.updateButtonStates()
                self.showError("Training status", exc)
            return
        self._pollFailures = 0
        state = state or {}
        self.ui.trainProgressBar.setValue(int(state.get("percent", 0)))
        self.ui.trainStatsTextEdit.setPlainText(state.get("text", ""))
        if state.get("running"):
            return
        self.pollTimer.stop()
        self.updateButtonStates()
        if state.get("new_model"):
            self.setStatus("Training finished: a new DINO-Mix model was published.")
            best = state.get("best_metric")
            detail = f" (best mean Dice {best:.3f})" if best is not None else ""
            if self._logicState("hasImage") and slicer.util.confirmYesNoDisplay(
                f"A new DINO-Mix model was published{detail}.\nRe-run it on the current image?",
                windowTitle="DINO-Mix",
            ):
                self.onRunInference()
        elif state.get("finished"):
            self.setStatus("Training stopped without publishing a new model.")


#
# DinoMixLogic
#


class DinoMixLogic(ScriptedLoadableModuleLogic):
    """Server and scene operations of the module (no GUI).

    Args:
        clientFactory: builds the client from a server URL (``DinoMixClient`` by default).
        model: the MONAI Label model name of the DINO-Mix app.
    """

    def __init__(self, clientFactory=DinoMixClient, model=DEFAULT_MODEL):
        ScriptedLoadableModuleLogic.__init__(self)
        self.clientFactory = clientFactory
        self.model = model
        self.client = None
        self.organs = []
        self.labelIds = {}
        self.imageId = None
        self.volumeNode = None
        self.segmentationNode = None
        self.monitor = None
        self.clicks = {}  # organ name (or "background") -> [[i, j, k], ...] on the current image
        self._clickLists = {}  # foreground (bool) -> the point list its clicks are placed in
        self._workDir = None

    @property
    def workDir(self):
        """A temporary folder for downloads and predictions, made on first use and removed by :meth:`cleanup`."""
        if self._workDir is None:
            self._workDir = tempfile.mkdtemp(prefix="DinoMix-")
        return self._workDir

    def cleanup(self):
        """Remove the temporary folder (called when the module closes)."""
        if self._workDir is not None:
            shutil.rmtree(self._workDir, ignore_errors=True)
            self._workDir = None

    @property
    def isConnected(self):
        return self.client is not None

    @property
    def hasImage(self):
        return self.imageId is not None and self.volumeNode is not None

    @property
    def hasSegmentation(self):
        return self.hasImage and self.segmentationNode is not None

    def _requireClient(self):
        if self.client is None:
            raise RuntimeError("not connected: press Connect first.")
        return self.client

    def _requireImage(self):
        if not self.hasImage:
            raise RuntimeError("no image loaded: press Next sample first.")

    # ------------------------------------------------------------------ server
    def connect(self, url, username="", password=""):
        """Read ``/info`` of the server at ``url`` (logging in first if it asks); return a summary for the GUI."""
        client = self.clientFactory(url)
        if client.auth_enabled():
            if not username:
                raise DinoMixClientError(
                    f"the server at {client.server_url} requires a login: enter your user name and password, "
                    "then Connect."
                )
            client.login(username, password)
        info = client.info()
        trainers = info.get("trainers") or {}
        models = info.get("models") or {}
        if self.model not in trainers and self.model not in models:
            raise DinoMixClientError(
                f"the server at {client.server_url} does not run the DINO-Mix app (no {self.model!r} model; "
                f"it has {sorted(set(trainers) | set(models))})."
            )
        self.client = client
        self.labelIds = client.label_ids(self.model, info=info)
        self.organs = list(self.labelIds)
        running = client.training_running()
        if running:
            self.monitor = TrainingMonitor(self.organs, self.model)
            self.monitor.start(info)
        strategies = client.strategies(info=info)
        return {
            "name": info.get("name", ""),
            "models": client.models(info=info),
            "organs": self.organs,
            "model_status": client.model_status(self.model, info=info),
            "strategies": strategies,
            "default_strategy": DEFAULT_STRATEGY if DEFAULT_STRATEGY in strategies else "random",
            "training_running": running,
            "train_config": dict((trainers.get(self.model) or {}).get("config") or {}),
            "train_presets": list((trainers.get(self.model) or {}).get("presets") or []),
        }

    def nextSample(self, strategy=DEFAULT_STRATEGY):
        """Fetch the next image to correct, load it and give it an empty organ segmentation.

        Returns:
            ``{"image_id", "volume_node", "strategy_used"}``, or None when no image is left.
        """
        client = self._requireClient()
        result = client.next_sample(strategy)
        if not result:
            return None
        imageId = result["id"]
        imageDir = tempfile.mkdtemp(prefix="image-", dir=self.workDir)
        path = client.download_image(imageId, imageDir)
        volumeNode = self.loadVolume(path, imageId)
        self.clearScene()
        self.imageId, self.volumeNode = imageId, volumeNode
        self.clearClicks()
        self.segmentationNode = self.createSegmentation(np.zeros(0, dtype=np.uint8), None)
        return {"image_id": imageId, "volume_node": volumeNode, "strategy_used": result.get("strategy_used", strategy)}

    def runInference(self):
        """Run DINO-Mix on the current image; replace the organ segments with its prediction."""
        client = self._requireClient()
        self._requireImage()
        labelPath = client.infer(self.imageId, self.model, output_path=os.path.join(self.workDir, "prediction.nii.gz"))
        labelNode = slicer.util.loadLabelVolume(labelPath, {"show": False, "name": f"{self.imageId}-prediction"})
        try:
            labelArray = slicer.util.arrayFromVolume(labelNode)
            self.segmentationNode = self.createSegmentation(labelArray, labelNode)
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        present = set(int(v) for v in np.unique(labelArray)) - {0}
        found = [n for n, i in self.labelIds.items() if i in present]
        return {
            "segmentation_node": self.segmentationNode,
            "organs_found": found,
            "organs_missing": [n for n in self.organs if n not in found],
        }

    def submitCorrection(self, tag="final"):
        """Export the organ segments on the image's grid, write them as a NIfTI label map and submit it."""
        client = self._requireClient()
        self._requireImage()
        if self.segmentationNode is None:
            raise RuntimeError("no segmentation to submit: run DINO-Mix or segment the image first.")
        labelArray = self.segmentationToLabelArray(self.segmentationNode, self.volumeNode)  # (k, j, i)
        path = os.path.join(self.workDir, f"{self.imageId}_{tag}.nii.gz")
        write_nifti_label(path, labelArray.transpose(2, 1, 0), self.ijkToRas(self.volumeNode))
        labelInfo = [{"name": n, "idx": i} for n, i in self.labelIds.items()]
        result = dict(client.submit_label(self.imageId, path, tag=tag, params={"label_info": labelInfo}) or {})
        present = set(int(v) for v in np.unique(labelArray)) - {0}
        result.setdefault("image", self.imageId)
        result["organs"] = [n for n, i in self.labelIds.items() if i in present]
        result["label_path"] = path
        return result

    # ------------------------------------------------------------------ interactive editing
    def addClick(self, organ, ijk, foreground=True):
        """One click at voxel ``ijk`` (i, j, k of the image) on ``organ`` (foreground) or on what is not it
        (background): sends every click so far to ``dinomix_edit`` and replaces that organ's segment with the
        answer. Returns ``{"organ", "clicks", "voxels"}``."""
        client = self._requireClient()
        self._requireImage()
        if organ not in self.labelIds:
            raise RuntimeError(f"{organ!r} is not an organ of the model ({', '.join(self.organs)}).")
        key = organ if foreground else "background"
        point = [int(round(float(v))) for v in ijk]
        self.clicks.setdefault(key, []).append(point)
        params = {name: list(self.clicks.get(name, [])) for name in self.organs}
        params["background"] = list(self.clicks.get("background", []))
        params["label"] = organ
        try:
            path = client.infer(self.imageId, EDIT_MODEL, output_path=os.path.join(self.workDir, "edit.nii.gz"),
                                params=params)
        except Exception:
            self.clicks[key].pop()  # a refused click is not kept
            raise
        voxels = self._updateSegmentFromFile(organ, path, self.labelIds[organ])
        return {"organ": organ, "clicks": sum(len(v) for v in self.clicks.values()), "voxels": voxels}

    def addClickAtRas(self, organ, ras, foreground=True):
        """:meth:`addClick` for a point placed in a view, at RAS position ``ras`` (the image's voxel nearest it)."""
        self._requireImage()
        return self.addClick(organ, self.rasToIjk(self.volumeNode, ras), foreground)

    def clearClicks(self):
        """Forget the clicks of the current image and remove their points (the segments stay as they are)."""
        self.clicks = {}
        for node in self._clickLists.values():
            if slicer.mrmlScene.IsNodePresent(node):
                node.RemoveAllControlPoints()

    def clickList(self, foreground):
        """The point list organ (``foreground``) or background clicks are placed in, added to the scene if missing."""
        node = self._clickLists.get(foreground)
        if node is None or not slicer.mrmlScene.IsNodePresent(node):
            name, color = CLICK_LISTS[foreground]
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
            node.CreateDefaultDisplayNodes()
            node.GetDisplayNode().SetSelectedColor(*color)
            self._clickLists[foreground] = node
        return node

    def ensureScribbleSegments(self):
        """The two segments strokes are painted in with the Segment Editor (added when missing)."""
        if self.segmentationNode is None:
            raise RuntimeError("no segmentation: press Next sample first.")
        segmentation = self.segmentationNode.GetSegmentation()
        for name, color in zip(SCRIBBLE_SEGMENTS, ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))):
            if not segmentation.GetSegmentIdBySegmentName(name):
                segmentation.AddEmptySegment(name, name, color)
        return list(SCRIBBLE_SEGMENTS)

    def applyScribbles(self, organ, method=SCRIBBLES_MODELS[0]):
        """Send the painted strokes (``background_scribbles``, ``foreground_scribbles``) for ``organ`` to a scribbles
        model, replace that organ's segment with the answer and clear the strokes. Returns ``{"organ", "voxels"}``."""
        client = self._requireClient()
        self._requireImage()
        if organ not in self.labelIds:
            raise RuntimeError(f"{organ!r} is not an organ of the model ({', '.join(self.organs)}).")
        self.ensureScribbleSegments()
        labelArray = self.segmentationToLabelArray(self.segmentationNode, self.volumeNode)  # (k, j, i), organs
        labelInfo = [{"name": n, "id": i} for n, i in self.labelIds.items()]
        top = max(self.labelIds.values())
        strokes = 0
        for offset, name in enumerate(SCRIBBLE_SEGMENTS, start=1):
            segmentId = self.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(name)
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(self.segmentationNode, segmentId, self.volumeNode)
            if mask is not None and np.any(mask):
                labelArray[mask != 0] = top + offset
                strokes += int(np.count_nonzero(mask))
            labelInfo.append({"name": name, "id": top + offset})
        if not strokes:
            raise RuntimeError("no strokes: paint in foreground_scribbles or background_scribbles first.")
        path = os.path.join(self.workDir, f"{self.imageId}_scribbles.nii.gz")
        write_nifti_label(path, labelArray.transpose(2, 1, 0), self.ijkToRas(self.volumeNode))
        result = client.infer(self.imageId, method, output_path=os.path.join(self.workDir, "scribbles_result.nii.gz"),
                              params={"label_info": labelInfo, "selected_label_name": organ, "roi": []},
                              label_path=path)
        voxels = self._updateSegmentFromFile(organ, result, 1)
        for name in SCRIBBLE_SEGMENTS:  # the strokes are used up
            segmentId = self.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(name)
            empty = np.zeros(slicer.util.arrayFromVolume(self.volumeNode).shape, np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(empty, self.segmentationNode, segmentId, self.volumeNode)
        return {"organ": organ, "voxels": voxels}

    def _updateSegmentFromFile(self, organ, path, value):
        """Replace ``organ``'s segment with the voxels of ``path`` equal to ``value``; returns their count."""
        labelNode = slicer.util.loadLabelVolume(path, {"show": False, "name": f"{self.imageId}-edit"})
        try:
            mask = slicer.util.arrayFromVolume(labelNode) == value
            slicer.util.updateSegmentBinaryLabelmapFromArray(
                mask.astype(np.uint8), self.segmentationNode, f"organ_{self.labelIds[organ]}", labelNode
            )
        finally:
            slicer.mrmlScene.RemoveNode(labelNode)
        return int(np.count_nonzero(mask))

    def startTraining(self, settings):
        """Start a training run with the widget's ``settings`` (see ``build_train_params``); return the params."""
        client = self._requireClient()
        params = build_train_params(**settings)
        before = client.info()
        client.train(self.model, params)
        self.monitor = TrainingMonitor(self.organs, self.model)
        self.monitor.start(before)
        return params

    def stopTraining(self):
        return self._requireClient().stop_training()

    def pollTraining(self):
        """One progress poll: ``TrainingMonitor.update`` of the current ``/info``."""
        client = self._requireClient()
        running = client.training_running()
        info = client.info()
        if self.monitor is None:  # e.g. a run started by another client
            self.monitor = TrainingMonitor(self.organs, self.model)
        if running and not self.monitor.active:
            self.monitor.start(info)
        return self.monitor.update(running, info)

    # ------------------------------------------------------------------ scene (3D Slicer APIs)
    def loadVolume(self, path, name):
        node = slicer.util.loadVolume(path, {"name": name, "show": True})
        if node is None:
            raise RuntimeError(f"Slicer could not load the image {path}.")
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        return node

    def clearScene(self):
        """Remove the previous image and segmentation of this module from the scene."""
        for node in (self.segmentationNode, self.volumeNode):
            if node is not None:
                slicer.mrmlScene.RemoveNode(node)
        self.imageId = self.volumeNode = self.segmentationNode = None

    def createSegmentation(self, labelArray, labelNode):
        """(Re)fill this module's segmentation node with one named, coloured segment per organ.

        Args:
            labelArray: label ids in Slicer's (k, j, i) array order, or an empty array for empty segments.
            labelNode: the labelmap volume whose geometry ``labelArray`` has (None for empty segments).
        """
        segNode = self.segmentationNode
        if segNode is None:
            segNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{self.imageId} DINO-Mix")
            segNode.CreateDefaultDisplayNodes()
        segNode.SetReferenceImageGeometryParameterFromVolumeNode(self.volumeNode)
        segmentation = segNode.GetSegmentation()
        segmentation.RemoveAllSegments()
        if labelArray.size:
            segments = labelmap_to_segments(labelArray, self.labelIds, include_empty=True)
        else:
            segments = [(n, i, organ_color(n, i), None) for n, i in self.labelIds.items()]
        for name, index, color, mask in segments:
            segmentId = segmentation.AddEmptySegment(f"organ_{index}", name, [c / 255.0 for c in color])
            if mask is not None and mask.any():
                slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segNode, segmentId, labelNode)
        return segNode

    def segmentationToLabelArray(self, segNode, volumeNode):
        """Label ids on ``volumeNode``'s grid, (k, j, i) order; segments are matched to organs by name."""
        segmentation = segNode.GetSegmentation()
        segments = []
        for n in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(n)
            name = segmentation.GetSegment(segmentId).GetName()
            if name in SCRIBBLE_SEGMENTS:  # strokes, not an organ
                continue
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segNode, segmentId, volumeNode)
            if mask is None or not np.any(mask):
                continue
            segments.append((name, mask != 0))
        shape = slicer.util.arrayFromVolume(volumeNode).shape
        return segments_to_labelmap(segments, self.labelIds, shape=shape)

    @staticmethod
    def ijkToRas(volumeNode):
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)], dtype=np.float64)

    @classmethod
    def rasToIjk(cls, volumeNode, ras):
        """The voxel ``[i, j, k]`` of ``volumeNode`` nearest to RAS position ``ras``."""
        ijk = np.linalg.solve(cls.ijkToRas(volumeNode), np.array([*map(float, ras[:3]), 1.0]))
        return [int(v) for v in np.rint(ijk[:3])]


#
# DinoMixTest
#


class DinoMixTest(ScriptedLoadableModuleTest):
    """Self-test runnable in Slicer (Reload and Test): label-map conversion and the NIfTI writer, no server."""

    def runTest(self):
        self.setUp()
        self.test_labelmap_roundtrip()

    def test_labelmap_roundtrip(self):
        from DinoMixLib.labelmap import read_nifti

        self.delayDisplay("Label map / NIfTI round trip")
        organs = ["spleen", "liver"]
        a = np.zeros((4, 3, 2), dtype=bool)
        a[0, 0, 0] = True
        b = np.zeros((4, 3, 2), dtype=bool)
        b[1:, :, :] = True
        lab = segments_to_labelmap([("spleen", a), ("liver", b)], organs)
        affine = np.diag([0.7, 0.7, 2.5, 1.0])
        path = os.path.join(tempfile.mkdtemp(), "test.nii.gz")
        write_nifti_label(path, lab, affine)
        data, aff = read_nifti(path)
        assert data.dtype == np.uint8 and np.array_equal(data, lab) and np.allclose(aff, affine)
        assert [s[0] for s in labelmap_to_segments(data, organs)] == ["spleen", "liver"]
        self.delayDisplay("Test passed")
